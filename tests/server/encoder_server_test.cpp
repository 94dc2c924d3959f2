// `kvrag serve` with encoder models beside (or instead of) the chat model: /v1/embeddings from
// the embedding model, /v1/rerank and /rerank from the reranker, /v1/models listing every model
// with its kind, and an encoder-only server. Checked against the reference engine's outputs in
// ../shared/data/oracle/bert-embeddings.json (the tests skip without ../shared).
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "server_process.h"
#include "test_paths.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::get;
using testing::post;
using testing::Reply;
using testing::ServerProcess;

class EncoderServerTest : public ::testing::Test {
protected:
    void SetUp() override {
        KVRAG_SKIP_UNLESS_SHARED(data_.has_value()) << "../shared/data not found (set KVRAG_SHARED_DATA); skipping";
        dir_ = fs::temp_directory_path() / ("kvrag-encoder-server-" + std::to_string(getpid()));
        fs::create_directories(dir_);
        std::ifstream in(*data_ + "/oracle/bert-embeddings.json");
        oracle_ = json::parse(in);
        // A chat model whose width (96) differs from the encoders' (64), so a reply shows
        // which model made it.
        chat_ = (dir_ / "chat.gguf").string();
        ASSERT_EQ(testing::run_kvrag_sync({"make-model", "-o", chat_, "--dim", "96", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--ff", "128"}), 0);
    }
    void TearDown() override {
        if (!dir_.empty()) fs::remove_all(dir_);
    }
    std::string model(const char* name) const { return *data_ + "/models/" + name; }
    std::string log(const char* name) const { return (dir_ / name).string(); }

    std::optional<std::string> data_ = testing::shared_data_dir();
    fs::path dir_;
    json oracle_;
    std::string chat_;
};

double max_abs_diff_or_inf(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return INFINITY;
    double m = 0.0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
    return m;
}

TEST_F(EncoderServerTest, ChatEmbeddingAndRerankModelsSideBySide) {
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", chat_, "--embed-model", model("synth-bert-f32.gguf"), "--rerank-model", model("synth-bert-rerank-f32.gguf"),
                           "-t", "1"},
                          log("three.log")))
        << srv.log();
    const int port = srv.port();

    // Every model is listed with its kind.
    const json models = get(port, "/v1/models").j();
    ASSERT_EQ(models["data"].size(), 3u) << models.dump();
    EXPECT_EQ(models["data"][0]["id"], "chat");
    EXPECT_EQ(models["data"][0]["meta"]["kind"], "chat");
    EXPECT_EQ(models["data"][1]["id"], "synth-bert-f32");
    EXPECT_EQ(models["data"][1]["meta"]["kind"], "embedding");
    EXPECT_EQ(models["data"][2]["id"], "synth-bert-rerank-f32");
    EXPECT_EQ(models["data"][2]["meta"]["kind"], "reranker");
    EXPECT_EQ(get(port, "/v1/models/synth-bert-f32").j()["meta"]["kind"], "embedding");

    // /v1/embeddings: the embedding model, as the reference engine computes it.
    const json& cases = oracle_["synth-bert-f32.gguf"];
    json inputs = json::array();
    for (const auto& c : cases) inputs.push_back(c["text"]);
    const Reply r = post(port, "/v1/embeddings", json{{"input", inputs}}.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const json j = r.j();
    EXPECT_EQ(j["model"], "synth-bert-f32");
    ASSERT_EQ(j["data"].size(), cases.size());
    int64_t want_tokens = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
        const auto got = j["data"][i]["embedding"].get<std::vector<float>>();
        EXPECT_LE(max_abs_diff_or_inf(got, cases[i]["embedding"].get<std::vector<float>>()), 2e-4) << cases[i]["text"];
        want_tokens += static_cast<int64_t>(cases[i]["tokens"].size());
    }
    EXPECT_EQ(j["usage"]["prompt_tokens"], want_tokens);
    // Naming the chat model gets the chat model's embedding (its width).
    const Reply chat = post(port, "/v1/embeddings", R"({"input": "Hello world", "model": "chat"})");
    ASSERT_EQ(chat.status, 200) << chat.body;
    EXPECT_EQ(chat.j()["data"][0]["embedding"].size(), 96u);
    // Pooling may be overridden; rank and none are refused by name.
    EXPECT_EQ(post(port, "/v1/embeddings", R"({"input": "Hello world", "pooling": "cls"})").status, 200);
    const Reply rank = post(port, "/v1/embeddings", R"({"input": "Hello world", "pooling": "rank"})");
    EXPECT_EQ(rank.status, 400) << rank.body;
    EXPECT_EQ(rank.j()["error"]["param"], "pooling");

