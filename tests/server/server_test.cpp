// End-to-end tests of `kvrag serve`: the real binary on synthetic models it writes itself, driven
// over loopback HTTP (cpp-httplib's client and raw sockets). Every wait is bounded.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>
#include <tuple>

#include "server_suite.h"

namespace kvrag {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using testing::get;
using testing::post;
using testing::Reply;
using testing::ServerProcess;

// Polls pred every 10 ms until it holds or `limit` passes.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
}

// name{labels} -> value, from /metrics.
std::map<std::string, double> metrics(int port) {
    std::map<std::string, double> m;
    const Reply r = get(port, "/metrics");
    std::istringstream in(r.body);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        const size_t sp = line.rfind(' ');
        if (sp != std::string::npos) m[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
    }
    return m;
}

json kv_view(int port) { return get(port, "/v1/kv").j(); }

bool kv_idle(int port) {
    const json kv = kv_view(port);
    return kv.is_object() && kv["sequences"].empty() && kv["cache"]["cells_used"] == 0 && kv["cache"]["cells_reserved"] == 0 &&
           kv["requests_running"] == 0;
}

// A streaming request on its own thread. Collects the SSE data payloads; stops reading (closes
// the connection) once `abort` is set.
class Stream {
public:
    Stream(int port, std::string path, json body, httplib::Headers headers = {}) {
        thread_ = std::thread([this, port, path = std::move(path), body = std::move(body), headers = std::move(headers)] {
            httplib::Client cli("127.0.0.1", port);
            cli.set_read_timeout(60);
            httplib::Request req;
            req.method = "POST";
            req.path = path;
            req.headers = headers;
            req.headers.emplace("Content-Type", "application/json");
            req.body = body.dump();
            std::string buf;
            req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
                if (abort.load()) return false;
                buf.append(data, len);
                size_t end;
                while ((end = buf.find("\n\n")) != std::string::npos) {
                    std::string ev = buf.substr(0, end);
                    buf.erase(0, end + 2);
                    std::lock_guard<std::mutex> lock(mu_);
                    if (ev.rfind("data: ", 0) == 0) events_.push_back(ev.substr(6));
                    n_events.store(static_cast<int>(events_.size()));
                }
                return !abort.load();
            };
            auto res = cli.send(req);
            status.store(res ? res->status : 0);
            finished.store(true);
        });
    }
    ~Stream() { join(); }
    void join() {
        if (thread_.joinable()) thread_.join();
    }
    std::vector<std::string> events() {
        std::lock_guard<std::mutex> lock(mu_);
        return events_;
    }
    // Concatenated text of the content chunks.
    std::string text() {
        std::string t;
        for (const auto& e : events()) {
            if (e == "[DONE]") continue;
            const json j = json::parse(e, nullptr, false);
            if (!j.is_object() || !j.contains("choices") || j["choices"].empty()) continue;
            const json& c = j["choices"][0];
            if (c.contains("text")) t += c["text"].get<std::string>();
            if (c.contains("delta") && c["delta"].contains("content")) t += c["delta"]["content"].get<std::string>();
        }
        return t;
    }
    std::string id() {
        for (const auto& e : events()) {
            const json j = json::parse(e, nullptr, false);
            if (j.is_object() && j.contains("id")) return j["id"];
        }
        return "";
    }

    std::atomic<bool> abort{false};
    std::atomic<int> n_events{0};
    std::atomic<int> status{-1};
    std::atomic<bool> finished{false};

private:
    std::thread thread_;
    std::mutex mu_;
    std::vector<std::string> events_;
};

json greedy_completion(const std::string& prompt, int max_tokens) {
    return json{{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true}};
}

// ---------------------------------------------------------------------------------------------
// One shared server for the behaviour tests.

class ServerTest : public testing::ServerSuite<ServerTest> {
protected:
    static void SetUpTestSuite() {
        make_suite_model("kvrag-server-test", "fast.gguf", {"--type", "f32"});
        start_suite_server({"--parallel", "4", "-t", "2", "--max-body", "100000", "--ctx", "2048"}, "main.log");
    }
};

TEST_F(ServerTest, HealthAndModels) {
    const Reply h = get(port(), "/health");
    EXPECT_EQ(h.status, 200);
    EXPECT_EQ(h.j()["status"], "ok");
    const Reply m = get(port(), "/v1/models");
    ASSERT_EQ(m.status, 200) << m.body;
    EXPECT_EQ(m.j()["object"], "list");
    EXPECT_EQ(m.j()["data"][0]["id"], "fast");
    EXPECT_EQ(m.j()["data"][0]["object"], "model");
    EXPECT_EQ(get(port(), "/v1/models/fast").status, 200);
    // Any other name is answered by the served model, as the generation routes answer it (404
    // only under --strict-model-names: ServerLimitsTest.ModelNamesAliasesAndStrictMode).
    const Reply other = get(port(), "/v1/models/gpt-9");
    EXPECT_EQ(other.status, 200) << other.body;
    EXPECT_EQ(other.j()["id"], "fast") << other.body;
}

