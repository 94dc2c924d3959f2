// End-to-end tests of structured output, logit_bias, logprobs, echo and tool calls through the
// real `kvrag serve` on a synthetic (random-weights) model: whatever the weights, the grammar
// must hold the answer to the schema, and the fields must have OpenAI's shapes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/server_suite.h"

namespace kvrag {
namespace {

using json = nlohmann::json;
using testing::get;
using testing::post;
using testing::Reply;

// The data payloads of an SSE body, "[DONE]" included.
std::vector<std::string> sse_events(const std::string& body) {
    std::vector<std::string> out;
    std::istringstream in(body);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("data: ", 0) == 0) out.push_back(line.substr(6));
    }
    return out;
}

json user(const std::string& text) { return json::array({json{{"role", "user"}, {"content", text}}}); }

// The schema the tests ask for, and an independent check of it (not the grammar).
const char* kPersonSchema = R"({"type":"object","properties":{"name":{"type":"string","maxLength":10},
  "age":{"type":"integer","minimum":0,"maximum":120},"tags":{"type":"array","items":{"type":"string","maxLength":4},"maxItems":2},
  "kind":{"enum":["a","b"]}},"required":["name","age","kind"],"additionalProperties":false})";

size_t n_chars(const std::string& s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
}

void expect_person(const std::string& text) {
    const json v = json::parse(text, nullptr, false);
    ASSERT_FALSE(v.is_discarded()) << text;
    ASSERT_TRUE(v.is_object()) << text;
    for (const auto& [k, x] : v.items()) EXPECT_TRUE(k == "name" || k == "age" || k == "tags" || k == "kind") << "extra key " << k << " in " << text;
    ASSERT_TRUE(v.contains("name") && v["name"].is_string()) << text;
    EXPECT_LE(n_chars(v["name"].get<std::string>()), 10u) << text;
    ASSERT_TRUE(v.contains("age") && v["age"].is_number_integer()) << text;
    EXPECT_GE(v["age"].get<int64_t>(), 0);
    EXPECT_LE(v["age"].get<int64_t>(), 120);
    ASSERT_TRUE(v.contains("kind")) << text;
    EXPECT_TRUE(v["kind"] == "a" || v["kind"] == "b") << text;
    if (v.contains("tags")) {
        ASSERT_TRUE(v["tags"].is_array()) << text;
        EXPECT_LE(v["tags"].size(), 2u);
        for (const auto& t : v["tags"]) {
            ASSERT_TRUE(t.is_string()) << text;
            EXPECT_LE(n_chars(t.get<std::string>()), 4u) << text;
        }
    }
}

class StructuredServerTest : public testing::ServerSuite<StructuredServerTest> {
protected:
    static void SetUpTestSuite() {
        make_suite_model("kvrag-structured-test", "fast.gguf", {"--type", "f32"});
        start_suite_server({"--parallel", "2", "-t", "2", "--ctx", "4096"}, "server.log");
    }
};

TEST_F(StructuredServerTest, JsonSchemaAnswersValidateForEverySeed) {
    for (int seed = 1; seed <= 4; ++seed) {
        json body{{"messages", user("Who?")},
                  {"max_tokens", 400},
                  {"seed", seed},
                  {"response_format", json{{"type", "json_schema"}, {"json_schema", json{{"name", "person"}, {"strict", true}, {"schema", json::parse(kPersonSchema)}}}}}};
        const Reply r = post(port(), "/v1/chat/completions", body.dump());
        ASSERT_EQ(r.status, 200) << r.body;
        const json j = r.j();
        EXPECT_EQ(j["choices"][0]["finish_reason"], "stop") << r.body;
        expect_person(j["choices"][0]["message"]["content"].get<std::string>());

        // Streamed: the concatenated deltas are the same kind of answer.
        body["stream"] = true;
        const Reply s = post(port(), "/v1/chat/completions", body.dump());
        ASSERT_EQ(s.status, 200) << s.body;
        std::string text;
        std::string finish;
        for (const auto& ev : sse_events(s.body)) {
            if (ev == "[DONE]") continue;
            const json c = json::parse(ev);
            const json& ch = c["choices"][0];
            if (ch["delta"].contains("content")) text += ch["delta"]["content"].get<std::string>();
            if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
        }
        EXPECT_EQ(finish, "stop");
        expect_person(text);
    }
}