    // /v1/rerank (and /rerank): the reranker's raw scores, best first.
    json docs = json::array();
    std::vector<double> want;
    std::string query;
    for (const auto& c : oracle_["synth-bert-rerank-f32.gguf"]) {
        if (!c.contains("query")) continue;
        if (query.empty()) query = c["query"];
        if (c["query"] != query) continue;
        docs.push_back(c["document"]);
        want.push_back(c["score"].get<double>());
    }
    ASSERT_GE(docs.size(), 2u);
    for (const char* path : {"/v1/rerank", "/rerank"}) {
        const Reply rr = post(port, path, json{{"model", "synth-bert-rerank-f32"}, {"query", query}, {"documents", docs}, {"return_documents", true}}.dump());
        ASSERT_EQ(rr.status, 200) << rr.body;
        const json res = rr.j()["results"];
        ASSERT_EQ(res.size(), docs.size());
        double prev = INFINITY;
        for (const auto& item : res) {
            const size_t idx = item["index"].get<size_t>();
            ASSERT_LT(idx, want.size());
            EXPECT_NEAR(item["relevance_score"].get<double>(), want[idx], 5e-4) << docs[idx];
            EXPECT_EQ(item["document"]["text"], docs[idx]);
            EXPECT_LE(item["relevance_score"].get<double>(), prev);
            prev = item["relevance_score"].get<double>();
        }
        EXPECT_GT(rr.j()["usage"]["prompt_tokens"].get<int64_t>(), 0);
    }
    const Reply top = post(port, "/v1/rerank", json{{"query", query}, {"documents", docs}, {"top_n", 1}}.dump());
    ASSERT_EQ(top.status, 200) << top.body;
    EXPECT_EQ(top.j()["results"].size(), 1u);
    // Another name falls back to the endpoint's model, which the response names.
    const Reply other = post(port, "/v1/rerank", json{{"model", "rerank-english-v3.0"}, {"query", query}, {"documents", docs}}.dump());
    ASSERT_EQ(other.status, 200) << other.body;
    EXPECT_EQ(other.j()["model"], "synth-bert-rerank-f32");

    // Concurrent embedding requests share the queue (and passes) and all succeed.
    std::vector<std::future<Reply>> many;
    for (int i = 0; i < 8; ++i) {
        many.push_back(std::async(std::launch::async, [port, i] {
            return post(port, "/v1/embeddings", json{{"input", "request number " + std::to_string(i)}}.dump());
        }));
    }
    for (auto& f : many) EXPECT_EQ(f.get().status, 200);
    // Generation still works beside them, and the KV cache is back to empty.
    EXPECT_EQ(post(port, "/v1/completions", R"({"prompt": "Hi", "max_tokens": 2, "temperature": 0})").status, 200);
    EXPECT_EQ(get(port, "/v1/kv").j()["cache"]["cells_used"], 0);
    EXPECT_EQ(srv.stop(), 0) << srv.log();
}

TEST_F(EncoderServerTest, AnEncoderAloneServesItsEndpointsAndRefusesTheOthers) {
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model("synth-nomic-bert-f32.gguf"), "-t", "1"}, log("alone.log"))) << srv.log();
    const int port = srv.port();
    const json models = get(port, "/v1/models").j();
    ASSERT_EQ(models["data"].size(), 1u);
    EXPECT_EQ(models["data"][0]["meta"]["kind"], "embedding");
    const auto& c = oracle_["synth-nomic-bert-f32.gguf"][0];
    const Reply r = post(port, "/v1/embeddings", json{{"input", c["text"]}, {"model", "synth-nomic-bert-f32"}}.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_LE(max_abs_diff_or_inf(r.j()["data"][0]["embedding"].get<std::vector<float>>(), c["embedding"].get<std::vector<float>>()), 2e-4);
    const Reply gen = post(port, "/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}]})");
    EXPECT_EQ(gen.status, 404) << gen.body;
    EXPECT_NE(gen.body.find("no chat model"), std::string::npos) << gen.body;
    const Reply rr = post(port, "/v1/rerank", R"({"query": "q", "documents": ["d"]})");
    EXPECT_EQ(rr.status, 404) << rr.body;
    EXPECT_NE(rr.body.find("--rerank-model"), std::string::npos) << rr.body;
    EXPECT_EQ(get(port, "/v1/kv").status, 200);
    EXPECT_EQ(get(port, "/metrics").status, 200);
    // A text past the model's context (512) is refused with the numbers.
    std::string long_text;
    for (int i = 0; i < 600; ++i) long_text += "word ";
    const Reply too_long = post(port, "/v1/embeddings", json{{"input", long_text}}.dump());
    EXPECT_EQ(too_long.status, 400) << too_long.body;
    EXPECT_NE(too_long.body.find("512"), std::string::npos) << too_long.body;
    EXPECT_EQ(srv.stop(), 0) << srv.log();
}