TEST_F(ServerTest, TokenizeAndDetokenize) {
    const Reply t = post(port(), "/tokenize", R"({"content": "Once upon a time"})");
    ASSERT_EQ(t.status, 200) << t.body;
    const auto ids = t.j()["tokens"].get<std::vector<int32_t>>();
    ASSERT_FALSE(ids.empty());
    const Reply d = post(port(), "/detokenize", json{{"tokens", ids}}.dump());
    ASSERT_EQ(d.status, 200) << d.body;
    EXPECT_EQ(d.j()["content"], "Once upon a time");
    // add_special adds BOS; with_pieces gives each token's text.
    const Reply s = post(port(), "/tokenize", R"({"content": "Once upon a time", "add_special": true, "with_pieces": true})");
    ASSERT_EQ(s.status, 200) << s.body;
    const json pieces = s.j()["tokens"];
    ASSERT_EQ(pieces.size(), ids.size() + 1);
    std::string joined;
    for (size_t i = 1; i < pieces.size(); ++i) {
        EXPECT_EQ(pieces[i]["id"], ids[i - 1]);
        joined += pieces[i]["piece"].get<std::string>();
    }
    EXPECT_NE(joined.find("upon a time"), std::string::npos) << joined;
    for (const auto& [path, body, param] : std::vector<std::tuple<const char*, const char*, const char*>>{
             {"/tokenize", R"({})", "content"},
             {"/tokenize", R"({"content": 5})", "content"},
             {"/tokenize", R"({"content": "x", "add_bos": true})", "add_bos"},
             {"/detokenize", R"({"tokens": [1, 99999999]})", "tokens"},
             {"/detokenize", R"({"tokens": "1 2"})", "tokens"}}) {
        const Reply r = post(port(), path, body);
        EXPECT_EQ(r.status, 400) << path << " " << body << " -> " << r.body;
        EXPECT_EQ(r.j()["error"]["param"], param) << r.body;
    }
}

TEST_F(ServerTest, CorsPreflightAndHeaders) {
    httplib::Client cli("127.0.0.1", port());
    auto pre = cli.Options("/v1/chat/completions", {{"Origin", "http://localhost:3000"},
                                                    {"Access-Control-Request-Method", "POST"},
                                                    {"Access-Control-Request-Headers", "authorization, content-type"}});
    ASSERT_TRUE(pre);
    EXPECT_EQ(pre->status, 204);
    EXPECT_EQ(pre->get_header_value("Access-Control-Allow-Origin"), "*");
    EXPECT_NE(pre->get_header_value("Access-Control-Allow-Methods").find("POST"), std::string::npos);
    EXPECT_EQ(pre->get_header_value("Access-Control-Allow-Headers"), "authorization, content-type");
    auto models = cli.Get("/v1/models", {{"Origin", "http://localhost:3000"}});
    ASSERT_TRUE(models);
    EXPECT_EQ(models->get_header_value("Access-Control-Allow-Origin"), "*");
    // Without an Origin (not a browser) no CORS headers are added.
    auto plain = cli.Get("/v1/models");
    ASSERT_TRUE(plain);
    EXPECT_FALSE(plain->has_header("Access-Control-Allow-Origin"));
}

TEST_F(ServerTest, CompletionAndChatResponseShapes) {
    const Reply c = post(port(), "/v1/completions", greedy_completion("Once upon a time", 8).dump());
    ASSERT_EQ(c.status, 200) << c.body;
    const json cj = c.j();
    EXPECT_EQ(cj["object"], "text_completion");
    EXPECT_EQ(cj["model"], "fast");
    EXPECT_EQ(cj["choices"][0]["finish_reason"], "length");
    EXPECT_TRUE(cj["choices"][0]["text"].is_string());
    EXPECT_EQ(cj["usage"]["completion_tokens"], 8);
    EXPECT_EQ(cj["usage"]["total_tokens"].get<int>(), cj["usage"]["prompt_tokens"].get<int>() + 8);

    json chat{{"model", "fast"},
              {"messages", json::array({json{{"role", "system"}, {"content", "Be brief."}}, json{{"role", "user"}, {"content", "Hello"}}})},
              {"max_tokens", 6},
              {"temperature", 0},
              {"ignore_eos", true}};
    const Reply ch = post(port(), "/v1/chat/completions", chat.dump());
    ASSERT_EQ(ch.status, 200) << ch.body;
    const json chj = ch.j();
    EXPECT_EQ(chj["object"], "chat.completion");
    EXPECT_EQ(chj["choices"][0]["message"]["role"], "assistant");
    EXPECT_TRUE(chj["choices"][0]["message"]["content"].is_string());
    EXPECT_EQ(chj["usage"]["completion_tokens"], 6);

    // A stop string ends the text early with finish_reason "stop" (seeded sampling, so the
    // first generated character is known from a run without stop).
    const std::string text = cj["choices"][0]["text"];
    if (!text.empty()) {
        // The first whole UTF-8 character of the greedy text.
        const unsigned char lead = static_cast<unsigned char>(text[0]);
        const size_t n = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
        json s = greedy_completion("Once upon a time", 8);
        s["stop"] = json::array({text.substr(0, std::min(n, text.size()))});
        const Reply st = post(port(), "/v1/completions", s.dump());
        ASSERT_EQ(st.status, 200) << st.body;
        EXPECT_EQ(st.j()["choices"][0]["finish_reason"], "stop");
        EXPECT_EQ(st.j()["choices"][0]["text"], "");
    }
}

