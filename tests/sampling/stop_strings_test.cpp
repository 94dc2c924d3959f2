#include "sampling/stop_strings.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kvrag::sampling {
namespace {

struct StopCase {
    const char* name;
    std::vector<std::string> stops;
    std::vector<std::string> pieces;
    std::vector<std::string> want_emits;  // one per piece actually fed (feeding ends at a stop)
    bool want_stopped;
    std::string want_flush;
};

TEST(StopStringMatcher, Table) {
    const std::vector<StopCase> cases = {
        {"no stops pass through", {}, {"Hello", ", ", "world"}, {"Hello", ", ", "world"}, false, ""},
        {"empty stop ignored", {""}, {"abc"}, {"abc"}, false, ""},
        {"stop inside one piece", {"END"}, {"abcENDxyz"}, {"abc"}, true, ""},
        {"stop at the very start", {"END"}, {"END"}, {""}, true, ""},
        {"stop split across pieces", {"</s>"}, {"Hi<", "/s", ">tail"}, {"Hi", "", ""}, true, ""},
        {"stop split one byte at a time", {"stop"}, {"x", "s", "t", "o", "p"}, {"x", "", "", "", ""}, true, ""},
        // "<" could start the stop; released once "b" rules it out.
        {"partial prefix released", {"<eos>"}, {"a<", "b"}, {"a", "<b"}, false, ""},
        {"partial prefix released at flush", {"<eos>"}, {"a<e"}, {"a"}, false, "<e"},
        // Only the longest tail that is a prefix of the stop is held: "xx" -> "x" could start
        // "xy", the first "x" cannot begin a match any more.
        {"overlapping prefix", {"xy"}, {"xx", "x", "y"}, {"x", "x", ""}, true, ""},
        {"repeated prefix then match", {"aab"}, {"aa", "aab"}, {"", "aa"}, true, ""},
        {"multiple stops, first to complete", {"\n\n", "User:"}, {"ok", "\nUs", "er:"}, {"ok", "\n", ""}, true, ""},
        {"shorter stop completes first", {"ab", "abcd"}, {"xabc"}, {"x"}, true, ""},
        {"multiple stops, earliest start wins", {"cd", "bcd"}, {"abcde"}, {"a"}, true, ""},
        {"nothing after a stop", {"!"}, {"hi!", "more"}, {"hi", ""}, true, ""},
        // UTF-8: "é" = C3 A9, "€" = E2 82 AC, "😀" = F0 9F 98 80; split pieces are held until
        // the character completes.
        {"utf8 two-byte split", {}, {"caf\xC3", "\xA9!"}, {"caf", "\xC3\xA9!"}, false, ""},
        {"utf8 four-byte split", {}, {"\xF0\x9F", "\x98", "\x80 ok"}, {"", "", "\xF0\x9F\x98\x80 ok"}, false, ""},
        {"utf8 incomplete at end flushed", {}, {"x\xE2\x82"}, {"x"}, false, "\xE2\x82"},
        {"utf8 stop string", {"\xE2\x82\xAC"}, {"5 \xE2\x82", "\xAC and"}, {"5 ", ""}, true, ""},
        {"utf8 text before stop", {"##"}, {"\xC3\xA9#", "#x"}, {"\xC3\xA9", ""}, true, ""},
        {"stray continuation byte passes", {}, {"a\x80"}, {"a\x80"}, false, ""},
    };
    for (const StopCase& c : cases) {
        SCOPED_TRACE(c.name);
        StopStringMatcher m(c.stops);
        std::vector<std::string> emits;
        bool stopped = false;
        for (const std::string& piece : c.pieces) {
            StopStringMatcher::Step step = m.feed(piece);
            emits.push_back(step.emit);
            stopped = step.stopped;
        }
        EXPECT_EQ(emits, c.want_emits);
        EXPECT_EQ(stopped, c.want_stopped);
        EXPECT_EQ(m.stopped(), c.want_stopped);
        EXPECT_EQ(m.flush(), c.want_flush);
    }
}

// Whatever the piece boundaries, the concatenated output is the text before the first stop.
TEST(StopStringMatcher, SplitInvariance) {
    const std::string text = "The answer is 42.\nUser: next question";
    const std::vector<std::string> stops = {"\nUser:", "###"};
    const std::string want = "The answer is 42.";
    for (size_t width = 1; width <= text.size(); ++width) {
        StopStringMatcher m(stops);
        std::string out;
        bool stopped = false;
        for (size_t i = 0; i < text.size() && !stopped; i += width) {
            StopStringMatcher::Step step = m.feed(std::string_view(text).substr(i, width));
            out += step.emit;
            stopped = step.stopped;
        }
        out += m.flush();
        EXPECT_TRUE(stopped) << "width " << width;
        EXPECT_EQ(out, want) << "width " << width;
    }
}

TEST(StopStringMatcher, HeldTextIsBounded) {
    // A long run that keeps looking like the start of a stop must not pile up: at most
    // (longest stop - 1) bytes are ever held.
    StopStringMatcher m({"aaaaX"});
    size_t emitted = 0;
    for (int i = 0; i < 1000; ++i) emitted += m.feed("a").emit.size();
    EXPECT_EQ(emitted, 1000u - 4u);
    EXPECT_EQ(m.flush(), "aaaa");
}

// accept declines matches (the engine: where grammar-constrained text before them is not
// complete); a declined match is text like any other, and the next match is asked in turn.
TEST(StopStringMatcher, AcceptDeclinesMatches) {
    std::string released;
    std::vector<std::string> asked;
    // Accepts a match only when everything before it is a balanced "{...}".
    const StopStringMatcher::AcceptFn accept = [&](std::string_view before) {
        const std::string all = released + std::string(before);
        asked.push_back(all);
        return !all.empty() && all.front() == '{' && all.back() == '}';
    };
    StopStringMatcher m({" "});
    std::string out;
    bool stopped = false;
    for (const char* piece : {"{\"a\":", " 1", "} tail"}) {
        const auto step = m.feed(piece, accept);
        released += step.emit;
        out += step.emit;
        stopped = step.stopped;
        if (stopped) break;
    }
    EXPECT_TRUE(stopped);
    EXPECT_EQ(out, "{\"a\": 1}");
    EXPECT_EQ(asked, (std::vector<std::string>{"{\"a\":", "{\"a\": 1}"}));
    // Without accept the first space stops it.
    StopStringMatcher plain({" "});
    EXPECT_EQ(plain.feed("{\"a\": 1}").emit, "{\"a\":");
}

}  // namespace
}  // namespace kvrag::sampling
