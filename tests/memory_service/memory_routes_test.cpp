// The memory HTTP routes in-process: a fake ServerContext over a synthetic engine, a real
// httplib server on a free port, and httplib's client.
#include "memory_service/memory_routes.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "memory/memory_test_util.h"

namespace kvrag::memory {
namespace {

using json = nlohmann::json;

class FakeContext : public server::ServerContext {
public:
    explicit FakeContext(engine::Engine& e) : e_(e) {}
    httplib::Server& http() override { return http_; }
    engine::Engine* engine() override { return &e_; }
    const engine::Embedder* embedding_model() const override { return nullptr; }
    const engine::Embedder* rerank_model() const override { return nullptr; }
    Result<std::vector<std::vector<float>>> embed_texts(std::span<const std::string> texts, const std::function<bool()>&) override {
        std::vector<std::vector<float>> out;
        for (const auto& t : texts) {
            auto v = e_.embed(t, engine::Pooling::mean);
            if (!v) return v.error();
            out.push_back(std::move(*v));
        }
        return out;
    }
    Result<std::vector<float>> rerank(std::string_view, std::span<const std::string>, const std::function<bool()>&) override {
        return Error{Errc::request_model_not_found, "no reranker"};
    }
    const std::string& model_id() const override { return id_; }
    Result<engine::GenerateResult> submit(std::vector<int32_t> prompt, const engine::GenerateOptions& o,
                                          const std::function<bool()>&) override {
        std::lock_guard lk(mu_);
        return e_.generate_tokens(std::move(prompt), o);
    }
    Result<std::vector<float>> embed(std::span<const int32_t> tokens, engine::Pooling p, const std::function<bool()>&) override {
        return e_.embed_tokens(tokens, p);
    }
    Result<std::vector<int32_t>> chat_prompt(std::span<const chat::Message>, std::vector<std::string>*) override {
        return Error{Errc::request_invalid, "unused"};
    }
    std::function<bool()> client_alive(const httplib::Request&) override { return [] { return true; }; }
    void log_tokens(int64_t) override {}

private:
    engine::Engine& e_;
    httplib::Server http_;
    std::string id_ = "synthetic";
    std::mutex mu_;
};

TEST(MemoryHttp, UploadStatusSearchAskListDelete) {
    auto eng = engine::testing::make_engine(engine::testing::load_synthetic("memory-http", 32, 1, 64), 512, 2, 128);
    const auto dir = testing::temp_dir("http");
    FakeContext ctx(*eng);
    memory_service::HttpMemoryConfig cfg;
    cfg.dir = (dir / "store").string();
    cfg.chunking = {64, 8};
    auto ext = memory_service::memory_extension(cfg);
    ext.add_routes(ctx);
    ASSERT_TRUE(ext.on_ready(ctx).ok());
    const int port = ctx.http().bind_to_any_port("127.0.0.1");
    ASSERT_GT(port, 0);
    std::thread th([&] { ctx.http().listen_after_bind(); });
    httplib::Client cli("127.0.0.1", port);
    cli.set_read_timeout(60, 0);

    httplib::MultipartFormDataItems items = {
        {"file1", testing::make_pdf("The Quillback lighthouse was automated in 1962."), "lighthouse.pdf", "application/pdf"},
        {"index", "kb", "", ""},
        {"tags", "team:red", "", ""},
    };
    auto up = cli.Post("/upload", items);
    ASSERT_TRUE(up);
    EXPECT_EQ(up->status, 202) << up->body;  // stored and queued; ingested in the background
    const auto upj = json::parse(up->body);
    EXPECT_EQ(upj["index"], "kb");
    EXPECT_EQ(upj["documentId"], "lighthouse.pdf");

    json stj;
    for (int i = 0; i < 600; ++i) {
        auto st = cli.Get("/upload-status?index=kb&documentId=lighthouse.pdf");
        ASSERT_TRUE(st);
        ASSERT_EQ(st->status, 200) << st->body;
        stj = json::parse(st->body);
        if (stj["completed"].get<bool>() || stj["failed"].get<bool>()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_TRUE(stj["completed"].get<bool>()) << stj.dump();
    EXPECT_EQ(stj["completed_steps"].size(), 4u) << stj.dump();

    httplib::MultipartFormDataItems bad = {{"file", "PK\x03\x04", "x.docx", "application/octet-stream"}};
    auto upb = cli.Post("/upload", bad);
    ASSERT_TRUE(upb);
    EXPECT_EQ(upb->status, 400);
    EXPECT_NE(upb->body.find("E6003"), std::string::npos) << upb->body;

    auto se = cli.Post("/search", json{{"index", "kb"}, {"query", "Quillback lighthouse"}, {"filters", json::array({json{{"team", {"red"}}}})}}.dump(),
                       "application/json");
    ASSERT_TRUE(se);
    ASSERT_EQ(se->status, 200) << se->body;
    const auto sej = json::parse(se->body);
    EXPECT_FALSE(sej["noResult"].get<bool>());
    EXPECT_EQ(sej["results"][0]["documentId"], "lighthouse.pdf");
    EXPECT_NE(sej["results"][0]["partitions"][0]["text"].get<std::string>().find("1962"), std::string::npos);

    auto none = cli.Post("/search", json{{"index", "kb"}, {"query", "x"}, {"filters", json::array({json{{"team", {"blue"}}}})}}.dump(),
                         "application/json");
    EXPECT_TRUE(json::parse(none->body)["noResult"].get<bool>());

    auto ask = cli.Post("/ask", json{{"index", "kb"}, {"question", "When was it automated?"}, {"maxTokens", 4}}.dump(), "application/json");
    ASSERT_TRUE(ask);
    ASSERT_EQ(ask->status, 200) << ask->body;
    const auto askj = json::parse(ask->body);
    EXPECT_FALSE(askj["noResult"].get<bool>());
    EXPECT_EQ(askj["relevantSources"][0]["documentId"], "lighthouse.pdf");
    EXPECT_LE(askj["tokenUsage"][0]["tokenizerTokensIn"].get<int>() + 4, 512);
    EXPECT_EQ(eng->cache().stats().used, 0);

    auto list = cli.Get("/documents?index=kb");
    ASSERT_TRUE(list);
    EXPECT_EQ(json::parse(list->body)["documents"].size(), 1u);
    EXPECT_EQ(json::parse(cli.Get("/documents")->body)["documents"].size(), 1u);  // the binary docx was refused before it was stored
    auto del = cli.Delete("/documents?index=kb&documentId=lighthouse.pdf");
    ASSERT_TRUE(del);
    EXPECT_EQ(del->status, 202) << del->body;
    auto del2 = cli.Delete("/documents?index=kb&documentId=lighthouse.pdf");
    EXPECT_EQ(del2->status, 404);
    auto badjson = cli.Post("/ask", "{not json", "application/json");
    EXPECT_EQ(badjson->status, 400);

    ctx.http().stop();
    th.join();
    std::filesystem::remove_all(dir);
}

// The body limit (4 times the per-file limit) holds while the body streams in, the per-file
// limit after parsing; both answers name the numbers, and no temporary file is left in the
// store's directory (where bodies are streamed) whatever the outcome.
TEST(MemoryHttp, UploadLimitsNameTheNumbersAndLeaveNoTemporaryFile) {
    auto eng = engine::testing::make_engine(engine::testing::load_synthetic("memory-http-limits", 32, 1, 64), 512, 2, 128);
    const auto dir = testing::temp_dir("http-limits");
    FakeContext ctx(*eng);
    memory_service::HttpMemoryConfig cfg;
    cfg.dir = (dir / "store").string();
    cfg.chunking = {64, 8};
    cfg.max_upload_bytes = 4096;  // a body may hold 16384 bytes
    auto ext = memory_service::memory_extension(cfg);
    ext.add_routes(ctx);
    ASSERT_TRUE(ext.on_ready(ctx).ok());
    const int port = ctx.http().bind_to_any_port("127.0.0.1");
    ASSERT_GT(port, 0);
    std::thread th([&] { ctx.http().listen_after_bind(); });
    auto temp_files = [&] {
        int n = 0;
        for (const auto& e : std::filesystem::directory_iterator(cfg.dir)) n += e.path().filename().string().rfind(".kvrag-upload", 0) == 0;
        return n;
    };

    {
        httplib::Client cli("127.0.0.1", port);
        auto r = cli.Post("/upload", httplib::MultipartFormDataItems{{"file", std::string(5000, 'a'), "five.txt", "text/plain"}});
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 413) << r->body;
        EXPECT_NE(r->body.find("'five.txt' is 5000 bytes; the limit is 4096"), std::string::npos) << r->body;
    }
    {
        httplib::Client cli("127.0.0.1", port);
        auto r = cli.Post("/upload", httplib::MultipartFormDataItems{{"file", std::string(40000, 'a'), "big.txt", "text/plain"}});
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 413) << r->body;
        EXPECT_NE(r->body.find("over the limit of 16384 bytes (4 times the per-file limit of 4096 bytes)"), std::string::npos) << r->body;
    }
    {
        httplib::Client cli("127.0.0.1", port);
        auto r = cli.Post("/upload", httplib::MultipartFormDataItems{{"file", "A short note about tides.", "note.txt", "text/plain"}});
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 202) << r->body;
        auto dl = cli.Get("/download?documentId=note.txt&filename=note.txt");
        ASSERT_TRUE(dl);
        EXPECT_EQ(dl->body, "A short note about tides.");  // stored from the streamed body, byte for byte
    }
    EXPECT_EQ(temp_files(), 0);

    ext.on_stop();  // the worker may still be ingesting note.txt
    ctx.http().stop();
    th.join();
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvrag::memory