// serve --memory with an embedding model and a reranker: the index is embedded by the bert
// model (a server without it is refused with the model's name), and search reranks.
TEST_F(EncoderServerTest, MemoryEmbedsWithTheEmbeddingModelAndReranks) {
    const std::string store = (dir_ / "store").string();
    {
        ServerProcess srv;
        ASSERT_TRUE(srv.start({"-m", chat_, "--embed-model", model("synth-bert-f32.gguf"), "--rerank-model", model("synth-bert-rerank-f32.gguf"),
                               "--memory", store, "-t", "1"},
                              log("memory.log")))
            << srv.log();
        httplib::Client cli("127.0.0.1", srv.port());
        cli.set_read_timeout(60, 0);
        httplib::MultipartFormDataItems items = {
            {"file1", "The Quillback lighthouse was automated in 1962 by the coast guard.", "lighthouse.txt", "text/plain"},
            {"file2", "Sourdough starters need flour and water every day.", "bread.txt", "text/plain"},
        };
        auto up = cli.Post("/upload", items);
        ASSERT_TRUE(up);
        ASSERT_EQ(up->status, 202) << up->body;  // queued; the worker embeds through the bert model
        for (const char* id : {"lighthouse.txt", "bread.txt"}) {
            json st;
            for (int i = 0; i < 600; ++i) {
                st = get(srv.port(), std::string("/upload-status?documentId=") + id).j();
                if (st.value("completed", false) || st.value("failed", false)) break;
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
            ASSERT_TRUE(st.value("completed", false)) << st.dump() << srv.log();
        }
        for (bool rerank : {true, false}) {
            auto se = cli.Post("/search", json{{"query", "Quillback lighthouse"}, {"rerank", rerank}}.dump(), "application/json");
            ASSERT_TRUE(se);
            ASSERT_EQ(se->status, 200) << se->body;
            EXPECT_FALSE(json::parse(se->body)["noResult"].get<bool>()) << se->body;
        }
        auto bad = cli.Post("/search", json{{"query", "x"}, {"rerank", "yes"}}.dump(), "application/json");
        ASSERT_TRUE(bad);
        EXPECT_EQ(bad->status, 400) << bad->body;
        auto ask = cli.Post("/ask", json{{"question", "When was the lighthouse automated?"}, {"maxTokens", 4}}.dump(), "application/json");
        ASSERT_TRUE(ask);
        EXPECT_EQ(ask->status, 200) << ask->body;
        EXPECT_EQ(get(srv.port(), "/v1/kv").j()["cache"]["cells_used"], 0);
        EXPECT_EQ(srv.stop(), 0) << srv.log();
    }
    // The index records the embedding model: without it the chat model would mix vectors.
    ServerProcess again;
    ASSERT_TRUE(again.start({"-m", chat_, "--memory", store, "-t", "1"}, log("memory2.log"))) << again.log();
    const Reply se = post(again.port(), "/search", R"({"query": "lighthouse"})");
    EXPECT_NE(se.status, 200) << se.body;
    EXPECT_NE(se.body.find("synth-bert"), std::string::npos) << se.body;
    EXPECT_EQ(again.stop(), 0) << again.log();
}

TEST_F(EncoderServerTest, AModelInTheWrongRoleFailsAtStart) {
    ServerProcess a;
    EXPECT_FALSE(a.start({"-m", chat_, "--embed-model", chat_, "-t", "1"}, log("wrong1.log")));
    EXPECT_NE(a.start_exit_code(), 0);
    EXPECT_NE(a.log().find("--embed-model"), std::string::npos) << a.log();
    EXPECT_NE(a.log().find("chat (decoder) model"), std::string::npos) << a.log();
    ServerProcess b;
    EXPECT_FALSE(b.start({"--embed-model", model("synth-bert-rerank-f32.gguf"), "-t", "1"}, log("wrong2.log")));
    EXPECT_NE(b.log().find("--rerank-model"), std::string::npos) << b.log();
}

}  // namespace
}  // namespace kvrag
