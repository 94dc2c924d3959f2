#include "sampling/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace kvrag::sampling {
namespace {

// Every filter off; each test turns on only what it checks.
SamplingParams plain(float temperature = 1.0f) {
    SamplingParams p;
    p.temperature = temperature;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.0f;
    return p;
}

std::vector<float> logits_of(const std::vector<float>& probs) {
    std::vector<float> out;
    for (float p : probs) out.push_back(std::log(p));
    return out;
}

struct Survivors {
    std::vector<int32_t> ids;
    std::vector<float> probs;
};

Survivors run_filters(const SamplingParams& params, std::vector<float> logits) {
    Sampler s(params, static_cast<int32_t>(logits.size()));
    Survivors out;
    for (const TokenProb& tp : s.candidates(logits.data())) {
        out.ids.push_back(tp.id);
        out.probs.push_back(tp.p);
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Filters on small probability vectors; expectations follow from the definitions.

struct FilterCase {
    const char* name;
    std::vector<float> probs;  // becomes logits = log(probs), temperature 1
    int32_t top_k;
    float top_p;
    float min_p;
    std::vector<int32_t> want_ids;
    std::vector<float> want_probs;  // renormalised
};

TEST(SamplerFilters, Table) {
    const std::vector<FilterCase> cases = {
        {"no filters", {0.1f, 0.4f, 0.3f, 0.2f}, 0, 1.0f, 0.0f, {1, 2, 3, 0}, {0.4f, 0.3f, 0.2f, 0.1f}},
        {"top_k 1", {0.1f, 0.4f, 0.3f, 0.2f}, 1, 1.0f, 0.0f, {1}, {1.0f}},
        {"top_k 2", {0.1f, 0.4f, 0.3f, 0.2f}, 2, 1.0f, 0.0f, {1, 2}, {0.4f / 0.7f, 0.3f / 0.7f}},
        {"top_k 3", {0.1f, 0.4f, 0.3f, 0.2f}, 3, 1.0f, 0.0f, {1, 2, 3}, {0.4f / 0.9f, 0.3f / 0.9f, 0.2f / 0.9f}},
        {"top_k > n_vocab", {0.1f, 0.4f, 0.3f, 0.2f}, 10, 1.0f, 0.0f, {1, 2, 3, 0}, {0.4f, 0.3f, 0.2f, 0.1f}},
        {"top_k negative disables", {0.1f, 0.4f, 0.3f, 0.2f}, -1, 1.0f, 0.0f, {1, 2, 3, 0}, {0.4f, 0.3f, 0.2f, 0.1f}},
        // top_p: shortest prefix of {0.4, 0.3, 0.2, 0.1} whose mass reaches p.
        {"top_p 0", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 0.0f, 0.0f, {0}, {1.0f}},
        {"top_p 0.35", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 0.35f, 0.0f, {0}, {1.0f}},
        {"top_p 0.65", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 0.65f, 0.0f, {0, 1}, {0.4f / 0.7f, 0.3f / 0.7f}},
        {"top_p 0.7", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 0.7f, 0.0f, {0, 1}, {0.4f / 0.7f, 0.3f / 0.7f}},
        {"top_p 0.75", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 0.75f, 0.0f, {0, 1, 2}, {0.4f / 0.9f, 0.3f / 0.9f, 0.2f / 0.9f}},
        {"top_p 0.95", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 0.95f, 0.0f, {0, 1, 2, 3}, {0.4f, 0.3f, 0.2f, 0.1f}},
        // min_p: keep p >= min_p * 0.4.
        {"min_p 0.2 (>= 0.08)", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 1.0f, 0.2f, {0, 1, 2, 3}, {0.4f, 0.3f, 0.2f, 0.1f}},
        {"min_p 0.3 (>= 0.12)", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 1.0f, 0.3f, {0, 1, 2}, {0.4f / 0.9f, 0.3f / 0.9f, 0.2f / 0.9f}},
        {"min_p 0.6 (>= 0.24)", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 1.0f, 0.6f, {0, 1}, {0.4f / 0.7f, 0.3f / 0.7f}},
        {"min_p 0.9 (>= 0.36)", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 1.0f, 0.9f, {0}, {1.0f}},
        {"min_p 1 keeps the max", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 1.0f, 1.0f, {0}, {1.0f}},
        // top_p runs on the distribution renormalised after top_k: {4/9, 3/9, 2/9} reaches
        // 0.7 after two tokens, whereas on the raw {0.4, 0.3, ...} it needs 0.75 to take three.
        {"top_k 3 then top_p 0.75", {0.4f, 0.3f, 0.2f, 0.1f}, 3, 0.75f, 0.0f, {0, 1}, {0.4f / 0.7f, 0.3f / 0.7f}},
        // top_p and min_p together keep the shorter prefix.
        {"top_p 0.95 + min_p 0.6", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 0.95f, 0.6f, {0, 1}, {0.4f / 0.7f, 0.3f / 0.7f}},
        {"top_p 0.35 + min_p 0.2", {0.4f, 0.3f, 0.2f, 0.1f}, 0, 0.35f, 0.2f, {0}, {1.0f}},
    };
    for (const FilterCase& c : cases) {
        SCOPED_TRACE(c.name);
        SamplingParams p = plain();
        p.top_k = c.top_k;
        p.top_p = c.top_p;
        p.min_p = c.min_p;
        const Survivors got = run_filters(p, logits_of(c.probs));
        EXPECT_EQ(got.ids, c.want_ids);
        ASSERT_EQ(got.probs.size(), c.want_probs.size());
        for (size_t i = 0; i < got.probs.size(); ++i) EXPECT_NEAR(got.probs[i], c.want_probs[i], 1e-5f);
    }
}

TEST(SamplerFilters, TopKTiesGoToLowestId) {
    SamplingParams p = plain();
    p.top_k = 2;
    const Survivors got = run_filters(p, {1.0f, 2.0f, 2.0f, 2.0f, 0.5f});
    EXPECT_EQ(got.ids, (std::vector<int32_t>{1, 2}));
}

TEST(SamplerFilters, TemperatureScalesLogits) {
    // logits {0, ln 2, ln 4}: at T = 1 the weights are {1, 2, 4}; T = 0.5 squares them to
    // {1, 4, 16}; T = 2 takes square roots to {1, sqrt 2, 2}.
    const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(4.0f)};
    struct Case {
        float t;
        std::vector<double> weights;  // for ids 2, 1, 0
    };
    const std::vector<Case> cases = {
        {1.0f, {4, 2, 1}},
        {0.5f, {16, 4, 1}},
        {2.0f, {2, std::sqrt(2.0), 1}},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.t);
        const Survivors got = run_filters(plain(c.t), logits);
        EXPECT_EQ(got.ids, (std::vector<int32_t>{2, 1, 0}));
        const double sum = c.weights[0] + c.weights[1] + c.weights[2];
        for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(got.probs[i], c.weights[i] / sum, 1e-5);
    }
}

TEST(SamplerFilters, MaskedAndNanLogitsAreNeverCandidates) {
    const float inf = std::numeric_limits<float>::infinity();
    const Survivors got = run_filters(plain(), {-inf, 0.0f, std::nanf(""), 0.0f, -inf});
    EXPECT_EQ(got.ids, (std::vector<int32_t>{1, 3}));
    EXPECT_NEAR(got.probs[0], 0.5f, 1e-6f);

    // All masked: no distribution, the lowest id comes back rather than garbage.
    const Survivors none = run_filters(plain(), {-inf, -inf, -inf});
    EXPECT_EQ(none.ids, (std::vector<int32_t>{0}));
}

// The pre-sort cut (min_p and the top_p bound) must not change the result: compare against a
// direct implementation of the definitions (full sort, cumulative sum) on random logits.
TEST(SamplerFilters, MatchesReferenceOnRandomLogits) {
    Rng rng(12345);
    const int32_t n_vocab = 500;
    const std::vector<SamplingParams> configs = [] {
        std::vector<SamplingParams> v;
        for (int32_t k : {0, 7, 100}) {
            for (float tp : {1.0f, 0.5f, 0.9f, 0.99f}) {
                for (float mp : {0.0f, 0.01f, 0.2f}) {
                    for (float t : {0.3f, 1.0f, 2.5f}) {
                        SamplingParams p = plain(t);
                        p.top_k = k;
                        p.top_p = tp;
                        p.min_p = mp;
                        v.push_back(p);
                    }
                }
            }
        }
        return v;
    }();
    for (int trial = 0; trial < 5; ++trial) {
        std::vector<float> logits(n_vocab);
        for (float& l : logits) l = static_cast<float>(rng.next_double() * 12.0 - 6.0);
        for (const SamplingParams& p : configs) {
            // Reference: sort all, cut top_k, softmax at T, walk top_p, then min_p.
            std::vector<int32_t> order(n_vocab);
            for (int32_t i = 0; i < n_vocab; ++i) order[i] = i;
            std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
                return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
            });
            size_t n = p.top_k > 0 ? std::min<size_t>(p.top_k, n_vocab) : n_vocab;
            std::vector<double> prob(n);
            double sum = 0.0;
            for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp((logits[order[i]] - logits[order[0]]) / p.temperature);
            for (double& x : prob) x /= sum;
            if (p.top_p < 1.0f) {
                double cum = 0.0;
                for (size_t i = 0; i < n; ++i) {
                    cum += prob[i];
                    if (cum >= p.top_p) {
                        n = i + 1;
                        break;
                    }
                }
            }
            size_t m = 0;
            while (m < n && prob[m] >= p.min_p * prob[0]) ++m;
            std::vector<int32_t> want(order.begin(), order.begin() + static_cast<ptrdiff_t>(m));

            std::vector<float> scratch = logits;
            const Survivors got = run_filters(p, scratch);
            ASSERT_EQ(got.ids, want) << "trial " << trial << " k " << p.top_k << " top_p " << p.top_p
                                     << " min_p " << p.min_p << " T " << p.temperature;
            double total = 0.0;
            for (float x : got.probs) total += x;
            EXPECT_NEAR(total, 1.0, 1e-5);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Penalties, hand-computed on logits {2, -1, 0.5, 3, 0}.

struct PenaltyCase {
    const char* name;
    float repeat;
    float presence;
    float frequency;
    int32_t last_n;
    std::vector<int32_t> history;
    std::vector<float> want;
};

TEST(SamplerPenalties, Table) {
    const std::vector<float> base = {2.0f, -1.0f, 0.5f, 3.0f, 0.0f};
    const std::vector<PenaltyCase> cases = {
        {"none", 1.0f, 0.0f, 0.0f, 64, {0, 1, 0, 3}, base},
        // positive logits divided, negative multiplied, each token once however often seen.
        {"repeat 2", 2.0f, 0.0f, 0.0f, 64, {0, 1, 0, 3}, {1.0f, -2.0f, 0.5f, 1.5f, 0.0f}},
        {"repeat 2 on zero logit", 2.0f, 0.0f, 0.0f, 64, {4}, {2.0f, -1.0f, 0.5f, 3.0f, 0.0f}},
        {"presence 0.5", 1.0f, 0.5f, 0.0f, 64, {0, 1, 0, 3}, {1.5f, -1.5f, 0.5f, 2.5f, 0.0f}},
        // counts: token 0 twice, 1 and 3 once.
        {"frequency 0.25", 1.0f, 0.0f, 0.25f, 64, {0, 1, 0, 3}, {1.5f, -1.25f, 0.5f, 2.75f, 0.0f}},
        {"negative presence rewards", 1.0f, -1.0f, 0.0f, 64, {2}, {2.0f, -1.0f, 1.5f, 3.0f, 0.0f}},
        // repeat first, then 2 * 0.25 + 0.5 for token 0 and 0.25 + 0.5 for tokens 1 and 3.
        {"all three", 2.0f, 0.5f, 0.25f, 64, {0, 1, 0, 3}, {0.0f, -2.75f, 0.5f, 0.75f, 0.0f}},
        // only the last two accepted tokens (0, 3) count; token 0 once there.
        {"window 2", 2.0f, 0.0f, 0.25f, 2, {1, 1, 0, 3}, {0.75f, -1.0f, 0.5f, 1.25f, 0.0f}},
        {"window 0 disables", 2.0f, 0.5f, 0.25f, 0, {0, 1, 0, 3}, base},
        {"window -1 is all history", 1.0f, 0.0f, 1.0f, -1, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3}, {-8.0f, -1.0f, 0.5f, 2.0f, 0.0f}},
        {"ids outside the vocab ignored", 1.0f, 1.0f, 0.0f, 64, {-1, 5, 99, 4}, {2.0f, -1.0f, 0.5f, 3.0f, -1.0f}},
    };
    for (const PenaltyCase& c : cases) {
        SCOPED_TRACE(c.name);
        SamplingParams p = plain(0.0f);  // greedy: sample() only penalises then takes the argmax
        p.repeat_penalty = c.repeat;
        p.presence_penalty = c.presence;
        p.frequency_penalty = c.frequency;
        p.repeat_last_n = c.last_n;
        Sampler s(p, static_cast<int32_t>(base.size()));
        for (int32_t t : c.history) s.accept(t);
        std::vector<float> logits = base;
        const int32_t tok = s.sample(logits.data());
        for (size_t i = 0; i < base.size(); ++i) EXPECT_NEAR(logits[i], c.want[i], 1e-6f) << "token " << i;
        EXPECT_EQ(tok, std::max_element(c.want.begin(), c.want.end()) - c.want.begin());
    }
}

TEST(SamplerPenalties, ResetForgetsHistory) {
    SamplingParams p = plain(0.0f);
    p.presence_penalty = 1.0f;
    Sampler s(p, 3);
    s.accept(0);
    std::vector<float> logits = {1.0f, 0.5f, 0.0f};
    EXPECT_EQ(s.sample(logits.data()), 1);  // 0 penalised to 0.0
    s.reset();
    logits = {1.0f, 0.5f, 0.0f};
    EXPECT_EQ(s.sample(logits.data()), 0);
}

TEST(SamplerPenalties, WindowSlidesAsTokensAreAccepted) {
    SamplingParams p = plain(0.0f);
    p.frequency_penalty = 1.0f;
    p.repeat_last_n = 3;
    Sampler s(p, 4);
    for (int32_t t : {0, 0, 0, 1, 2, 3, 3}) s.accept(t);  // window now {2, 3, 3}
    std::vector<float> logits(4, 0.0f);
    (void)s.sample(logits.data());
    EXPECT_EQ(logits, (std::vector<float>{0.0f, 0.0f, -1.0f, -2.0f}));
}

// ---------------------------------------------------------------------------------------------
// Greedy

TEST(SamplerGreedy, ArgmaxTiesToLowestId) {
    struct Case {
        std::vector<float> logits;
        int32_t want;
    };
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<Case> cases = {
        {{0.1f, 0.9f, 0.3f}, 1},
        {{5.0f, 1.0f, 5.0f}, 0},
        {{-3.0f, -1.0f, -1.0f, -2.0f}, 1},
        {{std::nanf(""), -inf, 2.0f}, 2},
        {{-inf, -inf}, 0},
    };
    for (float t : {0.0f, -1.0f}) {
        for (const Case& c : cases) {
            SamplingParams p;  // default top_k/top_p/min_p must not matter when greedy
            p.temperature = t;
            Sampler s(p, static_cast<int32_t>(c.logits.size()));
            std::vector<float> logits = c.logits;
            EXPECT_EQ(s.sample(logits.data()), c.want);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seeded draws

std::vector<int32_t> draw(const SamplingParams& p, const std::vector<float>& logits, int n) {
    Sampler s(p, static_cast<int32_t>(logits.size()));
    std::vector<int32_t> out;
    std::vector<float> scratch;
    for (int i = 0; i < n; ++i) {
        scratch = logits;
        out.push_back(s.sample(scratch.data()));
    }
    return out;
}

TEST(SamplerRng, SameSeedSameSequence) {
    const std::vector<float> logits = logits_of({0.3f, 0.25f, 0.2f, 0.15f, 0.1f});
    SamplingParams p = plain();
    p.seed = 42;
    const auto a = draw(p, logits, 1000);
    EXPECT_EQ(a, draw(p, logits, 1000));
    p.seed = 43;
    EXPECT_NE(a, draw(p, logits, 1000));

    // reset() restarts the sequence.
    p.seed = 42;
    Sampler s(p, 5);
    std::vector<int32_t> first, again;
    for (int i = 0; i < 100; ++i) {
        std::vector<float> l = logits;
        first.push_back(s.sample(l.data()));
    }
    s.reset();
    for (int i = 0; i < 100; ++i) {
        std::vector<float> l = logits;
        again.push_back(s.sample(l.data()));
    }
    EXPECT_EQ(first, again);
}

// Pinned outputs: a change here changes every seeded generation, on every platform. These are
// the reference xoshiro256** outputs for a state filled by splitmix64 from seed 0.
TEST(SamplerRng, GoldenOutputs) {
    Rng rng(0);
    const uint64_t want[] = {0x99ec5f36cb75f2b4ull, 0xbf6e1f784956452aull, 0x1a5f849d4933e6e0ull};
    for (uint64_t w : want) EXPECT_EQ(rng.next_u64(), w);
    for (int i = 0; i < 1000; ++i) {
        const double u = rng.next_double();
        ASSERT_GE(u, 0.0);
        ASSERT_LT(u, 1.0);
    }
}

TEST(SamplerRng, EmpiricalFrequenciesMatchProbabilities) {
    // Each count is Binomial(N, p): allow 5 standard deviations, a false alarm about once in
    // 1.7 million runs per token (and the seed is fixed anyway).
    const std::vector<float> probs = {0.5f, 0.25f, 0.15f, 0.07f, 0.03f};
    const int n_draws = 20000;
    SamplingParams p = plain();
    p.seed = 7;
    std::vector<int> counts(probs.size(), 0);
    for (int32_t t : draw(p, logits_of(probs), n_draws)) ++counts[t];
    for (size_t i = 0; i < probs.size(); ++i) {
        const double mean = n_draws * probs[i];
        const double sigma = std::sqrt(n_draws * probs[i] * (1.0 - probs[i]));
        EXPECT_NEAR(counts[i], mean, 5.0 * sigma) << "token " << i;
    }

    // With filters on, draws come only from the survivors, in renormalised proportion.
    p.top_k = 2;
    std::vector<int> filtered(probs.size(), 0);
    for (int32_t t : draw(p, logits_of(probs), n_draws)) ++filtered[t];
    EXPECT_EQ(filtered[2] + filtered[3] + filtered[4], 0);
    const double p0 = 0.5 / 0.75;
    EXPECT_NEAR(filtered[0], n_draws * p0, 5.0 * std::sqrt(n_draws * p0 * (1.0 - p0)));
}

TEST(SamplerRng, LargeVocabTopK) {
    // A 150k vocabulary with one clear winner region: top_k 40 draws only from the 40 best.
    const int32_t n_vocab = 150000;
    std::vector<float> logits(n_vocab);
    Rng rng(3);
    for (float& l : logits) l = static_cast<float>(rng.next_double());
    for (int32_t i = 0; i < 40; ++i) logits[i * 3000] = 10.0f + static_cast<float>(i) * 0.01f;
    SamplingParams p;  // defaults: top_k 40, top_p 0.95, min_p 0.05, T 0.8
    Sampler s(p, n_vocab);
    const TokenProb* scratch = nullptr;
    for (int i = 0; i < 50; ++i) {
        std::vector<float> l = logits;
        const auto c = s.candidates(l.data());
        if (scratch == nullptr) scratch = c.data();
        EXPECT_EQ(c.data(), scratch);  // the same scratch every call, nothing reallocated
        std::vector<float> l2 = logits;
        const int32_t tok = s.sample(l2.data());
        EXPECT_EQ(tok % 3000, 0);
        EXPECT_LT(tok, 40 * 3000);
    }
}

// ---------------------------------------------------------------------------------------------
// validate()

TEST(SamplerValidate, DefaultsAreValid) { EXPECT_TRUE(validate(SamplingParams{}).ok()); }

TEST(SamplerValidate, RejectsOutOfRangeWithNumbers) {
    struct Case {
        const char* name;
        void (*mutate)(SamplingParams&);
        const char* want;  // substring of the message
    };
    const std::vector<Case> cases = {
        {"top_p high", [](SamplingParams& p) { p.top_p = 1.5f; }, "top_p 1.5 is outside [0, 1]"},
        {"top_p negative", [](SamplingParams& p) { p.top_p = -0.25f; }, "top_p -0.25"},
        {"top_p nan", [](SamplingParams& p) { p.top_p = std::nanf(""); }, "top_p nan"},
        {"min_p", [](SamplingParams& p) { p.min_p = 2.0f; }, "min_p 2 is outside [0, 1]"},
        {"temperature negative", [](SamplingParams& p) { p.temperature = -0.5f; }, "temperature -0.5"},
        {"temperature inf", [](SamplingParams& p) { p.temperature = INFINITY; }, "temperature inf"},
        {"repeat_penalty 0", [](SamplingParams& p) { p.repeat_penalty = 0.0f; }, "repeat_penalty 0 is outside (0, inf)"},
        {"repeat_last_n", [](SamplingParams& p) { p.repeat_last_n = -5; }, "repeat_last_n -5"},
        {"presence", [](SamplingParams& p) { p.presence_penalty = 2.5f; }, "presence_penalty 2.5 is outside [-2, 2]"},
        {"frequency", [](SamplingParams& p) { p.frequency_penalty = -3.0f; }, "frequency_penalty -3 is outside [-2, 2]"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.name);
        SamplingParams p;
        c.mutate(p);
        const Result<void> r = validate(p);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().code, Errc::request_invalid);
        EXPECT_NE(r.error().message.find(c.want), std::string::npos) << r.error().message;
    }
}

TEST(SamplerValidate, AcceptsEdgesOfRanges) {
    const std::vector<void (*)(SamplingParams&)> edges = {
        [](SamplingParams& p) { p.temperature = 0.0f; },
        [](SamplingParams& p) { p.top_p = 0.0f; },
        [](SamplingParams& p) { p.top_p = 1.0f; },
        [](SamplingParams& p) { p.min_p = 1.0f; },
        [](SamplingParams& p) { p.top_k = -1; },
        [](SamplingParams& p) { p.repeat_last_n = -1; },
        [](SamplingParams& p) { p.presence_penalty = -2.0f; },
        [](SamplingParams& p) { p.frequency_penalty = 2.0f; },
    };
    for (auto mutate : edges) {
        SamplingParams p;
        mutate(p);
        EXPECT_TRUE(validate(p).ok());
    }
}

}  // namespace
}  // namespace kvrag::sampling
