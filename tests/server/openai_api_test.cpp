// Unit tests of the OpenAI request parsing and response shapes (no sockets, no model).
#include "server/openai_api.h"

#include <gtest/gtest.h>

#include "sampling/grammar.h"
#include "server/middleware.h"
#include "server/openai_structured.h"
#include "tokenizer/tokenizer.h"

namespace kvrag::server {
namespace {

ApiLimits limits() {
    ApiLimits l;
    l.model_id = "tiny";
    l.model_aliases = {"kvrag-synthetic"};
    l.n_ctx_seq = 512;
    l.default_max_tokens = 100;
    return l;
}

TEST(OpenAiApi, FindsInvalidUtf8) {
    EXPECT_FALSE(find_invalid_utf8("plain ascii"));
    EXPECT_FALSE(find_invalid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
    EXPECT_EQ(find_invalid_utf8("ab\xFF"), 2u);
    EXPECT_EQ(find_invalid_utf8("a\xC3"), 1u);                 // truncated
    EXPECT_EQ(find_invalid_utf8("\xC0\xAF"), 0u);              // overlong
    EXPECT_EQ(find_invalid_utf8("x\xED\xA0\x80"), 1u);         // surrogate
    EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);      // past U+10FFFF
}

// chat_template_kwargs as llama.cpp's and vLLM's servers take it: only enable_thinking.
TEST(OpenAiApi, ChatTemplateKwargsTakeOnlyEnableThinking) {
    const std::string msgs = R"("messages": [{"role": "user", "content": "hi"}])";
    GenerationRequest r;
    ASSERT_FALSE(parse_generation_request(json::parse("{" + msgs + "}"), true, limits(), r));
    EXPECT_FALSE(r.enable_thinking.has_value());
    ASSERT_FALSE(parse_generation_request(json::parse("{" + msgs + R"(, "chat_template_kwargs": {"enable_thinking": true}})"), true, limits(), r));
    EXPECT_EQ(r.enable_thinking, std::optional<bool>(true));
    ASSERT_FALSE(parse_generation_request(json::parse("{" + msgs + R"(, "chat_template_kwargs": {"enable_thinking": false}})"), true, limits(), r));
    EXPECT_EQ(r.enable_thinking, std::optional<bool>(false));
    ASSERT_FALSE(parse_generation_request(json::parse("{" + msgs + R"(, "chat_template_kwargs": {}})"), true, limits(), r));
    EXPECT_FALSE(r.enable_thinking.has_value());

    struct Case {
        std::string body;
        bool chat;
        const char* param;
        const char* needle;
    };
    const std::vector<Case> bad = {
        {"{" + msgs + R"(, "chat_template_kwargs": {"enable_thinking": true, "reasoning_budget": 5}})", true,
         "chat_template_kwargs.reasoning_budget", "is not supported"},
        {"{" + msgs + R"(, "chat_template_kwargs": {"enable_thinking": "yes"}})", true, "chat_template_kwargs.enable_thinking", "must be a boolean"},
        {"{" + msgs + R"(, "chat_template_kwargs": [true]})", true, "chat_template_kwargs", "must be an object"},
        {R"({"prompt": "x", "chat_template_kwargs": {"enable_thinking": true}})", false, "chat_template_kwargs", "chat completions field"},
    };
    for (const auto& c : bad) {
        GenerationRequest g;
        const auto e = parse_generation_request(json::parse(c.body), c.chat, limits(), g);
        ASSERT_TRUE(e.has_value()) << c.body;
        EXPECT_EQ(e->status, 400) << c.body;
        EXPECT_EQ(e->param, c.param) << c.body;
        EXPECT_NE(e->message.find(c.needle), std::string::npos) << e->message;
    }
}

TEST(OpenAiApi, Base64MatchesRfc4648) {
    EXPECT_EQ(base64_encode(""), "");
    EXPECT_EQ(base64_encode("f"), "Zg==");
    EXPECT_EQ(base64_encode("fo"), "Zm8=");
    EXPECT_EQ(base64_encode("foo"), "Zm9v");
    EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
}

TEST(OpenAiApi, ParsesACompletionRequest) {
    json body = json::parse(R"({"model":"tiny","prompt":"hi","max_tokens":7,"temperature":0,"top_p":0.5,"stop":["a","b"],
                               "seed":-1,"stream":true,"presence_penalty":0.5,"ignore_eos":true})");
    GenerationRequest r;
    ASSERT_FALSE(parse_generation_request(body, false, limits(), r));
    EXPECT_EQ(r.prompt_text, "hi");
    EXPECT_EQ(r.max_tokens, 7);
    EXPECT_TRUE(r.stream);
    EXPECT_EQ(r.options.sampling.temperature, 0.0f);
    EXPECT_EQ(r.options.sampling.top_p, 0.5f);
    EXPECT_EQ(r.options.sampling.top_k, 0);
    EXPECT_EQ(r.options.sampling.seed, ~uint64_t{0});
    EXPECT_EQ(r.options.stop, (std::vector<std::string>{"a", "b"}));
    EXPECT_FALSE(r.options.stop_at_eog);
    ASSERT_FALSE(resolve_max_tokens(r, 10, limits()));
    EXPECT_EQ(r.options.max_tokens, 7);
}

TEST(OpenAiApi, PromptFormsAndAliases) {
    GenerationRequest r;
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"prompt":[1,2,3],"model":"kvrag-synthetic"})"), false, limits(), r));
    EXPECT_TRUE(r.has_token_prompt);
    EXPECT_EQ(r.prompt_tokens, (std::vector<int32_t>{1, 2, 3}));
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"prompt":[[4,5]]})"), false, limits(), r));
    EXPECT_EQ(r.prompt_tokens, (std::vector<int32_t>{4, 5}));
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"prompt":["one"]})"), false, limits(), r));
    EXPECT_EQ(r.prompt_text, "one");
    auto e = parse_generation_request(json::parse(R"({"prompt":["one","two"]})"), false, limits(), r);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->param, "prompt");
}