TEST_F(StructuredServerTest, JsonObjectOnCompletionsAndBadSchemasRefused) {
    json body{{"prompt", "Data:"}, {"max_tokens", 300}, {"seed", 3}, {"response_format", json{{"type", "json_object"}}}};
    const Reply r = post(port(), "/v1/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const json j = r.j();
    // Any object, so the model may nest without bound: either complete and parsed, or cut by
    // max_tokens ("length").
    if (j["choices"][0]["finish_reason"] == "stop") {
        EXPECT_TRUE(json::parse(j["choices"][0]["text"].get<std::string>()).is_object()) << r.body;
    } else {
        EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
        EXPECT_EQ(j["usage"]["completion_tokens"], 300);
    }
    for (const auto& [rf, want] : std::vector<std::pair<const char*, const char*>>{
             {R"({"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","pattern":"a+"}}})", "keyword 'pattern'"},
             {R"({"type":"json_schema","json_schema":{"schema":{}}})", "json_schema.name"},
             {R"({"type":"xml"})", "not one of text, json_object, json_schema"},
         }) {
        json b{{"messages", user("x")}, {"response_format", json::parse(rf)}};
        const Reply e = post(port(), "/v1/chat/completions", b.dump());
        EXPECT_EQ(e.status, 400) << e.body;
        EXPECT_EQ(e.j()["error"]["param"], "response_format") << e.body;
        EXPECT_NE(e.body.find(want), std::string::npos) << e.body;
    }
}

TEST_F(StructuredServerTest, LogitBiasBansAndForcesTokens) {
    json body{{"prompt", "Once upon a time"}, {"max_tokens", 6}, {"temperature", 0}, {"ignore_eos", true}, {"logprobs", 0}};
    const Reply plain = post(port(), "/v1/completions", body.dump());
    ASSERT_EQ(plain.status, 200) << plain.body;
    const json lp = plain.j()["choices"][0]["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), 6u) << plain.body;

    // Ban every token of the greedy answer's text (ids and pieces from /tokenize): the new
    // greedy answer uses none of those pieces.
    const Reply t = post(port(), "/tokenize", json{{"content", plain.j()["choices"][0]["text"]}, {"with_pieces", true}}.dump());
    ASSERT_EQ(t.status, 200) << t.body;
    json ban = json::object();
    std::set<std::string> banned;
    const json tokenized = t.j();  // a named copy: a range-for over t.j()[...] would iterate a destroyed temporary
    for (const auto& p : tokenized["tokens"]) {
        ban[std::to_string(p["id"].get<int32_t>())] = -100;
        if (p["piece"].is_string()) banned.insert(p["piece"].get<std::string>());
    }
    json banned_body = body;
    banned_body["logit_bias"] = ban;
    const Reply b = post(port(), "/v1/completions", banned_body.dump());
    ASSERT_EQ(b.status, 200) << b.body;
    const json banned_reply = b.j();
    for (const auto& tok : banned_reply["choices"][0]["logprobs"]["tokens"]) EXPECT_EQ(banned.count(tok.get<std::string>()), 0u) << tok << " in " << b.body;

    // +100 on one token: greedy picks it every time.
    const Reply w = post(port(), "/tokenize", json{{"content", "the"}, {"with_pieces", true}}.dump());
    ASSERT_EQ(w.status, 200) << w.body;
    const json first = w.j()["tokens"][0];
    json forced = body;
    forced["logit_bias"] = json{{std::to_string(first["id"].get<int32_t>()), 100}};
    const Reply f = post(port(), "/v1/completions", forced.dump());
    ASSERT_EQ(f.status, 200) << f.body;
    const json forced_reply = f.j();
    for (const auto& tok : forced_reply["choices"][0]["logprobs"]["tokens"]) EXPECT_EQ(tok, first["piece"]) << f.body;

    for (const char* bad : {R"({"x": 1})", R"({"5": 101})", R"({"99999999": 1})"}) {
        json e = body;
        e["logit_bias"] = json::parse(bad);
        const Reply r = post(port(), "/v1/completions", e.dump());
        EXPECT_EQ(r.status, 400) << bad << " -> " << r.body;
    }
}

TEST_F(StructuredServerTest, LogprobsShapesAndValues) {
    // Chat: one entry per generated token, top_logprobs descending, the greedy pick first.
    json body{{"messages", user("Hello")}, {"max_tokens", 8}, {"temperature", 0}, {"ignore_eos", true}, {"logprobs", true}, {"top_logprobs", 3}};
    const Reply r = post(port(), "/v1/chat/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const json j = r.j();
    const json content = j["choices"][0]["logprobs"]["content"];
    ASSERT_EQ(content.size(), j["usage"]["completion_tokens"].get<size_t>()) << r.body;
    for (const auto& e : content) {
        ASSERT_EQ(e["top_logprobs"].size(), 3u);
        EXPECT_LE(e["logprob"].get<double>(), 0.0);
        EXPECT_EQ(e["top_logprobs"][0]["token"], e["token"]);  // greedy = the likeliest
        EXPECT_DOUBLE_EQ(e["top_logprobs"][0]["logprob"].get<double>(), e["logprob"].get<double>());
        double mass = 0.0;
        for (size_t k = 0; k < 3; ++k) {
            if (k > 0) {
                EXPECT_GE(e["top_logprobs"][k - 1]["logprob"].get<double>(), e["top_logprobs"][k]["logprob"].get<double>());
            }
            mass += std::exp(e["top_logprobs"][k]["logprob"].get<double>());
        }
        EXPECT_LE(mass, 1.0 + 1e-5);
        std::string bytes;
        for (const auto& b : e["bytes"]) bytes += static_cast<char>(b.get<int>());
        // token is the bytes as text, or "bytes:\xHH..." when they are not UTF-8 alone.
        const std::string tok = e["token"];
        EXPECT_TRUE(tok == bytes || tok.rfind("bytes:", 0) == 0) << tok;
    }

    // Streamed: the chunks' entries add up to the same tokens and values.
    body["stream"] = true;
    const Reply s = post(port(), "/v1/chat/completions", body.dump());
    ASSERT_EQ(s.status, 200);
    json streamed = json::array();
    for (const auto& ev : sse_events(s.body)) {
        if (ev == "[DONE]") continue;
        const json c = json::parse(ev);
        const json& l = c["choices"][0]["logprobs"];
        if (l.is_object()) {
            for (const auto& e : l["content"]) streamed.push_back(e);
        }
    }
    ASSERT_EQ(streamed.size(), content.size());
    for (size_t i = 0; i < content.size(); ++i) {
        EXPECT_EQ(streamed[i]["token"], content[i]["token"]);
        EXPECT_NEAR(streamed[i]["logprob"].get<double>(), content[i]["logprob"].get<double>(), 1e-3);
        EXPECT_EQ(streamed[i]["top_logprobs"].size(), 3u);
    }

    // Completions: logprobs N.
    json cb{{"prompt", "Hi"}, {"max_tokens", 5}, {"temperature", 0}, {"ignore_eos", true}, {"logprobs", 2}};
    const Reply c = post(port(), "/v1/completions", cb.dump());
    ASSERT_EQ(c.status, 200) << c.body;
    const json cl = c.j()["choices"][0]["logprobs"];
    ASSERT_EQ(cl["tokens"].size(), 5u);
    ASSERT_EQ(cl["token_logprobs"].size(), 5u);
    ASSERT_EQ(cl["top_logprobs"].size(), 5u);
    EXPECT_EQ(cl["top_logprobs"][0].size(), 2u);
    EXPECT_EQ(cl["text_offset"][0], 0);
    // Refused: top_logprobs without logprobs, out of range.
    for (const auto& [path, b, param] : std::vector<std::tuple<const char*, const char*, const char*>>{
             {"/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":2})", "top_logprobs"},
             {"/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21})", "top_logprobs"},
             {"/v1/completions", R"({"prompt":"x","logprobs":30})", "logprobs"},
             {"/v1/completions", R"({"prompt":"x","logprobs":1,"echo":true})", "echo"}}) {
        const Reply e = post(port(), path, b);
        EXPECT_EQ(e.status, 400) << b << " -> " << e.body;
        EXPECT_EQ(e.j()["error"]["param"], param) << e.body;
    }
}

TEST_F(StructuredServerTest, EchoPutsThePromptFirst) {
    json body{{"prompt", "Once upon"}, {"max_tokens", 4}, {"temperature", 0}, {"ignore_eos", true}};
    const Reply plain = post(port(), "/v1/completions", body.dump());
    body["echo"] = true;
    const Reply echoed = post(port(), "/v1/completions", body.dump());
    ASSERT_EQ(echoed.status, 200) << echoed.body;
    EXPECT_EQ(echoed.j()["choices"][0]["text"].get<std::string>(), "Once upon" + plain.j()["choices"][0]["text"].get<std::string>());
    body["stream"] = true;
    const Reply s = post(port(), "/v1/completions", body.dump());
    std::string text;
    for (const auto& ev : sse_events(s.body)) {
        if (ev != "[DONE]") text += json::parse(ev)["choices"][0]["text"].get<std::string>();
    }
    EXPECT_EQ(text, echoed.j()["choices"][0]["text"].get<std::string>());
}

const char* kWeatherTool = R"({"type":"function","function":{"name":"get_weather","description":"Weather for a city",
  "parameters":{"type":"object","properties":{"city":{"type":"string","maxLength":12},"days":{"type":"integer","minimum":1,"maximum":7}},
  "required":["city","days"],"additionalProperties":false}}})";
