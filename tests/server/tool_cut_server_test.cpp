// A tool call cut off by max_tokens, through the real `kvrag serve` on a synthetic model, in each
// tool format (hermes via chatml, llama3, mistral). The call is forced by the grammar and
// sampled greedily, so every max_tokens K from 1 to the whole call's length less one cuts the
// same answer at its K-th token. What the client gets (docs/server.md, "A call cut off by
// max_tokens"):
//   - finish_reason "length", streamed and not, wherever the cut falls;
//   - non-streamed: a call whose name and arguments were complete stands in tool_calls; a call
//     cut before that is content, exactly the text of the K tokens (nothing dropped, no
//     tool_calls entry with broken JSON);
//   - streamed: the same, except that a call cut inside its arguments was already begun: its
//     deltas (name, arguments so far, a proper beginning of the whole call's) stand, and the
//     final chunk adds nothing to them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/server_process.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::post;
using testing::Reply;
using testing::ServerProcess;

const char* kCutWeatherTool = R"({"type":"function","function":{"name":"get_weather","description":"Weather for a city",
  "parameters":{"type":"object","properties":{"city":{"type":"string","maxLength":12},"days":{"type":"integer","minimum":1,"maximum":7}},
  "required":["city","days"],"additionalProperties":false}}})";

// What a client assembles from a streamed chat completion.
struct CutStream {
    std::string content;
    std::vector<json> calls;  // {id, name, arguments}, by index
    std::string finish;
    int64_t completion_tokens = -1;
    bool done = false;        // "data: [DONE]" came
};

CutStream read_cut_stream(const std::string& body) {
    CutStream a;
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("data: ", 0) != 0) continue;
        if (line == "data: [DONE]") {
            a.done = true;
            continue;
        }
        const json c = json::parse(line.substr(6));
        const json& ch = c["choices"][0];
        const json& d = ch["delta"];
        if (d.contains("content") && d["content"].is_string()) a.content += d["content"].get<std::string>();
        for (const json& t : d.value("tool_calls", json::array())) {
            const size_t i = t["index"];
            if (t.contains("id")) {
                EXPECT_EQ(i, a.calls.size()) << body;
                a.calls.push_back(json{{"id", t["id"]}, {"name", t["function"]["name"]}, {"arguments", t["function"]["arguments"]}});
            } else {
                EXPECT_LT(i, a.calls.size()) << "arguments before the call's first delta: " << body;
                if (i < a.calls.size()) a.calls[i]["arguments"] = a.calls[i]["arguments"].get<std::string>() + t["function"]["arguments"].get<std::string>();
            }
        }
        if (!ch["finish_reason"].is_null()) {
            EXPECT_TRUE(a.finish.empty()) << "two final chunks: " << body;
            a.finish = ch["finish_reason"];
            // The final chunk carries no content and no call: it closes what was sent.
            EXPECT_FALSE(d.contains("tool_calls")) << line;
            EXPECT_TRUE(!d.contains("content") || d["content"] == "") << line;
            a.completion_tokens = c["usage"]["completion_tokens"];
        }
    }
    return a;
}

std::string rtrim(std::string s) {
    while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\t' || s.back() == '\r')) s.pop_back();
    return s;
}

// Text as the server sends it: a cut inside a multi-byte character leaves its first bytes,
// which JSON cannot carry; the server writes them as U+FFFD.
std::string as_sent(std::string raw) {
    size_t lead = raw.size();
    for (size_t back = 1; back <= 3 && back <= raw.size(); ++back) {
        const unsigned char c = static_cast<unsigned char>(raw[raw.size() - back]);
        if ((c & 0xC0) == 0x80) continue;  // a continuation byte
        if (c >= 0xC0) lead = raw.size() - back;
        break;
    }
    if (lead == raw.size()) return raw;
    const unsigned char c = static_cast<unsigned char>(raw[lead]);
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    if (raw.size() - lead >= need) return raw;
    return raw.substr(0, lead) + "\xEF\xBF\xBD";
}

// The generated text, byte for byte, from a chat response's logprobs.
std::string logprob_bytes(const json& choice) {
    std::string out;
    for (const json& e : choice["logprobs"]["content"]) {
        for (const json& b : e["bytes"]) out += static_cast<char>(b.get<int>());
    }
    return out;
}

