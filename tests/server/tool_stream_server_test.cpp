// Tool calls streamed as they are generated, through the real `kvrag serve` on a synthetic
// model with a forced (grammar-constrained) call: the call's first delta comes once its name is
// written, and the arguments follow token by token and add up to the non-streamed answer's.
// (A call cut off mid-answer: tests/chat/tool_call_parser_test.cpp.)
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/server_suite.h"

namespace kvrag {
namespace {

using json = nlohmann::json;
using testing::post;
using testing::Reply;

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

class ToolStreamServerTest : public testing::ServerSuite<ToolStreamServerTest> {
protected:
    static void SetUpTestSuite() {
        make_suite_model("kvrag-tool-stream-test", "tiny.gguf", {"--type", "f32"});
        start_suite_server({"--parallel", "2", "-t", "2", "--chat-template", "chatml"}, "server.log");
    }
};

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

}  // namespace
}  // namespace kvrag