TEST_F(ServerTest, StreamingChunksEndWithUsageAndDone) {
    const json body = greedy_completion("The little dog", 12);
    const Reply whole = post(port(), "/v1/completions", body.dump());
    ASSERT_EQ(whole.status, 200);
    json sb = body;
    sb["stream"] = true;
    Stream s(port(), "/v1/completions", sb);
    s.join();
    EXPECT_EQ(s.status.load(), 200);
    const auto ev = s.events();
    ASSERT_GE(ev.size(), 2u);
    EXPECT_EQ(ev.back(), "[DONE]");
    const json last = json::parse(ev[ev.size() - 2]);
    EXPECT_EQ(last["object"], "text_completion");
    EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(last["usage"]["completion_tokens"], 12);
    EXPECT_EQ(s.text(), whole.j()["choices"][0]["text"].get<std::string>());

    // Chat streaming: the first chunk carries the role, deltas carry content.
    json chat{{"messages", json::array({json{{"role", "user"}, {"content", "Hi"}}})}, {"max_tokens", 5}, {"temperature", 0},
              {"ignore_eos", true}, {"stream", true}};
    Stream c(port(), "/v1/chat/completions", chat);
    c.join();
    const auto cev = c.events();
    ASSERT_GE(cev.size(), 3u);
    const json first = json::parse(cev[0]);
    EXPECT_EQ(first["object"], "chat.completion.chunk");
    EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
    EXPECT_EQ(cev.back(), "[DONE]");
    EXPECT_EQ(json::parse(cev[cev.size() - 2])["usage"]["completion_tokens"], 5);
}

TEST_F(ServerTest, BadInputGetsFourHundredsAndTheServerKeepsServing) {
    struct Case {
        const char* path;
        std::string body;
        int status;
        const char* needle;
    };
    const std::vector<Case> cases = {
        {"/v1/completions", "{not json", 400, "not valid JSON"},
        {"/v1/completions", "[1,2]", 400, "must be a JSON object"},
        {"/v1/completions", "{}", 400, "missing required field 'prompt'"},
        {"/v1/completions", R"({"prompt": 42})", 400, "'prompt' must be"},
        {"/v1/completions", R"({"prompt": "x", "max_tokens": "ten"})", 400, "'max_tokens' must be an integer"},
        {"/v1/completions", R"({"prompt": "x", "max_tokens": -5})", 400, "'max_tokens' -5 must be >= 1"},
        {"/v1/completions", R"({"prompt": "x", "max_tokens": 0})", 400, "must be >= 1"},
        {"/v1/completions", R"({"prompt": "x", "max_tokens": 123456789012345})", 400, "> context 2048"},
        {"/v1/completions", R"({"prompt": "x", "max_tokens": 1e30})", 400, "must be an integer"},
        {"/v1/completions", R"({"prompt": "x", "temperature": 7})", 400, "'temperature' 7 is outside"},
        {"/v1/completions", R"({"prompt": "x", "top_p": "high"})", 400, "'top_p' must be a number"},
        {"/v1/completions", R"({"prompt": "x", "stream": "yes"})", 400, "'stream' must be a boolean"},
        {"/v1/completions", R"({"prompt": "x", "stop": [1]})", 400, "stop[0]"},
        {"/v1/completions", R"({"prompt": "x", "n": 30})", 400, "'n' 30"},
        {"/v1/completions", R"({"prompt": [999999]})", 400, "outside the vocabulary"},
        {"/v1/completions", "{\"prompt\": \"caf\xC3\x28\"}", 400, "not valid UTF-8"},
        {"/v1/completions", "{\"prompt\": \"\xFF\xFE\"}", 400, "not valid UTF-8"},
        {"/v1/completions", R"({"prompt": "\udc00"})", 400, "not valid JSON"},
        {"/v1/chat/completions", R"({"messages": "hi"})", 400, "'messages' must be an array"},
        {"/v1/chat/completions", R"({"messages": []})", 400, "'messages' is empty"},
        {"/v1/chat/completions", R"({"messages": [{"role": "wizard", "content": "x"}]})", 400, "role 'wizard'"},
        {"/v1/chat/completions", R"({"messages": [{"role": "user"}]})", 400, "needs 'content'"},
        {"/v1/embeddings", R"({"input": 7})", 400, "'input' must be"},
        {"/v1/embeddings", R"({"input": "x", "pooling": "max"})", 400, "pooling 'max'"},
        {"/v1/embeddings", R"({"input": ""})", 400, "empty string"},
        {"/v1/nothing", "{}", 404, "no route"},
    };
    for (const Case& c : cases) {
        const Reply r = post(port(), c.path, c.body);
        EXPECT_EQ(r.status, c.status) << c.body << " -> " << r.body;
        const json j = r.j();
        ASSERT_TRUE(j.is_object() && j.contains("error")) << c.body << " -> " << r.body;
        const json& e = j["error"];
        EXPECT_TRUE(e["message"].is_string() && e.contains("type") && e.contains("param") && e.contains("code")) << r.body;
        EXPECT_NE(e["message"].get<std::string>().find(c.needle), std::string::npos) << c.body << " -> " << r.body;
    }
    // Still serving.
    EXPECT_EQ(get(port(), "/health").status, 200);
    EXPECT_EQ(post(port(), "/v1/completions", greedy_completion("still here", 3).dump()).status, 200);
    EXPECT_TRUE(wait_until([&] { return kv_idle(port()); }));
}

TEST_F(ServerTest, PromptThatCanNeverFitGetsFourHundredWithTheNumbers) {
    json body{{"prompt", std::vector<int>(2040, 5)}, {"max_tokens", 100}};
    const Reply r = post(port(), "/v1/completions", body.dump());
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_NE(r.body.find("prompt 2040 tokens + max_tokens 100 = 2140 > context 2048"), std::string::npos) << r.body;
    EXPECT_EQ(r.j()["error"]["code"], "context_length_exceeded");
    const auto m = metrics(port());
    EXPECT_GE(m.at("kvrag_rejections_total{reason=\"never_fits\"}"), 1.0);
}