class ToolCutServerTest : public ::testing::TestWithParam<const char*> {
protected:
    static void SetUpTestSuite() {
        dir_ = new fs::path(fs::temp_directory_path() / ("kvrag-tool-cut-test-" + std::to_string(getpid())));
        fs::create_directories(*dir_);
        ASSERT_EQ(testing::run_kvrag_sync({"make-model", "-o", (*dir_ / "tiny.gguf").string(), "--type", "f32"}), 0);
    }
    static void TearDownTestSuite() {
        fs::remove_all(*dir_);
        delete dir_;
        dir_ = nullptr;
    }
    static fs::path* dir_;
};
fs::path* ToolCutServerTest::dir_ = nullptr;

json cut_request(int64_t max_tokens, bool stream) {
    json body{{"messages", json::array({json{{"role", "user"}, {"content", "Weather in Lyon?"}}})},
              {"max_tokens", max_tokens},
              {"temperature", 0},
              {"tools", json::array({json::parse(kCutWeatherTool)})},
              {"tool_choice", json{{"type", "function"}, {"function", json{{"name", "get_weather"}}}}}};
    if (stream) {
        body["stream"] = true;
    } else {
        body["logprobs"] = true;
    }
    return body;
}

TEST_P(ToolCutServerTest, EveryCutOfAForcedCallEndsWithLengthAndNoBrokenCall) {
    const std::string tmpl = GetParam();
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", (*dir_ / "tiny.gguf").string(), "--parallel", "2", "-t", "1", "--chat-template", tmpl},
                          (*dir_ / ("server-" + tmpl + ".log")).string()))
        << srv.log();

    // The whole call: N tokens, ended by the grammar.
    const Reply w = post(srv.port(), "/v1/chat/completions", cut_request(400, false).dump());
    ASSERT_EQ(w.status, 200) << w.body;
    const json whole = w.j()["choices"][0];
    ASSERT_EQ(whole["finish_reason"], "tool_calls") << w.body;
    // One call (a named function is called once, in Mistral's array too), with valid arguments.
    const json whole_calls = whole["message"]["tool_calls"];
    ASSERT_EQ(whole_calls.size(), 1u) << w.body;
    for (const json& c : whole_calls) ASSERT_TRUE(json::accept(c["function"]["arguments"].get<std::string>())) << w.body;
    const int64_t n = w.j()["usage"]["completion_tokens"];
    const std::string whole_text = logprob_bytes(whole);
    ASSERT_GT(n, 4) << w.body;

    int n_text = 0, n_cut_call = 0, n_whole_call = 0;
    // Every cut of the whole answer, up to a cap: Mistral's array lets greedy decoding write
    // many calls (hundreds of tokens; every cut of them took 136 s under load), and its first
    // 64 tokens already hold the opening and a cut inside the first call's arguments, the
    // cases asserted below; the others' one call ends well before 200.
    // Each cut costs two requests of k tokens, so past the first 48 every 4th is taken, and
    // every one of the last 12 again (where hermes' "</tool_call>" is cut after whole arguments):
    // all cuts cost ~n^2 tokens, 3-4 s alone but minutes beside the rest of the suite.
    const int64_t cap = std::min<int64_t>(n, tmpl == "mistral" ? 64 : 200);
    for (int64_t k = 1; k < cap; k += (k < 48 || k >= cap - 12) ? 1 : 4) {
        const std::string at = tmpl + " max_tokens " + std::to_string(k) + " of " + std::to_string(n);
        const Reply r = post(srv.port(), "/v1/chat/completions", cut_request(k, false).dump());
        ASSERT_EQ(r.status, 200) << at << ": " << r.body;
        const json choice = r.j()["choices"][0];
        EXPECT_EQ(choice["finish_reason"], "length") << at << ": " << r.body;
        EXPECT_EQ(r.j()["usage"]["completion_tokens"], k) << at;
        const std::string text = logprob_bytes(choice);
        ASSERT_EQ(whole_text.compare(0, text.size(), text), 0) << at << ": greedy, so a cut is a prefix of the whole answer";
        const json& msg = choice["message"];
        // Calls in the response are whole: the whole answer's first ones.
        const json calls = msg.value("tool_calls", json::array());
        ASSERT_LE(calls.size(), whole_calls.size()) << at << ": " << r.body;
        for (size_t i = 0; i < calls.size(); ++i) {
            EXPECT_EQ(calls[i]["function"], whole_calls[i]["function"]) << at << ": " << r.body;
            EXPECT_EQ(calls[i]["id"].get<std::string>().rfind("call_", 0), 0u) << at;
        }
        // Content is the text outside them as written, never dropped: with no call, all of
        // the K tokens' text (trimmed); after whole calls, the cut one's text, if any.
        if (calls.empty()) {
            ASSERT_TRUE(msg["content"].is_string()) << at << ": " << r.body;
            EXPECT_EQ(msg["content"].get<std::string>(), as_sent(rtrim(text))) << at << ": " << r.body;
        } else if (!msg["content"].is_null()) {
            const std::string c = msg["content"];
            const std::string t = as_sent(rtrim(text));
            EXPECT_TRUE(!c.empty() && t.size() >= c.size() && t.compare(t.size() - c.size(), c.size(), c) == 0) << at << ": " << r.body;
        }

        const Reply s = post(srv.port(), "/v1/chat/completions", cut_request(k, true).dump());
        ASSERT_EQ(s.status, 200) << at << ": " << s.body;
        const CutStream st = read_cut_stream(s.body);
        EXPECT_TRUE(st.done) << at;
        EXPECT_EQ(st.finish, "length") << at << ": " << s.body;
        EXPECT_EQ(st.completion_tokens, k) << at;
        ASSERT_GE(st.calls.size(), calls.size()) << at << ": " << s.body;
        for (size_t i = 0; i < calls.size(); ++i) {
            EXPECT_EQ(st.calls[i]["name"], calls[i]["function"]["name"]) << at;
            EXPECT_EQ(st.calls[i]["arguments"], calls[i]["function"]["arguments"]) << at;
        }
        if (st.calls.size() == calls.size()) {
            // Cut outside any call's arguments: the stream and the response agree.
            if (calls.empty()) {
                ++n_text;
            } else {
                ++n_whole_call;
            }
            EXPECT_EQ(st.content, msg["content"].is_null() ? "" : msg["content"].get<std::string>()) << at << ": " << s.body;
            continue;
        }
        // Cut inside a call's arguments: the stream had begun it at its name, and its
        // arguments so far are a proper beginning of the whole call's. The response has its
        // text as content instead.
        ++n_cut_call;
        ASSERT_EQ(st.calls.size(), calls.size() + 1) << at << ": " << s.body;
        const json& cut = st.calls.back();
        const json& want = whole_calls[calls.size()]["function"];
        EXPECT_EQ(cut["name"], want["name"]) << at;
        EXPECT_EQ(cut["id"].get<std::string>().rfind("call_", 0), 0u) << at;
        std::string args = cut["arguments"];
        const std::string whole_args = want["arguments"];
        // Cut inside a character: its first bytes went out as U+FFFD (see as_sent).
        if (args.size() >= 3 && args.compare(args.size() - 3, 3, "\xEF\xBF\xBD") == 0 && whole_args.compare(0, args.size(), args) != 0) {
            args.resize(args.size() - 3);
        }
        EXPECT_LT(args.size(), whole_args.size()) << at << ": " << args;
        EXPECT_EQ(whole_args.compare(0, args.size(), args), 0) << at << ": " << args << " is not a beginning of " << whole_args;
        ASSERT_TRUE(msg["content"].is_string()) << at << ": " << r.body;
        EXPECT_NE(msg["content"].get<std::string>().find(want["name"].get<std::string>()), std::string::npos) << at << ": " << r.body;
        const std::string streamed_content = st.content;
        EXPECT_EQ(msg["content"].get<std::string>().compare(0, streamed_content.size(), streamed_content), 0) << at << ": " << s.body;
    }
    // The cuts covered the three cases: in the opening text or name, in the arguments, and
    // (hermes, whose call ends with "</tool_call>") after the arguments.
    EXPECT_GT(n_text, 0) << tmpl;
    EXPECT_GT(n_cut_call, 0) << tmpl;
    if (tmpl == "chatml") {
        EXPECT_GT(n_whole_call, 0) << tmpl;
    }
    EXPECT_EQ(srv.stop(), 0) << srv.log();
}

