// Helpers shared by the grammar and JSON-schema tests (one definition, so the unity build of
// the suite never meets two copies).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "sampling/grammar.h"

namespace kvrag::sampling {

// Whole-input match: every byte advances and the grammar accepts at the end.
inline bool matches(const std::shared_ptr<const Grammar>& g, const std::string& input) {
    GrammarMatcher m(g);
    return m.advance(input) && m.accepting();
}

// Random sentences of a grammar: what a model with random weights could write, without the
// model. Each rule picks an alternative uniformly and each character set a random code point
// (mostly ASCII, so the short classes of JSON get hit often), until the sentence reaches
// `budget` code points; from then on every rule takes its shortest alternative, so the walk
// ends (the parser refuses left recursion, so a recursive alternative is never the shortest).
class GrammarSampler {
public:
    explicit GrammarSampler(std::shared_ptr<const Grammar> g, size_t budget = 400) : g_(std::move(g)), budget_(budget) {
        // min_len_[r]: length of r's shortest sentence (a fixpoint from "unknown").
        min_len_.assign(g_->n_rules(), kInf);
        for (bool changed = true; changed;) {
            changed = false;
            for (uint32_t r = 0; r < g_->n_rules(); ++r) {
                for (uint32_t start : g_->alternatives(r)) {
                    const size_t n = alt_len(start);
                    if (n < min_len_[r]) min_len_[r] = n, changed = true;
                }
            }
        }
    }

    std::string sample(std::mt19937_64& rng) {
        out_.clear();
        n_cps_ = 0;
        rule(g_->root(), rng);
        return out_;
    }

private:
    static constexpr size_t kInf = std::numeric_limits<size_t>::max() / 4;

    size_t alt_len(uint32_t p) const {
        size_t n = 0;
        for (; g_->elems()[p].kind != Grammar::Kind::end; ++p) {
            const auto& e = g_->elems()[p];
            n = std::min(kInf, n + (e.kind == Grammar::Kind::chars ? 1 : min_len_[e.arg]));  // kInf: unknown yet
        }
        return n;
    }

    void rule(uint32_t r, std::mt19937_64& rng) {
        const auto& alts = g_->alternatives(r);
        uint32_t p = alts[std::uniform_int_distribution<size_t>(0, alts.size() - 1)(rng)];
        if (n_cps_ >= budget_) {
            p = *std::min_element(alts.begin(), alts.end(), [&](uint32_t a, uint32_t b) { return alt_len(a) < alt_len(b); });
        }
        for (; g_->elems()[p].kind != Grammar::Kind::end; ++p) {
            const auto& e = g_->elems()[p];
            if (e.kind == Grammar::Kind::ref) {
                rule(e.arg, rng);
            } else {
                put(pick(g_->set(e.arg), rng));
            }
        }
    }

    // A code point of the set, never a surrogate: ASCII members with probability 3/4.
    static uint32_t pick(const std::vector<CpRange>& set, std::mt19937_64& rng) {
        std::vector<CpRange> ascii;
        for (const auto& r : set) {
            if (r.lo < 0x80) ascii.push_back({r.lo, std::min<uint32_t>(r.hi, 0x7F)});
        }
        const auto& from = !ascii.empty() && rng() % 4 != 0 ? ascii : set;
        for (;;) {
            const auto& r = from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(rng)];
            const uint32_t cp = std::uniform_int_distribution<uint32_t>(r.lo, r.hi)(rng);
            if (cp < 0xD800 || cp > 0xDFFF) return cp;
        }
    }

    void put(uint32_t cp) {
        ++n_cps_;
        if (cp < 0x80) {
            out_ += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out_ += static_cast<char>(0xC0 | (cp >> 6));
            out_ += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out_ += static_cast<char>(0xE0 | (cp >> 12));
            out_ += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out_ += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out_ += static_cast<char>(0xF0 | (cp >> 18));
            out_ += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out_ += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out_ += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    std::shared_ptr<const Grammar> g_;
    size_t budget_;
    std::vector<size_t> min_len_;  // (n_rules)
    std::string out_;
    size_t n_cps_ = 0;
};

}  // namespace kvrag::sampling
