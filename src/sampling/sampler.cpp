#include "sampling/sampler.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <limits>

namespace kvrag::sampling {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

Error invalid(const char* field, double value, const char* rule) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), "%s %g %s", field, value, rule);
    return Error{Errc::request_invalid, buf};
}

// Written so NaN fails: every comparison with NaN is false.
bool in_range(float v, float lo, float hi) { return v >= lo && v <= hi; }

// Descending logit, ties to the lowest id: the one order used for top-k, sorting and greedy,
// so results never depend on how std::nth_element / std::sort break ties.
bool ranks_higher(const TokenProb& a, const TokenProb& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Validation

Result<void> validate(const SamplingParams& p) {
    if (!std::isfinite(p.temperature) || p.temperature < 0.0f) {
        return invalid("temperature", p.temperature, "is outside [0, inf)");
    }
    if (!in_range(p.top_p, 0.0f, 1.0f)) return invalid("top_p", p.top_p, "is outside [0, 1]");
    if (!in_range(p.min_p, 0.0f, 1.0f)) return invalid("min_p", p.min_p, "is outside [0, 1]");
    if (!std::isfinite(p.repeat_penalty) || p.repeat_penalty <= 0.0f) {
        // 0 would divide positive logits by zero; negative would flip their sign.
        return invalid("repeat_penalty", p.repeat_penalty, "is outside (0, inf)");
    }
    if (p.repeat_last_n < -1) {
        return invalid("repeat_last_n", p.repeat_last_n, "is below -1 (-1 means all history)");
    }
    if (!in_range(p.presence_penalty, -2.0f, 2.0f)) {
        return invalid("presence_penalty", p.presence_penalty, "is outside [-2, 2]");
    }
    if (!in_range(p.frequency_penalty, -2.0f, 2.0f)) {
        return invalid("frequency_penalty", p.frequency_penalty, "is outside [-2, 2]");
    }
    return {};
}

// ---------------------------------------------------------------------------------------------
// Rng

void Rng::reseed(uint64_t seed) {
    // splitmix64 spreads any seed (including 0) over the state; xoshiro's state must not be
    // all zero, which four splitmix64 outputs never are.
    uint64_t x = seed;
    for (uint64_t& s : s_) s = splitmix64(x);
}

uint64_t Rng::next_u64() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

// ---------------------------------------------------------------------------------------------
// Sampler

Sampler::Sampler(const SamplingParams& params, int32_t n_vocab)
    : params_(params),
      n_vocab_(n_vocab),
      penalties_on_(params.repeat_last_n != 0 &&
                    (params.repeat_penalty != 1.0f || params.presence_penalty != 0.0f ||
                     params.frequency_penalty != 0.0f)),
      window_(params.repeat_last_n < 0 ? SIZE_MAX : static_cast<size_t>(params.repeat_last_n)),
      rng_(params.seed) {
    assert(n_vocab > 0 && "n_vocab comes from validated model hparams");
    cands_.resize(static_cast<size_t>(n_vocab));
    if (penalties_on_) {
        counts_.assign(static_cast<size_t>(n_vocab), 0);
        seen_.assign(static_cast<size_t>(n_vocab), 0);
        // The ring grows on demand in accept(): a huge repeat_last_n must not reserve memory
        // for tokens that are never generated.
    }
}

void Sampler::accept(int32_t token) {
    if (!penalties_on_ || token < 0 || token >= n_vocab_) return;
    if (history_.size() < window_) {
        history_.push_back(token);
    } else {
        // Full ring: the oldest token leaves the window.
        --counts_[history_[history_head_]];
        history_[history_head_] = token;
        history_head_ = (history_head_ + 1) % history_.size();
    }
    ++counts_[token];
}

void Sampler::reset() {
    for (int32_t tok : history_) counts_[tok] = 0;
    history_.clear();
    history_head_ = 0;
    rng_.reseed(params_.seed);
}

void Sampler::apply_penalties(float* logits) {
    if (!penalties_on_ || history_.empty()) return;
    // A token can sit in the window many times but is penalised once; the epoch stamp marks
    // the ones done this call without clearing an n_vocab array every token.
    if (++epoch_ == 0) {
        std::fill(seen_.begin(), seen_.end(), 0u);
        epoch_ = 1;
    }
    const float rep = params_.repeat_penalty;
    for (int32_t tok : history_) {
        if (seen_[tok] == epoch_) continue;
        seen_[tok] = epoch_;
        float& l = logits[tok];
        // Dividing a negative logit would raise it; multiplying pushes it further down instead.
        l = l > 0.0f ? l / rep : l * rep;
        l -= static_cast<float>(counts_[tok]) * params_.frequency_penalty +
             params_.presence_penalty;  // counts_[tok] > 0 for every token in the window
    }
}

size_t Sampler::filter(const float* logits) {
    const size_t n_vocab = cands_.size();
    const auto first = cands_.begin();
    auto candidate = [logits](size_t i) {
        const float l = logits[i];
        return TokenProb{static_cast<int32_t>(i), std::isnan(l) ? kNegInf : l, 0.0f};
    };

    size_t n = n_vocab;
    if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n_vocab) {
        // top_k in one pass: cands_[0, k) is a heap whose front is the worst of the best k so
        // far. Most logits lose a single compare against that front, so 150k tokens cost about
        // one pass, and only k structs are ever written (nth_element would fill all n_vocab).
        n = static_cast<size_t>(params_.top_k);
        const auto last = first + static_cast<ptrdiff_t>(n);
        for (size_t i = 0; i < n; ++i) cands_[i] = candidate(i);
        std::make_heap(first, last, ranks_higher);
        for (size_t i = n; i < n_vocab; ++i) {
            // Strictly greater: on a tie the earlier (lower) id already in the heap wins.
            if (!(logits[i] > cands_[0].logit)) continue;  // also skips NaN
            std::pop_heap(first, last, ranks_higher);
            cands_[n - 1] = candidate(i);
            std::push_heap(first, last, ranks_higher);
        }
    } else {
        for (size_t i = 0; i < n_vocab; ++i) cands_[i] = candidate(i);
    }

    const TokenProb best = *std::min_element(first, first + static_cast<ptrdiff_t>(n), ranks_higher);
    if (best.logit == kNegInf) {
        // Everything is masked: no distribution to draw from, so fall back to the lowest id.
        cands_[0] = {best.id, best.logit, 1.0f};
        return 1;
    }

    // temperature + softmax. Subtracting the max first keeps exp() in range and makes the best
    // token's weight exactly 1, which the min_p test below relies on. Weights stay
    // unnormalised in .p; `total` is the softmax denominator over all top-k survivors.
    const float inv_t = 1.0f / params_.temperature;
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) {
        cands_[i].p = std::exp((cands_[i].logit - best.logit) * inv_t);
        total += cands_[i].p;
    }

    // Drop tokens that cannot survive before sorting, so a disabled top_k over 150k tokens
    // sorts only a handful.
    //  - min_p: p >= min_p * p_max  <=>  weight >= min_p, since p_max has weight 1. Exact, so
    //    this *is* the min_p step; because top_p and min_p each keep a prefix of the same
    //    ranking, doing min_p first gives the same intersection as the documented order.
    //  - top_p: a token with p < (1 - top_p) / (n - 1) is never in the nucleus unless it ranks
    //    first. Were it needed, the mass before it would be < top_p, so it and the tokens after
    //    it would hold > 1 - top_p; but they are at most n - 1 tokens, none likelier than it,
    //    so they hold < (n - 1) * bound = 1 - top_p. Only a bound; the exact cut is below.
    double keep_weight = 0.0;
    if (params_.min_p > 0.0f) keep_weight = params_.min_p;
    if (params_.top_p < 1.0f && n > 1) {
        keep_weight = std::max(keep_weight, (1.0 - params_.top_p) / static_cast<double>(n - 1) * total);
    }
    keep_weight = std::min(keep_weight, 1.0);  // the best token always survives
    // Zero weights (masked logits, exp underflow) go too: they could otherwise be returned by
    // the rounding fallback at the end of the draw.
    size_t m = 0;
    for (size_t i = 0; i < n; ++i) {
        if (cands_[i].p >= keep_weight && cands_[i].p > 0.0f) cands_[m++] = cands_[i];
    }
    std::sort(first, first + static_cast<ptrdiff_t>(m), ranks_higher);

    // top_p on the post-top-k distribution: the shortest prefix reaching the mass.
    if (params_.top_p < 1.0f) {
        double cum = 0.0;
        for (size_t i = 0; i < m; ++i) {
            cum += cands_[i].p / total;
            if (cum >= params_.top_p) {
                m = i + 1;
                break;
            }
        }
    }

    // renormalise the survivors.
    double kept = 0.0;
    for (size_t i = 0; i < m; ++i) kept += cands_[i].p;
    for (size_t i = 0; i < m; ++i) cands_[i].p = static_cast<float>(cands_[i].p / kept);
    return m;
}

