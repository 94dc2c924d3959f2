// n > 1 choices on a sliding-window model through the real `kvrag serve` (a gemma3 written by
// `kvrag make-model --arch gemma3`): each choice is what a request of its own with the next
// seed gives, /v1/kv and /metrics are back to nothing used or reserved afterwards, and more
// choices than the local pool has windows for are refused with the numbers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "server_process.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::get;
using testing::post;

TEST(ServerSwaFork, ChoicesOnASlidingWindowModelAreSeparateSequences) {
    const fs::path tmp = fs::temp_directory_path() / ("kvrag-swa-fork-server-" + std::to_string(getpid()));
    fs::create_directories(tmp);
    const std::string model = (tmp / "gemma3.gguf").string();
    ASSERT_EQ(testing::run_kvrag_sync({"make-model", "-o", model, "--type", "f32", "--arch", "gemma3", "--swa-window", "8", "--swa-pattern", "3"}), 0);
    testing::ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model, "--ctx", "512", "--batch", "4", "--parallel", "3", "-t", "2"}, (tmp / "serve.log").string())) << srv.log();

    // 3 choices, each beyond several windows of 8.
    json body{{"prompt", "The lighthouse keeper climbed the stairs every night"}, {"max_tokens", 30}, {"temperature", 0.9},
              {"seed", 5},      {"ignore_eos", true},                                    {"n", 3}};
    const testing::Reply r = post(srv.port(), "/v1/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const json choices = r.j()["choices"];
    ASSERT_EQ(choices.size(), 3u) << r.body;
    EXPECT_EQ(r.j()["usage"]["completion_tokens"], 90);
    for (int i = 1; i < 3; ++i) {
        json one = body;
        one.erase("n");
        one["seed"] = 5 + i;
        const testing::Reply a = post(srv.port(), "/v1/completions", one.dump());
        ASSERT_EQ(a.status, 200) << a.body;
        EXPECT_EQ(a.j()["choices"][0]["text"], choices[i]["text"]) << "choice " << i;
    }
    EXPECT_NE(choices[0]["text"], choices[1]["text"]);

    const json kv = get(srv.port(), "/v1/kv").j()["cache"];
    ASSERT_TRUE(kv.contains("local")) << kv.dump();
    EXPECT_EQ(kv["cells_used"], 0) << kv.dump();
    EXPECT_EQ(kv["cells_reserved"], 0) << kv.dump();
    EXPECT_EQ(kv["local"]["cells_used"], 0) << kv.dump();
    EXPECT_EQ(kv["local"]["cells_reserved"], 0) << kv.dump();
    EXPECT_EQ(kv["local"]["cells_free"].get<int>() + kv["local"]["cells_cached"].get<int>(), kv["local"]["cells_total"].get<int>()) << kv.dump();
    // The three choices decoded together, each holding at least its window of 8.
    EXPECT_GE(kv["local"]["cells_peak_used"].get<int>(), 3 * 8) << kv.dump();
    const std::string metrics = get(srv.port(), "/metrics").body;
    EXPECT_NE(metrics.find("kvrag_kv_local_cells_used 0"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("kvrag_kv_local_cells_reserved 0"), std::string::npos) << metrics;

    // Five choices need five windows; the pool holds four.
    body["n"] = 5;
    const testing::Reply big = post(srv.port(), "/v1/completions", body.dump());
    EXPECT_EQ(big.status, 400) << big.body;
    EXPECT_NE(big.body.find("5 choices need"), std::string::npos) << big.body;
    EXPECT_NE(big.body.find("local pool"), std::string::npos) << big.body;
    EXPECT_EQ(srv.stop(), 0) << srv.log();
    fs::remove_all(tmp);
}

}  // namespace
}  // namespace kvrag