TEST(OpenAiApi, DefaultMaxTokensIsCappedToTheRoomLeft) {
    GenerationRequest r;
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"prompt":"x"})"), false, limits(), r));
    ASSERT_FALSE(resolve_max_tokens(r, 10, limits()));
    EXPECT_EQ(r.options.max_tokens, 100);
    ASSERT_FALSE(resolve_max_tokens(r, 450, limits()));
    EXPECT_EQ(r.options.max_tokens, 62);
    ASSERT_FALSE(resolve_max_tokens(r, 600, limits()));
    EXPECT_EQ(r.options.max_tokens, 1);  // the engine then refuses with the numbers
}

// n choices without max_tokens: the default shrinks so that they fit the cache together (the
// engine reserves prompt + n x max_tokens + n - 1 cells), instead of a 400.
TEST(OpenAiApi, DefaultMaxTokensFitsNChoicesInTheCache) {
    ApiLimits l = limits();
    l.n_ctx_seq = 2048;
    l.default_max_tokens = 256;
    l.n_cache_cells = 2048;
    GenerationRequest r;
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"prompt":"x","n":8})"), false, l, r));
    ASSERT_FALSE(resolve_max_tokens(r, 10, l));
    EXPECT_EQ(r.options.max_tokens, (2048 - 10 - 7) / 8);  // 253: 10 + 8 x 253 + 7 = 2041 cells
    // A given max_tokens is kept (the engine refuses what cannot fit, with the numbers).
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"prompt":"x","n":8,"max_tokens":256})"), false, l, r));
    ASSERT_FALSE(resolve_max_tokens(r, 10, l));
    EXPECT_EQ(r.options.max_tokens, 256);
    // One choice: the plain default; chat's history budget as the default.
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"prompt":"x"})"), false, l, r));
    ASSERT_FALSE(resolve_max_tokens(r, 10, l));
    EXPECT_EQ(r.options.max_tokens, 256);
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"messages":[{"role":"user","content":"x"}],"n":16})"), true, l, r));
    ASSERT_FALSE(resolve_max_tokens(r, 100, l, 512));
    EXPECT_EQ(r.options.max_tokens, (2048 - 100 - 15) / 16);
}

