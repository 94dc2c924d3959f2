#include "sampling/grammar.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "sampling/grammar_test_util.h"

namespace kvrag::sampling {
namespace {

std::shared_ptr<const Grammar> must_parse(const std::string& text) {
    auto g = Grammar::parse(text);
    EXPECT_TRUE(g.ok()) << (g.ok() ? "" : g.error().what()) << "\n" << text;
    return g.ok() ? *g : nullptr;
}

struct ErrorCase {
    const char* grammar;
    const char* want;  // substring of the message
};

TEST(GrammarParse, ErrorsNamePositionAndExpectation) {
    const std::vector<ErrorCase> cases = {
        {"root = \"a\"", "line 1 col 6: expected '::=' after rule name 'root'"},
        {"root ::= \"abc", "expected '\"' to close the string literal"},
        {"root ::= [a-z", "expected ']' to close the character class"},
        {"root ::= (\"a\" | \"b\"", "expected ')' to close the group"},
        {"root ::= \"a\"{2,1}", "expected {m,n} with m <= n"},
        {"root ::= \"a\"{5000}", "repetition count <= 1000"},
        {"root ::= \"\\q\"", "line 1 col 12: expected one of the escapes"},
        {"root ::= [z-a]", "a range with lo <= hi"},
        {"root ::= item\n", "line 1 col 10: rule 'item' is referenced but never defined"},
        {"root ::= \"a\"\nroot ::= \"b\"", "line 2 col 1: expected a new rule name ('root' is defined twice)"},
        {"root ::= expr\nexpr ::= expr \"+\" term | term\nterm ::= [0-9]", "rule 'expr' is left-recursive (expr -> expr)"},
        // Left recursion through a rule that can match "".
        {"root ::= a\na ::= b a \"x\" | \"y\"\nb ::= \"\" | \"z\"", "left-recursive (a -> a)"},
        {"root ::= ) ", "line 1 col 10: expected a rule name, got ')'"},
        {"root ::= \"a\" @", "expected a literal, a character class, '.', '(' or a rule name, got '@'"},
        {"", "grammar has no rules"},
        {"start ::= \"a\"", "no start rule 'root'"},
    };
    for (const auto& c : cases) {
        auto g = Grammar::parse(c.grammar);
        ASSERT_FALSE(g.ok()) << c.grammar;
        EXPECT_EQ(g.error().code, Errc::request_invalid);
        EXPECT_NE(g.error().message.find(c.want), std::string::npos) << c.grammar << "\n got: " << g.error().message;
    }
}

TEST(GrammarParse, SizeLimits) {
    // Nested {m,n} multiply: 1000 * 1000 elements is over kMaxElements.
    auto g = Grammar::parse("root ::= ((\"ab\"){1000}){1000}");
    ASSERT_FALSE(g.ok());
    EXPECT_NE(g.error().message.find("more than"), std::string::npos) << g.error().message;
    std::string deep = "root ::= ";
    for (int i = 0; i < 100; ++i) deep += "(\"a\" ";
    for (int i = 0; i < 100; ++i) deep += "| \"b\")";
    auto d = Grammar::parse(deep);
    ASSERT_FALSE(d.ok());
    EXPECT_NE(d.error().message.find("nested groups"), std::string::npos) << d.error().message;
}

struct MatchCase {
    const char* grammar;
    std::vector<std::string> accept;
    std::vector<std::string> reject;
};

TEST(GrammarMatcher, AcceptRejectTable) {
    const std::vector<MatchCase> cases = {
        {R"(root ::= "ab" | "cd")", {"ab", "cd"}, {"", "a", "abc", "ac", "ad"}},
        {R"(root ::= [a-c]+ "!")", {"a!", "abcabc!"}, {"!", "ad!", "abc"}},
        {R"(root ::= [^"\\]*)", {"", "abc", "é ü"}, {"a\"", "\\"}},
        {R"(root ::= "x"? "y"*)", {"", "x", "yyy", "xy"}, {"xx", "yx"}},
        {R"(root ::= "a"{2,3})", {"aa", "aaa"}, {"a", "aaaa"}},
        {R"(root ::= "a"{2,})", {"aa", "aaaaaaa"}, {"a"}},
        {R"(root ::= "a"{2})", {"aa"}, {"a", "aaa"}},
        {R"(root ::= ("ab" | "c")* "." # comment
)", {".", "abc.", "cab."}, {"a.", "b."}},
        {R"(root ::= . "z")", {"az", "\nz", "€z"}, {"z", "abz"}},
        {"root ::= \"\\x41\\u00e9\\n\\t\\\\\\\"\"", {"A\xc3\xa9\n\t\\\""}, {"A"}},
        {"root ::= [\\u00e0-\\u00ff]", {"\xc3\xa0", "\xc3\xbf"}, {"\xc3\x9f", "a"}},
        // Rules on several lines, a nested group, right recursion, balanced parentheses.
        {"root ::= list\nlist ::= item\n  | item \",\" list\nitem ::= [0-9]", {"1", "1,2,3"}, {"1,", ",1"}},
        {R"g(root ::= "(" root ")" | "")g", {"", "()", "((()))"}, {"(", "())"}},
        {R"(root ::= "-"? ("0" | [1-9] [0-9]*))", {"0", "-12", "907"}, {"01", "-", "--1"}},
    };
    for (const auto& c : cases) {
        auto g = must_parse(c.grammar);
        ASSERT_NE(g, nullptr);
        for (const auto& s : c.accept) EXPECT_TRUE(matches(g, s)) << c.grammar << " should accept '" << s << "'";
        for (const auto& s : c.reject) EXPECT_FALSE(matches(g, s)) << c.grammar << " should reject '" << s << "'";
    }
}