const char* kTimeTool = R"({"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"zone":{"enum":["UTC","CET"]}},"required":["zone"]}}})";

void expect_weather_args(const std::string& args) {
    const json a = json::parse(args, nullptr, false);
    ASSERT_TRUE(a.is_object()) << args;
    ASSERT_TRUE(a.contains("city") && a["city"].is_string()) << args;
    EXPECT_LE(n_chars(a["city"].get<std::string>()), 12u);
    ASSERT_TRUE(a.contains("days") && a["days"].is_number_integer()) << args;
    EXPECT_GE(a["days"].get<int>(), 1);
    EXPECT_LE(a["days"].get<int>(), 7);
    EXPECT_EQ(a.size(), 2u) << args;
}

TEST_F(StructuredServerTest, RequiredAndNamedToolChoiceForceValidCalls) {
    for (int seed = 1; seed <= 3; ++seed) {
        json body{{"messages", user("Weather in Paris for 3 days?")},
                  {"max_tokens", 300},
                  {"seed", seed},
                  {"tools", json::array({json::parse(kWeatherTool), json::parse(kTimeTool)})},
                  {"tool_choice", json{{"type", "function"}, {"function", json{{"name", "get_weather"}}}}}};
        const Reply r = post(port(), "/v1/chat/completions", body.dump());
        ASSERT_EQ(r.status, 200) << r.body;
        const json choice = r.j()["choices"][0];
        EXPECT_EQ(choice["finish_reason"], "tool_calls") << r.body;
        ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u) << r.body;
        const json call = choice["message"]["tool_calls"][0];
        EXPECT_EQ(call["type"], "function");
        EXPECT_EQ(call["id"].get<std::string>().rfind("call_", 0), 0u);
        EXPECT_EQ(call["function"]["name"], "get_weather");
        expect_weather_args(call["function"]["arguments"].get<std::string>());

        // required: either tool, with valid arguments for the one chosen.
        body["tool_choice"] = "required";
        const Reply q = post(port(), "/v1/chat/completions", body.dump());
        ASSERT_EQ(q.status, 200) << q.body;
        const json qc = q.j()["choices"][0];
        EXPECT_EQ(qc["finish_reason"], "tool_calls") << q.body;
        ASSERT_EQ(qc["message"]["tool_calls"].size(), 1u) << q.body;
        const json f = qc["message"]["tool_calls"][0]["function"];
        if (f["name"] == "get_weather") {
            expect_weather_args(f["arguments"].get<std::string>());
        } else {
            ASSERT_EQ(f["name"], "get_time") << q.body;
            const json a = json::parse(f["arguments"].get<std::string>());
            EXPECT_TRUE(a["zone"] == "UTC" || a["zone"] == "CET") << q.body;
        }
    }
}

