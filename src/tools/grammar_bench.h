// `kvrag bench --grammar json`: what constrained decoding adds to each generated token. The
// decode step itself does not change under a grammar; the added work is the token mask (a walk
// of the vocabulary's piece trie with the matcher) and advancing the matcher by the chosen
// token. This replays a fixed JSON answer token by token through both, under the schema
// grammar it satisfies, and times them: set against the tg rows of the same run it gives the
// cost per token with and without a grammar.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace kvrag::tools {

struct GrammarBenchResult {
    std::string kind;            // "json" (the schema grammar) or "json_object"
    int32_t n_tokens = 0;        // tokens of the replayed answer
    double build_ms = 0.0;       // building the vocabulary's piece trie (once per model)
    std::vector<double> us_per_token;  // full mask (the trie walk) + advance, one mean per repetition, ascending
    // The same through TokenMask's cache of masks per matcher state, emptied before each
    // repetition (hits only on states repeated within the answer).
    std::vector<double> cached_us_per_token;
    // The engine's first try (Engine::step): copy the logits, check the drawn token, advance.
    // What a step costs when the model's own choice fits the grammar.
    std::vector<double> fast_us_per_token;
    double median_us() const { return us_per_token[us_per_token.size() / 2]; }
    double cached_median_us() const { return cached_us_per_token[cached_us_per_token.size() / 2]; }
    double fast_median_us() const { return fast_us_per_token[fast_us_per_token.size() / 2]; }
};

// kind: "json" or "json_object". Errors: request_invalid for another kind; engine_internal if
// the replayed answer does not fit its own grammar (a bug here).
Result<GrammarBenchResult> run_grammar_bench(const tokenizer::Tokenizer& tok, const std::string& kind, int32_t reps);

}  // namespace kvrag::tools
