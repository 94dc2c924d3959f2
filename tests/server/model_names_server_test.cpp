// Model names with several models loaded (issue 14, point 6), through the real `kvrag serve`: the
// names OpenAI clients send by default (gpt-4o-mini, text-embedding-3-small) reach the
// endpoint's model, which the response names; --strict-model-names turns them into 404s while
// the served names still work. (One chat model alone: ServerLimitsTest.ModelNamesAliasesAndStrictMode;
// the reranker's fallback: EncoderServerTest.) Needs ../shared's synthetic BERT (skips without it).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "server_process.h"
#include "test_paths.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::post;
using testing::Reply;
using testing::ServerProcess;

TEST(ModelNamesServer, DefaultClientNamesReachTheEndpointsModelUnlessStrict) {
    const auto data = testing::shared_data_dir();
    KVRAG_SKIP_UNLESS_SHARED(data.has_value()) << "../shared/data not found (set KVRAG_SHARED_DATA); skipping";
    const fs::path dir = fs::temp_directory_path() / ("kvrag-model-names-" + std::to_string(getpid()));
    fs::create_directories(dir);
    // A chat model 96 wide; the embedding model is 64 wide, so a vector shows which made it.
    const std::string chat = (dir / "chat.gguf").string();
    ASSERT_EQ(testing::run_kvrag_sync({"make-model", "-o", chat, "--dim", "96", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--ff", "128"}), 0);
    const std::string embed = *data + "/models/synth-bert-f32.gguf";

    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", chat, "--embed-model", embed, "-t", "1"}, (dir / "names.log").string())) << srv.log();
    const Reply e = post(srv.port(), "/v1/embeddings", R"({"input": "a red fox", "model": "text-embedding-3-small"})");
    ASSERT_EQ(e.status, 200) << e.body;
    EXPECT_EQ(e.j()["model"], "synth-bert-f32");
    EXPECT_EQ(e.j()["data"][0]["embedding"].size(), 64u);
    const Reply c = post(srv.port(), "/v1/chat/completions", R"({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})");
    ASSERT_EQ(c.status, 200) << c.body;
    EXPECT_EQ(c.j()["model"], "chat");
    // Naming the chat model on /v1/embeddings picks it (96 wide).
    const Reply ce = post(srv.port(), "/v1/embeddings", R"({"input": "a red fox", "model": "chat"})");
    ASSERT_EQ(ce.status, 200) << ce.body;
    EXPECT_EQ(ce.j()["data"][0]["embedding"].size(), 96u);
    EXPECT_EQ(srv.stop(), 0) << srv.log();

    ServerProcess strict;
    ASSERT_TRUE(strict.start({"-m", chat, "--embed-model", embed, "--strict-model-names", "-t", "1"}, (dir / "strict.log").string())) << strict.log();
    const Reply se = post(strict.port(), "/v1/embeddings", R"({"input": "a red fox", "model": "text-embedding-3-small"})");
    EXPECT_EQ(se.status, 404) << se.body;
    EXPECT_EQ(se.j()["error"]["code"], "model_not_found") << se.body;
    const Reply sc = post(strict.port(), "/v1/chat/completions", R"({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})");
    EXPECT_EQ(sc.status, 404) << sc.body;
    const Reply ok = post(strict.port(), "/v1/embeddings", R"({"input": "a red fox", "model": "synth-bert-f32"})");
    EXPECT_EQ(ok.status, 200) << ok.body;
    EXPECT_EQ(strict.stop(), 0) << strict.log();
    fs::remove_all(dir);
}

}  // namespace
}  // namespace kvrag