TEST_F(StructuredServerTest, ToolCallsStreamAndRoundTrip) {
    json body{{"messages", user("Weather?")},
              {"max_tokens", 300},
              {"seed", 5},
              {"stream", true},
              {"tools", json::array({json::parse(kWeatherTool)})},
              {"tool_choice", "required"}};
    const Reply s = post(port(), "/v1/chat/completions", body.dump());
    ASSERT_EQ(s.status, 200) << s.body;
    // As a client does: the first delta of a call has its id, type and name; the arguments
    // come in several deltas to concatenate.
    json call;
    std::string finish;
    int n_arg_deltas = 0;
    for (const auto& ev : sse_events(s.body)) {
        if (ev == "[DONE]") continue;
        const json c = json::parse(ev);
        const json& ch = c["choices"][0];
        if (ch["delta"].contains("tool_calls")) {
            const json& d = ch["delta"]["tool_calls"][0];
            if (d.contains("id")) {
                EXPECT_TRUE(call.is_null()) << "one call expected: " << s.body;
                call = d;
            } else {
                ASSERT_TRUE(call.is_object()) << "arguments before the call's first delta: " << s.body;
                EXPECT_EQ(d["index"], call["index"]);
                EXPECT_FALSE(d["function"].contains("name"));
                call["function"]["arguments"] = call["function"]["arguments"].get<std::string>() + d["function"]["arguments"].get<std::string>();
                ++n_arg_deltas;
            }
        }
        if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
    }
    EXPECT_EQ(finish, "tool_calls") << s.body;
    ASSERT_TRUE(call.is_object()) << s.body;
    EXPECT_GT(n_arg_deltas, 1) << s.body;
    EXPECT_EQ(call["index"], 0);
    EXPECT_EQ(call["function"]["name"], "get_weather");
    expect_weather_args(call["function"]["arguments"].get<std::string>());

    // The call and its result go back; the model answers (tool_choice none: plain text).
    json msgs = user("Weather?");
    msgs.push_back(json{{"role", "assistant"}, {"content", nullptr}, {"tool_calls", json::array({json{{"id", call["id"]}, {"type", "function"}, {"function", call["function"]}}})}});
    msgs.push_back(json{{"role", "tool"}, {"tool_call_id", call["id"]}, {"content", R"({"temp_c": 21})"}});
    json back{{"messages", msgs}, {"max_tokens", 5}, {"temperature", 0}, {"tools", json::array({json::parse(kWeatherTool)})}, {"tool_choice", "none"}};
    const Reply r = post(port(), "/v1/chat/completions", back.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_TRUE(r.j()["choices"][0]["message"]["content"].is_string()) << r.body;
    // A tool result with no call before it, and a tool_choice naming an unknown function.
    json orphan{{"messages", json::array({json{{"role", "tool"}, {"tool_call_id", "x"}, {"content", "1"}}})}};
    EXPECT_EQ(post(port(), "/v1/chat/completions", orphan.dump()).status, 400);
    json unknown{{"messages", user("x")}, {"tools", json::array({json::parse(kWeatherTool)})}, {"tool_choice", json{{"type", "function"}, {"function", json{{"name", "nope"}}}}}};
    const Reply u = post(port(), "/v1/chat/completions", unknown.dump());
    EXPECT_EQ(u.status, 400);
    EXPECT_EQ(u.j()["error"]["param"], "tool_choice");
}

// The value of an unlabelled Prometheus sample, or -1 when absent.
double metric(const std::string& text, const std::string& name) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
    }
    return -1.0;
}