TEST_F(ServerTest, BodyPastTheLimitGets413) {
    const std::string big = R"({"prompt": ")" + std::string(150000, 'a') + R"("})";
    const Reply r = post(port(), "/v1/completions", big);
    EXPECT_EQ(r.status, 413) << r.body.substr(0, 200);
    EXPECT_NE(r.body.find("exceeds the limit of 100000 bytes"), std::string::npos) << r.body.substr(0, 200);
    EXPECT_EQ(get(port(), "/health").status, 200);
}

TEST_F(ServerTest, ParallelGreedyOutputsEqualSequentialOnes) {
    const std::vector<std::string> prompts = {"Once upon a time", "The cat sat on the", "In a land far away, a", "Hello"};
    const int n_tokens = 96;
    std::vector<std::string> sequential;
    const double steps0 = metrics(port()).at("kvrag_steps_total");
    for (const auto& p : prompts) {
        const Reply r = post(port(), "/v1/completions", greedy_completion(p, n_tokens).dump());
        ASSERT_EQ(r.status, 200) << r.body;
        ASSERT_EQ(r.j()["usage"]["completion_tokens"], n_tokens);
        sequential.push_back(r.j()["choices"][0]["text"]);
    }
    const double steps1 = metrics(port()).at("kvrag_steps_total");
    std::vector<std::string> parallel(prompts.size());
    std::vector<int> status(prompts.size(), 0);
    {
        std::atomic<int> ready{0};
        std::vector<std::thread> threads;
        for (size_t i = 0; i < prompts.size(); ++i) {
            threads.emplace_back([&, i] {
                ready.fetch_add(1);
                while (ready.load() < static_cast<int>(prompts.size())) std::this_thread::yield();
                const Reply r = post(port(), "/v1/completions", greedy_completion(prompts[i], n_tokens).dump());
                status[i] = r.status;
                if (r.status == 200) parallel[i] = r.j()["choices"][0]["text"];
            });
        }
        for (auto& t : threads) t.join();
    }
    const double steps2 = metrics(port()).at("kvrag_steps_total");
    for (size_t i = 0; i < prompts.size(); ++i) {
        EXPECT_EQ(status[i], 200);
        EXPECT_EQ(parallel[i], sequential[i]) << "prompt " << i;
    }
    // They really ran batched: far fewer forward steps than one request after another.
    EXPECT_LT(steps2 - steps1, 0.75 * (steps1 - steps0)) << "sequential " << (steps1 - steps0) << " steps, parallel " << (steps2 - steps1);
    EXPECT_TRUE(wait_until([&] { return kv_idle(port()); }));
}

TEST_F(ServerTest, ClientLeavingMidStreamFreesItsCellsWithinAStep) {
    const auto before = metrics(port());
    json body = greedy_completion("Once upon a time", 2000);
    body["stream"] = true;
    Stream s(port(), "/v1/completions", body);
    ASSERT_TRUE(wait_until([&] { return s.n_events.load() >= 3; })) << "no chunks";
    // While it runs, /v1/kv shows its sequence and /metrics its cells.
    const json kv = kv_view(port());
    ASSERT_EQ(kv["sequences"].size(), 1u) << kv.dump();
    const json& seq = kv["sequences"][0];
    EXPECT_EQ(seq["request_id"], s.id());
    EXPECT_EQ(seq["state"], "decoding");
    EXPECT_GT(seq["tokens"].get<int>(), 3);
    EXPECT_EQ(seq["cells"], seq["tokens"]);
    EXPECT_GE(seq["age_ms"].get<double>(), 0.0);
    EXPECT_GT(metrics(port()).at("kvrag_kv_cells_used"), 0.0);
    EXPECT_EQ(metrics(port()).at("kvrag_requests_running"), 1.0);

    s.abort.store(true);  // the client closes the connection
    s.join();
    EXPECT_TRUE(wait_until([&] { return kv_idle(port()); }, std::chrono::seconds(3))) << kv_view(port()).dump();
    const auto after = metrics(port());
    EXPECT_EQ(after.at("kvrag_kv_cells_used"), 0.0);
    EXPECT_EQ(after.at("kvrag_requests_running"), 0.0);
    EXPECT_EQ(after.at("kvrag_requests_ended_total{outcome=\"cancelled\"}") - before.at("kvrag_requests_ended_total{outcome=\"cancelled\"}"), 1.0);
    // Stopped early: nowhere near its 2000 tokens.
    EXPECT_LT(after.at("kvrag_generated_tokens_total") - before.at("kvrag_generated_tokens_total"), 1500.0);
}

