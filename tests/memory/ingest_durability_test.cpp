// The durable ingestion queue through the real server: every upload answered 202 ends
// completed and searchable exactly once, though the server is killed with SIGKILL in the
// middle of ingesting and restarted; a document deleted while queued never appears.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "memory/memory.h"
#include "memory/memory_test_util.h"
#include "server/server_process.h"

namespace kvrag::memory {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using kvrag::testing::get;
using kvrag::testing::ServerProcess;

constexpr int kDocs = 6;

std::string doc_text(int d) {
    std::string t;
    // Long enough that one document's embedding takes far longer than a status poll and a kill
    // (600 sentences did, until faster kernels made the gap between two jobs a likely moment).
    for (int i = 0; i < 2400; ++i) t += "Keeper " + std::to_string(d) + " logged tide " + std::to_string(i) + " at the rock. ";
    return t + "Marker" + std::to_string(d) + "zq ends the log.";
}

int upload(int port, const std::string& id, const std::string& text) {
    httplib::Client cli("127.0.0.1", port);
    cli.set_read_timeout(30, 0);
    httplib::MultipartFormDataItems items = {{"file", text, id + ".txt", "text/plain"}, {"documentId", id, "", ""}};
    auto r = cli.Post("/upload", items);
    return r ? r->status : 0;
}

json status(int port, const std::string& id) { return get(port, "/upload-status?documentId=" + id).j(); }

TEST(MemoryDurability, KillDuringIngestionThenRestartCompletesEveryAcknowledgedDocumentOnce) {
    const fs::path dir = testing::temp_dir("durable");
    const std::string model = (dir / "m.gguf").string(), store = (dir / "store").string();
    ASSERT_EQ(kvrag::testing::run_kvrag_sync({"make-model", "-o", model, "--type", "q8_0"}), 0);
    const std::vector<std::string> args = {"-m", model, "--memory", store, "--chunk-tokens", "16", "--chunk-overlap", "0", "-t", "1"};

    {
        ServerProcess srv;
        ASSERT_TRUE(srv.start(args, (dir / "first.log").string())) << srv.log();
        for (int d = 0; d < kDocs; ++d) ASSERT_EQ(upload(srv.port(), "doc" + std::to_string(d), doc_text(d)), 202) << srv.log();
        // Queued and deleted before its turn: it must never appear.
        ASSERT_EQ(upload(srv.port(), "deleted", doc_text(99)), 202);
        httplib::Client cli("127.0.0.1", srv.port());
        auto del = cli.Delete("/documents?documentId=deleted");
        ASSERT_TRUE(del);
        EXPECT_EQ(del->status, 202) << del->body;
        // Kill while a document is being embedded: some of its chunks done, it not complete.
        const auto t_wait = Clock::now();
        bool underway = false;
        while (!underway && Clock::now() - t_wait < std::chrono::seconds(30)) {
            for (int d = 0; d < kDocs && !underway; ++d) {
                const json s = status(srv.port(), "doc" + std::to_string(d));
                underway = s.value("chunks_done", 0) > 0 && !s.value("completed", false);
            }
            if (!underway) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        ASSERT_TRUE(underway) << srv.log();
        const json last = status(srv.port(), "doc" + std::to_string(kDocs - 1));
        EXPECT_FALSE(last.value("completed", true)) << "the last document must still be pending when the server is killed: " << last.dump();
        srv.stop(SIGKILL);
    }

    ServerProcess again;
    ASSERT_TRUE(again.start(args, (dir / "second.log").string())) << again.log();
    EXPECT_NE(again.log().find("interrupted ingestion job(s) queued again"), std::string::npos) << again.log();
    const auto t_wait = Clock::now();
    int n_completed = 0;
    while (Clock::now() - t_wait < std::chrono::seconds(60)) {
        n_completed = 0;
        for (int d = 0; d < kDocs; ++d) n_completed += status(again.port(), "doc" + std::to_string(d)).value("completed", false) ? 1 : 0;
        if (n_completed == kDocs) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_EQ(n_completed, kDocs) << again.log();
    for (int d = 0; d < kDocs; ++d) {
        const json s = status(again.port(), "doc" + std::to_string(d));
        EXPECT_EQ(s["completed_steps"].size(), 4u) << s.dump();
        EXPECT_TRUE(s["remaining_steps"].empty()) << s.dump();
        EXPECT_GT(s["chunks"].get<int>(), 1) << s.dump();
        // Searchable: the document's marker finds it.
        const auto r = kvrag::testing::post(again.port(), "/search",
                                            json{{"query", "Marker" + std::to_string(d) + "zq"}, {"limit", 1}}.dump());
        ASSERT_EQ(r.status, 200) << r.body;
        EXPECT_EQ(r.j()["results"][0]["documentId"], "doc" + std::to_string(d)) << r.body;
    }
    EXPECT_EQ(get(again.port(), "/upload-status?documentId=deleted").status, 404);
    EXPECT_EQ(again.stop(SIGINT), 0) << again.log();

    // Exactly once: one row per document, its chunk count equal to the chunks stored, no job left.
    auto st = Store::open(store, OpenMode::existing);
    ASSERT_TRUE(st.ok()) << st.error().what();
    EXPECT_EQ(*(*st)->check_consistency(), "");
    EXPECT_TRUE((*st)->list_jobs()->empty());
    auto docs = (*st)->list_documents();
    ASSERT_EQ(docs->size(), static_cast<size_t>(kDocs));
    int64_t n_chunks = 0;
    for (const auto& d : *docs) {
        EXPECT_EQ(d.state, "ready") << d.doc_id;
        n_chunks += d.n_chunks;
    }
    EXPECT_EQ(static_cast<int64_t>((*(*st)->vectors("default"))->size()), n_chunks);
    fs::remove_all(dir);
}

}  // namespace
}  // namespace kvrag::memory