// Streams take n > 1; stream_options.include_usage is read; store false and metadata are
// accepted (nothing is stored), store true refused by name.
TEST(OpenAiApi, StreamOptionsStoreAndMetadata) {
    GenerationRequest r;
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"prompt":"x","n":2,"stream":true})"), false, limits(), r));
    EXPECT_EQ(r.n, 2);
    EXPECT_TRUE(r.stream);
    EXPECT_TRUE(r.include_usage);
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"prompt":"x","stream":true,"stream_options":{"include_usage":false}})"), false, limits(), r));
    EXPECT_FALSE(r.include_usage);
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"prompt":"x","store":false,"metadata":{"k":"v"}})"), false, limits(), r));
    struct Case {
        const char* body;
        const char* param;
    };
    for (const Case& c : {Case{R"({"prompt":"x","store":true})", "store"}, Case{R"({"prompt":"x","store":"no"})", "store"},
                          Case{R"({"prompt":"x","metadata":{"k":1}})", "metadata.k"}, Case{R"({"prompt":"x","metadata":[1]})", "metadata"},
                          Case{R"({"prompt":"x","stream":true,"stream_options":{"include_usage":1}})", "stream_options.include_usage"},
                          Case{R"({"prompt":"x","stream_options":{"include_usage":true}})", "stream_options"}}) {
        auto e = parse_generation_request(json::parse(c.body), false, limits(), r);
        ASSERT_TRUE(e) << c.body;
        EXPECT_EQ(e->param, c.param) << c.body << ": " << e->message;
    }
}

TEST(OpenAiApi, RejectsBadFieldsNamingThem) {
    struct Case {
        const char* body;
        bool chat;
        int status;
        const char* param;
    };
    const Case cases[] = {
        {R"({})", false, 400, "prompt"},
        {R"({"prompt":"x","max_tokens":1.5})", false, 400, "max_tokens"},
        {R"({"prompt":"x","max_tokens":513})", false, 400, "max_tokens"},
        {R"({"prompt":"x","max_completion_tokens":0})", false, 400, "max_completion_tokens"},
        {R"({"prompt":"x","temperature":-1})", false, 400, "temperature"},
        {R"({"prompt":"x","top_p":2})", false, 400, "top_p"},
        {R"({"prompt":"x","seed":"7"})", false, 400, "seed"},
        {R"({"prompt":"x","stop":5})", false, 400, "stop"},
        {R"({"prompt":"x","logprobs":30})", false, 400, "logprobs"},
        {R"({"prompt":"x","logit_bias":{"a":1}})", false, 400, "logit_bias"},
        {R"({"prompt":"x","tool_choice":"auto"})", false, 400, "tool_choice"},
        {R"({"messages":[{"role":"user","content":"x"}],"echo":true})", true, 400, "echo"},
        {R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a b"}}})", true, 400, "response_format"},
        {R"({"prompt":[-1]})", false, 400, "prompt"},
        {R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", true, 400, "messages[0].content[0]"},
        {R"({"messages":[{"role":"tool","content":"x"}]})", true, 400, "messages[0].tool_call_id"},
        {R"({"messages":[{"role":"robot","content":"x"}]})", true, 400, "messages[0].role"},
        {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]})", true, 400, "tools"},
    };
    for (const Case& c : cases) {
        GenerationRequest r;
        auto e = parse_generation_request(json::parse(c.body), c.chat, limits(), r);
        ASSERT_TRUE(e) << c.body;
        EXPECT_EQ(e->status, c.status) << c.body;
        EXPECT_EQ(e->param, c.param) << c.body << ": " << e->message;
        const json j = e->to_json();
        EXPECT_TRUE(j["error"]["message"].is_string());
    }
}

TEST(OpenAiApi, ChatContentParts) {
    GenerationRequest r;
    ASSERT_FALSE(parse_generation_request(
        json::parse(R"({"messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]})"),
        true, limits(), r));
    ASSERT_EQ(r.messages.size(), 3u);
    EXPECT_EQ(r.messages[0].role, "system");
    EXPECT_EQ(r.messages[1].content, "ab");
    EXPECT_EQ(r.messages[2].content, "");
}

TEST(OpenAiApi, BodyErrors) {
    json j;
    EXPECT_NE(parse_body("{\"a\":\"\xFF\"}", j)->message.find("offset 6"), std::string::npos);
    EXPECT_NE(parse_body("{\"a\":", j)->message.find("not valid JSON"), std::string::npos);
    EXPECT_NE(parse_body("3", j)->message.find("got integer"), std::string::npos);
    EXPECT_FALSE(parse_body("{\"a\":1}", j));
}

