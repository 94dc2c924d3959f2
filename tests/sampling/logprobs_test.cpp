#include "sampling/logprobs.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace kvrag::sampling {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(Logprobs, HandComputedSoftmax) {
    // logits 0, ln 2, ln 3, masked -> p = 1/6, 2/6, 3/6, 0.
    const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f), -kInf};
    const TokenLogprobs lp = compute_logprobs(logits.data(), 4, 1.0f, 1, 3);
    EXPECT_EQ(lp.token.id, 1);
    EXPECT_NEAR(lp.token.logprob, std::log(2.0 / 6.0), 1e-6);
    ASSERT_EQ(lp.top.size(), 3u);  // the masked token never appears
    EXPECT_EQ(lp.top[0].id, 2);
    EXPECT_EQ(lp.top[1].id, 1);
    EXPECT_EQ(lp.top[2].id, 0);
    EXPECT_NEAR(lp.top[2].logprob, std::log(1.0 / 6.0), 1e-6);
}

TEST(Logprobs, TemperatureScalesAndGreedyUsesOne) {
    const std::vector<float> logits = {1.0f, 2.0f};
    // T = 0.5: logits 2, 4 -> p(1) = e^4 / (e^2 + e^4).
    const TokenLogprobs hot = compute_logprobs(logits.data(), 2, 0.5f, 1, 0);
    EXPECT_NEAR(hot.token.logprob, 4.0 - std::log(std::exp(2.0) + std::exp(4.0)), 1e-5);
    EXPECT_TRUE(hot.top.empty());
    const TokenLogprobs greedy = compute_logprobs(logits.data(), 2, 0.0f, 1, 0);
    EXPECT_NEAR(greedy.token.logprob, 2.0 - std::log(std::exp(1.0) + std::exp(2.0)), 1e-5);
}

TEST(Logprobs, TiesGoToTheLowestIdAndNTopIsClamped) {
    const std::vector<float> logits(50, 0.5f);
    const TokenLogprobs lp = compute_logprobs(logits.data(), 50, 1.0f, 7, 100);
    ASSERT_EQ(lp.top.size(), static_cast<size_t>(kMaxTopLogprobs));
    for (int i = 0; i < kMaxTopLogprobs; ++i) EXPECT_EQ(lp.top[static_cast<size_t>(i)].id, i);
    EXPECT_NEAR(lp.token.logprob, std::log(1.0 / 50.0), 1e-6);
}

}  // namespace
}  // namespace kvrag::sampling