// The same formats end to end the other way: a forced call, then the call and its result sent
// back (assistant tool_calls, role tool) are rendered into the next prompt, which grows by at
// least the result's tokens.
TEST_P(ToolCutServerTest, ACallAndItsResultGoBackThroughTheTemplate) {
    const std::string tmpl = GetParam();
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", (*dir_ / "tiny.gguf").string(), "-t", "1", "--chat-template", tmpl}, (*dir_ / ("round-" + tmpl + ".log")).string()))
        << srv.log();
    const Reply first = post(srv.port(), "/v1/chat/completions", cut_request(400, false).dump());
    ASSERT_EQ(first.status, 200) << first.body;
    const json call = first.j()["choices"][0]["message"]["tool_calls"][0];
    ASSERT_TRUE(call.is_object()) << first.body;
    const std::string result = R"({"forecast": "light rain over the old harbour", "temp_c": 14, "wind_kmh": 22})";
    const Reply rt = post(srv.port(), "/tokenize", json{{"content", result}}.dump());
    ASSERT_EQ(rt.status, 200) << rt.body;
    const size_t n_result = rt.j()["tokens"].size();

    json msgs = json::array({json{{"role", "user"}, {"content", "Weather in Lyon?"}},
                             json{{"role", "assistant"}, {"content", nullptr}, {"tool_calls", json::array({call})}},
                             json{{"role", "tool"}, {"tool_call_id", call["id"]}, {"content", result}}});
    json back{{"messages", msgs}, {"max_tokens", 4}, {"temperature", 0}, {"tools", json::array({json::parse(kCutWeatherTool)})}};
    const Reply r = post(srv.port(), "/v1/chat/completions", back.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_GE(r.j()["usage"]["prompt_tokens"].get<size_t>(), first.j()["usage"]["prompt_tokens"].get<size_t>() + n_result) << r.body;
    EXPECT_TRUE(r.j()["choices"][0]["message"].contains("content")) << r.body;
    EXPECT_EQ(srv.stop(), 0) << srv.log();
}

// A named tool_choice gives exactly one call in every format, sampled with any seed, streamed
// or not; so does tool_choice required with parallel_tool_calls false (Mistral's array would
// otherwise take several).
TEST_P(ToolCutServerTest, NamedOrNonParallelForcedChoiceGivesOneCall) {
    const std::string tmpl = GetParam();
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", (*dir_ / "tiny.gguf").string(), "--parallel", "2", "-t", "1", "--chat-template", tmpl},
                          (*dir_ / ("one-" + tmpl + ".log")).string()))
        << srv.log();
    for (int seed = 1; seed <= 6; ++seed) {
        for (const bool named : {true, false}) {
            json body = cut_request(300, false);
            body.erase("logprobs");
            body.erase("temperature");
            body["seed"] = seed;
            if (!named) {
                body["tool_choice"] = "required";
                body["parallel_tool_calls"] = false;
            }
            const std::string at = tmpl + " seed " + std::to_string(seed) + (named ? " named" : " required, not parallel");
            const Reply r = post(srv.port(), "/v1/chat/completions", body.dump());
            ASSERT_EQ(r.status, 200) << at << ": " << r.body;
            const json choice = r.j()["choices"][0];
            if (choice["finish_reason"] == "length") continue;  // a cut call is not a call (max_tokens 300)
            EXPECT_EQ(choice["finish_reason"], "tool_calls") << at << ": " << r.body;
            EXPECT_EQ(choice["message"]["tool_calls"].size(), 1u) << at << ": " << r.body;
            body["stream"] = true;
            const Reply s = post(srv.port(), "/v1/chat/completions", body.dump());
            ASSERT_EQ(s.status, 200) << at << ": " << s.body;
            const CutStream a = read_cut_stream(s.body);
            EXPECT_EQ(a.finish, "tool_calls") << at << " (streamed): " << s.body;
            EXPECT_EQ(a.calls.size(), 1u) << at << " (streamed): " << s.body;
        }
    }
    EXPECT_EQ(srv.stop(), 0) << srv.log();
}

INSTANTIATE_TEST_SUITE_P(Formats, ToolCutServerTest, ::testing::Values("chatml", "llama3", "mistral"),
                         [](const ::testing::TestParamInfo<const char*>& p) { return std::string(p.param); });

}  // namespace
}  // namespace kvrag
