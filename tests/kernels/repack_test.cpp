// Packed weight matrices (kernels/repack.h): matmul_packed equals ref::vec_dot and vec_dot bit
// for bit, for any token count, row count (padded last group) and row range, and the AVX2
// vec_dot of the packed types equals the scalar reference bit for bit.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/ggml_type.h"
#include "kernels/fp16.h"
#include "kernels/quant.h"
#include "kernels/kernel_test_util.h"
#include "kernels/quant_blocks.h"
#include "kernels/repack.h"

namespace kvrag::kernels {
namespace {

const GgmlType kPackedTypes[] = {GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q4_1, GgmlType::Q5_1, GgmlType::Q8_0,
                                 GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::F16,  GgmlType::BF16};
// Types whose AVX2 vec_dot keeps the reference's float order (the packed ones need it).
const GgmlType kRefOrderTypes[] = {GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q4_1, GgmlType::Q5_1, GgmlType::Q8_0,
                                   GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::F16,  GgmlType::BF16};

std::vector<float> zero_mean_gaussian(int64_t n, uint32_t seed, float sigma = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, sigma);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = dist(rng);
    return v;
}

// Offsets of the fp16 scale fields in one block: random bits there would be inf/NaN.
std::vector<size_t> scale_offsets(GgmlType t) {
    switch (t) {
    case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: return {0};
    case GgmlType::Q4_1: case GgmlType::Q5_1: return {0, 2};  // d, m
    case GgmlType::Q4_K: case GgmlType::Q5_K: return {0, 2};
    case GgmlType::Q6_K: return {208};
    default: return {};
    }
}

// A row of n elements. Kinds: 0 quantised Gaussian; 1 random bits with sane scales (every
// quant and sub-scale value); 2 extreme quants (all bits set: the largest magnitudes).
// F16 kinds 1 and 2: random finite bit patterns (subnormals included), and the extremes
// (+-65504, the largest and smallest subnormals, signed zeros).
std::vector<uint8_t> f16_row(int64_t n, uint32_t seed, int kind) {
    std::mt19937 rng(seed);
    const uint16_t extremes[] = {0x7BFF, 0xFBFF, 0x0001, 0x8001, 0x03FF, 0x0000, 0x8000, 0x0400};
    std::vector<uint8_t> q(static_cast<size_t>(n) * 2);
    for (int64_t k = 0; k < n; ++k) {
        uint16_t h = static_cast<uint16_t>(rng());
        if ((h & 0x7C00) == 0x7C00) h = static_cast<uint16_t>(h & ~0x4000);  // no inf / NaN
        if (kind == 2) h = extremes[rng() % 8];
        std::memcpy(&q[static_cast<size_t>(k) * 2], &h, 2);
    }
    return q;
}

// BF16 kinds 1 and 2: random bit patterns with exponents within 2^+-40 (subnormals included
// through kind 2; wider exponents would overflow a dot product to inf and NaN), and the
// extremes that keep sums finite (+-2^100, the largest and smallest subnormals, signed zeros,
// the smallest normal).
std::vector<uint8_t> bf16_row(int64_t n, uint32_t seed, int kind) {
    std::mt19937 rng(seed);
    const uint16_t extremes[] = {0x7180, 0xF180, 0x0001, 0x8001, 0x007F, 0x0000, 0x8000, 0x0080};
    std::vector<uint8_t> q(static_cast<size_t>(n) * 2);
    for (int64_t k = 0; k < n; ++k) {
        const uint32_t r = rng();
        uint16_t h = static_cast<uint16_t>((r & 0x807F) | (((127 - 40 + (r >> 16) % 81) & 0xFF) << 7));
        if (kind == 2) h = extremes[rng() % 8];
        std::memcpy(&q[static_cast<size_t>(k) * 2], &h, 2);
    }
    return q;
}

std::vector<uint8_t> weight_row(GgmlType t, int64_t n, uint32_t seed, int kind) {
    if (t == GgmlType::F16 && kind != 0) return f16_row(n, seed, kind);
    if (t == GgmlType::BF16 && kind != 0) return bf16_row(n, seed, kind);
    std::vector<uint8_t> q(ggml_row_size(t, n));
    if (kind == 0) {
        const auto x = zero_mean_gaussian(n, seed);
        ref::quantize_row(t, x.data(), q.data(), n);
        return q;
    }
    std::mt19937 rng(seed);
    for (auto& b : q) b = kind == 1 ? static_cast<uint8_t>(rng()) : 0xFF;
    std::uniform_real_distribution<float> scale(0.001f, 0.05f);
    const size_t bs = ggml_type_traits(t).type_size;
    for (size_t blk = 0; blk < q.size() / bs; ++blk) {
        for (size_t off : scale_offsets(t)) {
            float v = scale(rng);
            if (t != GgmlType::Q4_K && t != GgmlType::Q5_K && (rng() & 1)) v = -v;  // K-quant scales are positive
            const uint16_t h = fp32_to_fp16(v);
            std::memcpy(&q[blk * bs + off], &h, 2);
        }
    }
    return q;
}

// Activations: Gaussian, except token kinds that hit the quantiser's extremes (+-127 runs).
std::vector<uint8_t> activation_row(GgmlType xt, int64_t n, uint32_t seed) {
    auto x = zero_mean_gaussian(n, seed, 1.0f + static_cast<float>(seed % 3));
    if (seed % 4 == 3) {
        for (int64_t j = 0; j < n; ++j) x[static_cast<size_t>(j)] = (j % 7 == 0) ? 1.0f : -1.0f;
    }
    std::vector<uint8_t> q(ggml_row_size(xt, n));
    ref::quantize_row(xt, x.data(), q.data(), n);
    return q;
}

class RefOrderTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(RefOrderTest, Avx2VecDotEqualsRefBitForBit) {
    if (!avx2_supported()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
    const GgmlType t = GetParam();
    const GgmlType xt = vec_dot_type(t);
    for (int64_t n : {256, 1024, 2816}) {
        for (uint32_t seed = 0; seed < 12; ++seed) {
            const auto w = weight_row(t, n, 1000 + seed, static_cast<int>(seed % 3));
            const auto x = activation_row(xt, n, 2000 + seed);
            const float r = ref::vec_dot(t, n, w.data(), x.data());
            const float a = avx2::vec_dot(t, n, w.data(), x.data());
            ASSERT_EQ(std::bit_cast<uint32_t>(a), std::bit_cast<uint32_t>(r))
                << ggml_type_name(t) << " n " << n << " seed " << seed << " avx2 " << a << " ref " << r;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(RefOrderTypes, RefOrderTest, ::testing::ValuesIn(kRefOrderTypes), type_param_name);

using PackedProduct = void (*)(const PackedMatrix&, const void*, size_t, int64_t, float*, int64_t, int64_t, int64_t);

// Every packed kernel this CPU can run for type t, and the dispatching matmul_packed.
std::vector<std::pair<const char*, PackedProduct>> packed_paths(GgmlType t) {
    std::vector<std::pair<const char*, PackedProduct>> paths = {{"matmul_packed", &matmul_packed}};
#if defined(__x86_64__)
    if (avx2_supported()) paths.emplace_back("avx2", &avx2::matmul_packed);
    if (avx512_supported() && avx512::has_kernel(t)) paths.emplace_back("avx512", &avx512::matmul_packed);
#endif
    return paths;
}

class RepackTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(RepackTest, PackedMatmulEqualsVecDotBitForBit) {
    const GgmlType t = GetParam();
    const GgmlType xt = vec_dot_type(t);
    if (!can_repack(t, 512)) GTEST_SKIP() << "packing needs the AVX2 path";
    const int64_t n_in = 512;
    const size_t row_bytes = ggml_row_size(t, n_in) + 48;  // padded rows: stride != packed size
    const size_t x_row_bytes = ggml_row_size(xt, n_in) + 16;
    const int64_t max_tokens = 11;
    std::vector<uint8_t> X(x_row_bytes * max_tokens);
    for (int64_t tk = 0; tk < max_tokens; ++tk) {
        const auto xr = activation_row(xt, n_in, 3000 + static_cast<uint32_t>(tk));
        std::memcpy(&X[static_cast<size_t>(tk) * x_row_bytes], xr.data(), xr.size());
    }
    for (int64_t n_rows : {1, 8, 13, 24, 37}) {
        std::vector<uint8_t> W(row_bytes * static_cast<size_t>(n_rows));
        for (int64_t r = 0; r < n_rows; ++r) {
            const auto row = weight_row(t, n_in, 4000 + static_cast<uint32_t>(r), static_cast<int>(r % 3));
            std::memcpy(&W[static_cast<size_t>(r) * row_bytes], row.data(), row.size());
        }
        const auto P = repack(t, W.data(), row_bytes, n_rows, n_in);
        ASSERT_NE(P, nullptr);
        EXPECT_EQ(P->n_rows(), n_rows);
        EXPECT_EQ(P->n_groups(), (n_rows + kPackRows - 1) / kPackRows);
        // Row ranges: all rows, group-aligned halves, and ranges that cut groups.
        std::vector<std::vector<std::pair<int64_t, int64_t>>> splits = {{{0, n_rows}}};
        if (n_rows > 8) splits.push_back({{0, 8}, {8, n_rows}});
        if (n_rows > 5) splits.push_back({{3, 5}, {0, 3}, {5, n_rows}});
        if (n_rows > 12) splits.push_back({{n_rows - 1, n_rows}, {0, 11}, {11, n_rows - 1}});
        const int64_t ldy = n_rows + 5;
        for (const auto& [path, product] : packed_paths(t)) {
          for (int64_t n_tokens : {1, 2, 3, 4, 5, 8, 11}) {
            for (const auto& split : splits) {
                std::vector<float> y(static_cast<size_t>(ldy * n_tokens), std::nanf(""));
                for (const auto& [r0, r1] : split) product(*P, X.data(), x_row_bytes, n_tokens, y.data(), ldy, r0, r1);
                for (int64_t tk = 0; tk < n_tokens; ++tk) {
                    for (int64_t r = 0; r < ldy; ++r) {
                        const float got = y[static_cast<size_t>(tk * ldy + r)];
                        if (r >= n_rows) {  // outside every range: untouched
                            ASSERT_TRUE(std::isnan(got)) << "row " << r << " written";
                            continue;
                        }
                        const void* wr = &W[static_cast<size_t>(r) * row_bytes];
                        const void* xr = &X[static_cast<size_t>(tk) * x_row_bytes];
                        const float e = ref::vec_dot(t, n_in, wr, xr);
                        ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(e))
                            << ggml_type_name(t) << " " << path << " rows " << n_rows << " tokens " << n_tokens
                            << " token " << tk << " row " << r << " got " << got << " ref " << e;
                        ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(vec_dot(t, n_in, wr, xr)));
                    }
                }
            }
          }
        }
    }
}

// The AVX-512 kernels on the 16-row pairing's edge cases: odd group counts (a lone last group),
// ranges starting and ending inside either group of a pair, and longer rows (several blocks).
TEST_P(RepackTest, Avx512KernelEqualsAvx2OnEveryRange) {
    const GgmlType t = GetParam();
    if (!avx512_supported() || !avx512::has_kernel(t)) GTEST_SKIP() << "CPU lacks AVX-512 VNNI (or no AVX-512 kernel for this type)";
    if (!can_repack(t, 1024)) GTEST_SKIP() << "packing needs the AVX2 path";
    const GgmlType xt = vec_dot_type(t);
    const int64_t n_in = 1024, n_rows = 43, n_tokens = 30;
    const size_t row_bytes = ggml_row_size(t, n_in), x_row_bytes = ggml_row_size(xt, n_in);
    std::vector<uint8_t> W(row_bytes * n_rows), X(x_row_bytes * n_tokens);
    for (int64_t r = 0; r < n_rows; ++r) {
        const auto row = weight_row(t, n_in, 7000 + static_cast<uint32_t>(r), static_cast<int>(r % 3));
        std::memcpy(&W[static_cast<size_t>(r) * row_bytes], row.data(), row.size());
    }
    for (int64_t tk = 0; tk < n_tokens; ++tk) {
        const auto xr = activation_row(xt, n_in, 8000 + static_cast<uint32_t>(tk));
        std::memcpy(&X[static_cast<size_t>(tk) * x_row_bytes], xr.data(), xr.size());
    }
    const auto P = repack(t, W.data(), row_bytes, n_rows, n_in);
    ASSERT_NE(P, nullptr);
    std::vector<float> want(static_cast<size_t>(n_rows * n_tokens));
    avx2::matmul_packed(*P, X.data(), x_row_bytes, n_tokens, want.data(), n_rows, 0, n_rows);
    for (const auto& [r0, r1] : std::vector<std::pair<int64_t, int64_t>>{
             {0, 43}, {0, 16}, {16, 43}, {8, 40}, {3, 13}, {9, 10}, {15, 17}, {33, 43}, {40, 43}, {0, 1}}) {
        for (int64_t tokens : {int64_t{1}, int64_t{4}, int64_t{13}, n_tokens}) {
            std::vector<float> y(static_cast<size_t>(n_rows * tokens), std::nanf(""));
            avx512::matmul_packed(*P, X.data(), x_row_bytes, tokens, y.data(), n_rows, r0, r1);
            for (int64_t tk = 0; tk < tokens; ++tk) {
                for (int64_t r = 0; r < n_rows; ++r) {
                    const float got = y[static_cast<size_t>(tk * n_rows + r)];
                    if (r < r0 || r >= r1) {
                        ASSERT_TRUE(std::isnan(got)) << "row " << r << " outside [" << r0 << ", " << r1 << ") written";
                        continue;
                    }
                    ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want[static_cast<size_t>(tk * n_rows + r)]))
                        << ggml_type_name(t) << " range [" << r0 << ", " << r1 << ") tokens " << tokens << " token " << tk
                        << " row " << r;
                }
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(PackedTypes, RepackTest, ::testing::ValuesIn(kPackedTypes), type_param_name);

// F16 and BF16 past the kernel's blocking: rows longer than one 512-element panel and not a
// multiple of 8 elements, more rows than one 64-row block, more tokens than one 48-token block,
// a decode-sized call, row ranges that split groups; the packed product, the unpacked AVX2
// matmul_rows (packs per call), the dispatching matmul_rows and, where the CPU has it, the
// AVX-512 kernel all equal ref::vec_dot bit for bit.
TEST(RepackTest, HalfFloatAcrossPanelsEqualsRefBitForBit) {
    if (!avx2_supported()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
    for (GgmlType t : {GgmlType::F16, GgmlType::BF16})
    for (int64_t n_in : {7, 300, 777}) {
        const size_t row_bytes = ggml_row_size(t, n_in) + 6;
        const size_t x_row_bytes = ggml_row_size(t, n_in) + 2;
        const int64_t n_rows = 75, n_tokens = 50;
        std::vector<uint8_t> W(row_bytes * n_rows), X(x_row_bytes * n_tokens);
        for (int64_t r = 0; r < n_rows; ++r) {
            const auto row = weight_row(t, n_in, 5000 + static_cast<uint32_t>(r), static_cast<int>(r % 3));
            std::memcpy(&W[static_cast<size_t>(r) * row_bytes], row.data(), row.size());
        }
        for (int64_t tk = 0; tk < n_tokens; ++tk) {
            const auto xr = activation_row(t, n_in, 6000 + static_cast<uint32_t>(tk));
            std::memcpy(&X[static_cast<size_t>(tk) * x_row_bytes], xr.data(), xr.size());
        }
        std::vector<float> expect(static_cast<size_t>(n_rows * n_tokens));
        for (int64_t tk = 0; tk < n_tokens; ++tk)
            for (int64_t r = 0; r < n_rows; ++r)
                expect[static_cast<size_t>(tk * n_rows + r)] =
                    ref::vec_dot(t, n_in, &W[static_cast<size_t>(r) * row_bytes], &X[static_cast<size_t>(tk) * x_row_bytes]);
        const auto P = repack(t, W.data(), row_bytes, n_rows, n_in);
        for (int64_t tokens : {int64_t{1}, n_tokens}) {
            for (int path = 0; path < 4; ++path) {
                if ((path == 0 || path == 3) && P == nullptr) continue;  // KVRAG_FORCE_SCALAR: not packed
                if (path == 3 && !avx512_supported()) continue;
                std::vector<float> y(static_cast<size_t>(n_rows * tokens), std::nanf(""));
                for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 5}, {5, 69}, {69, n_rows}}) {
                    if (path == 0) matmul_packed(*P, X.data(), x_row_bytes, tokens, y.data(), n_rows, r0, r1);
                    if (path == 1) avx2::matmul_rows(t, n_in, W.data(), row_bytes, X.data(), x_row_bytes, tokens, y.data(), n_rows, r0, r1);
                    if (path == 2) matmul_rows(t, n_in, W.data(), row_bytes, X.data(), x_row_bytes, tokens, y.data(), n_rows, r0, r1);
                    if (path == 3) avx512::matmul_packed(*P, X.data(), x_row_bytes, tokens, y.data(), n_rows, r0, r1);
                }
                for (size_t i = 0; i < y.size(); ++i) {
                    ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(expect[i]))
                        << ggml_type_name(t) << " n_in " << n_in << " tokens " << tokens << " path " << path << " token " << i / n_rows
                        << " row " << i % n_rows << " got " << y[i] << " ref " << expect[i];
                }
            }
        }
    }
}

TEST(RepackTest, OnlyPackedTypesRepack) {
    std::vector<uint8_t> w(ggml_row_size(GgmlType::F32, 64) * 8);
    for (GgmlType t : {GgmlType::F32}) {
        EXPECT_FALSE(can_repack(t, 256)) << ggml_type_name(t);
        EXPECT_EQ(repack(t, w.data(), ggml_row_size(t, 64), 1, 64), nullptr) << ggml_type_name(t);
    }
    EXPECT_FALSE(can_repack(GgmlType::Q4_0, 48));  // not whole blocks
    EXPECT_FALSE(can_repack(GgmlType::Q4_K, 128));
    EXPECT_FALSE(can_repack(GgmlType::Q8_0, 48));
    EXPECT_EQ(can_repack(GgmlType::Q4_0, 64), using_avx2());
    EXPECT_EQ(can_repack(GgmlType::Q8_0, 64), using_avx2());
    for (GgmlType t : {GgmlType::Q5_0, GgmlType::Q4_1, GgmlType::Q5_1}) {
        EXPECT_EQ(can_repack(t, 64), using_avx2()) << ggml_type_name(t);
        EXPECT_FALSE(can_repack(t, 48)) << ggml_type_name(t);
    }
    EXPECT_EQ(can_repack(GgmlType::Q4_K, 512), using_avx2());
    EXPECT_EQ(can_repack(GgmlType::Q5_K, 512), using_avx2());
    EXPECT_FALSE(can_repack(GgmlType::Q5_K, 128));
    EXPECT_EQ(can_repack(GgmlType::Q6_K, 512), using_avx2());
    EXPECT_EQ(can_repack(GgmlType::F16, 7), using_avx2());  // any width: no blocks
    EXPECT_EQ(can_repack(GgmlType::BF16, 7), using_avx2());
    EXPECT_FALSE(can_repack(GgmlType::F16, 0));
}

}  // namespace
}  // namespace kvrag::kernels
