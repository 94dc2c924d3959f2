// The real `kvrag serve` on the shared synth-gemma3 model (sliding window 32 on 3 of 4 layers):
// /v1/kv and /metrics show the local-layer pool next to the global one, and a long request
// holds a window's worth of local cells while it runs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "server_process.h"
#include "test_paths.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using testing::get;
using testing::post;

TEST(ServerSwa, KvAndMetricsShowTheLocalPool) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const fs::path tmp = fs::temp_directory_path() / ("kvrag-swa-server-" + std::to_string(getpid()));
    fs::create_directories(tmp);
    testing::ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", dir + "/models/synth-gemma3-f32.gguf", "--ctx", "512", "--batch", "16", "--parallel", "2", "-t", "1"},
                          (tmp / "serve.log").string()))
        << srv.log();
    // 150 positions: several windows of 32.
    const testing::Reply r = post(srv.port(), "/v1/completions",
                                  R"({"prompt": "The lighthouse keeper climbed the stairs every night and looked at the sea", "max_tokens": 130, "temperature": 0, "ignore_eos": true})");
    ASSERT_EQ(r.status, 200) << r.body;
    const nlohmann::json kv = get(srv.port(), "/v1/kv").j()["cache"];
    ASSERT_TRUE(kv.contains("local")) << kv.dump();
    // Pool for --parallel 2 + 1 windows of 31 + 15 (block alignment) + 16 (one batch) cells.
    EXPECT_EQ(kv["window"], 32);
    EXPECT_EQ(kv["local"]["cells_total"], 3 * 62);
    EXPECT_EQ(kv["local"]["cells_used"], 0);
    EXPECT_EQ(kv["local"]["cells_reserved"], 0);
    EXPECT_LE(kv["local"]["cells_peak_used"].get<int>(), 62);
    EXPECT_GE(kv["local"]["cells_peak_used"].get<int>(), 32);
    EXPECT_GE(kv["cells_peak_used"].get<int>(), 140);  // the global layer keeps every position
    EXPECT_EQ(kv["local"]["bytes"].get<size_t>(), 3 * 62 * kv["local"]["bytes_per_cell"].get<size_t>());
    const std::string metrics = get(srv.port(), "/metrics").body;
    EXPECT_NE(metrics.find("kvrag_kv_local_cells_total 186"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("kvrag_kv_window 32"), std::string::npos);
    EXPECT_NE(metrics.find("kvrag_kv_local_cells_peak_used"), std::string::npos);
    EXPECT_EQ(srv.stop(), 0) << srv.log();
    fs::remove_all(tmp);
}

}  // namespace
}  // namespace kvrag
