// `kvrag demo` end to end through the real binary, in a short run on a small corpus and a
// 256-token context: the seed failure (NoKvSlot after a few RAG questions, or in a long chat
// on a small context) must not happen. The summary line is checked: no failures, the KV cells
// back at baseline after every request, the chat kept inside the context by dropping history,
// and the text that says the weights are random and where a real model plugs in. No timing is
// asserted.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "cli/run_kvrag.h"
#include "test_paths.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using testing::run_kvrag;

std::map<std::string, std::string> demo_summary(const std::string& out) { return testing::summary_pairs(out, "demo "); }

class DemoCliTest : public ::testing::Test {
protected:
    void SetUp() override {
        root_ = fs::temp_directory_path() / ("kvrag-demo-test-" + std::to_string(getpid()));
        fs::remove_all(root_);
        fs::create_directories(root_ / "docs" / "sub");
        // Two of the project's own documents and a binary file, which is skipped, not fatal.
        fs::copy_file(fs::path(KVRAG_SOURCE_DIR) / "docs" / "kv-cache.md", root_ / "docs" / "kv-cache.md");
        fs::copy_file(fs::path(KVRAG_SOURCE_DIR) / "docs" / "memory.md", root_ / "docs" / "sub" / "memory.md");
        std::ofstream(root_ / "docs" / "blob.bin", std::ios::binary) << std::string("\x7f" "ELF\x02\x01\x01\0\0\0\0\xff\xfe", 14);
    }
    void TearDown() override { fs::remove_all(root_); }
    fs::path root_;
};

TEST_F(DemoCliTest, ShortRunReturnsEveryCellAndKeepsTheChatInsideTheContext) {
    constexpr int kAsks = 8, kTurns = 24, kCtx = 256, kMaxTokens = 8;
    const auto r = run_kvrag("demo --short --docs " + (root_ / "docs").string() + " --dir " + (root_ / "work").string() +
                             " --asks " + std::to_string(kAsks) + " --turns " + std::to_string(kTurns) + " --ctx " + std::to_string(kCtx) +
                             " -n " + std::to_string(kMaxTokens) + " -t 1");
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    auto kv = demo_summary(r.out);
    ASSERT_FALSE(kv.empty()) << r.out;
    EXPECT_EQ(kv["files"], "2");
    EXPECT_EQ(kv["files_failed"], "1");
    EXPECT_GT(std::stoi(kv["chunks"]), 0);
    EXPECT_EQ(kv["asks"], std::to_string(kAsks));
    EXPECT_EQ(kv["turns"], std::to_string(kTurns));
    EXPECT_EQ(kv["failures"], "0");
    const std::string n_requests = std::to_string(kAsks + kTurns);
    EXPECT_EQ(kv["requests_at_baseline"], n_requests + "/" + n_requests);
    EXPECT_EQ(kv["baseline_cells"], "0");
    EXPECT_EQ(kv["max_cells_between"], "0");
    EXPECT_EQ(kv["total_cells"], std::to_string(kCtx));
    // The requests did use the cache, up to at most all of it.
    EXPECT_GT(std::stoi(kv["peak_cells"]), 0);
    EXPECT_LE(std::stoi(kv["peak_cells"]), kCtx);
    // 24 turns do not fit 256 tokens: history was dropped, and every prompt left room to answer.
    EXPECT_GT(std::stoi(kv["turns_dropping"]), 0);
    EXPECT_GT(std::stoi(kv["max_dropped"]), 0);
    EXPECT_LE(std::stoi(kv["max_chat_prompt"]) + kMaxTokens, kCtx);
    EXPECT_GT(std::stoi(kv["generated_tokens"]), 0);
    EXPECT_GT(std::stod(kv["ttft_ms_median"]), 0.0);
    // What the demo must say plainly.
    EXPECT_NE(r.out.find("RANDOM weights"), std::string::npos);
    EXPECT_NE(r.out.find("kvrag serve -m MODEL.gguf --embed-model EMBED.gguf --memory DIR"), std::string::npos);
}

TEST_F(DemoCliTest, MissingCorpusIsAClearError) {
    const fs::path missing = root_ / "no-such-folder";
    const auto r = run_kvrag("demo --docs " + missing.string() + " --dir " + (root_ / "work").string());
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find(missing.string()), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("--docs"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kvrag