TEST_F(ServerTest, ClientLeavingANonStreamingRequestFreesItsCells) {
    const auto before = metrics(port());
    const std::string body = greedy_completion("Once upon a time", 2000).dump();
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    ASSERT_EQ(send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
    EXPECT_TRUE(wait_until([&] { return metrics(port()).at("kvrag_requests_running") == 1.0; }, std::chrono::seconds(3)));
    close(fd);
    EXPECT_TRUE(wait_until([&] { return kv_idle(port()); }, std::chrono::seconds(3))) << kv_view(port()).dump();
    const auto after = metrics(port());
    EXPECT_EQ(after.at("kvrag_requests_ended_total{outcome=\"cancelled\"}") - before.at("kvrag_requests_ended_total{outcome=\"cancelled\"}"), 1.0);
    EXPECT_LT(after.at("kvrag_generated_tokens_total") - before.at("kvrag_generated_tokens_total"), 1500.0);
}

TEST_F(ServerTest, MetricsArePrometheusText) {
    ASSERT_EQ(post(port(), "/v1/completions", greedy_completion("count me", 4).dump()).status, 200);
    const Reply r = get(port(), "/metrics");
    ASSERT_EQ(r.status, 200);
    EXPECT_NE(r.headers.find("Content-Type")->second.find("text/plain"), std::string::npos);
    const std::regex sample(R"(^([a-z_]+)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.eE+-]+$)");
    const std::regex help(R"(^# HELP ([a-z_]+) .+$)");
    const std::regex type(R"(^# TYPE ([a-z_]+) (gauge|counter)$)");
    std::set<std::string> typed, seen;
    std::istringstream in(r.body);
    std::string line;
    while (std::getline(in, line)) {
        std::smatch m;
        if (std::regex_match(line, m, type)) {
            typed.insert(m[1]);
            if (m[2] == "counter") {
                EXPECT_TRUE(m[1].str().ends_with("_total")) << line;
            }
        } else if (std::regex_match(line, m, sample)) {
            EXPECT_TRUE(typed.count(m[1])) << "sample before its TYPE: " << line;
            seen.insert(m[1]);
        } else {
            EXPECT_TRUE(std::regex_match(line, help)) << "not Prometheus text: " << line;
        }
    }
    for (const char* name : {"kvrag_kv_cells_total", "kvrag_kv_cells_used", "kvrag_kv_cells_cached", "kvrag_kv_cells_free",
                             "kvrag_kv_cells_shared", "kvrag_kv_usage_ratio", "kvrag_prefix_cache_hit_tokens_total",
                             "kvrag_requests_running", "kvrag_requests_queued", "kvrag_prompt_tokens_total",
                             "kvrag_generated_tokens_total", "kvrag_rejections_total", "kvrag_context_shifts_total",
                             "kvrag_context_truncations_total", "kvrag_decode_tokens_per_second"}) {
        EXPECT_TRUE(seen.count(name)) << name;
    }
    const auto m = metrics(port());
    EXPECT_EQ(m.at("kvrag_kv_cells_total"), 2048.0);
    EXPECT_LE(m.at("kvrag_kv_cells_used"), 2048.0 - m.at("kvrag_kv_cells_free"));
    EXPECT_GT(m.at("kvrag_generated_tokens_total"), 0.0);
    EXPECT_GT(m.at("kvrag_decode_tokens_per_second"), 0.0);
    for (const char* reason : {"never_fits", "busy", "timeout"}) {
        EXPECT_TRUE(m.count(std::string("kvrag_rejections_total{reason=\"") + reason + "\"}")) << reason;
    }
}

TEST_F(ServerTest, EmbeddingsAreNormalisedForStringsAndLists) {
    const Reply one = post(port(), "/v1/embeddings", R"({"input": "a small red fox"})");
    ASSERT_EQ(one.status, 200) << one.body;
    const json oj = one.j();
    EXPECT_EQ(oj["object"], "list");
    ASSERT_EQ(oj["data"].size(), 1u);
    const auto v = oj["data"][0]["embedding"].get<std::vector<float>>();
    EXPECT_EQ(v.size(), 64u);
    double norm = 0;
    for (float x : v) norm += static_cast<double>(x) * x;
    EXPECT_NEAR(norm, 1.0, 1e-4);
    EXPECT_GT(oj["usage"]["prompt_tokens"].get<int>(), 0);

    const Reply many = post(port(), "/v1/embeddings", R"({"input": ["a small red fox", "tea"], "model": "fast"})");
    ASSERT_EQ(many.status, 200) << many.body;
    const json mj = many.j();
    ASSERT_EQ(mj["data"].size(), 2u);
    EXPECT_EQ(mj["data"][1]["index"], 1);
    EXPECT_EQ(mj["data"][0]["embedding"].get<std::vector<float>>(), v);  // deterministic
    EXPECT_NE(mj["data"][1]["embedding"].get<std::vector<float>>(), v);

    const Reply last = post(port(), "/v1/embeddings", R"({"input": "a small red fox", "pooling": "last"})");
    ASSERT_EQ(last.status, 200);
    EXPECT_NE(last.j()["data"][0]["embedding"].get<std::vector<float>>(), v);

    // base64: little-endian float32, what the openai clients ask for by default.
    const Reply b64 = post(port(), "/v1/embeddings", R"({"input": "a small red fox", "encoding_format": "base64"})");
    ASSERT_EQ(b64.status, 200);
    EXPECT_EQ(b64.j()["data"][0]["embedding"].get<std::string>().size(), (64u * 4 + 2) / 3 * 4);
    EXPECT_TRUE(wait_until([&] { return kv_idle(port()); }));
}

TEST_F(ServerTest, LogsOneLinePerRequest) {
    ASSERT_EQ(post(port(), "/v1/completions", greedy_completion("log me", 3).dump()).status, 200);
    ASSERT_TRUE(wait_until([&] { return server_->log().find("POST /v1/completions 200 tokens=3 ms=") != std::string::npos; }))
        << server_->log();
    EXPECT_NE(server_->log().find("kv cache: 2048 cells x "), std::string::npos);
}

TEST_F(ServerTest, BenchServerReportsThroughputTtftAndKvUsage) {
    const std::string cmd = std::string(KVRAG_BINARY) + " bench-server --port " + std::to_string(port()) + " --clients 1,2 -n 8 -r 1 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    EXPECT_EQ(pclose(p), 0) << out;
    EXPECT_NE(out.find("C=1: aggregate"), std::string::npos) << out;
    EXPECT_NE(out.find("C=2: aggregate"), std::string::npos) << out;
    EXPECT_NE(out.find("TTFT median"), std::string::npos) << out;
    EXPECT_NE(out.find("errors 0"), std::string::npos) << out;
}

// ---------------------------------------------------------------------------------------------
// Servers with their own limits, on a slower model so a long request really stays running.

class ServerLimitsTest : public testing::ServerSuite<ServerLimitsTest> {
protected:
    static void SetUpTestSuite() {
        make_suite_model("kvrag-server-limits", "slow.gguf", testing::kSlowModelArgs);
    }
};

TEST_F(ServerLimitsTest, FullQueueGets429AndAWaitPastTheQueueTimeoutGets503) {
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model(), "--parallel", "1", "--max-queue", "1", "--queue-timeout", "0.5", "-t", "1"}, path("queue.log")))
        << srv.log();
    const int port = srv.port();
    json long_body = greedy_completion("Once upon a time", 2000);
    long_body["stream"] = true;
    Stream a(port, "/v1/completions", long_body);  // holds the only slot
    ASSERT_TRUE(wait_until([&] { return a.n_events.load() >= 1; })) << srv.log();

    Reply b;
    std::thread tb([&] { b = post(port, "/v1/completions", greedy_completion("second", 4).dump()); });
    ASSERT_TRUE(wait_until([&] { return metrics(port).at("kvrag_requests_queued") == 1.0; }));
    const json kv = kv_view(port);
    ASSERT_EQ(kv["queued"].size(), 1u) << kv.dump();

    const Reply c = post(port, "/v1/completions", greedy_completion("third", 4).dump());
    EXPECT_EQ(c.status, 429) << c.body;
    EXPECT_EQ(c.j()["error"]["code"], "queue_full");
    EXPECT_EQ(c.headers.count("Retry-After"), 1u);

    tb.join();  // B waited past the queue timeout while A held the slot
    EXPECT_EQ(b.status, 503) << b.body;
    EXPECT_NE(b.body.find("queue timeout of 0.5 s"), std::string::npos) << b.body;
    EXPECT_EQ(b.headers.count("Retry-After"), 1u);

    a.abort.store(true);
    a.join();
    EXPECT_TRUE(wait_until([&] { return kv_idle(port); }, std::chrono::seconds(3)));
    const auto m = metrics(port);
    EXPECT_EQ(m.at("kvrag_rejections_total{reason=\"busy\"}"), 1.0);
    EXPECT_EQ(m.at("kvrag_rejections_total{reason=\"timeout\"}"), 1.0);
    // Serving again once the slot is free.
    EXPECT_EQ(post(port, "/v1/completions", greedy_completion("fourth", 2).dump()).status, 200);
    EXPECT_EQ(srv.stop(), 0) << srv.log();
}

