// The incremental tool-call parser: scripted answers fed in every split, checked against the
// finished-answer parse, and the points at which it decides (content at once, a call's name
// once complete, its arguments as they grow).
#include "chat/tool_call_parser.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace kvrag::chat {
namespace {

using Kind = ToolCallEvent::Kind;

std::vector<ToolFunction> parser_tools() {
    return {ToolFunction{"get_weather", "", R"({"type":"object"})"}, ToolFunction{"get_time", "", R"({"type":"object"})"}};
}

struct Fed {
    std::vector<ToolCallEvent> events;
    ParsedToolCalls parsed;
    bool complete = false;
    size_t n_calls = 0;
};

// Streams `pieces` through a parser that commits at the name.
Fed stream_pieces(ToolFormat f, const std::vector<std::string>& pieces) {
    const auto tools = parser_tools();
    ToolCallParser p(f, tools, /*commit_at_name=*/true);
    Fed out;
    for (const auto& piece : pieces) p.feed(piece, out.events);
    p.finish(out.events);
    collect_tool_call_events(out.events, out.parsed);
    out.complete = p.calls_complete();
    out.n_calls = p.n_calls();
    return out;
}

std::vector<std::string> bytes_of(const std::string& text) {
    std::vector<std::string> out;
    for (char c : text) out.emplace_back(1, c);
    return out;
}

void expect_same(const ParsedToolCalls& a, const ParsedToolCalls& b, const std::string& what) {
    EXPECT_EQ(a.content, b.content) << what;
    ASSERT_EQ(a.calls.size(), b.calls.size()) << what;
    for (size_t i = 0; i < a.calls.size(); ++i) {
        EXPECT_EQ(a.calls[i].name, b.calls[i].name) << what;
        EXPECT_EQ(a.calls[i].arguments, b.calls[i].arguments) << what;
    }
}

struct Example {
    ToolFormat format;
    std::string text;
    std::string content;                                     // expected content
    std::vector<std::pair<std::string, std::string>> calls;  // expected (name, arguments)
};

std::vector<Example> examples() {
    return {
        {ToolFormat::hermes, "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"days\": [1, 2.5e1]}}\n</tool_call>",
         "Let me look.", {{"get_weather", R"({"city":"Oslo","days":[1,2.5e1]})"}}},
        {ToolFormat::hermes,
         "<tool_call>{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Gr\\u00fc \\\"n\\\" ÿ\"}}</tool_call>\n<tool_call>\n{\"arguments\": {\"zone\": \"UTC\"}, \"name\": \"get_time\"}\n</tool_call> done <tool",
         "done <tool", {{"get_weather", R"({"city":"Gr\u00fc \"n\" ÿ"})"}, {"get_time", R"({"zone":"UTC"})"}}},
        // An unknown function, a name that is not a string, and a tag with no object stay text.
        {ToolFormat::hermes, "a <tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call> b <tool_call>{\"name\": 3}</tool_call> <tool_call>x</tool_call>",
         "a <tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call> b <tool_call>{\"name\": 3}</tool_call> <tool_call>x</tool_call>", {}},
        // String arguments are the arguments text; no arguments key is "{}"; numbers end objects.
        {ToolFormat::hermes, "<tool_call>{\"name\": \"get_time\", \"arguments\": \"{\\\"zone\\\": \\\"CET\\\"}\"}</tool_call><tool_call>{\"name\": \"get_time\"}</tool_call><tool_call>{\"name\": \"get_weather\", \"arguments\": 12}</tool_call>",
         "", {{"get_time", R"({"zone": "CET"})"}, {"get_time", "{}"}, {"get_weather", "12"}}},
        {ToolFormat::llama3, " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\", \"ok\": true, \"n\": null}} ", "",
         {{"get_weather", R"({"city":"Rome","ok":true,"n":null})"}}},
        {ToolFormat::llama3, "<|python_tag|>{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}, \"id\": 7}", "", {{"get_time", R"({"zone":"UTC"})"}}},
        {ToolFormat::llama3, "It is sunny.\n", "It is sunny.", {}},
        {ToolFormat::llama3, "{\"answer\": 42}", "{\"answer\": 42}", {}},
        {ToolFormat::mistral, "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}}, {\"name\": \"get_time\", \"arguments\": {}}]", "",
         {{"get_weather", R"({"city":"Bern"})"}, {"get_time", "{}"}}},
        {ToolFormat::mistral, "[{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}]", "", {{"get_time", R"({"zone":"UTC"})"}}},
        {ToolFormat::mistral, "[TOOL_CAT] no", "[TOOL_CAT] no", {}},
        {ToolFormat::mistral, "[1, 2]", "[1, 2]", {}},
    };
}

TEST(ToolCallParser, EverySplitGivesTheSameAnswerAsTheFinishedParse) {
    for (const Example& ex : examples()) {
        const ParsedToolCalls whole = parse_tool_calls(ex.format, ex.text, parser_tools());
        EXPECT_EQ(whole.content, ex.content) << ex.text;
        ASSERT_EQ(whole.calls.size(), ex.calls.size()) << ex.text;
        for (size_t i = 0; i < ex.calls.size(); ++i) {
            EXPECT_EQ(whole.calls[i].name, ex.calls[i].first) << ex.text;
            EXPECT_EQ(whole.calls[i].arguments, ex.calls[i].second) << ex.text;
        }
        // Streamed in one piece, byte by byte, and split in two at every byte boundary.
        const Fed one = stream_pieces(ex.format, {ex.text});
        expect_same(one.parsed, whole, "one piece: " + ex.text);
        EXPECT_TRUE(one.complete) << ex.text;
        EXPECT_EQ(one.n_calls, ex.calls.size()) << ex.text;
        expect_same(stream_pieces(ex.format, bytes_of(ex.text)).parsed, whole, "byte by byte: " + ex.text);
        for (size_t cut = 1; cut < ex.text.size(); ++cut) {
            const Fed two = stream_pieces(ex.format, {ex.text.substr(0, cut), ex.text.substr(cut)});
            expect_same(two.parsed, whole, "split at " + std::to_string(cut) + ": " + ex.text);
            // Each call's first event is its begin; a call's arguments never come before it.
            size_t begun = 0;
            for (const auto& e : two.events) {
                if (e.kind == Kind::call_begin) {
                    EXPECT_EQ(e.index, begun++);
                } else if (e.kind == Kind::call_arguments) {
                    EXPECT_LT(e.index, begun);
                }
            }
        }
    }
}

// Feeds `text` byte by byte and returns the events after each byte.
std::vector<std::vector<ToolCallEvent>> per_byte(const std::string& text, ToolCallParser& p) {
    std::vector<std::vector<ToolCallEvent>> out;
    for (char c : text) {
        out.emplace_back();
        p.feed(std::string_view(&c, 1), out.back());
    }
    return out;
}

TEST(ToolCallParser, DecidesAsEarlyAsItSafelyCan) {
    const auto tools = parser_tools();
    const std::string text = "Sure: <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
    ToolCallParser p(ToolFormat::hermes, tools, true);
    const auto ev = per_byte(text, p);
    // Content goes out as soon as it cannot begin the tag: "Sure:" at once, the space and the
    // "<tool_call" prefix held.
    ASSERT_EQ(ev[0].size(), 1u);
    EXPECT_EQ(ev[0][0].kind, Kind::content);
    EXPECT_EQ(ev[0][0].text, "S");
    for (size_t i = 5; i < text.find('{'); ++i) EXPECT_TRUE(ev[i].empty()) << "byte " << i;
    // The call begins on the byte that completes its name, not before.
    const size_t name_end = text.find("get_weather") + std::string("get_weather").size();
    for (size_t i = 0; i < name_end; ++i) {
        for (const auto& e : ev[i]) EXPECT_NE(e.kind, Kind::call_begin) << "byte " << i;
    }
    ASSERT_EQ(ev[name_end].size(), 1u);
    EXPECT_EQ(ev[name_end][0].kind, Kind::call_begin);
    EXPECT_EQ(ev[name_end][0].text, "get_weather");
    // The arguments stream as they are written: after "{\"city\": \"Os" they are {"city":"Os.
    std::string args;
    const size_t os_end = text.find("\"Os") + 3;
    for (size_t i = 0; i < os_end; ++i) {
        for (const auto& e : ev[i]) {
            if (e.kind == Kind::call_arguments) args += e.text;
        }
    }
    EXPECT_EQ(args, "{\"city\":\"Os");
    std::vector<ToolCallEvent> rest;
    p.finish(rest);
    EXPECT_TRUE(rest.empty());
    EXPECT_TRUE(p.calls_complete());
    EXPECT_EQ(p.n_calls(), 1u);

    // llama3: plain text is content from its first byte; JSON is held until its name decides.
    ToolCallParser l(ToolFormat::llama3, tools, true);
    const auto lev = per_byte("It is", l);
    ASSERT_EQ(lev[0].size(), 1u);
    EXPECT_EQ(lev[0][0].text, "I");
    ToolCallParser j(ToolFormat::llama3, tools, true);
    const std::string call = "{\"name\": \"get_time\", \"parameters\": {}}";
    const auto jev = per_byte(call, j);
    const size_t time_end = call.find("get_time") + 8;
    for (size_t i = 0; i < time_end; ++i) EXPECT_TRUE(jev[i].empty()) << "byte " << i;
    ASSERT_FALSE(jev[time_end].empty());
    EXPECT_EQ(jev[time_end][0].kind, Kind::call_begin);
}

TEST(ToolCallParser, ArgumentsBeforeTheNameWaitForIt) {
    const auto tools = parser_tools();
    const std::string text = "<tool_call>{\"arguments\": {\"zone\": \"UTC\"}, \"name\": \"get_time\"}</tool_call>";
    ToolCallParser p(ToolFormat::hermes, tools, true);
    const auto ev = per_byte(text, p);
    const size_t name_end = text.rfind("get_time") + 8;
    for (size_t i = 0; i < name_end; ++i) EXPECT_TRUE(ev[i].empty()) << "byte " << i;
    ASSERT_EQ(ev[name_end].size(), 2u);
    EXPECT_EQ(ev[name_end][0].kind, Kind::call_begin);
    EXPECT_EQ(ev[name_end][1].kind, Kind::call_arguments);
    EXPECT_EQ(ev[name_end][1].text, R"({"zone":"UTC"})");
}

TEST(ToolCallParser, ACallCutShortStaysBegunInAStreamAndIsTextWhenFinished) {
    const std::string text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Os";
    const Fed s = stream_pieces(ToolFormat::hermes, bytes_of(text));
    ASSERT_EQ(s.parsed.calls.size(), 1u);
    EXPECT_EQ(s.parsed.calls[0].name, "get_weather");
    EXPECT_EQ(s.parsed.calls[0].arguments, "{\"city\":\"Os");
    EXPECT_FALSE(s.complete);
    EXPECT_EQ(s.parsed.content, "");
    const ParsedToolCalls whole = parse_tool_calls(ToolFormat::hermes, text, parser_tools());
    EXPECT_TRUE(whole.calls.empty());
    EXPECT_EQ(whole.content, text);

    // Mistral: the second call cut off; the first was whole.
    const std::string m = "[TOOL_CALLS][{\"name\": \"get_time\", \"arguments\": {}}, {\"name\": \"get_weather\", \"arguments\": {\"ci";
    const Fed ms = stream_pieces(ToolFormat::mistral, {m});
    ASSERT_EQ(ms.parsed.calls.size(), 2u);
    EXPECT_EQ(ms.parsed.calls[0].arguments, "{}");
    EXPECT_EQ(ms.parsed.calls[1].arguments, "{\"ci");
    EXPECT_FALSE(ms.complete);
    // Finished: the whole first call stands, the cut one is text.
    const ParsedToolCalls mw = parse_tool_calls(ToolFormat::mistral, m, parser_tools());
    ASSERT_EQ(mw.calls.size(), 1u);
    EXPECT_EQ(mw.calls[0].name, "get_time");
    EXPECT_EQ(mw.content, "{\"name\": \"get_weather\", \"arguments\": {\"ci");

    // Text after a begun llama3 call is content in a stream; the finished parse makes it all text.
    const std::string l = "{\"name\": \"get_time\", \"parameters\": {}} and more";
    const Fed ls = stream_pieces(ToolFormat::llama3, {l});
    ASSERT_EQ(ls.parsed.calls.size(), 1u);
    EXPECT_TRUE(ls.complete);
    EXPECT_EQ(ls.parsed.content, "and more");
    const ParsedToolCalls lw = parse_tool_calls(ToolFormat::llama3, l, parser_tools());
    EXPECT_TRUE(lw.calls.empty());
    EXPECT_EQ(lw.content, l);

    // Broken JSON inside a begun hermes call: the call stays, cut off; the rest is text.
    const Fed b = stream_pieces(ToolFormat::hermes, {"<tool_call>{\"name\": \"get_time\", \"arguments\": {\"zone\" 1}}</tool_call> ok"});
    ASSERT_EQ(b.parsed.calls.size(), 1u);
    EXPECT_FALSE(b.complete);
    EXPECT_EQ(b.parsed.calls[0].arguments, "{\"zone\"");
    EXPECT_EQ(b.parsed.content, "1}}</tool_call> ok");
}

// An answer cut anywhere (max_tokens): the stream and the finished parse agree on every prefix
// of every example, except that a call cut inside its arguments is begun (arguments so far) in
// the stream and text in the finished parse. A call whose name and arguments are complete
// stands in both, whatever of its closing text is missing.
TEST(ToolCallParser, EveryCutOfAnAnswerGivesTheStreamAndTheFinishedParseTheSameCalls) {
    for (const Example& ex : examples()) {
        const ParsedToolCalls full = parse_tool_calls(ex.format, ex.text, parser_tools());
        for (size_t k = 0; k <= ex.text.size(); ++k) {
            const std::string prefix = ex.text.substr(0, k);
            const std::string what = "cut at " + std::to_string(k) + ": " + prefix;
            const ParsedToolCalls finished = parse_tool_calls(ex.format, prefix, parser_tools());
            const Fed s = stream_pieces(ex.format, bytes_of(prefix));
            expect_same(stream_pieces(ex.format, {prefix}).parsed, s.parsed, "one piece vs bytes, " + what);
            // The finished parse's calls are whole: those of the full answer, in order.
            ASSERT_LE(finished.calls.size(), full.calls.size()) << what;
            for (size_t i = 0; i < finished.calls.size(); ++i) {
                EXPECT_EQ(finished.calls[i].name, full.calls[i].name) << what;
                EXPECT_EQ(finished.calls[i].arguments, full.calls[i].arguments) << what;
            }
            if (s.complete) {
                expect_same(s.parsed, finished, what);
                continue;
            }
            // The stream's last call was cut in its arguments: the others are the finished ones,
            // its arguments a beginning of the full answer's, and its text is content in
            // the finished parse (after the content the stream sent).
            ASSERT_EQ(s.parsed.calls.size(), finished.calls.size() + 1) << what;
            expect_same(ParsedToolCalls{"", std::vector<ToolCall>(s.parsed.calls.begin(), s.parsed.calls.end() - 1)},
                        ParsedToolCalls{"", finished.calls}, what);
            const ToolCall& cut = s.parsed.calls.back();
            ASSERT_LT(finished.calls.size(), full.calls.size()) << what;
            const ToolCall& whole = full.calls[finished.calls.size()];
            EXPECT_EQ(cut.name, whole.name) << what;
            // A beginning; all of it only for a bare number (12 may go on as 123).
            EXPECT_LE(cut.arguments.size(), whole.arguments.size()) << what;
            EXPECT_EQ(whole.arguments.compare(0, cut.arguments.size(), cut.arguments), 0) << what;
            EXPECT_EQ(finished.content.compare(0, s.parsed.content.size(), s.parsed.content), 0) << what;
            EXPECT_NE(finished.content.find(whole.name), std::string::npos) << what;
        }
    }
}

TEST(ToolCallParser, JsonScannerAcceptsJsonAndRejectsTheRest) {
    const auto valid = [](const std::string& text) {
        JsonScanner s;
        for (char c : text) {
            const auto b = s.feed(c);
            if (b == JsonScanner::Byte::error || b == JsonScanner::Byte::after) return false;
        }
        return s.complete();
    };
    for (const char* ok : {"{}", "[]", "0", "-0.5e-3", "\"a\\u00e9\\n\"", " {\"a\": [1, {\"b\": null}], \"c\": true}", "123", "\"ÿ€😀\""}) {
        EXPECT_TRUE(valid(ok)) << ok;
        EXPECT_TRUE(nlohmann::json::accept(ok)) << ok;  // the reference agrees
    }
    for (const char* bad : {"{", "[1,]", "01", "1.", "-", "{\"a\" 1}", "{1: 2}", "tru", "\"\\x\"", "\"\x01\"", "[1 2]", "{\"a\":1,}", "\"\xff\"", "\"\xc3\""}) {
        EXPECT_FALSE(valid(bad)) << bad;
        EXPECT_FALSE(nlohmann::json::accept(bad)) << bad;
    }
}

}  // namespace
}  // namespace kvrag::chat