TEST(GrammarMatcher, PartialUtf8AcrossTokens) {
    auto g = must_parse(R"(root ::= "é" "!" | "€")");
    GrammarMatcher m(g);
    // "é" is C3 A9: the first byte alone is a valid prefix, the token ends mid-character.
    EXPECT_TRUE(m.accepts("\xc3"));
    EXPECT_TRUE(m.advance("\xc3"));
    EXPECT_FALSE(m.accepting());  // mid-character is never complete
    EXPECT_FALSE(m.accepts("\xa8"));  // U+00E8 is not in the grammar
    EXPECT_TRUE(m.advance("\xa9!"));
    EXPECT_TRUE(m.accepting());
    EXPECT_TRUE(m.finished());

    GrammarMatcher e(g);
    EXPECT_TRUE(e.accepts("\xe2\x82"));   // a prefix of € (E2 82 AC)
    EXPECT_FALSE(e.accepts("\xe2\x81"));  // no code point of the grammar starts E2 81
    EXPECT_FALSE(e.accepts("\xc4"));      // U+0100..U+013F: none in the grammar
    EXPECT_TRUE(e.advance("\xe2"));
    EXPECT_TRUE(e.advance("\x82"));
    EXPECT_TRUE(e.advance("\xac"));
    EXPECT_TRUE(e.finished());
}

TEST(GrammarMatcher, InvalidUtf8IsNeverAccepted) {
    auto g = must_parse("root ::= .*");
    for (const char* bad : {"\x80", "\xc0\x80", "\xc1\xbf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf5", "\xe0\x80\x80", "\xc3\x41"}) {
        GrammarMatcher m(g);
        EXPECT_FALSE(m.advance(bad)) << "bytes " << std::string(bad).size();
    }
    GrammarMatcher m(g);
    EXPECT_TRUE(m.advance("\xf0\x9f\x98\x80 \xed\x9f\xbf"));  // U+1F600 and U+D7FF are fine
    EXPECT_TRUE(m.accepting());
}

TEST(GrammarMatcher, FinishedOnlyWhenNothingCanFollow) {
    auto g = must_parse(R"(root ::= "a" "b"?)");
    GrammarMatcher m(g);
    EXPECT_FALSE(m.accepting());
    ASSERT_TRUE(m.advance("a"));
    EXPECT_TRUE(m.accepting());
    EXPECT_FALSE(m.finished());
    ASSERT_TRUE(m.advance("b"));
    EXPECT_TRUE(m.finished());
    EXPECT_FALSE(m.accepts("b"));
}

TEST(GrammarMatcher, AmbiguityIsBounded) {
    // Every prefix of "aaaa..." has many parses; dedup keeps the state small.
    auto g = must_parse(R"(root ::= ("a" | "aa" | "aaa")*)");
    GrammarMatcher m(g);
    ASSERT_TRUE(m.advance(std::string(2000, 'a')));
    EXPECT_TRUE(m.accepting());
    EXPECT_LE(m.n_stacks(), 8u);
    // Nesting deeper than kMaxDepth is refused rather than grown without bound.
    auto p = must_parse(R"g(root ::= "(" root ")" | "x")g");
    GrammarMatcher n(p);
    EXPECT_FALSE(n.advance(std::string(kMaxDepth + 10, '(')));
}