// --cors with a list: only listed origins get the header, even on a preflight that needs no
// key; --cors none turns it off.
TEST_F(ServerLimitsTest, CorsOriginsListAndNone) {
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model(), "--cors", "http://a.example, http://b.example", "--api-key", "k", "-t", "1"}, path("cors.log"))) << srv.log();
    httplib::Client cli("127.0.0.1", srv.port());
    auto pre = cli.Options("/v1/models", {{"Origin", "http://b.example"}, {"Access-Control-Request-Method", "GET"}});
    ASSERT_TRUE(pre);
    EXPECT_EQ(pre->status, 204);  // before the API key: browsers send none with a preflight
    EXPECT_EQ(pre->get_header_value("Access-Control-Allow-Origin"), "http://b.example");
    EXPECT_EQ(pre->get_header_value("Vary"), "Origin");
    auto other = cli.Get("/v1/models", {{"Origin", "http://evil.example"}, {"Authorization", "Bearer k"}});
    ASSERT_TRUE(other);
    EXPECT_FALSE(other->has_header("Access-Control-Allow-Origin"));
    EXPECT_EQ(srv.stop(), 0) << srv.log();

    ServerProcess off;
    ASSERT_TRUE(off.start({"-m", model(), "--cors", "none", "-t", "1"}, path("cors-off.log"))) << off.log();
    httplib::Client cli2("127.0.0.1", off.port());
    auto r = cli2.Get("/v1/models", {{"Origin", "http://a.example"}});
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->has_header("Access-Control-Allow-Origin"));
    EXPECT_EQ(off.stop(), 0) << off.log();
}

// One port, one server: a second serve on a taken port fails at start, naming the address,
// instead of sharing the port (SO_REUSEPORT) and splitting the requests.
TEST_F(ServerLimitsTest, SecondServerOnATakenPortFailsAtStart) {
    ServerProcess first;
    ASSERT_TRUE(first.start({"-m", model(), "-t", "1"}, path("port-first.log"))) << first.log();
    const std::string port = std::to_string(first.port());
    ServerProcess second;
    EXPECT_FALSE(second.start({"--port", port, "-m", model(), "-t", "1"}, path("port-second.log"))) << second.log();
    EXPECT_NE(second.start_exit_code(), 0) << second.log();
    EXPECT_NE(second.log().find("cannot listen on 127.0.0.1:" + port), std::string::npos) << second.log();
    EXPECT_EQ(get(first.port(), "/health").status, 200);
    EXPECT_EQ(first.stop(), 0) << first.log();
}

