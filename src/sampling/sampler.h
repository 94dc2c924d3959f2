// Next-token sampling: turns one row of logits into a token id.
//
// Order of operations in Sampler::sample (fixed; tests pin it):
//   1. penalties      repeat (llama.cpp), presence and frequency (OpenAI) over the last
//                     repeat_last_n accepted tokens; applied to `logits` in place.
//   2. greedy         temperature <= 0: argmax over the penalised logits, lowest id wins ties;
//                     no filtering and no RNG draw.
//   3. top_k          keep the k highest logits (ties to the lowest id).
//   4. temperature    softmax(logit / temperature) over the top-k survivors.
//   5. top_p          keep the shortest prefix (by descending probability) whose mass >= top_p.
//   6. min_p          keep tokens with p >= min_p * p_max.
//   7. renormalise    survivors sum to 1.
//   8. draw           one uniform draw from the seeded Rng; every non-greedy sample() consumes
//                     exactly one draw, so a sequence depends only on seed and logits.
//
// Note the order differs from llama.cpp's default chain (which applies temperature last): here
// top_p / min_p see the temperature-scaled distribution, as in llama2.c and HF transformers.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/error.h"

namespace kvrag::sampling {

struct SamplingParams {
    float temperature = 0.8f;        // <= 0 means greedy (argmax, lowest id wins ties)
    int32_t top_k = 40;              // <= 0 disables
    float top_p = 0.95f;             // >= 1 disables
    float min_p = 0.05f;             // <= 0 disables; keep tokens with p >= min_p * p_max
    float repeat_penalty = 1.0f;     // 1 disables; logit > 0 ? logit / pen : logit * pen
    int32_t repeat_last_n = 64;      // window for all three penalties; 0 disables, -1 = all
    float presence_penalty = 0.0f;   // logit -= presence * (count > 0)
    float frequency_penalty = 0.0f;  // logit -= frequency * count
    uint64_t seed = 0;               // fixed seed => reproducible sequence
};

// Checks every field's range; Errc::request_invalid naming the field and value on failure,
// e.g. "top_p 1.5 is outside [0, 1]". Accepted ranges:
//   temperature finite and >= 0; top_k any; top_p, min_p in [0, 1];
//   repeat_penalty finite and > 0; repeat_last_n >= -1;
//   presence_penalty, frequency_penalty in [-2, 2] (OpenAI's range); seed any.
Result<void> validate(const SamplingParams& params);

// xoshiro256** seeded through splitmix64. Written out here rather than taken from <random>
// because the standard distributions are implementation-defined: the same seed must give the
// same tokens on every compiler and platform.
class Rng {
public:
    explicit Rng(uint64_t seed = 0) { reseed(seed); }
    void reseed(uint64_t seed);
    uint64_t next_u64();
    // Uniform in [0, 1): the top 53 bits scaled, so every value is exactly representable.
    double next_double() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

private:
    uint64_t s_[4];
};

// One surviving candidate after filtering.
struct TokenProb {
    int32_t id;
    float logit;  // penalised logit, before temperature
    float p;      // probability after filtering and renormalisation
};

// A constraint on the next token that can be tested one token at a time (cheap) or applied to
// the whole vocabulary at once (expensive): a grammar (engine/engine.cpp). Both must agree:
// allowed(t) is true exactly for the tokens mask() leaves finite.
class TokenConstraint {
public:
    virtual ~TokenConstraint() = default;
    virtual bool allowed(int32_t token) = 0;
    // Sets the logits of every disallowed token to -inf; returns how many tokens stay allowed.
    virtual size_t mask(float* logits) = 0;
};

// What sample_constrained did.
struct ConstrainedDraw {
    int32_t token = -1;   // -1: mask() left no token allowed
    bool masked = false;  // the full mask was needed
};

class Sampler {
public:
    // Precondition: validate(params) passed (out-of-range values are not rejected here, they
    // only make the filters degenerate) and n_vocab > 0. Allocates all scratch up front.
    Sampler(const SamplingParams& params, int32_t n_vocab);