TEST_F(StructuredServerTest, NChoicesShareThePromptAndAreSeparatelySeededSequences) {
    // A prompt no earlier test sent, long enough for several 16-token prefix blocks.
    std::string prompt = "Choices test " + std::to_string(getpid()) + ":";
    for (int i = 0; i < 12; ++i) prompt += " the quick brown fox";
    json body{{"prompt", prompt}, {"max_tokens", 6}, {"n", 4}, {"seed", 11}, {"ignore_eos", true}, {"logprobs", 1}};
    const double computed_before = metric(get(port(), "/metrics").body, "kvrag_prompt_tokens_total");
    const Reply r = post(port(), "/v1/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const json j = r.j();
    ASSERT_EQ(j["choices"].size(), 4u) << r.body;
    for (size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(j["choices"][i]["index"], i);
        EXPECT_EQ(j["choices"][i]["finish_reason"], "length");
        EXPECT_EQ(j["choices"][i]["logprobs"]["tokens"].size(), 6u);
    }
    EXPECT_EQ(j["usage"]["completion_tokens"], 24);
    // The prompt is computed once: choices 2..4 fork the first's sequence and compute only
    // their last prompt position (for their own first logits).
    const auto n_prompt = j["usage"]["prompt_tokens"].get<int64_t>();
    ASSERT_GT(n_prompt, 100);
    EXPECT_EQ(metric(get(port(), "/metrics").body, "kvrag_prompt_tokens_total") - computed_before, static_cast<double>(n_prompt + 3));
    // Each choice is its own seeded sequence: choice i equals n = 1 with seed 11 + i.
    json one{{"prompt", prompt}, {"max_tokens", 6}, {"seed", 12}, {"ignore_eos", true}};
    const Reply second = post(port(), "/v1/completions", one.dump());
    ASSERT_EQ(second.status, 200);
    EXPECT_EQ(second.j()["choices"][0]["text"], j["choices"][1]["text"]);

    // Streamed: one choice per chunk, each index's text the same as the response's, each index
    // its own finish_reason, usage once (the last chunk), logprobs with their text.
    json streamed = body;
    streamed["stream"] = true;
    const Reply e = post(port(), "/v1/completions", streamed.dump());
    ASSERT_EQ(e.status, 200) << e.body;
    std::vector<std::string> texts(4);
    std::vector<int> n_finish(4, 0), n_lp(4, 0);
    int n_usage = 0;
    const auto events = sse_events(e.body);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back(), "[DONE]");
    for (size_t k = 0; k + 1 < events.size(); ++k) {
        const json c = json::parse(events[k]);
        ASSERT_EQ(c["choices"].size(), 1u) << events[k];
        const size_t i = c["choices"][0]["index"];
        ASSERT_LT(i, 4u) << events[k];
        EXPECT_EQ(n_finish[i], 0) << "a chunk after choice " << i << "'s finish: " << events[k];
        texts[i] += c["choices"][0]["text"].get<std::string>();
        if (c["choices"][0]["logprobs"].is_object()) n_lp[i] += static_cast<int>(c["choices"][0]["logprobs"]["tokens"].size());
        if (!c["choices"][0]["finish_reason"].is_null()) ++n_finish[i];
        if (c.contains("usage") && !c["usage"].is_null()) {
            ++n_usage;
            EXPECT_EQ(k + 2, events.size()) << "usage before the last chunk";
            EXPECT_EQ(c["usage"]["completion_tokens"], 24);
            EXPECT_EQ(c["usage"]["prompt_tokens"], n_prompt);
        }
    }
    EXPECT_EQ(n_usage, 1);
    for (size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(texts[i], j["choices"][i]["text"]) << "choice " << i;
        EXPECT_EQ(n_finish[i], 1) << "choice " << i;
        EXPECT_EQ(n_lp[i], 6) << "choice " << i;
    }
    // stream_options.include_usage false: no usage anywhere.
    streamed["stream_options"] = json{{"include_usage", false}};
    const Reply nu = post(port(), "/v1/completions", streamed.dump());
    ASSERT_EQ(nu.status, 200) << nu.body;
    for (const auto& ev : sse_events(nu.body)) {
        if (ev != "[DONE]") {
            EXPECT_TRUE(!json::parse(ev).contains("usage") || json::parse(ev)["usage"].is_null()) << ev;
        }
    }
    // Chat: each choice starts with its role chunk.
    const Reply chat = post(port(), "/v1/chat/completions",
                            json{{"messages", user("hi")}, {"max_tokens", 3}, {"n", 2}, {"seed", 3}, {"stream", true}}.dump());
    ASSERT_EQ(chat.status, 200) << chat.body;
    std::set<size_t> roles;
    for (const auto& ev : sse_events(chat.body)) {
        if (ev == "[DONE]") continue;
        const json c = json::parse(ev);
        if (c["choices"][0]["delta"].contains("role")) roles.insert(c["choices"][0]["index"].get<size_t>());
    }
    EXPECT_EQ(roles, (std::set<size_t>{0, 1})) << chat.body;
    body["n"] = 17;
    EXPECT_EQ(post(port(), "/v1/completions", body.dump()).status, 400);
}