// Model names: any name is answered by the served model (under its own name), --alias adds
// listed names, and --strict-model-names turns unknown names into 404.
TEST_F(ServerLimitsTest, ModelNamesAliasesAndStrictMode) {
    ServerProcess srv;
    // --alias given twice (and once as the model's own id): listed once.
    ASSERT_TRUE(srv.start({"-m", model(), "--alias", "my-llm", "--alias", "my-llm", "--alias", "slow", "-t", "1"}, path("names.log"))) << srv.log();
    const Reply any = post(srv.port(), "/v1/completions", R"({"prompt": "x", "max_tokens": 1, "model": "gpt-4o-mini"})");
    ASSERT_EQ(any.status, 200) << any.body;
    EXPECT_EQ(any.j()["model"], "slow");
    const Reply alias = post(srv.port(), "/v1/completions", R"({"prompt": "x", "max_tokens": 1, "model": "my-llm"})");
    ASSERT_EQ(alias.status, 200) << alias.body;
    EXPECT_EQ(alias.j()["model"], "my-llm");
    const json models = get(srv.port(), "/v1/models").j();
    ASSERT_EQ(models["data"].size(), 2u) << models.dump();
    EXPECT_EQ(models["data"][1]["id"], "my-llm");
    EXPECT_EQ(models["data"][1]["meta"]["alias_of"], "slow");
    // /v1/models/{name}: an alias answers under its own id; any other name as chat answers it,
    // by the served model.
    const Reply by_alias = get(srv.port(), "/v1/models/my-llm");
    ASSERT_EQ(by_alias.status, 200) << by_alias.body;
    EXPECT_EQ(by_alias.j()["id"], "my-llm");
    EXPECT_EQ(by_alias.j()["meta"]["alias_of"], "slow");
    const Reply by_default_name = get(srv.port(), "/v1/models/gpt-4o-mini");
    ASSERT_EQ(by_default_name.status, 200) << by_default_name.body;
    EXPECT_EQ(by_default_name.j()["id"], "slow");
    EXPECT_EQ(srv.stop(), 0) << srv.log();

    ServerProcess strict;
    ASSERT_TRUE(strict.start({"-m", model(), "--strict-model-names", "-t", "1"}, path("strict.log"))) << strict.log();
    const Reply missing = post(strict.port(), "/v1/completions", R"({"prompt": "x", "max_tokens": 1, "model": "gpt-4o-mini"})");
    EXPECT_EQ(missing.status, 404) << missing.body;
    EXPECT_EQ(missing.j()["error"]["code"], "model_not_found");
    EXPECT_EQ(get(strict.port(), "/v1/models/gpt-4o-mini").status, 404);
    EXPECT_EQ(get(strict.port(), "/v1/models/slow").status, 200);
    // /tokenize and /detokenize answer an unknown name as chat does under --strict-model-names.
    const Reply tok = post(strict.port(), "/tokenize", R"({"content": "x", "model": "gpt-4o-mini"})");
    EXPECT_EQ(tok.status, 404) << tok.body;
    EXPECT_EQ(tok.j()["error"]["code"], "model_not_found") << tok.body;
    EXPECT_EQ(post(strict.port(), "/detokenize", R"({"tokens": [5], "model": "gpt-4o-mini"})").status, 404);
    EXPECT_EQ(post(strict.port(), "/tokenize", R"({"content": "x", "model": "slow"})").status, 200);
    EXPECT_EQ(strict.stop(), 0) << strict.log();

    // --cors with something that is not an origin stops the server at start.
    ServerProcess bad;
    EXPECT_FALSE(bad.start({"-m", model(), "--cors", "http://a.example,not an origin", "-t", "1"}, path("cors-bad.log")));
    EXPECT_EQ(bad.start_exit_code(), 1) << bad.log();
    EXPECT_NE(bad.log().find("--cors: 'not an origin' is not an origin"), std::string::npos) << bad.log();
}

// Qwen3's thinking switch per request: off by default (the generation prompt ends with an
// empty think block, which costs prompt tokens), on with chat_template_kwargs.enable_thinking;
// a template without the switch refuses true and names the field.
TEST_F(ServerLimitsTest, ChatTemplateKwargsSwitchQwen3Thinking) {
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model(), "--chat-template", "qwen3", "-t", "1"}, path("qwen3.log"))) << srv.log();
    const std::string msgs = R"("messages": [{"role": "user", "content": "hello there"}], "max_tokens": 1)";
    const auto prompt_tokens = [&](const std::string& extra) {
        const Reply r = post(srv.port(), "/v1/chat/completions", "{" + msgs + extra + "}");
        EXPECT_EQ(r.status, 200) << r.body;
        return r.status == 200 ? r.j()["usage"]["prompt_tokens"].get<int64_t>() : -1;
    };
    const int64_t by_default = prompt_tokens("");
    const int64_t off = prompt_tokens(R"(, "chat_template_kwargs": {"enable_thinking": false})");
    const int64_t on = prompt_tokens(R"(, "chat_template_kwargs": {"enable_thinking": true})");
    EXPECT_EQ(by_default, off);
    EXPECT_GT(off, on);  // "<think>\n\n</think>\n\n" after the assistant header
    const Reply bad = post(srv.port(), "/v1/chat/completions", "{" + msgs + R"(, "chat_template_kwargs": {"foo": 1}})");
    EXPECT_EQ(bad.status, 400) << bad.body;
    EXPECT_EQ(bad.j()["error"]["param"], "chat_template_kwargs.foo");
    EXPECT_EQ(srv.stop(), 0) << srv.log();

    ServerProcess chatml;
    ASSERT_TRUE(chatml.start({"-m", model(), "--chat-template", "chatml", "-t", "1"}, path("chatml.log"))) << chatml.log();
    const Reply refused = post(chatml.port(), "/v1/chat/completions", "{" + msgs + R"(, "chat_template_kwargs": {"enable_thinking": true}})");
    EXPECT_EQ(refused.status, 400) << refused.body;
    EXPECT_EQ(refused.j()["error"]["param"], "chat_template_kwargs.enable_thinking");
    const Reply fine = post(chatml.port(), "/v1/chat/completions", "{" + msgs + R"(, "chat_template_kwargs": {"enable_thinking": false}})");
    EXPECT_EQ(fine.status, 200) << fine.body;
    EXPECT_EQ(chatml.stop(), 0) << chatml.log();
}

