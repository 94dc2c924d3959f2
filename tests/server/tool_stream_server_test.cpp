// Tool calls streamed as they are generated, through the real `kvrag serve` on a synthetic
// model with a forced (grammar-constrained) call: the call's first delta comes once its name is
// written, the arguments follow token by token and add up to the non-streamed answer's, and a
// call cut off by max_tokens is sent as far as it got with finish_reason "length".
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chat/tool_call_parser.h"
#include "server/server_process.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::post;
using testing::Reply;
using testing::ServerProcess;

const char* kStreamWeatherTool = R"({"type":"function","function":{"name":"get_weather","description":"Weather for a city",
  "parameters":{"type":"object","properties":{"city":{"type":"string","maxLength":12},"days":{"type":"integer","minimum":1,"maximum":7}},
  "required":["city","days"],"additionalProperties":false}}})";

// What a client reads from a streamed chat completion.
struct StreamedAnswer {
    std::string content;
    std::string name, id, arguments;
    int n_calls = 0;
    int n_argument_deltas = 0;    // deltas with a non-empty arguments fragment
    bool arguments_before_begin = false;
    std::string finish;
};

StreamedAnswer read_stream(const std::string& body) {
    StreamedAnswer a;
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("data: ", 0) != 0 || line == "data: [DONE]") continue;
        const json c = json::parse(line.substr(6));
        const json& ch = c["choices"][0];
        const json& d = ch["delta"];
        if (d.contains("content") && d["content"].is_string()) a.content += d["content"].get<std::string>();
        if (d.contains("tool_calls")) {
            const json& t = d["tool_calls"][0];
            if (t.contains("id")) {
                ++a.n_calls;
                a.id = t["id"];
                a.name = t["function"]["name"];
                EXPECT_EQ(t["function"]["arguments"], "");
            } else if (a.n_calls == 0) {
                a.arguments_before_begin = true;
            } else {
                const std::string frag = t["function"]["arguments"];
                a.arguments += frag;
                a.n_argument_deltas += frag.empty() ? 0 : 1;
            }
        }
        if (!ch["finish_reason"].is_null()) a.finish = ch["finish_reason"];
    }
    return a;
}

class ToolStreamServerTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new fs::path(fs::temp_directory_path() / ("kvrag-tool-stream-test-" + std::to_string(getpid())));
        fs::create_directories(*dir_);
        ASSERT_EQ(testing::run_kvrag_sync({"make-model", "-o", (*dir_ / "tiny.gguf").string(), "--type", "f32"}), 0);
        server_ = new ServerProcess();
        ASSERT_TRUE(server_->start({"-m", (*dir_ / "tiny.gguf").string(), "--parallel", "2", "-t", "2", "--chat-template", "chatml"}, (*dir_ / "server.log").string()))
            << server_->log();
    }
    static void TearDownTestSuite() {
        if (server_) {
            EXPECT_EQ(server_->stop(), 0) << server_->log();
        }
        delete server_;
        server_ = nullptr;
        fs::remove_all(*dir_);
        delete dir_;
    }
    static int port() { return server_->port(); }
    static fs::path* dir_;
    static ServerProcess* server_;
};
fs::path* ToolStreamServerTest::dir_ = nullptr;
ServerProcess* ToolStreamServerTest::server_ = nullptr;

json forced_call(int seed) {
    return json{{"messages", json::array({json{{"role", "user"}, {"content", "Weather in Tromso?"}}})},
                {"max_tokens", 300},
                {"seed", seed},
                {"tools", json::array({json::parse(kStreamWeatherTool)})},
                {"tool_choice", json{{"type", "function"}, {"function", json{{"name", "get_weather"}}}}}};
}

