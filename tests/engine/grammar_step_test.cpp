// The engine's grammar step (Engine::step): the token the unmasked distribution draws is tried
// first and the full vocabulary mask is computed only when the grammar rejects it. Greedy output
// must be exactly what masking every step gives (logprobs requests always mask, so they are the
// reference), and a grammar the model already follows must need no mask at all.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/engine_test_util.h"
#include "sampling/grammar.h"
#include "sampling/json_schema.h"

namespace kvrag::engine {
namespace {

TEST(GrammarStep, AGrammarTheModelFollowsNeedsNoMaskAndChangesNothing) {
    auto e = testing::make_engine(testing::load_synthetic("grammar-step"), 512);
    GenerateOptions free = testing::greedy(40);
    free.stop_at_eog = true;
    // [^\x00]* takes any valid UTF-8 without NUL. A random-weights model also draws byte
    // tokens (<0xE3> then a word: not UTF-8, which the matcher rightly refuses, whatever the
    // grammar), NUL and control tokens with no text; banned here in both runs, so what the
    // model draws is text the grammar takes.
    const tokenizer::Tokenizer& tok = *e->model().tokenizer;
    for (int32_t t = 0; t < tok.n_vocab(); ++t) {
        const std::string piece = tok.token_to_piece(t);
        const bool lone_byte = piece.size() == 1 && static_cast<unsigned char>(piece[0]) >= 0x80;
        if (lone_byte || piece.find('\0') != std::string::npos || (piece.empty() && !tok.is_eog(t))) free.logit_bias.emplace_back(t, -100.0f);
    }
    ASSERT_GT(free.logit_bias.size(), 128u);
    auto plain = e->generate("Once upon a time", free);
    ASSERT_TRUE(plain.ok()) << plain.error().what();
    ASSERT_FALSE(plain->tokens.empty());
    auto g = sampling::Grammar::parse(R"(root ::= [^\x00]*)");
    ASSERT_TRUE(g.ok()) << g.error().what();
    GenerateOptions constrained = free;
    constrained.grammar = *g;
    auto r = e->generate("Once upon a time", constrained);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r->tokens, plain->tokens);
    EXPECT_EQ(r->n_grammar_masked, 0);
    EXPECT_EQ(e->cache().stats().used, 0);
}

TEST(GrammarStep, GreedyWithTheFirstTryEqualsMaskingEveryStep) {
    auto e = testing::make_engine(testing::load_synthetic("grammar-step"), 1024);
    const auto schema = nlohmann::ordered_json::parse(
        R"({"type":"object","properties":{"name":{"type":"string","maxLength":12},"n":{"type":"integer","minimum":0,"maximum":99},)"
        R"("tags":{"type":"array","items":{"enum":["a","bc","def"]},"maxItems":3}},"required":["name","n","tags"],"additionalProperties":false})");
    auto g = sampling::compile_json_schema(schema);
    ASSERT_TRUE(g.ok()) << g.error().what();
    for (const char* prompt : {"Answer in JSON:", "Hello", "The cat"}) {
        GenerateOptions fast = testing::greedy(600);
        fast.grammar = *g;
        GenerateOptions masked = fast;
        masked.n_logprobs = 0;  // logprobs need the masked distribution: every step masks
        auto a = e->generate(prompt, fast);
        auto b = e->generate(prompt, masked);
        ASSERT_TRUE(a.ok() && b.ok());
        EXPECT_EQ(a->tokens, b->tokens) << prompt << ": " << a->text << " vs " << b->text;
        EXPECT_EQ(a->finish, b->finish) << prompt;
        // One mask per sampled token (an end-of-generation draw is not among the tokens).
        const auto n = static_cast<int32_t>(b->tokens.size());
        EXPECT_GE(b->n_grammar_masked, n) << prompt;
        EXPECT_LE(b->n_grammar_masked, n + 1) << prompt;
        EXPECT_LE(a->n_grammar_masked, b->n_grammar_masked) << prompt;
        ASSERT_EQ(a->finish, FinishReason::stop) << prompt << ": " << a->text;
        EXPECT_TRUE(nlohmann::json::accept(a->text)) << prompt << ": " << a->text;
    }
}

}  // namespace
}  // namespace kvrag::engine
