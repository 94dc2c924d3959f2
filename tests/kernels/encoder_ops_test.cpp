// The element-wise kernels of BERT-family encoders: LayerNorm and ggml's f16-table GELU.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/ops.h"

namespace kvrag::kernels {
namespace {

TEST(LayerNorm, HandComputedCase) {
    const std::vector<float> x = {1, 2, 3, 4}, w = {2, 2, 2, 2}, b = {1, 0, 0, -1};
    std::vector<float> y(4);
    layernorm(y.data(), x.data(), w.data(), b.data(), 4, 1e-12f);
    // mean 2.5, variance 1.25: (x - 2.5) / sqrt(1.25) * 2 + b
    const float s = 2.0f / std::sqrt(1.25f);
    EXPECT_NEAR(y[0], -1.5f * s + 1, 1e-6);
    EXPECT_NEAR(y[1], -0.5f * s, 1e-6);
    EXPECT_NEAR(y[2], 0.5f * s, 1e-6);
    EXPECT_NEAR(y[3], 1.5f * s - 1, 1e-6);
}

TEST(LayerNorm, InPlaceAndEpsilon) {
    // A constant row has variance 0: the result is b (eps keeps it finite), also in place.
    std::vector<float> x = {3, 3, 3}, w = {1, 1, 1}, b = {0.5f, -0.5f, 0};
    layernorm(x.data(), x.data(), w.data(), b.data(), 3, 1e-5f);
    EXPECT_FLOAT_EQ(x[0], 0.5f);
    EXPECT_FLOAT_EQ(x[1], -0.5f);
    EXPECT_FLOAT_EQ(x[2], 0.0f);
}

TEST(Gelu, SaturatesOutsideTheTableRange) {
    const std::vector<float> x = {-50.0f, -10.0f, 10.0f, 12.5f};
    std::vector<float> y(x.size());
    gelu(y.data(), x.data(), static_cast<int64_t>(x.size()));
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_EQ(y[1], 0.0f);
    EXPECT_EQ(y[2], 10.0f);
    EXPECT_EQ(y[3], 12.5f);
}

TEST(Gelu, HandValues) {
    // tanh-approximation GELU: gelu(0) = 0, gelu(1) = 0.841192, gelu(-1) = -0.158808.
    const std::vector<float> x = {0.0f, 1.0f, -1.0f};
    std::vector<float> y(3);
    gelu(y.data(), x.data(), 3);
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_NEAR(y[1], 0.841192f, 5e-4f);   // half an f16 step at 0.84 is 2.4e-4
    EXPECT_NEAR(y[2], -0.158808f, 1e-4f);
}

// The table lookup is exactly: round x to f16, evaluate, round the result to f16. So every
// output is an f16 value, and it stays within an f16 rounding of the float GELU.
TEST(Gelu, IsTheF16RoundedTanhApproximation) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-9.99f, 9.99f);
    std::vector<float> x(4096), y(4096);
    for (float& v : x) v = dist(rng);
    gelu(y.data(), x.data(), 4096);
    for (size_t i = 0; i < x.size(); ++i) {
        const float xh = fp16_to_fp32(fp32_to_fp16(x[i]));
        const float want = fp16_to_fp32(fp32_to_fp16(gelu_tanh_f32(xh)));
        ASSERT_EQ(y[i], want) << "x = " << x[i];
        ASSERT_EQ(fp16_to_fp32(fp32_to_fp16(y[i])), y[i]) << "not an f16 value";
        // Two f16 roundings (input: 2^-11 relative, times a slope of at most 1.13; output: 2^-11).
        ASSERT_NEAR(y[i], gelu_tanh_f32(x[i]), 2.5e-3f * std::fabs(x[i]) + 1e-4f) << "x = " << x[i];
    }
}

}  // namespace
}  // namespace kvrag::kernels
