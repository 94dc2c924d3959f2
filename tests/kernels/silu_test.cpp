// silu_mul: the AVX2 path (a polynomial exponential) against the scalar one (std::exp), over
// the inputs a feed-forward sees and the extremes, including lengths that are not a multiple of 8.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "kernels/quant.h"

namespace kvrag::kernels {
namespace {

// Distance in units in the last place between two finite floats of the same sign, else a large
// number (a sign change counts as far apart unless both are within 1e-30 of zero).
int64_t ulp_distance(float a, float b) {
    if (std::fabs(a) < 1e-30f && std::fabs(b) < 1e-30f) return 0;
    if (std::signbit(a) != std::signbit(b)) return std::numeric_limits<int64_t>::max();
    int32_t ia, ib;
    std::memcpy(&ia, &a, 4);
    std::memcpy(&ib, &b, 4);
    return std::llabs(static_cast<int64_t>(ia) - static_cast<int64_t>(ib));
}

TEST(SiluMul, Avx2WithinFewUlpOfScalar) {
    if (!avx2_supported()) GTEST_SKIP() << "no AVX2 on this CPU";
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> g, u;
    for (int i = 0; i < 20000; ++i) {
        g.push_back(normal(rng));
        u.push_back(normal(rng));
    }
    // A sweep over the whole range, and the edges of the clamps.
    for (float x = -120.0f; x <= 120.0f; x += 0.037f) {
        g.push_back(x);
        u.push_back(1.0f);
    }
    for (float x : {-88.8f, -88.7f, -87.4f, -87.3f, -87.2f, 0.0f, -0.0f, 87.2f, 87.3f, 88.7f, 88.8f, 1e-30f, -1e-30f}) {
        g.push_back(x);
        u.push_back(-2.0f);
    }
    g.resize(g.size() / 8 * 8 + 5);  // a tail the vector loop leaves to the scalar one
    u.resize(g.size(), 0.5f);
    const int64_t n = static_cast<int64_t>(g.size());
    std::vector<float> want(g.size()), got(g.size());
    ref::silu_mul(want.data(), g.data(), u.data(), n);
    avx2::silu_mul(got.data(), g.data(), u.data(), n);
    int64_t worst = 0;
    for (int64_t i = 0; i < n; ++i) {
        ASSERT_TRUE(std::isfinite(got[i])) << "g " << g[i] << " u " << u[i];
        // Below -87 the scalar e^-g overflows to inf (result -0); the vector one clamps (|result|
        // below 1e-36): both are zero for any use.
        if (g[i] < -87.0f) {
            EXPECT_LT(std::fabs(got[i]), 1e-30f) << "g " << g[i];
            continue;
        }
        const int64_t d = ulp_distance(got[i], want[i]);
        EXPECT_LE(d, 4) << "g " << g[i] << " u " << u[i] << " got " << got[i] << " want " << want[i];
        worst = std::max(worst, d);
    }
    RecordProperty("worst_ulp", static_cast<int>(worst));
}

TEST(SiluMul, InPlaceOnEitherInput) {
    std::vector<float> g = {-3, -1, 0, 0.5f, 1, 2, 4, 8, 16, -16}, u = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    std::vector<float> want(g.size());
    silu_mul(want.data(), g.data(), u.data(), static_cast<int64_t>(g.size()));
    std::vector<float> a = g, b = u;
    silu_mul(a.data(), a.data(), u.data(), static_cast<int64_t>(g.size()));
    silu_mul(b.data(), g.data(), b.data(), static_cast<int64_t>(g.size()));
    EXPECT_EQ(a, want);
    EXPECT_EQ(b, want);
    EXPECT_NEAR(want[2], 0.0f, 0.0f);
    EXPECT_NEAR(want[4], 5.0f / (1.0f + std::exp(-1.0f)), 1e-6f);
}

}  // namespace
}  // namespace kvrag::kernels
