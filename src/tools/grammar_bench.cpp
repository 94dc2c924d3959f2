#include "tools/grammar_bench.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include <nlohmann/json.hpp>

#include "sampling/grammar.h"
#include "sampling/json_schema.h"

namespace kvrag::tools {
namespace {

using Clock = std::chrono::steady_clock;

// A typical structured-output answer: nested object, array, enum, bounded integer, strings.
constexpr const char* kSchema = R"({"type":"object","properties":{
  "title":{"type":"string","maxLength":80},"year":{"type":"integer","minimum":1900,"maximum":2100},
  "genres":{"type":"array","items":{"enum":["drama","comedy","science fiction","documentary"]},"maxItems":4},
  "rating":{"type":"number","minimum":0,"maximum":10},
  "director":{"type":"object","properties":{"name":{"type":"string"},"born":{"type":"string","format":"date"}},"required":["name"]},
  "available":{"type":"boolean"}},"required":["title","year","genres","director","available"],"additionalProperties":false})";
constexpr const char* kAnswer =
    R"({"title": "The Long Way Home, a film about rivers", "year": 1987, "genres": ["drama", "science fiction"], "rating": 7.25, )"
    R"("director": {"name": "Ana Lucía Ferreira", "born": "1951-03-09"}, "available": true})";

}  // namespace

Result<GrammarBenchResult> run_grammar_bench(const tokenizer::Tokenizer& tok, const std::string& kind, int32_t reps) {
    std::string gbnf;
    if (kind == "json") {
        auto c = sampling::json_schema_to_gbnf(nlohmann::ordered_json::parse(kSchema));
        if (!c) return c.error();
        gbnf = *c;
    } else if (kind == "json_object") {
        gbnf = sampling::json_object_gbnf();
    } else {
        return Error{Errc::request_invalid, "--grammar '" + kind + "' is not one of json, json_object"};
    }
    // SentencePiece vocabularies encode the text with a leading space on its first piece: the
    // replay's grammar allows one, so the same tokens work for every vocabulary type.
    gbnf = "root ::= \" \"? answer\nanswer" + gbnf.substr(4);
    auto parsed = sampling::Grammar::parse(gbnf);
    if (!parsed) return parsed.error();
    const std::shared_ptr<const sampling::Grammar> g = *parsed;
    GrammarBenchResult res;
    res.kind = kind;
    const int32_t n_vocab = tok.n_vocab();
    const auto t0 = Clock::now();
    std::vector<std::string> pieces(static_cast<size_t>(n_vocab));
    std::vector<bool> eog(static_cast<size_t>(n_vocab), false);
    for (int32_t i = 0; i < n_vocab; ++i) {
        pieces[static_cast<size_t>(i)] = tok.token_to_piece(i);
        eog[static_cast<size_t>(i)] = tok.is_eog(i);
    }
    const sampling::TokenMask mask(pieces, eog);
    res.build_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();

    // The answer as the model's tokens (no BOS, no special-token parsing).
    const std::vector<int32_t> ids = tok.encode(kAnswer, /*add_special=*/false, /*parse_special=*/false);
    res.n_tokens = static_cast<int32_t>(ids.size());
    std::vector<float> logits(static_cast<size_t>(n_vocab));
    // The full mask per token: the trie walk every time (cached false), or through the mask
    // cache, emptied before each replay so only states repeated within one answer hit it.
    auto replay = [&](bool cached) -> Result<double> {
        sampling::GrammarMatcher m(g);
        if (cached) mask.clear_cache();
        double total_us = 0.0;
        for (int32_t id : ids) {
            std::fill(logits.begin(), logits.end(), 0.0f);  // untimed: the forward pass writes these
            const auto a = Clock::now();
            if (cached) {
                mask.apply(m, logits.data());
            } else {
                mask.apply_uncached(m, logits.data());
            }
            const bool allowed = logits[static_cast<size_t>(id)] != -std::numeric_limits<float>::infinity();
            const bool advanced = allowed && m.advance(mask.piece(id));
            total_us += std::chrono::duration<double, std::micro>(Clock::now() - a).count();
            if (!advanced) {
                return Error{Errc::engine_internal, "grammar bench: token " + std::to_string(id) + " of the replayed answer is rejected by its own grammar"};
            }
        }
        if (!m.accepting()) return Error{Errc::engine_internal, "grammar bench: the replayed answer does not complete its grammar"};
        return ids.empty() ? 0.0 : total_us / static_cast<double>(ids.size());
    };
    for (int32_t rep = 0; rep < reps; ++rep) {
        auto walked = replay(false);
        if (!walked) return walked.error();
        res.us_per_token.push_back(*walked);
        auto cached = replay(true);
        if (!cached) return cached.error();
        res.cached_us_per_token.push_back(*cached);
    }
    // The fast path: the drawn token (here the answer's own) checked without a mask.
    std::vector<float> raw(static_cast<size_t>(n_vocab));
    for (int32_t rep = 0; rep < reps; ++rep) {
        sampling::GrammarMatcher m(g);
        double total_us = 0.0;
        for (int32_t id : ids) {
            const auto a = Clock::now();
            raw.assign(logits.begin(), logits.end());
            const std::string_view piece = mask.piece(id);
            const bool advanced = !piece.empty() && m.accepts(piece) && m.advance(piece);
            total_us += std::chrono::duration<double, std::micro>(Clock::now() - a).count();
            if (!advanced) return Error{Errc::engine_internal, "grammar bench: token " + std::to_string(id) + " rejected on the fast path"};
        }
        res.fast_us_per_token.push_back(ids.empty() ? 0.0 : total_us / static_cast<double>(ids.size()));
    }
    std::sort(res.us_per_token.begin(), res.us_per_token.end());
    std::sort(res.fast_us_per_token.begin(), res.fast_us_per_token.end());
    std::sort(res.cached_us_per_token.begin(), res.cached_us_per_token.end());
    return res;
}

}  // namespace kvrag::tools