TEST(TokenMask, MasksPiecesThatCannotContinue) {
    // Token 0 is eog with an empty piece; token 5 is a control token with an empty piece.
    const std::vector<std::string> pieces = {"", "a", "ab", "b", "\xc3", "", "\xa9", "x", "abab"};
    const std::vector<bool> eog = {true, false, false, false, false, false, false, false, false};
    TokenMask mask(pieces, eog);
    auto g = must_parse(R"(root ::= ("ab")+ | "é")");
    GrammarMatcher m(g);
    std::vector<float> logits(pieces.size(), 0.0f);
    EXPECT_EQ(mask.apply(m, logits.data()), 4u);
    const float inf = -std::numeric_limits<float>::infinity();
    EXPECT_EQ(logits, (std::vector<float>{inf, 0, 0, inf, 0, inf, inf, inf, 0}));

    ASSERT_TRUE(m.advance("ab"));  // accepting now: eog allowed, and "a", "ab", "abab" continue
    std::fill(logits.begin(), logits.end(), 0.0f);
    EXPECT_EQ(mask.apply(m, logits.data()), 4u);
    EXPECT_EQ(logits, (std::vector<float>{0, 0, 0, inf, inf, inf, inf, inf, 0}));

    GrammarMatcher u(g);
    ASSERT_TRUE(u.advance("\xc3"));
    std::fill(logits.begin(), logits.end(), 0.0f);
    EXPECT_EQ(mask.apply(u, logits.data()), 1u);
    EXPECT_EQ(logits[6], 0.0f);
}

TEST(TokenMask, AgreesWithPerTokenChecks) {
    // The trie walk must give exactly what checking each piece alone gives.
    std::vector<std::string> pieces;
    for (const char* p : {"{", "}", "\"", "\":", " ", "  ", "a", "ab", "abc", "1", "12", "-", "tr", "true", "null", ",", "[", "]", "\xc3", "\xa9"}) pieces.emplace_back(p);
    TokenMask mask(pieces, std::vector<bool>(pieces.size(), false));
    auto g = must_parse("root ::= \"{\" ws (\"\\\"\" [a-c]* \"\\\":\" ws v)? ws \"}\"\nv ::= \"true\" | \"null\" | \"-\"? [0-9]+ | \"[\" \"]\"\nws ::= \" \"{0,3}");
    const std::vector<std::string> prefixes = {"", "{", "{ ", "{\"", "{\"ab", "{\"ab\":", "{\"ab\": tr", "{\"ab\":-1", "{\"ab\":[]"};
    for (const auto& pre : prefixes) {
        GrammarMatcher m(g);
        ASSERT_TRUE(m.advance(pre)) << pre;
        std::vector<float> logits(pieces.size(), 1.0f);
        mask.apply(m, logits.data());
        for (size_t i = 0; i < pieces.size(); ++i) {
            EXPECT_EQ(std::isinf(logits[i]), !m.accepts(pieces[i])) << "prefix '" << pre << "' piece '" << pieces[i] << "'";
        }
    }
}


TEST(TokenMask, CachedMasksEqualTheWalk) {
    std::vector<std::string> pieces;
    for (const char* p : {"{", "}", "\"", "\":", " ", "a", "ab", "abc", "1", "12", "-", "\xc3", "\xa9", "b", "bb"}) pieces.emplace_back(p);
    TokenMask mask(pieces, std::vector<bool>(pieces.size(), false));
    ASSERT_GE(mask.cache_capacity(), 2u);
    auto g = must_parse("root ::= \"{\" (\"\\\"\" [a-c\u00e9]* \"\\\":\" \"-\"? [0-9]+)? \"}\"");
    const std::vector<std::string> prefixes = {"", "{", "{\"", "{\"a", "{\"ab", "{\"abc", "{\"\xc3", "{\"ab\":", "{\"ab\":-1"};
    // Twice over: the second round is served from the cache (repeated states in between too).
    for (int round = 0; round < 2; ++round) {
        for (const auto& pre : prefixes) {
            GrammarMatcher m(g);
            ASSERT_TRUE(m.advance(pre)) << pre;
            std::vector<float> cached(pieces.size(), 1.0f), walked(pieces.size(), 1.0f);
            const size_t n_cached = mask.apply(m, cached.data());
            EXPECT_EQ(n_cached, mask.apply_uncached(m, walked.data())) << pre;
            EXPECT_EQ(cached, walked) << "round " << round << " prefix '" << pre << "'";
        }
    }
    // Two grammars of the same shape have states with equal stacks: the grammar is part of
    // the key, so neither gets the other's mask.
    auto ga = must_parse("root ::= [a]*");
    auto gb = must_parse("root ::= [b]*");
    GrammarMatcher ma(ga), mb(gb);
    std::vector<float> la(pieces.size(), 1.0f), lb(pieces.size(), 1.0f);
    mask.apply(ma, la.data());
    mask.apply(mb, lb.data());
    EXPECT_FALSE(std::isinf(la[5]));  // "a"
    EXPECT_TRUE(std::isinf(lb[5]));
    EXPECT_FALSE(std::isinf(lb[14]));  // "bb"
    EXPECT_TRUE(std::isinf(la[14]));
}

}  // namespace
}  // namespace kvrag::sampling
