// Exact vector scan: known answers worked out by hand (small integer vectors, so every score
// is exact in float), and dot_f32 against a plain double loop for every tail length.
#include "memory/vector_scan.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <unordered_set>
#include <utility>
#include <vector>

namespace kvrag::memory {
namespace {

using Hits = std::vector<std::pair<size_t, float>>;

// Four rows of dim 2 and q = (1, 2): scores row0 = 1, row1 = 4, row2 = -2, row3 = 3.
const std::vector<float> kData = {1, 0,    // row 0
                                  0, 2,    // row 1
                                  -2, 0,   // row 2
                                  1, 1};   // row 3
const float kQ[2] = {1, 2};

TEST(VectorScan, BestFirst) {
    EXPECT_EQ(top_k_scan(kData.data(), 4, 2, kQ, 4), (Hits{{1, 4.f}, {3, 3.f}, {0, 1.f}, {2, -2.f}}));
    EXPECT_EQ(top_k_scan(kData.data(), 4, 2, kQ, 2), (Hits{{1, 4.f}, {3, 3.f}}));
    EXPECT_EQ(top_k_scan(kData.data(), 4, 2, kQ, 1), (Hits{{1, 4.f}}));
}

TEST(VectorScan, KLargerThanNReturnsEveryRow) {
    EXPECT_EQ(top_k_scan(kData.data(), 4, 2, kQ, 100), (Hits{{1, 4.f}, {3, 3.f}, {0, 1.f}, {2, -2.f}}));
    EXPECT_EQ(top_k_scan(kData.data(), 0, 2, kQ, 5), Hits{});  // no rows at all
}

TEST(VectorScan, KZeroReturnsNothing) {
    EXPECT_EQ(top_k_scan(kData.data(), 4, 2, kQ, 0), Hits{});
}

TEST(VectorScan, TiesGoToTheLowestRowFirst) {
    // q = (1, 1): rows 0, 2 and 4 all score 2, row 1 scores 3, row 3 scores 0.
    const std::vector<float> data = {2, 0, 3, 0, 0, 2, 0, 0, 1, 1};
    const float q[2] = {1, 1};
    EXPECT_EQ(top_k_scan(data.data(), 5, 2, q, 5), (Hits{{1, 3.f}, {0, 2.f}, {2, 2.f}, {4, 2.f}, {3, 0.f}}));
    // A k that cuts through the tie keeps the lowest tied rows.
    EXPECT_EQ(top_k_scan(data.data(), 5, 2, q, 2), (Hits{{1, 3.f}, {0, 2.f}}));
    EXPECT_EQ(top_k_scan(data.data(), 5, 2, q, 3), (Hits{{1, 3.f}, {0, 2.f}, {2, 2.f}}));
    // Every row tied, in a matrix big enough that partial_sort really has to reorder.
    const std::vector<float> same(2 * 50, 0.5f);
    const auto all = top_k_scan(same.data(), 50, 2, q, 7);
    ASSERT_EQ(all.size(), 7u);
    for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], (std::pair<size_t, float>{i, 1.f}));
}

TEST(VectorScan, FiltersByAllowedDocuments) {
    // Rows 0 and 3 belong to document 10, row 1 to 20, row 2 to 30.
    const std::vector<int64_t> docs = {10, 20, 30, 10};
    const std::unordered_set<int64_t> only_10 = {10}, ten_and_30 = {10, 30}, none = {}, unknown = {99};
    EXPECT_EQ(top_k_scan(kData.data(), 4, 2, kQ, 4, &docs, &only_10), (Hits{{3, 3.f}, {0, 1.f}}));
    EXPECT_EQ(top_k_scan(kData.data(), 4, 2, kQ, 1, &docs, &only_10), (Hits{{3, 3.f}}));
    EXPECT_EQ(top_k_scan(kData.data(), 4, 2, kQ, 4, &docs, &ten_and_30), (Hits{{3, 3.f}, {0, 1.f}, {2, -2.f}}));
    EXPECT_EQ(top_k_scan(kData.data(), 4, 2, kQ, 4, &docs, &none), Hits{});
    EXPECT_EQ(top_k_scan(kData.data(), 4, 2, kQ, 4, &docs, &unknown), Hits{});
    // A filter needs both the row -> document map and the allowed set; either alone is none.
    const Hits all = {{1, 4.f}, {3, 3.f}, {0, 1.f}, {2, -2.f}};
    EXPECT_EQ(top_k_scan(kData.data(), 4, 2, kQ, 4, &docs, nullptr), all);
    EXPECT_EQ(top_k_scan(kData.data(), 4, 2, kQ, 4, nullptr, &only_10), all);
}

TEST(VectorScan, ScoresAreTheRowDotProducts) {
    std::mt19937 rng(7);
    std::normal_distribution<float> nd;
    const int32_t dim = 37;  // not a multiple of 8: the tail loop runs too
    const size_t n = 64;
    std::vector<float> data(n * dim), q(dim);
    for (auto& x : data) x = nd(rng);
    for (auto& x : q) x = nd(rng);
    const auto hits = top_k_scan(data.data(), n, dim, q.data(), n);
    ASSERT_EQ(hits.size(), n);
    for (size_t i = 0; i < hits.size(); ++i) {
        EXPECT_EQ(hits[i].second, dot_f32(data.data() + hits[i].first * dim, q.data(), dim));
        if (i > 0) {
            EXPECT_GE(hits[i - 1].second, hits[i].second);
        }
    }
}

double dot_double(const float* a, const float* b, int32_t n) {
    double s = 0;
    for (int32_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
    return s;
}

TEST(VectorScan, DotMatchesAPlainDoubleLoopForEveryLength) {
    // Small integers: every product and partial sum is exact in float, so whatever order the
    // eight accumulators add in, the result must equal the double loop exactly.
    for (int32_t n = 0; n <= 33; ++n) {
        std::vector<float> a(n), b(n);
        for (int32_t i = 0; i < n; ++i) {
            a[i] = static_cast<float>(i % 7 - 3);
            b[i] = static_cast<float>(i % 5 - 2 + i / 8);
        }
        EXPECT_EQ(dot_f32(a.data(), b.data(), n), static_cast<float>(dot_double(a.data(), b.data(), n))) << "n=" << n;
    }
    // Random floats: the summation order differs from the loop, so compare with a bound of a
    // few float roundings of the sum of |a_i b_i|.
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> ud(-1.f, 1.f);
    for (int32_t n = 0; n <= 33; ++n) {
        std::vector<float> a(n), b(n);
        double mag = 0;
        for (int32_t i = 0; i < n; ++i) {
            a[i] = ud(rng);
            b[i] = ud(rng);
            mag += std::fabs(static_cast<double>(a[i]) * b[i]);
        }
        EXPECT_NEAR(dot_f32(a.data(), b.data(), n), dot_double(a.data(), b.data(), n), 4e-7 * (n + 1) * mag + 1e-30) << "n=" << n;
    }
}

}  // namespace
}  // namespace kvrag::memory
