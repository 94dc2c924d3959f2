// Regex pre-tokenizer splits, checked by hand against the regex semantics. Covers the
// families without shipped test vectors (llama3, qwen2) and the regex edge cases: the
// \s+(?!\S) lookahead, case-insensitive contractions, digit grouping, pieces being matched
// in isolation, and non-ASCII whitespace.
#include <gtest/gtest.h>

#include "tokenizer/pre_tokenizer.h"

namespace kvrag::tokenizer::detail {
namespace {

std::vector<std::string> split(std::string_view pre, std::string_view text) {
    const PreTokenizerSpec* spec = find_pre_tokenizer(pre);
    EXPECT_NE(spec, nullptr) << pre;
    if (spec == nullptr) return {};
    auto p = PreTokenizer::create(spec->regexes);
    EXPECT_TRUE(p.ok()) << p.error().what();
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t end : (*p)->split(text)) {
        out.emplace_back(text.substr(start, end - start));
        start = end;
    }
    return out;
}

using V = std::vector<std::string>;

TEST(PreTokenizer, Llama3) {
    EXPECT_EQ(split("llama-bpe", "Hello world  123456 I'M x\n\n  y"),
              (V{"Hello", " world", " ", " ", "123", "456", " I", "'M", " x", "\n\n", " ", " y"}));
    // Contractions are case-insensitive; punctuation swallows trailing newlines.
    EXPECT_EQ(split("llama3", "we'Ve DON'T!!\n\nok"), (V{"we", "'Ve", " DON", "'T", "!!\n\n", "ok"}));
    // A run of spaces at the very end is one piece: nothing follows, so (?!\S) holds.
    EXPECT_EQ(split("llama3", "a   "), (V{"a", "   "}));
}

TEST(PreTokenizer, Qwen2SplitsSingleDigits) {
    EXPECT_EQ(split("qwen2", "x 2025!"), (V{"x", " ", "2", "0", "2", "5", "!"}));
}

TEST(PreTokenizer, Gpt2) {
    // Contractions are case-sensitive here: "'M" is punctuation followed by a word.
    EXPECT_EQ(split("gpt-2", "Hello world  123456 I'M x"),
              (V{"Hello", " world", " ", " 123456", " I", "'", "M", " x"}));
    EXPECT_EQ(split("gpt-2", "a\n\nb"), (V{"a", "\n", "\n", "b"}));
}

TEST(PreTokenizer, RegexesApplyInTurn) {
    // starcoder first isolates every digit, then the gpt2 regex works inside each piece.
    EXPECT_EQ(split("starcoder", "ab 123"), (V{"ab", " ", "1", "2", "3"}));
    // falcon: punctuation runs first, then gpt2, then three-digit groups.
    EXPECT_EQ(split("falcon", "x+=12345"), (V{"x", "+=", "123", "45"}));
}

TEST(PreTokenizer, NonAsciiWhitespaceAndLetters) {
    // U+3000 IDEOGRAPHIC SPACE counts as \s and U+00E9 as a letter, but only an ASCII space
    // can join the word after it: the last U+3000 stays a piece of its own.
    EXPECT_EQ(split("gpt-2", "caf\xC3\xA9\xE3\x80\x80\xE3\x80\x80x"),
              (V{"caf\xC3\xA9", "\xE3\x80\x80", "\xE3\x80\x80", "x"}));
}

TEST(PreTokenizer, DeepseekLlm) {
    EXPECT_EQ(split("deepseek-llm", "Hi there!\n123 \xE4\xBD\xA0\xE5\xA5\xBD"),
              (V{"Hi", " there", "!", "\n", "123", " ", "\xE4\xBD\xA0\xE5\xA5\xBD"}));
}

TEST(PreTokenizer, EmptyInputAndRegistry) {
    EXPECT_TRUE(split("gpt-2", "").empty());
    EXPECT_NE(find_pre_tokenizer(""), nullptr);  // absent tokenizer.ggml.pre means "default"
    EXPECT_EQ(find_pre_tokenizer("no-such-pre"), nullptr);
    EXPECT_NE(supported_pre_tokenizers().find("llama-bpe"), std::string::npos);
}

}  // namespace
}  // namespace kvrag::tokenizer::detail