    // logits: (n_vocab) raw next-token scores; overwritten with the penalised logits (scratch).
    // NaN logits are treated as -inf. Allocates nothing.
    int32_t sample(float* logits);

    // Draws with exactly the distribution sample() gives on the logits after c.mask(), but
    // usually without calling c.mask() (see docs/grammar.md, "First try, then mask"):
    //   1. t is drawn from the full (untruncated) softmax of the penalised logits / temperature
    //      (greedy: the argmax). The target distribution, the masked-then-filtered one, is that
    //      softmax restricted to a set K (the allowed tokens that survive top-k/top-p/min-p after
    //      masking), so t stands if t is in K.
    //   2. t in K is decided from t and the few tokens ranked above it (each tested with
    //      c.allowed): at most kMaxRankedAbove of them, and only when every filter passes with
    //      a margin against rounding. Otherwise, or when t is not allowed:
    //   3. the logits are masked and filtered as sample() would; t stands if it survived, else
    //      the token is drawn from the survivors.
    // Drawing t with probability pi(t), or (with probability 1 - pi(K)) from pi restricted to
    // K, gives each t in K probability pi(t) + (1 - pi(K)) pi(t) / pi(K) = pi(t) / pi(K):
    // exactly the target. Greedy: the argmax, if allowed, is the masked argmax. Uses one Rng
    // draw, two when step 3 redraws: seeded output is reproducible but differs from sample()
    // on pre-masked logits. logits: (n_vocab) raw scores; left as the penalised, masked
    // logits when the mask was needed, else the penalised unmasked logits.
    ConstrainedDraw sample_constrained(float* logits, TokenConstraint& c);
    static constexpr size_t kMaxRankedAbove = 64;

    // Steps 1-7 without the draw: the survivors in descending probability (ties to the lowest
    // id), p summing to 1. Greedy gives the single argmax with p = 1. Does not touch the Rng.
    // The view is valid until the next sample()/candidates() call. For tests and diagnostics.
    std::span<const TokenProb> candidates(float* logits);

    // Records a generated (or prompt) token for the penalties. Ids outside [0, n_vocab) are
    // ignored: they can only come from a caller bug or unvalidated input, and a wrong penalty
    // is better than a crash. May allocate while the history grows to repeat_last_n (or without
    // bound when repeat_last_n is -1); never once the window is full.
    void accept(int32_t token);

    // Forgets the history and re-seeds, so the next draws repeat the sequence from the start.
    void reset();

    const SamplingParams& params() const { return params_; }
    int32_t n_vocab() const { return n_vocab_; }

private:
    void apply_penalties(float* logits);
    // Fills cands_[0, n) with the non-greedy survivors and returns n (>= 1).
    size_t filter(const float* logits);

    SamplingParams params_;
    int32_t n_vocab_;
    bool penalties_on_;
    size_t window_;  // history capacity; SIZE_MAX when repeat_last_n is -1
    Rng rng_;

    // Step 2 of sample_constrained: t (allowed; logits penalised, unmasked) surely survives
    // the filters after masking. false also when undecided.
    bool surely_kept(const float* logits, int32_t t, TokenConstraint& c);
    int32_t draw(std::span<const TokenProb> c);

    std::vector<TokenProb> cands_;  // (n_vocab) scratch for filtering
    std::vector<float> raw_;        // (n_vocab) sample_constrained: the logits before penalties
    std::vector<TokenProb> above_;  // (<= kMaxRankedAbove + 1) tokens ranked above the draw
    std::vector<int32_t> history_;  // (<= window_) ring of the last accepted tokens
    size_t history_head_ = 0;       // oldest entry, once the ring is full
    std::vector<int32_t> counts_;   // (n_vocab) occurrences of each token in history_
    std::vector<uint32_t> seen_;    // (n_vocab) == epoch_ if already penalised this call
    uint32_t epoch_ = 0;
};

}  // namespace kvrag::sampling