// n choices without max_tokens: the default answer budget shrinks so that all n fit the cache
// (16 x the default 256 would not fit this 4096-cell cache next to the prompt).
TEST_F(StructuredServerTest, DefaultMaxTokensFitsNChoices) {
    const Reply r = post(port(), "/v1/completions", json{{"prompt", "Once upon a time"}, {"n", 16}, {"seed", 2}, {"ignore_eos", true}}.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const int64_t n_prompt = r.j()["usage"]["prompt_tokens"];
    const int64_t each = (4096 - n_prompt - 15) / 16;
    EXPECT_EQ(r.j()["usage"]["completion_tokens"], 16 * each) << r.body;
}

// Completions continue the prompt: the first token keeps its leading space (" cat" after
// "The"), in the text, the echo, the stream and text_offset, as llama.cpp's server and OpenAI.
TEST_F(StructuredServerTest, CompletionsKeepTheFirstTokensSpace) {
    const Reply t = post(port(), "/tokenize", R"({"content": "cat", "with_pieces": true})");
    ASSERT_EQ(t.status, 200) << t.body;
    const json x = t.j()["tokens"].back();
    ASSERT_EQ(x["piece"], " cat") << t.body;
    json body{{"prompt", "The"}, {"max_tokens", 3}, {"temperature", 0}, {"ignore_eos", true}, {"logprobs", 0},
              {"logit_bias", json{{std::to_string(x["id"].get<int>()), 100}}}};
    const Reply r = post(port(), "/v1/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.j()["choices"][0]["text"], " cat cat cat") << r.body;
    EXPECT_EQ(r.j()["choices"][0]["logprobs"]["text_offset"], json::parse("[0, 4, 8]")) << r.body;
    body["echo"] = true;
    body.erase("logprobs");
    const Reply e = post(port(), "/v1/completions", body.dump());
    ASSERT_EQ(e.status, 200) << e.body;
    EXPECT_EQ(e.j()["choices"][0]["text"], "The cat cat cat") << e.body;
    body["echo"] = false;
    body["stream"] = true;
    const Reply s = post(port(), "/v1/completions", body.dump());
    const auto events = sse_events(s.body);
    ASSERT_GE(events.size(), 2u) << s.body;
    EXPECT_EQ(json::parse(events[0])["choices"][0]["text"], " cat") << s.body;
}

// The bytes of a completions logprobs token ("bytes:\xHH..." when not UTF-8 alone).
std::string token_bytes(const std::string& t) {
    if (t.rfind("bytes:", 0) != 0) return t;
    std::string out;
    for (size_t i = 6; i + 3 < t.size() + 1 && t.compare(i, 2, "\\x") == 0; i += 4) out += static_cast<char>(std::stoi(t.substr(i + 2, 2), nullptr, 16));
    return out;
}

// text_offset counts characters, and a stream sends each token's logprobs in the chunk that
// carries its text, also when its bytes are part of a character held back until complete.
TEST_F(StructuredServerTest, TextOffsetsCountCharactersAndStreamedLogprobsTravelWithTheirText) {
    // The built-in vocabulary spells these characters in byte tokens.
    json body{{"prompt", "Say"}, {"max_tokens", 40}, {"temperature", 0}, {"logprobs", 0}, {"echo", false},
              {"response_format", json::parse(R"({"type":"json_schema","json_schema":{"name":"w","schema":{"enum":["\u00c6\u00c6\u5e26 a"]}}})")}};
    const Reply r = post(port(), "/v1/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const json choice = r.j()["choices"][0];
    const std::string text = choice["text"];
    ASSERT_EQ(text, "\"\u00c6\u00c6\u5e26 a\"") << r.body;
    const json& lp = choice["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), lp["text_offset"].size());
    std::string bytes;
    for (size_t i = 0; i < lp["tokens"].size(); ++i) {
        const std::string b = token_bytes(lp["tokens"][i]);
        ASSERT_FALSE(b.empty()) << r.body;
        // The characters before the token's first byte; inside a character: that character's.
        const size_t before = n_chars(bytes);
        const bool inside = (static_cast<unsigned char>(b[0]) & 0xC0) == 0x80;
        EXPECT_EQ(lp["text_offset"][i].get<size_t>(), inside ? before - 1 : before) << "token " << i << " in " << r.body;
        bytes += b;
    }
    EXPECT_EQ(bytes, text);
    EXPECT_EQ(lp["text_offset"].back(), 6) << r.body;  // the closing quote after "ÆÆ带 a

    body["stream"] = true;
    const Reply s = post(port(), "/v1/completions", body.dump());
    ASSERT_EQ(s.status, 200) << s.body;
    std::string streamed;
    for (const auto& ev : sse_events(s.body)) {
        if (ev == "[DONE]") continue;
        const json c = json::parse(ev)["choices"][0];
        const std::string piece = c["text"];
        std::string piece_bytes;
        if (c["logprobs"].is_object()) {
            for (const auto& tk : c["logprobs"]["tokens"]) piece_bytes += token_bytes(tk);
            // Offsets go on from the chunks before.
            if (!c["logprobs"]["text_offset"].empty()) {
                EXPECT_EQ(c["logprobs"]["text_offset"][0].get<size_t>(), n_chars(streamed)) << ev;
            }
        }
        EXPECT_EQ(piece_bytes, piece) << "a chunk's logprobs are the tokens of its text: " << ev;
        streamed += piece;
    }
    EXPECT_EQ(streamed, text);
}

// The request's stop strings never cut grammar-constrained output into invalid JSON: a match
// counts only where the text before it is complete (docs/grammar.md).
TEST_F(StructuredServerTest, StopStringsDoNotCutStructuredOutput) {
    json body{{"prompt", "Say"}, {"max_tokens", 40}, {"temperature", 0}, {"stop", json::array({" ", "\""})},
              {"response_format", json::parse(R"({"type":"json_schema","json_schema":{"name":"w","schema":{"enum":["a b"]}}})")}};
    const Reply r = post(port(), "/v1/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.j()["choices"][0]["text"], "\"a b\"") << r.body;
    EXPECT_EQ(r.j()["choices"][0]["finish_reason"], "stop") << r.body;
    for (int seed = 1; seed <= 4; ++seed) {
        json p{{"prompt", "Person:"}, {"max_tokens", 200}, {"seed", seed}, {"stop", json::array({"\"", ",", " ", "\n"})},
               {"response_format", json{{"type", "json_schema"}, {"json_schema", json{{"name", "person"}, {"schema", json::parse(kPersonSchema)}}}}}};
        const Reply q = post(port(), "/v1/completions", p.dump());
        ASSERT_EQ(q.status, 200) << q.body;
        if (q.j()["choices"][0]["finish_reason"] == "length") continue;
        expect_person(q.j()["choices"][0]["text"]);
    }
}

// Tool parameters: absent or {} means no arguments, so a forced call writes "{}"; a schema that
// is not an object's is refused naming the tool's parameters.
TEST_F(StructuredServerTest, ToolParametersAreAnObjectSchema) {
    for (int seed = 1; seed <= 3; ++seed) {
        json body{{"messages", user("Ping?")}, {"max_tokens", 100}, {"seed", seed}, {"tool_choice", "required"},
                  {"tools", json::parse(R"([{"type":"function","function":{"name":"ping","parameters":{}}}])")}};
        const Reply r = post(port(), "/v1/chat/completions", body.dump());
        ASSERT_EQ(r.status, 200) << r.body;
        const json choice = r.j()["choices"][0];
        ASSERT_EQ(choice["finish_reason"], "tool_calls") << r.body;
        EXPECT_EQ(choice["message"]["tool_calls"][0]["function"]["arguments"], "{}") << r.body;
    }
    const Reply bad = post(port(), "/v1/chat/completions",
                           json{{"messages", user("x")}, {"tools", json::parse(R"([{"type":"function","function":{"name":"f","parameters":{"type":"string"}}}])")}}.dump());
    EXPECT_EQ(bad.status, 400) << bad.body;
    EXPECT_EQ(bad.j()["error"]["param"], "tools[0].function.parameters") << bad.body;
}

}  // namespace
}  // namespace kvrag
