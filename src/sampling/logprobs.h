// Log-probabilities of generated tokens, for the OpenAI `logprobs` / `top_logprobs` fields.
//
// Which distribution: the one the sampler drew from, before its truncation filters. That is
// log_softmax(l / T) over the logits l after logit_bias, the grammar mask and the penalties
// (exactly the values Sampler::sample leaves in its logits buffer), with T the temperature
// (T = 1 for greedy, whose "distribution" would otherwise be a one-hot). top_k / top_p /
// min_p are not applied: a token they cut still gets its (finite) logprob, so a client can see
// how far below the cut it was. Masked tokens (-inf) have no logprob and never appear in top.
#pragma once

#include <cstdint>
#include <vector>

namespace kvrag::sampling {

inline constexpr int32_t kMaxTopLogprobs = 20;  // OpenAI's limit on top_logprobs

struct TokenLogprob {
    int32_t id = -1;
    float logprob = 0.0f;
};

// One generated token: its own logprob and the n_top most likely alternatives (descending,
// ties to the lowest id; may include the token itself, as OpenAI's do).
struct TokenLogprobs {
    TokenLogprob token;
    std::vector<TokenLogprob> top;
};

// logits: (n_vocab) as left by Sampler::sample. n_top in [0, kMaxTopLogprobs] (clamped).
// O(n_vocab) plus O(n_vocab log n_top); allocates the `top` vector only.
TokenLogprobs compute_logprobs(const float* logits, int32_t n_vocab, float temperature, int32_t chosen, int32_t n_top);

}  // namespace kvrag::sampling
