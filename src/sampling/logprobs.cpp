#include "sampling/logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kvrag::sampling {

TokenLogprobs compute_logprobs(const float* logits, int32_t n_vocab, float temperature, int32_t chosen, int32_t n_top) {
    const float inv_t = temperature > 0.0f ? 1.0f / temperature : 1.0f;
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    auto scaled = [&](int32_t i) {
        const float l = logits[i];
        return std::isnan(l) || l == kNegInf ? kNegInf : l * inv_t;
    };
    // log-sum-exp with the max subtracted, in double: 150k terms lose nothing that matters.
    float max = kNegInf;
    for (int32_t i = 0; i < n_vocab; ++i) max = std::max(max, scaled(i));
    TokenLogprobs out;
    out.token.id = chosen;
    if (max == kNegInf) {
        // Nothing had any probability (every token masked); report the chosen one as certain.
        out.token.logprob = 0.0f;
        return out;
    }
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; ++i) {
        const float s = scaled(i);
        if (s != kNegInf) sum += std::exp(static_cast<double>(s - max));
    }
    const double log_z = static_cast<double>(max) + std::log(sum);
    auto logprob = [&](int32_t i) {
        const float s = scaled(i);
        return s == kNegInf ? kNegInf : static_cast<float>(static_cast<double>(s) - log_z);
    };
    if (chosen >= 0 && chosen < n_vocab) out.token.logprob = logprob(chosen);

    const int32_t k = std::clamp(n_top, 0, kMaxTopLogprobs);
    if (k == 0) return out;
    // Keep the best k in a small sorted vector: most tokens lose one compare with its last.
    auto better = [](const TokenLogprob& a, const TokenLogprob& b) { return a.logprob > b.logprob || (a.logprob == b.logprob && a.id < b.id); };
    std::vector<TokenLogprob>& top = out.top;
    top.reserve(static_cast<size_t>(k) + 1);
    for (int32_t i = 0; i < n_vocab; ++i) {
        const float lp = logprob(i);
        if (lp == kNegInf) continue;
        const TokenLogprob c{i, lp};
        if (static_cast<int32_t>(top.size()) == k && !better(c, top.back())) continue;
        top.insert(std::upper_bound(top.begin(), top.end(), c, better), c);
        if (static_cast<int32_t>(top.size()) > k) top.pop_back();
    }
    return out;
}

}  // namespace kvrag::sampling