// Found by tests/fuzz/openai_request_fuzz.cpp: a number too large for a double made the
// message-building re-parse throw out_of_range.406, which parse_body did not catch (the
// server answered 500, the fuzzer aborted).
TEST(OpenAiApi, NumberPastDoubleRangeIsABadRequest) {
    json j;
    for (const char* body : {"{\"max_tokens\": 2.5e400}", "[1, 2.5e400, \"x\", null, {\"a\": [[[]]]}]", "{\"t\": -1e999}"}) {
        const auto e = parse_body(body, j);
        ASSERT_TRUE(e) << body;
        EXPECT_EQ(e->status, 400) << body;
        EXPECT_NE(e->message.find("not valid JSON"), std::string::npos) << e->message;
        EXPECT_NE(e->message.find("number overflow"), std::string::npos) << e->message;
    }
}

TEST(OpenAiApi, ResponseShapes) {
    engine::GenerateResult r;
    r.prompt_tokens = {1, 2, 3};
    r.tokens = {4, 5};
    r.text = "hi";
    r.finish = engine::FinishReason::length;
    const json c = completion_response("chatcmpl-1", 7, "tiny", true, r);
    EXPECT_EQ(c["object"], "chat.completion");
    EXPECT_EQ(c["choices"][0]["message"]["content"], "hi");
    EXPECT_EQ(c["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(c["usage"]["total_tokens"], 5);
    r.finish = engine::FinishReason::stop;
    EXPECT_EQ(completion_response("cmpl-1", 7, "tiny", false, r)["choices"][0]["finish_reason"], "stop");

    const json first = stream_chunk("x", 1, "tiny", true, "", true, nullptr, nullptr);
    EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
    EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
    EXPECT_FALSE(first.contains("usage"));
    const Usage u{3, 2};
    const json last = stream_chunk("x", 1, "tiny", false, "", false, "stop", &u);
    EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(last["usage"]["completion_tokens"], 2);

    const json e = embedding_response("tiny", {{1.0f, 0.0f}}, true, 4);
    EXPECT_EQ(e["data"][0]["embedding"], base64_encode(std::string("\x00\x00\x80\x3f\x00\x00\x00\x00", 8)));
    // Invalid UTF-8 in generated text never throws when serialised.
    EXPECT_NE(dump(json{{"t", std::string("a\xFF")}}).find("\xEF\xBF\xBD"), std::string::npos);
}

TEST(OpenAiApi, AnyModelNameIsAnsweredUnlessStrict) {
    GenerationRequest r;
    ApiLimits l = limits();
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"prompt":"x","model":"gpt-4o-mini"})"), false, l, r));
    EXPECT_EQ(r.model, "");  // answered by the served model, under its own name
    ASSERT_FALSE(parse_generation_request(json::parse(R"({"prompt":"x","model":"kvrag-synthetic"})"), false, l, r));
    EXPECT_EQ(r.model, "kvrag-synthetic");  // an alias stays
    l.strict_model_names = true;
    auto e = parse_generation_request(json::parse(R"({"prompt":"x","model":"gpt-4o-mini"})"), false, l, r);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->status, 404);
    EXPECT_EQ(e->param, "model");
    EXPECT_NE(e->message.find("--strict-model-names"), std::string::npos);
}

// Tool parameters must be an object schema: absent or {} means no arguments (a forced call
// writes "{}"), properties without a type are an object's, any other type is refused naming
// the tool's parameters.
TEST(OpenAiStructured, ToolParametersMustBeAnObjectSchema) {
    const auto parse = [](const std::string& params, GenerationRequest& r) {
        const std::string body = R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f")" +
                                 (params.empty() ? std::string() : ",\"parameters\":" + params) + "}}]}";
        return parse_generation_request(json::parse(body), true, limits(), r, body);
    };
    GenerationRequest r;
    for (const char* none : {"", "{}", "null"}) {
        ASSERT_FALSE(parse(none, r)) << none;
        ASSERT_EQ(r.tools.size(), 1u);
        EXPECT_EQ(json::parse(r.tools[0].parameters), json::parse(R"({"type":"object","properties":{},"additionalProperties":false})")) << none;
    }
    ASSERT_FALSE(parse(R"({"properties":{"a":{"type":"string"}}})", r));
    EXPECT_EQ(json::parse(r.tools[0].parameters)["type"], "object");
    for (const char* bad : {R"({"type":"string"})", R"({"type":"array","items":{}})", R"({"enum":[1]})", R"("x")", "[]"}) {
        auto e = parse(bad, r);
        ASSERT_TRUE(e) << bad;
        EXPECT_EQ(e->param, "tools[0].function.parameters") << bad << ": " << e->message;
    }
}

