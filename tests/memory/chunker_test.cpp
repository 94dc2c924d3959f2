// Chunking by the model's tokens: bounds, overlap, boundaries, positions.
#include "memory/chunker.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "engine/engine_test_util.h"

namespace kvrag::memory {
namespace {

const tokenizer::Tokenizer& tok() {
    static auto m = engine::testing::load_synthetic("memory-chunker", 32, 1, 64);
    return *m.tokenizer;
}

int32_t count(const std::string& s) { return static_cast<int32_t>(tok().encode(s, false, false).size()); }

std::string paragraphs(int n_para, int n_sent) {
    std::string t;
    for (int p = 0; p < n_para; ++p) {
        for (int s = 0; s < n_sent; ++s) t += "Paragraph " + std::to_string(p) + " sentence " + std::to_string(s) + " talks about the cat. ";
        t += "\n\n";
    }
    return t;
}

TEST(MemoryChunker, EveryChunkWithinMaxAndPositionsInOrder) {
    for (int32_t max : {16, 40, 100}) {
        ChunkOptions o{max, max / 4};
        auto c = chunk_text(paragraphs(6, 5), tok(), o);
        ASSERT_TRUE(c.ok()) << c.error().what();
        ASSERT_GT(c->size(), 1u);
        for (size_t i = 0; i < c->size(); ++i) {
            EXPECT_EQ((*c)[i].position, static_cast<int32_t>(i));
            EXPECT_LE((*c)[i].n_tokens, max) << (*c)[i].text;
            EXPECT_EQ((*c)[i].n_tokens, count((*c)[i].text));
        }
    }
}

TEST(MemoryChunker, SplitsOnSentencesAndOverlaps) {
    ChunkOptions o{40, 12};
    auto c = chunk_text(paragraphs(3, 6), tok(), o);
    ASSERT_TRUE(c.ok());
    for (size_t i = 0; i < c->size(); ++i) {
        const std::string& t = (*c)[i].text;
        // every chunk ends at a sentence end
        EXPECT_EQ(t.back(), '.') << t;
        if (i > 0) {
            // overlap: the start of chunk i appears at the end of chunk i-1 (sentence-granular)
            const std::string first_sentence = t.substr(0, t.find('.') + 1);
            const std::string& prev = (*c)[i - 1].text;
            const bool overlapped = prev.find(first_sentence) != std::string::npos;
            const bool para_break = t.rfind("Paragraph", 0) == 0;
            EXPECT_TRUE(overlapped || para_break) << "chunk " << i << ": " << t;
        }
    }
    ChunkOptions none{40, 0};
    auto d = chunk_text(paragraphs(3, 6), tok(), none);
    ASSERT_TRUE(d.ok());
    EXPECT_LE(d->size(), c->size());
}

TEST(MemoryChunker, PrefersParagraphBoundaries) {
    // Paragraphs that each fit a chunk: no chunk starts in the middle of one.
    const std::string one = paragraphs(1, 3);
    ChunkOptions o{count(one) + 8, 0};  // one paragraph fits, two do not
    auto c = chunk_text(paragraphs(5, 3), tok(), o);
    ASSERT_TRUE(c.ok());
    for (const auto& ch : *c) EXPECT_EQ(ch.text.rfind("Paragraph", 0), 0u) << ch.text;
    for (const auto& ch : *c) EXPECT_NE(ch.text.find("sentence 0"), std::string::npos) << ch.text;
}

TEST(MemoryChunker, OverlongSentenceIsCutByTokens) {
    std::string big;
    for (int i = 0; i < 300; ++i) big += "word" + std::to_string(i) + " ";
    ChunkOptions o{32, 8};
    auto c = chunk_text(big, tok(), o);
    ASSERT_TRUE(c.ok());
    ASSERT_GT(c->size(), 5u);
    for (const auto& ch : *c) EXPECT_LE(ch.n_tokens, 32);
    EXPECT_NE(c->back().text.find("word299"), std::string::npos);
}

// A line longer than a chunk (a wide Markdown table row) is cut into pieces of nearly equal
// size: cutting every max tokens left a last piece such as a lone "|", a chunk that carried no
// text of its own and matched every other such tail.
TEST(MemoryChunker, OverlongLineIsCutIntoEvenPiecesWithoutAStrayTail) {
    std::string row = "|";
    for (int i = 0; i < 40; ++i) row += " cell" + std::to_string(i) + " |";
    const int32_t n = count(row);
    ChunkOptions o{32, 0};
    ASSERT_GT(n, 2 * o.max_tokens) << "the row must need three or more pieces";
    auto c = chunk_text(row, tok(), o);
    ASSERT_TRUE(c.ok());
    ASSERT_GE(c->size(), 3u);
    int32_t smallest = o.max_tokens, largest = 0;
    for (const auto& ch : *c) {
        EXPECT_LE(ch.n_tokens, o.max_tokens);
        smallest = std::min(smallest, ch.n_tokens);
        largest = std::max(largest, ch.n_tokens);
    }
    // Equal pieces by token ids; re-encoding a decoded piece may move a count by a token or two.
    EXPECT_LE(largest - smallest, 3) << "pieces of " << smallest << " to " << largest << " tokens from a row of " << n;
    EXPECT_NE(c->back().text.find("cell39"), std::string::npos);
}

TEST(MemoryChunker, EmptyTextAndBadOptions) {
    EXPECT_TRUE(chunk_text(" \n\n ", tok(), {}).value().empty());
    EXPECT_EQ(chunk_text("x", tok(), ChunkOptions{4, 0}).error().code, Errc::memory_bad_input);
    EXPECT_EQ(chunk_text("x", tok(), ChunkOptions{64, 40}).error().code, Errc::memory_bad_input);
}

}  // namespace
}  // namespace kvrag::memory
