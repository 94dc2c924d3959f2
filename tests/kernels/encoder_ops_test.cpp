// The element-wise kernels of BERT-family encoders: LayerNorm, ggml's f16-table GELU (the AVX2
// path bit for bit equal to the scalar one) and the softmax of their attention rows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

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

// Every f16 value (as a float), values between them, the +-10 limits, infinities and NaN, at
// lengths that are not multiples of 8: the AVX2 gather path returns the scalar table's bits.
TEST(Gelu, Avx2EqualsTheScalarTableBitForBit) {
    if (!avx2_supported()) GTEST_SKIP() << "no AVX2 on this CPU";
    std::vector<float> x;
    for (uint32_t h = 0; h < 65536; ++h) x.push_back(fp16_to_fp32(static_cast<uint16_t>(h)));
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> wide(-12.0f, 12.0f);
    for (int i = 0; i < 50000; ++i) x.push_back(wide(rng));
    for (float v : {-10.0f, 10.0f, std::nextafter(-10.0f, 0.0f), std::nextafter(10.0f, 0.0f), -0.0f, 1e-30f,
                    std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
        x.push_back(v);
    }
    for (int64_t n : {static_cast<int64_t>(x.size()), int64_t{13}, int64_t{7}, int64_t{1}}) {
        std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n));
        ref::gelu(want.data(), x.data(), n);
        avx2::gelu(got.data(), x.data(), n);
        for (int64_t i = 0; i < n; ++i) {
            if (std::isnan(want[i])) {
                ASSERT_TRUE(std::isnan(got[i])) << "x = " << x[i];
                continue;
            }
            uint32_t a, b;
            std::memcpy(&a, &want[i], 4);
            std::memcpy(&b, &got[i], 4);
            ASSERT_EQ(a, b) << "x = " << x[i] << " (index " << i << " of " << n << ")";
        }
    }
    // In place, as the encoder calls it.
    std::vector<float> inplace(x.begin(), x.begin() + 1000), want(1000);
    ref::gelu(want.data(), inplace.data(), 1000);
    avx2::gelu(inplace.data(), inplace.data(), 1000);
    for (int i = 0; i < 1000; ++i) {
        if (!std::isnan(want[i])) {
            ASSERT_EQ(inplace[i], want[i]) << i;
        }
    }
}

// softmax_fast against softmax: the exponentials differ by at most 2 ulp, the sum is in double
// either way, so every probability agrees to a few parts in 10^7 and each row still sums to 1.
// exp_ps gives 0 below e^-87.3 (1.2e-38), where std::exp still returns tiny values: the
// absolute floor.
TEST(Softmax, FastWithinAFewUlpOfTheExactOne) {
    std::mt19937 rng(5);
    std::normal_distribution<float> scores(0.0f, 4.0f);
    for (int64_t n : {1, 3, 8, 9, 31, 64, 288, 513}) {
        for (int rep = 0; rep < 20; ++rep) {
            std::vector<float> a(static_cast<size_t>(n));
            for (float& v : a) v = scores(rng) * (rep % 4 == 0 ? 20.0f : 1.0f);  // some rows with huge gaps
            std::vector<float> b = a;
            softmax(a.data(), n);
            softmax_fast(b.data(), n);
            double sum = 0.0;
            for (int64_t i = 0; i < n; ++i) {
                ASSERT_NEAR(b[i], a[i], 4e-7f * a[i] + 1.2e-38f) << "n " << n << " i " << i;
                sum += b[i];
            }
            ASSERT_NEAR(sum, 1.0, 1e-5) << "n " << n;
        }
    }
}

}  // namespace
}  // namespace kvrag::kernels