// A forced call is one call: Mistral's array format takes exactly one element for a named
// function and for parallel_tool_calls false; required with parallel calls allowed takes more.
TEST(OpenAiStructured, ForcedCallGrammarAllowsOneCallUnlessParallelRequired) {
    const std::string body = R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],)";
    const std::string one = R"([{"name":"f","arguments":{}}])";
    const std::string two = R"([{"name":"f","arguments":{}},{"name":"f","arguments":{}}])";
    struct Case {
        const char* choice;
        bool two_ok;
    };
    for (const Case& c : {Case{R"("tool_choice":{"type":"function","function":{"name":"f"}}})", false},
                          Case{R"("tool_choice":{"type":"function","function":{"name":"f"}},"parallel_tool_calls":true})", false},
                          Case{R"("tool_choice":"required","parallel_tool_calls":false})", false}, Case{R"("tool_choice":"required"})", true}}) {
        GenerationRequest r;
        const std::string b = body + c.choice;
        ASSERT_FALSE(parse_generation_request(json::parse(b), true, limits(), r, b)) << b;
        auto g = tool_call_grammar(r, chat::ToolFormat::mistral);
        ASSERT_TRUE(g) << g.error().message;
        sampling::GrammarMatcher m1(*g), m2(*g);
        EXPECT_TRUE(m1.advance(one) && m1.accepting()) << c.choice;
        EXPECT_EQ(m2.advance(two) && m2.accepting(), c.two_ok) << c.choice;
    }
    GenerationRequest r;
    ASSERT_FALSE(parse_generation_request(json::parse(body + R"("parallel_tool_calls":false})"), true, limits(), r));
    EXPECT_FALSE(r.parallel_tool_calls);
}

// text_offset counts characters: a two-byte character split over byte tokens counts once, and
// its second byte's token points at it.
TEST(OpenAiStructured, TextOffsetCountsCharacters) {
    tokenizer::VocabData d;
    d.model = "llama";
    d.tokens = {"<unk>", "<s>", "</s>", "<0xC3>", "<0x86>", "a", "\xE5\xB8\xA6"};
    d.token_types = {2, 3, 3, 6, 6, 1, 1};
    auto tok = tokenizer::Tokenizer::from_vocab_data(d);
    ASSERT_TRUE(tok) << tok.error().message;
    std::vector<sampling::TokenLogprobs> lps;
    for (int32_t id : {6, 3, 4, 5, 6}) lps.push_back(sampling::TokenLogprobs{{id, -1.0f}, {}});  // 带 Æ a 带
    size_t chars = 3;  // an echoed prompt of 3 characters
    const json j = logprobs_json(false, lps, **tok, &chars);
    EXPECT_EQ(j["text_offset"], json::parse("[3, 4, 4, 5, 6]")) << j.dump();
    EXPECT_EQ(chars, 7u);
    EXPECT_EQ(utf8_chars("\xE5\xB8\xA6" "a\xC3\x86"), 3u);
    // A stream's next chunk goes on from there.
    const json next = logprobs_json(false, std::span(lps).first(1), **tok, &chars);
    EXPECT_EQ(next["text_offset"], json::parse("[7]"));
}

TEST(OpenAiStructured, CorsOriginsAreChecked) {
    for (const char* ok : {"*", "null", "http://localhost:3000", "https://a.example", "http://[::1]:8080", "app://x"}) EXPECT_TRUE(valid_cors_origin(ok)) << ok;
    for (const char* bad : {"not an origin", "localhost:3000", "http://", "http://a.example/path", "http://a:port", "://x", "http://a b"}) {
        EXPECT_FALSE(valid_cors_origin(bad)) << bad;
    }
}

}  // namespace
}  // namespace kvrag::server