std::span<const TokenProb> Sampler::candidates(float* logits) {
    apply_penalties(logits);
    if (params_.temperature <= 0.0f) {
        // Greedy: a plain scan; `>` keeps the first (lowest) id on ties and never picks NaN.
        int32_t arg = 0;
        float best = kNegInf;
        for (int32_t i = 0; i < n_vocab_; ++i) {
            if (logits[i] > best) {
                best = logits[i];
                arg = i;
            }
        }
        cands_[0] = {arg, logits[arg], 1.0f};
        return {cands_.data(), 1};
    }
    return {cands_.data(), filter(logits)};
}

int32_t Sampler::sample(float* logits) {
    const std::span<const TokenProb> c = candidates(logits);
    if (params_.temperature <= 0.0f) return c[0].id;
    return draw(c);
}

int32_t Sampler::draw(std::span<const TokenProb> c) {
    const double u = rng_.next_double();
    double cum = 0.0;
    for (const TokenProb& tp : c) {
        cum += tp.p;
        if (u < cum) return tp.id;
    }
    return c.back().id;  // u landed past a sum that rounded to slightly under 1
}

}  // namespace kvrag::sampling

// ---------------------------------------------------------------------------------------------
// Constrained draw (see sampler.h for why it is exact)

namespace kvrag::sampling {

bool Sampler::surely_kept(const float* logits, int32_t t, TokenConstraint& c) {
    const float lt = logits[t];
    // The tokens ranked above t (ranks_higher: higher logit, ties to the lowest id).
    above_.clear();
    for (int32_t i = 0; i < n_vocab_; ++i) {
        const float l = logits[i];
        if (l > lt || (l == lt && i < t)) {
            if (above_.size() == kMaxRankedAbove) return false;  // t ranks too low to decide cheaply
            above_.push_back({i, l, 0.0f});
        }
    }
    std::sort(above_.begin(), above_.end(), ranks_higher);
    // Those of them the constraint allows, in rank order: the masked ranking above t.
    size_t n_allowed = 0;
    for (const TokenProb& tp : above_) {
        if (c.allowed(tp.id)) above_[n_allowed++] = tp;
    }
    // top_k after masking: t survives iff fewer than k allowed tokens rank above it.
    if (params_.top_k > 0 && n_allowed >= static_cast<size_t>(params_.top_k)) return false;
    // Weights relative to the best allowed token, as filter() computes them after masking.
    const float best = n_allowed > 0 ? above_[0].logit : lt;
    const float inv_t = 1.0f / params_.temperature;
    const float wt = std::exp((lt - best) * inv_t);
    if (!(wt > 0.0f)) return false;  // filter() drops zero weights
    // A relative margin well above float rounding: near a boundary the full path decides.
    constexpr double kMargin = 1e-3;
    if (params_.min_p > 0.0f && wt < params_.min_p * (1.0 + kMargin)) return false;
    if (params_.top_p < 1.0f) {
        // t is in the nucleus iff the mass ranked above it is < top_p. That mass is W / total
        // with total (the masked top-k survivors) >= W + wt, so W < top_p (W + wt) suffices.
        double w_above = 0.0;
        for (size_t i = 0; i < n_allowed; ++i) w_above += std::exp((above_[i].logit - best) * inv_t);
        if (!(w_above < params_.top_p * (w_above + wt) * (1.0 - kMargin))) return false;
    }
    return true;
}

ConstrainedDraw Sampler::sample_constrained(float* logits, TokenConstraint& c) {
    const size_t n = static_cast<size_t>(n_vocab_);
    raw_.assign(logits, logits + n);
    apply_penalties(logits);
    // 1. The proposal: the argmax (greedy) or a draw from the full softmax.
    int32_t t = -1;
    float top = kNegInf;
    for (int32_t i = 0; i < n_vocab_; ++i) {
        if (logits[i] > top) {  // never NaN; ties keep the lowest id
            top = logits[i];
            t = i;
        }
    }
    const bool greedy = params_.temperature <= 0.0f;
    if (t >= 0 && !greedy) {
        const float inv_t = 1.0f / params_.temperature;
        double total = 0.0;
        for (size_t i = 0; i < n; ++i) {
            const float l = logits[i];
            if (!std::isnan(l)) total += std::exp((l - top) * inv_t);
        }
        const double target = rng_.next_double() * total;
        double cum = 0.0;
        for (size_t i = 0; i < n; ++i) {
            const float l = logits[i];
            if (std::isnan(l)) continue;
            const double w = std::exp((l - top) * inv_t);
            if (w <= 0.0) continue;
            cum += w;
            t = static_cast<int32_t>(i);
            if (target < cum) break;
        }
    }
    // 2. Accept t when it is allowed and surely survives the filters after masking.
    const bool t_allowed = t >= 0 && c.allowed(t);
    if (t_allowed && (greedy || surely_kept(logits, t, c))) return {t, false};
    // 3. The full path: mask the logits as they came in and filter as sample() does.
    std::copy(raw_.begin(), raw_.end(), logits);
    if (c.mask(logits) == 0) return {-1, true};
    const std::span<const TokenProb> kept = candidates(logits);
    if (greedy) return {kept[0].id, true};
    if (t_allowed) {
        for (const TokenProb& tp : kept) {
            if (tp.id == t) return {t, true};
        }
    }
    return {draw(kept), true};
}

}  // namespace kvrag::sampling
