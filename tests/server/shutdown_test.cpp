// Shutdown is bounded in every state: SIGINT while a document is ingesting stops the ingestion
// and the process within about a second (the job stays queued and resumes at the next start),
// and a second signal exits at once even while a long generation still has grace time.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "server_suite.h"

namespace kvrag {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using testing::get;
using testing::post;
using testing::Reply;
using testing::ServerProcess;

class ShutdownTest : public testing::ServerSuite<ShutdownTest> {
protected:
    static void SetUpTestSuite() {
        // Slow enough that a long document takes many seconds to embed on one thread.
        make_suite_model("kvrag-shutdown", "slow.gguf", testing::kSlowModelArgs);
    }
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

TEST_F(ShutdownTest, SignalDuringIngestionStopsItAndTheStoreStaysWhole) {
    const std::string store = path("store");
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model(), "--memory", store, "--chunk-tokens", "32", "--chunk-overlap", "0", "-t", "1"}, path("ingest.log")))
        << srv.log();
    std::string text;
    for (int i = 0; i < 4000; ++i) text += "The lighthouse keeper wrote entry number " + std::to_string(i) + " in the log. ";
    const int port = srv.port();
    auto upload = std::async(std::launch::async, [port, text] {
        httplib::Client cli("127.0.0.1", port);
        cli.set_read_timeout(120, 0);
        httplib::MultipartFormDataItems items = {{"file", text, "log.txt", "text/plain"}};
        auto r = cli.Post("/upload", items);
        return r ? r->status : 0;
    });
    // Wait until the ingestion is embedding (an embedding job shows on /v1/kv or in the metrics).
    const auto t_wait = Clock::now();
    while (seconds_since(t_wait) < 30) {
        const json kv = get(port, "/v1/kv").j();
        if (kv.is_object() && !kv["sequences"].empty()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const int upload_status = upload.get();
    EXPECT_EQ(upload_status, 202) << "the upload is acknowledged once stored, before ingestion";
    const auto t0 = Clock::now();
    const int code = srv.stop(SIGINT, std::chrono::seconds(20));
    const double took = seconds_since(t0);
    EXPECT_EQ(code, 0) << srv.log();
    EXPECT_LT(took, 1.5) << "ingestion must stop within about a second of the signal\n" << srv.log();

    // Restarted on the same store: the document was never half-written; its job is queued
    // again and resumes (listed as ingesting, no chunks yet), and the store still takes uploads.
    ServerProcess again;
    ASSERT_TRUE(again.start({"-m", model(), "--memory", store, "--chunk-tokens", "32", "--chunk-overlap", "0", "-t", "1"}, path("ingest2.log")))
        << again.log();
    const json docs = get(again.port(), "/documents").j();
    ASSERT_TRUE(docs.contains("documents")) << docs.dump();
    ASSERT_EQ(docs["documents"].size(), 1u) << docs.dump();
    EXPECT_EQ(docs["documents"][0]["state"], "ingesting") << docs.dump();
    EXPECT_EQ(docs["documents"][0]["chunks"], 0) << docs.dump();
    httplib::Client cli("127.0.0.1", again.port());
    cli.set_read_timeout(60, 0);
    httplib::MultipartFormDataItems small = {{"file", "A short note about tides.", "note.txt", "text/plain"}};
    auto r = cli.Post("/upload", small);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 202) << r->body;
    const auto t1 = Clock::now();
    EXPECT_EQ(again.stop(SIGINT), 0) << again.log();
    EXPECT_LT(seconds_since(t1), 1.5) << again.log();
}

TEST_F(ShutdownTest, ASecondSignalExitsAtOnce) {
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model(), "--shutdown-grace", "60", "-t", "1"}, path("second.log"))) << srv.log();
    const int port = srv.port();
    auto gen = std::async(std::launch::async, [port] {
        return post(port, "/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0, "ignore_eos": true})");
    });
    const auto t_wait = Clock::now();
    while (seconds_since(t_wait) < 30 && get(port, "/v1/kv").j()["sequences"].empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    srv.signal(SIGTERM);  // the generation may go on for its 60 s of grace
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const auto t0 = Clock::now();
    const int code = srv.stop(SIGTERM, std::chrono::seconds(10));
    EXPECT_LT(seconds_since(t0), 2.0) << srv.log();
    EXPECT_EQ(code, 130) << srv.log();
    EXPECT_NE(srv.log().find("second SIGTERM; exiting now"), std::string::npos) << srv.log();
    gen.wait();
}

}  // namespace
}  // namespace kvrag