TEST_F(ServerLimitsTest, ApiKeyAndPerRequestTimeout) {
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model(), "--api-key", "s3cret", "--timeout", "0.4", "-t", "1"}, path("auth.log"))) << srv.log();
    const int port = srv.port();
    const httplib::Headers good = {{"Authorization", "Bearer s3cret"}};
    // /health is open; everything else needs the key.
    EXPECT_EQ(get(port, "/health").status, 200);
    for (const char* path : {"/v1/models", "/metrics", "/v1/kv"}) {
        const Reply none = get(port, path);
        EXPECT_EQ(none.status, 401) << path;
        EXPECT_EQ(none.j()["error"]["code"], "invalid_api_key") << none.body;
        EXPECT_EQ(get(port, path, {{"Authorization", "Bearer s3cret!"}}).status, 401) << path;
        EXPECT_EQ(get(port, path, {{"Authorization", "Bearer s3cre"}}).status, 401) << path;
        EXPECT_EQ(get(port, path, good).status, 200) << path;
        // The scheme is case-insensitive; a bare key is what Kernel Memory's client sends.
        EXPECT_EQ(get(port, path, {{"Authorization", "bearer s3cret"}}).status, 200) << path;
        EXPECT_EQ(get(port, path, {{"Authorization", "BEARER   s3cret"}}).status, 200) << path;
        EXPECT_EQ(get(port, path, {{"Authorization", "s3cret"}}).status, 200) << path;
        EXPECT_EQ(get(port, path, {{"Authorization", "Basic s3cret"}}).status, 401) << path;
        EXPECT_EQ(get(port, path, {{"Authorization", "bearers3cret"}}).status, 401) << path;
    }
    EXPECT_EQ(post(port, "/v1/completions", greedy_completion("x", 2).dump()).status, 401);

    // A request past --timeout is stopped and its cells freed; the client gets 504.
    const auto t0 = Clock::now();
    const Reply r = post(port, "/v1/completions", greedy_completion("Once upon a time", 2000).dump(), good);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    EXPECT_EQ(r.status, 504) << r.body;
    EXPECT_NE(r.body.find("timed out after 0.4 s"), std::string::npos) << r.body;
    EXPECT_LT(s, 3.0);
    httplib::Client cli("127.0.0.1", port);
    auto kv = cli.Get("/v1/kv", good);
    ASSERT_TRUE(kv);
    const json kj = json::parse(kv->body);
    EXPECT_EQ(kj["cache"]["cells_used"], 0) << kv->body;
    EXPECT_TRUE(kj["sequences"].empty());
    auto mt = cli.Get("/metrics", good);
    ASSERT_TRUE(mt);
    EXPECT_NE(mt->body.find("kvrag_requests_ended_total{outcome=\"timed_out\"} 1"), std::string::npos);
    EXPECT_EQ(srv.stop(), 0) << srv.log();
}

TEST_F(ServerLimitsTest, SigtermEndsRunningStreamsAndExitsZero) {
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model(), "--shutdown-grace", "0.3", "-t", "1"}, path("term.log"))) << srv.log();
    json body = greedy_completion("Once upon a time", 2000);
    body["stream"] = true;
    Stream s(srv.port(), "/v1/completions", body);
    ASSERT_TRUE(wait_until([&] { return s.n_events.load() >= 1; })) << srv.log();
    const auto t0 = Clock::now();
    EXPECT_EQ(srv.stop(SIGTERM), 0) << srv.log();
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 5.0);
    s.join();
    // The stream was cancelled after the grace period: an error event, then [DONE].
    const auto ev = s.events();
    ASSERT_GE(ev.size(), 2u);
    EXPECT_EQ(ev.back(), "[DONE]");
    EXPECT_NE(ev[ev.size() - 2].find("shutting_down"), std::string::npos) << ev[ev.size() - 2];
    EXPECT_NE(srv.log().find("SIGTERM received"), std::string::npos);
    EXPECT_NE(srv.log().find("stopped; kv: total=2048 used=0"), std::string::npos) << srv.log();
}

TEST_F(ServerLimitsTest, UnknownChatTemplateFailsAtStartWithTheKnownNames) {
    ServerProcess srv;
    EXPECT_FALSE(srv.start({"-m", model(), "--chat-template", "klingon"}, path("tmpl.log")));
    const std::string out = srv.log();
    EXPECT_NE(out.find("klingon"), std::string::npos) << out;
    EXPECT_NE(out.find("chatml"), std::string::npos) << out;
}

}  // namespace
}  // namespace kvrag