TEST_F(ToolStreamServerTest, ArgumentsStreamTokenByTokenAndMatchTheResponse) {
    for (int seed = 21; seed <= 23; ++seed) {
        json body = forced_call(seed);
        const Reply r = post(port(), "/v1/chat/completions", body.dump());
        ASSERT_EQ(r.status, 200) << r.body;
        const json call = r.j()["choices"][0]["message"]["tool_calls"][0];
        const std::string expected = call["function"]["arguments"];
        ASSERT_TRUE(json::accept(expected)) << expected;

        body["stream"] = true;
        const Reply s = post(port(), "/v1/chat/completions", body.dump());
        ASSERT_EQ(s.status, 200) << s.body;
        const StreamedAnswer a = read_stream(s.body);
        EXPECT_EQ(a.n_calls, 1) << s.body;
        EXPECT_FALSE(a.arguments_before_begin) << s.body;
        EXPECT_EQ(a.name, "get_weather");
        EXPECT_EQ(a.id.rfind("call_", 0), 0u);
        EXPECT_EQ(a.arguments, expected) << s.body;
        EXPECT_EQ(a.content, "") << s.body;
        EXPECT_EQ(a.finish, "tool_calls") << s.body;
        // One delta per token that adds to the arguments: at least one per 4 bytes, as the
        // synthetic model's tokens are short, where the old end-of-answer pieces were 16 bytes.
        EXPECT_GE(a.n_argument_deltas * 4, static_cast<int>(expected.size())) << s.body;
    }
}

TEST_F(ToolStreamServerTest, ACallCutOffByMaxTokensIsSentAsFarAsItGot) {
    // The answer's tokens (from logprobs), to find a max_tokens that ends inside the arguments.
    json body = forced_call(31);
    body["logprobs"] = true;
    const Reply r = post(port(), "/v1/chat/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    std::vector<std::string> pieces;
    for (const auto& t : r.j()["choices"][0]["logprobs"]["content"]) {
        std::string bytes;
        for (const auto& b : t["bytes"]) bytes += static_cast<char>(b.get<int>());
        pieces.push_back(bytes);
    }
    // The first token count at which a streaming parser has begun the call and holds some, but
    // not all, of its arguments.
    const std::vector<chat::ToolFunction> tools = {chat::ToolFunction{"get_weather", "", "{}"}};
    int cut = 0;
    std::string partial;
    for (size_t k = 1; k <= pieces.size() && cut == 0; ++k) {
        chat::ToolCallParser p(chat::ToolFormat::hermes, tools, true);
        std::vector<chat::ToolCallEvent> ev;
        for (size_t i = 0; i < k; ++i) p.feed(pieces[i], ev);
        p.finish(ev);
        chat::ParsedToolCalls parsed;
        chat::collect_tool_call_events(ev, parsed);
        if (p.n_calls() == 1 && !p.calls_complete() && parsed.calls[0].arguments.size() >= 3) {
            cut = static_cast<int>(k);
            partial = parsed.calls[0].arguments;
        }
    }
    ASSERT_GT(cut, 0) << r.body;

    body.erase("logprobs");
    body["max_tokens"] = cut;
    body["stream"] = true;
    const Reply s = post(port(), "/v1/chat/completions", body.dump());
    ASSERT_EQ(s.status, 200) << s.body;
    const StreamedAnswer a = read_stream(s.body);
    EXPECT_EQ(a.n_calls, 1) << s.body;
    EXPECT_EQ(a.name, "get_weather");
    EXPECT_EQ(a.arguments, partial) << s.body;
    EXPECT_EQ(a.finish, "length") << s.body;
    // Not streamed, a cut-off call is no call: the text stays content.
    body.erase("stream");
    const Reply n = post(port(), "/v1/chat/completions", body.dump());
    ASSERT_EQ(n.status, 200) << n.body;
    const json choice = n.j()["choices"][0];
    EXPECT_FALSE(choice["message"].contains("tool_calls")) << n.body;
    EXPECT_NE(choice["message"]["content"].get<std::string>().find("<tool_call>"), std::string::npos) << n.body;
    EXPECT_EQ(choice["finish_reason"], "length");
}

}  // namespace
}  // namespace kvrag
