// Quantisation kernels: hand-built blocks decoded from the layout definition, quantise ->
// dequantise error bounds, AVX2 vs scalar reference, and matmul_rows == vec_dot bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
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

namespace kvrag::kernels {
namespace {

const GgmlType kWeightTypes[] = {
    GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
    GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
};

bool is_float_type(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

std::vector<float> gaussian(int64_t n, uint32_t seed, float mean = 0.0f, float sigma = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(mean, sigma);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = dist(rng);
    return v;
}

std::vector<uint8_t> quantize(GgmlType t, const std::vector<float>& x) {
    std::vector<uint8_t> q(ggml_row_size(t, static_cast<int64_t>(x.size())));
    ref::quantize_row(t, x.data(), q.data(), static_cast<int64_t>(x.size()));
    return q;
}

std::vector<float> dequantize(GgmlType t, const void* q, int64_t n) {
    std::vector<float> y(static_cast<size_t>(n));
    ref::dequantize_row(t, q, y.data(), n);
    return y;
}

// Offsets of the fp16 scale fields inside one block, so random bytes can be made into a block
// with finite, moderate scales (random fp16 bits would be inf/NaN or 1e4-sized).
std::vector<size_t> scale_field_offsets(GgmlType t) {
    switch (t) {
    case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: return {0};
    case GgmlType::Q4_1: case GgmlType::Q5_1: case GgmlType::Q4_K: case GgmlType::Q5_K: return {0, 2};
    case GgmlType::Q6_K: return {208};
    default: return {};
    }
}

// A weight row of n elements: arbitrary bit patterns in the quants (every nibble / bit / scale
// combination, including negative Q6_K scales and 6-bit K scales up to 63) with sane scales.
// Float types get Gaussian values instead.
std::vector<uint8_t> random_weight_row(GgmlType t, int64_t n, uint32_t seed) {
    if (is_float_type(t)) return quantize(t, gaussian(n, seed));
    std::mt19937 rng(seed);
    std::vector<uint8_t> q(ggml_row_size(t, n));
    for (auto& b : q) b = static_cast<uint8_t>(rng());
    const auto tr = ggml_type_traits(t);
    std::uniform_real_distribution<float> scale(0.001f, 0.05f);
    for (size_t blk = 0; blk < q.size() / tr.type_size; ++blk) {
        for (size_t off : scale_field_offsets(t)) {
            float v = scale(rng);
            if (t == GgmlType::Q4_0 || t == GgmlType::Q5_0 || t == GgmlType::Q8_0 || t == GgmlType::Q6_K) {
                if (rng() & 1) v = -v;
            }
            const uint16_t h = fp32_to_fp16(v);
            std::memcpy(&q[blk * tr.type_size + off], &h, 2);
        }
    }
    return q;
}

double abs_dot(const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += std::fabs(static_cast<double>(a[i]) * b[i]);
    return s;
}

double exact_dot(const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
    return s;
}

// ------------------------------------------------------------------------------------------
// Layouts, checked against values computed by hand from the format definition
// ------------------------------------------------------------------------------------------

TEST(QuantLayoutTest, BlockSizesMatchGgufTypeSizes) {
    EXPECT_EQ(sizeof(BlockQ4_0), ggml_type_traits(GgmlType::Q4_0).type_size);
    EXPECT_EQ(sizeof(BlockQ4_1), ggml_type_traits(GgmlType::Q4_1).type_size);
    EXPECT_EQ(sizeof(BlockQ5_0), ggml_type_traits(GgmlType::Q5_0).type_size);
    EXPECT_EQ(sizeof(BlockQ5_1), ggml_type_traits(GgmlType::Q5_1).type_size);
    EXPECT_EQ(sizeof(BlockQ8_0), ggml_type_traits(GgmlType::Q8_0).type_size);
    EXPECT_EQ(sizeof(BlockQ8_1), ggml_type_traits(GgmlType::Q8_1).type_size);
    EXPECT_EQ(sizeof(BlockQ4_K), ggml_type_traits(GgmlType::Q4_K).type_size);
    EXPECT_EQ(sizeof(BlockQ5_K), ggml_type_traits(GgmlType::Q5_K).type_size);
    EXPECT_EQ(sizeof(BlockQ6_K), ggml_type_traits(GgmlType::Q6_K).type_size);
    EXPECT_EQ(sizeof(BlockQ8_K), ggml_type_traits(GgmlType::Q8_K).type_size);
    EXPECT_EQ(offsetof(BlockQ6_K, d), 208u);  // d is the last field of Q6_K
    EXPECT_EQ(offsetof(BlockQ5_K, qs), 48u);  // qh (32 bytes) comes before qs
    EXPECT_EQ(offsetof(BlockQ8_K, bsums), 260u);
}

TEST(QuantLayoutTest, Q4_0HandBuilt) {
    // d = 0.5; qs[j] = j | (15 - j) << 4. Element j = (j - 8) * 0.5, element j+16 = (7 - j) * 0.5.
    BlockQ4_0 b{};
    b.d = 0x3800;  // 0.5
    for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | (15 - j) << 4);
    float y[32];
    dequantize_row(GgmlType::Q4_0, &b, y, 32);
    for (int j = 0; j < 16; ++j) {
        EXPECT_EQ(y[j], (j - 8) * 0.5f) << j;
        EXPECT_EQ(y[j + 16], (7 - j) * 0.5f) << j;
    }
}

TEST(QuantLayoutTest, Q8_0HandBuilt) {
    BlockQ8_0 b{};
    b.d = 0x3400;  // 0.25
    for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j * 8 - 128);
    float y[32];
    dequantize_row(GgmlType::Q8_0, &b, y, 32);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j * 8 - 128) * 0.25f) << j;
}

TEST(QuantLayoutTest, Q5_0HandBuilt) {
    // qh bit j is the 5th bit of element j: set bits 0 and 31 (little-endian bytes 01 00 00 80).
    BlockQ5_0 b{};
    b.d = 0x3C00;  // 1.0
    b.qh[0] = 0x01;
    b.qh[3] = 0x80;
    b.qs[15] = 0x30;  // element 15 low nibble 0, element 31 high nibble 3
    float y[32];
    dequantize_row(GgmlType::Q5_0, &b, y, 32);
    EXPECT_EQ(y[0], 0.0f);        // (0 | 16) - 16
    EXPECT_EQ(y[15], -16.0f);     // 0 - 16
    EXPECT_EQ(y[31], 3.0f);       // (3 | 16) - 16
    for (int j = 1; j < 31; ++j) {
        if (j != 15) {
            EXPECT_EQ(y[j], -16.0f) << j;
        }
    }
}

TEST(QuantLayoutTest, Q4_KScalePacking) {
    // Hand-packed: j < 4 keeps scale / min in bytes j / j+4 (low 6 bits); j >= 4 keeps the low
    // nibbles in byte j+4 and the top 2 bits in the top bits of bytes j-4 (scale) and j (min).
    const uint8_t sc[8] = {1, 2, 3, 4, 33, 40, 50, 63};
    const uint8_t mn[8] = {0, 5, 10, 15, 20, 31, 47, 63};
    // scales[0] = 1 | (33>>4)<<6 = 129; [1] = 2 | (40>>4)<<6 = 130; [2] = 3 | 3<<6 = 195;
    // [3] = 4 | 3<<6 = 196; [4] = 0 | (20>>4)<<6 = 64; [5] = 5 | 1<<6 = 69; [6] = 10 | 2<<6 = 138;
    // [7] = 15 | 3<<6 = 207; [8] = (33&15) | (20&15)<<4 = 65; [9] = 8 | 15<<4 = 248;
    // [10] = 2 | 15<<4 = 242; [11] = 15 | 15<<4 = 255.
    const uint8_t expected[12] = {129, 130, 195, 196, 64, 69, 138, 207, 65, 248, 242, 255};
    uint8_t packed[12];
    pack_scale_min_k4(sc, mn, packed);
    for (int i = 0; i < 12; ++i) EXPECT_EQ(packed[i], expected[i]) << i;
    for (int j = 0; j < 8; ++j) {
        uint8_t s, m;
        unpack_scale_min_k4(j, expected, &s, &m);
        EXPECT_EQ(s, sc[j]) << j;
        EXPECT_EQ(m, mn[j]) << j;
    }
}

TEST(QuantLayoutTest, Q4_KHandBuilt) {
    const uint8_t sc[8] = {1, 2, 3, 4, 33, 40, 50, 63};
    const uint8_t mn[8] = {0, 5, 10, 15, 20, 31, 47, 63};
    const uint8_t packed[12] = {129, 130, 195, 196, 64, 69, 138, 207, 65, 248, 242, 255};
    BlockQ4_K b{};
    b.d = 0x3C00;     // 1.0
    b.dmin = 0x3800;  // 0.5
    std::memcpy(b.scales, packed, 12);
    for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) b.qs[32 * c + l] = static_cast<uint8_t>((l % 16) | (15 - l % 16) << 4);
    }
    float y[256];
    dequantize_row(GgmlType::Q4_K, &b, y, 256);
    for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) {
            // Low nibble -> element 64c + l of sub-block 2c; high -> 64c + 32 + l of sub-block 2c+1.
            EXPECT_EQ(y[64 * c + l], sc[2 * c] * static_cast<float>(l % 16) - 0.5f * mn[2 * c]) << c << "," << l;
            EXPECT_EQ(y[64 * c + 32 + l], sc[2 * c + 1] * static_cast<float>(15 - l % 16) - 0.5f * mn[2 * c + 1])
                << c << "," << l;
        }
    }
}

TEST(QuantLayoutTest, Q5_KHighBits) {
    // All low nibbles 0, all scales 1, mins 0, d = 1: the value is 16 * (5th bit).
    BlockQ5_K b{};
    b.d = 0x3C00;
    const uint8_t ones[8] = {1, 1, 1, 1, 1, 1, 1, 1}, zeros[8] = {};
    pack_scale_min_k4(ones, zeros, b.scales);
    b.qh[3] = 0x01;  // chunk 0, low half (bit 0): element 3
    b.qh[4] = 0x02;  // chunk 0, high half (bit 1): element 32 + 4
    b.qh[5] = 0x40;  // chunk 3, low half (bit 6): element 192 + 5
    b.qh[6] = 0x80;  // chunk 3, high half (bit 7): element 224 + 6
    float y[256];
    dequantize_row(GgmlType::Q5_K, &b, y, 256);
    for (int e = 0; e < 256; ++e) {
        const bool set = e == 3 || e == 36 || e == 197 || e == 230;
        EXPECT_EQ(y[e], set ? 16.0f : 0.0f) << e;
    }
}

TEST(QuantLayoutTest, Q6_KHandBuilt) {
    // d = 0.5, scales[j] = j - 8. All quants zero (value -32) except:
    //   ql[0] = 0x21, ql[32] = 0x43, qh[0] = 0b11'10'01'00:
    //     element 0  = (1 | 0<<4) - 32 = -31  (scale 0 -> -8)
    //     element 32 = (3 | 1<<4) - 32 = -13  (scale 2 -> -6)
    //     element 64 = (2 | 2<<4) - 32 =   2  (scale 4 -> -4)
    //     element 96 = (4 | 3<<4) - 32 =  20  (scale 6 -> -2)
    //   second half, l = 17: ql[64+17] = 0x0F, qh[32+17] = 0x03 -> element 145 = 63 - 32 = 31
    //     (scale index 145/16 = 9 -> 1)
    BlockQ6_K b{};
    b.d = 0x3800;
    for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<int8_t>(j - 8);
    b.ql[0] = 0x21;
    b.ql[32] = 0x43;
    b.qh[0] = 0xE4;
    b.ql[64 + 17] = 0x0F;
    b.qh[32 + 17] = 0x03;
    float y[256];
    dequantize_row(GgmlType::Q6_K, &b, y, 256);
    EXPECT_EQ(y[0], 0.5f * -8 * -31);
    EXPECT_EQ(y[32], 0.5f * -6 * -13);
    EXPECT_EQ(y[64], 0.5f * -4 * 2);
    EXPECT_EQ(y[96], 0.5f * -2 * 20);
    EXPECT_EQ(y[145], 0.5f * 1 * 31);
    for (int e = 0; e < 256; ++e) {
        if (e == 0 || e == 32 || e == 64 || e == 96 || e == 145) continue;
        EXPECT_EQ(y[e], 0.5f * static_cast<float>(e / 16 - 8) * -32.0f) << e;
    }
}

TEST(QuantLayoutTest, Q8_KBsumsAndScale) {
    const auto x = gaussian(512, 7);
    const auto q = quantize(GgmlType::Q8_K, x);
    const auto* b = reinterpret_cast<const BlockQ8_K*>(q.data());
    for (int i = 0; i < 2; ++i) {
        float amax = 0;
        for (int j = 0; j < 256; ++j) amax = std::max(amax, std::fabs(x[256 * i + j]));
        EXPECT_EQ(b[i].d, amax / 127.0f);
        for (int k = 0; k < 16; ++k) {
            int s = 0;
            for (int j = 0; j < 16; ++j) s += b[i].qs[16 * k + j];
            EXPECT_EQ(b[i].bsums[k], s);
        }
    }
}

TEST(QuantLayoutTest, Q8_1SumField) {
    const auto x = gaussian(64, 8, 0.5f);
    const auto q = quantize(GgmlType::Q8_1, x);
    const auto* b = reinterpret_cast<const BlockQ8_1*>(q.data());
    for (int i = 0; i < 2; ++i) {
        int s = 0;
        for (int j = 0; j < 32; ++j) s += b[i].qs[j];
        EXPECT_NEAR(fp16_to_fp32(b[i].s), fp16_to_fp32(b[i].d) * s, std::fabs(fp16_to_fp32(b[i].s)) * 1e-3);
    }
}

TEST(QuantDotTest, HandBuiltQ4_0DotQ8_0) {
    // w: d = 0.5, element j = (j % 16 - 8) (nibble j%16 in both halves);
    // x: d = 0.25, element j = j - 16. dot = 0.5 * 0.25 * sum_j (j%16 - 8) (j - 16).
    BlockQ4_0 w{};
    w.d = 0x3800;
    for (int j = 0; j < 16; ++j) w.qs[j] = static_cast<uint8_t>(j | j << 4);
    BlockQ8_0 x{};
    x.d = 0x3400;
    for (int j = 0; j < 32; ++j) x.qs[j] = static_cast<int8_t>(j - 16);
    int sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += (j % 16 - 8) * (j - 16);
    const float expected = 0.125f * static_cast<float>(sumi);
    EXPECT_EQ(ref::vec_dot(GgmlType::Q4_0, 32, &w, &x), expected);
    EXPECT_EQ(vec_dot(GgmlType::Q4_0, 32, &w, &x), expected);  // integer sum, one multiply: exact
}

TEST(QuantDispatchTest, VecDotTypesFollowGgml) {
    EXPECT_EQ(vec_dot_type(GgmlType::F32), GgmlType::F32);
    EXPECT_EQ(vec_dot_type(GgmlType::F16), GgmlType::F16);
    EXPECT_EQ(vec_dot_type(GgmlType::BF16), GgmlType::BF16);
    EXPECT_EQ(vec_dot_type(GgmlType::Q4_0), GgmlType::Q8_0);
    EXPECT_EQ(vec_dot_type(GgmlType::Q5_0), GgmlType::Q8_0);
    EXPECT_EQ(vec_dot_type(GgmlType::Q8_0), GgmlType::Q8_0);
    EXPECT_EQ(vec_dot_type(GgmlType::Q4_1), GgmlType::Q8_1);
    EXPECT_EQ(vec_dot_type(GgmlType::Q5_1), GgmlType::Q8_1);
    EXPECT_EQ(vec_dot_type(GgmlType::Q4_K), GgmlType::Q8_K);
    EXPECT_EQ(vec_dot_type(GgmlType::Q5_K), GgmlType::Q8_K);
    EXPECT_EQ(vec_dot_type(GgmlType::Q6_K), GgmlType::Q8_K);
    for (GgmlType t : kWeightTypes) EXPECT_TRUE(has_weight_kernels(t)) << ggml_type_name(t);
    EXPECT_FALSE(has_weight_kernels(GgmlType::Q2_K));
    EXPECT_FALSE(has_weight_kernels(GgmlType::Q8_K));
    if (using_avx2()) {
        EXPECT_TRUE(avx2_supported());
    }
}

// ------------------------------------------------------------------------------------------
// quantise -> dequantise error bounds, one per format, derived from its quantiser
// ------------------------------------------------------------------------------------------

class QuantRoundTripTest : public ::testing::TestWithParam<GgmlType> {};

// Max allowed |x - deq(x)| for element i of x, from the block it lives in.
double error_bound(GgmlType t, const std::vector<float>& x, size_t i) {
    const auto range_of = [&](size_t b0, size_t len, float* mn, float* mx, float* amax) {
        *mn = x[b0], *mx = x[b0], *amax = 0;
        for (size_t j = b0; j < b0 + len; ++j) {
            *mn = std::min(*mn, x[j]);
            *mx = std::max(*mx, x[j]);
            *amax = std::max(*amax, std::fabs(x[j]));
        }
    };
    float mn, mx, amax;
    const double h = std::ldexp(1.0, -11);  // fp16 relative rounding
    switch (t) {
    case GgmlType::F32: return 0.0;
    // Half an ulp of the 11-bit significand; below 2^-14 the ulp is fixed at 2^-24.
    case GgmlType::F16: return std::max(std::fabs(x[i]) * h, std::ldexp(1.0, -25));
    case GgmlType::BF16: return std::fabs(x[i]) * std::ldexp(1.0, -8);
    case GgmlType::Q8_0:
    case GgmlType::Q8_1:
        // d = amax/127: rounding error d/2, plus |q| <= 127 times the fp16 error of d.
        range_of(i / 32 * 32, 32, &mn, &mx, &amax);
        return amax / 127.0 * (0.5 + 127 * h) + 1e-7;
    case GgmlType::Q8_K:  // float d: only the rounding
        range_of(i / 256 * 256, 256, &mn, &mx, &amax);
        return amax / 127.0 * 0.5 * (1 + 1e-6) + 1e-7;
    case GgmlType::Q4_0:
    case GgmlType::Q5_0: {
        // |d| = amax / 8 (or /16); the largest-magnitude element maps exactly to the end of the
        // range, the far end may clamp one step: error <= |d| (plus the fp16 error of d).
        range_of(i / 32 * 32, 32, &mn, &mx, &amax);
        const double d = amax / (t == GgmlType::Q4_0 ? 8.0 : 16.0);
        return d * (1 + 20 * h) + 1e-7;
    }
    case GgmlType::Q4_1:
    case GgmlType::Q5_1: {
        // Step d = (max - min) / levels: rounding error d/2, plus the fp16 errors of d (over up
        // to `levels` steps) and of the stored minimum.
        range_of(i / 32 * 32, 32, &mn, &mx, &amax);
        const double levels = t == GgmlType::Q4_1 ? 15.0 : 31.0;
        const double d = (mx - mn) / levels;
        return d * (0.5 + 2 * levels * h) + std::fabs(mn) * 2 * h + 1e-7;
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
        // The quantiser rounds both 6-bit factors up, so the grid covers each sub-block and the
        // error is half a step: step_j < range_j / L + d with range_j < R_j + dmin,
        // dmin <= Nm / 63, d <= (R + dmin) / (63 L), R_j = max_j + max(0, -min_j), Nm = max -min.
        const double levels = t == GgmlType::Q4_K ? 15.0 : 31.0;
        const size_t sb = i / 256 * 256;
        double r_all = 0, nm = 0, r_j = 0;
        for (size_t j = 0; j < 8; ++j) {
            range_of(sb + 32 * j, 32, &mn, &mx, &amax);
            const double neg_min = std::max(0.0f, -mn);
            const double r = mx + neg_min;
            r_all = std::max(r_all, r);
            nm = std::max(nm, neg_min);
            if (sb + 32 * j <= i && i < sb + 32 * j + 32) r_j = r;
        }
        const double dmin = nm / 63 * (1 + 2 * h);
        const double d = (r_all + dmin) / (63 * levels) * (1 + 2 * h);
        return 0.5 * ((r_j + dmin) / levels + d) * (1 + 1e-5) + 1e-6;
    }
    case GgmlType::Q6_K: {
        // |step_j| < amax_j / 32 + d with d <= A / (32 * 127); the error is half a step except
        // for one clamp at +32 (a full step).
        const size_t sb = i / 256 * 256;
        double a_all = 0, a_j = 0;
        for (size_t j = 0; j < 16; ++j) {
            range_of(sb + 16 * j, 16, &mn, &mx, &amax);
            a_all = std::max<double>(a_all, amax);
            if (sb + 16 * j <= i && i < sb + 16 * j + 16) a_j = amax;
        }
        return (a_j / 32 + a_all / (32 * 127) * (1 + 2 * h)) * (1 + 1e-5) + 1e-6;
    }
    default: return 0.0;
    }
}

TEST_P(QuantRoundTripTest, ErrorWithinFormatBound) {
    const GgmlType t = GetParam();
    const int64_t n = 4096;
    // Three data sets: centred Gaussian, shifted Gaussian (exercises mins / asymmetric blocks),
    // and Gaussian with a few large outliers (one sub-block dominating a super-block).
    std::vector<std::vector<float>> sets = {gaussian(n, 11), gaussian(n, 12, 2.0f, 0.5f), gaussian(n, 13, 0.0f, 0.02f)};
    for (int64_t j = 0; j < n; j += 97) sets[2][static_cast<size_t>(j)] = (j % 2 ? 3.0f : -4.0f);
    for (size_t s = 0; s < sets.size(); ++s) {
        const auto& x = sets[s];
        const auto q = quantize(t, x);
        const auto y = dequantize(t, q.data(), n);
        double err2 = 0, x2 = 0;
        for (size_t i = 0; i < x.size(); ++i) {
            ASSERT_LE(std::fabs(static_cast<double>(x[i]) - y[i]), error_bound(t, x, i))
                << ggml_type_name(t) << " set " << s << " element " << i << " x=" << x[i] << " y=" << y[i];
            err2 += (x[i] - y[i]) * static_cast<double>(x[i] - y[i]);
            x2 += static_cast<double>(x[i]) * x[i];
        }
        // Loose sanity on the relative RMS error: 4 bits ~ 1/10 of the signal, 8 bits ~ 1/100.
        const double rel = std::sqrt(err2 / x2);
        EXPECT_LT(rel, 0.15) << ggml_type_name(t) << " set " << s;
    }
}

TEST_P(QuantRoundTripTest, ZeroRowStaysZero) {
    const GgmlType t = GetParam();
    const std::vector<float> x(512, 0.0f);
    const auto y = dequantize(t, quantize(t, x).data(), 512);
    for (float v : y) ASSERT_EQ(v, 0.0f) << ggml_type_name(t);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantRoundTripTest,
                         ::testing::Values(GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0,
                                         GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                                         GgmlType::Q8_1, GgmlType::Q8_K, GgmlType::Q4_K, GgmlType::Q5_K,
                                         GgmlType::Q6_K),
                         type_param_name);

// ------------------------------------------------------------------------------------------
// Dot products: ref against the dequantised definition, AVX2 against ref
// ------------------------------------------------------------------------------------------

class QuantDotTest : public ::testing::TestWithParam<GgmlType> {};

// The reference dot must equal sum_i deq(w)_i * deq(x)_i. Integer sums make it exact up to float
// rounding of per-block terms; Q4_1/Q5_1 use the fp16 s = dy * sum(y) of Q8_1, whose rounding
// (2^-11 relative) enters through the min term.
TEST_P(QuantDotTest, RefMatchesDequantisedDot) {
    const GgmlType t = GetParam();
    const GgmlType xt = vec_dot_type(t);
    const int64_t n = 1024;
    for (uint32_t seed = 0; seed < 4; ++seed) {
        const auto w = seed < 2 ? quantize(t, gaussian(n, 100 + seed, seed ? 0.3f : 0.0f))
                                : random_weight_row(t, n, 100 + seed);
        const auto x = quantize(xt, gaussian(n, 200 + seed));
        const auto wf = dequantize(t, w.data(), n);
        const auto xf = dequantize(xt, x.data(), n);
        const double expected = exact_dot(wf, xf);
        const double mag = abs_dot(wf, xf);
        const bool q8_1 = xt == GgmlType::Q8_1;
        double tol = mag * 1e-5 + 1e-6;
        if (q8_1) {
            // m * (s - dy*sum(y)) per block, |s| rounding 2^-11 relative.
            double sum_ms = 0;
            const size_t bsz = ggml_type_traits(t).type_size;
            for (int64_t b = 0; b < n / 32; ++b) {
                uint16_t mh;
                std::memcpy(&mh, &w[static_cast<size_t>(b) * bsz + 2], 2);
                const auto* xb = reinterpret_cast<const BlockQ8_1*>(x.data()) + b;
                sum_ms += std::fabs(fp16_to_fp32(mh) * fp16_to_fp32(xb->s));
            }
            tol += sum_ms * std::ldexp(1.0, -10);
        }
        EXPECT_NEAR(ref::vec_dot(t, n, w.data(), x.data()), expected, tol) << ggml_type_name(t) << " seed " << seed;
    }
}

TEST_P(QuantDotTest, Avx2MatchesRef) {
    if (!avx2_supported()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
    const GgmlType t = GetParam();
    const GgmlType xt = vec_dot_type(t);
    // n = 1024 (all block sizes); float types also at 1000 and 7 to cover the scalar tails.
    std::vector<int64_t> sizes = {1024};
    if (is_float_type(t)) sizes.insert(sizes.end(), {1000, 7});
    for (int64_t n : sizes) {
        for (uint32_t seed = 0; seed < 6; ++seed) {
            const auto w = seed % 2 ? random_weight_row(t, n, 300 + seed) : quantize(t, gaussian(n, 300 + seed, 0.1f * seed));
            const auto x = quantize(xt, gaussian(n, 400 + seed));
            const double mag = abs_dot(dequantize(t, w.data(), n), dequantize(xt, x.data(), n));
            // Integer block sums are exact in both paths; only the float summation order of block
            // terms differs (and, for float types, the order of all n products).
            const double tol = mag * (is_float_type(t) ? 1e-5 : 2e-6) + 1e-6;
            const float r = ref::vec_dot(t, n, w.data(), x.data());
            const float a = avx2::vec_dot(t, n, w.data(), x.data());
            EXPECT_NEAR(a, r, tol) << ggml_type_name(t) << " n " << n << " seed " << seed;
        }
    }
}

TEST_P(QuantDotTest, Avx2DequantizeMatchesRefExactly) {
    if (!avx2_supported()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
    const GgmlType t = GetParam();
    const int64_t n = 2048;
    const auto w = random_weight_row(t, n, 500);
    std::vector<float> a(n), r(n);
    avx2::dequantize_row(t, w.data(), a.data(), n);
    ref::dequantize_row(t, w.data(), r.data(), n);
    for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(a[i]), std::bit_cast<uint32_t>(r[i])) << ggml_type_name(t) << " " << i;
    }
}

INSTANTIATE_TEST_SUITE_P(WeightTypes, QuantDotTest, ::testing::ValuesIn(kWeightTypes), type_param_name);

TEST(QuantAvx2Test, ActivationQuantisersMatchRefBitForBit) {
    if (!avx2_supported()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
    for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K, GgmlType::F16, GgmlType::BF16}) {
        for (uint32_t seed = 0; seed < 4; ++seed) {
            auto x = gaussian(4096, 600 + seed, seed * 0.5f, 1.0f + seed);
            // Exact ties for the rounding (amax = 127 -> id = 1, x = k + 0.5) and a zero block.
            if (seed == 3) {
                for (int j = 0; j < 256; ++j) x[static_cast<size_t>(j)] = (j == 0) ? 127.0f : static_cast<float>(j % 100) - 49.5f;
                std::fill(x.begin() + 256, x.begin() + 512, 0.0f);
            }
            const size_t bytes = ggml_row_size(t, 4096);
            std::vector<uint8_t> a(bytes), r(bytes);
            avx2::quantize_row(t, x.data(), a.data(), 4096);
            ref::quantize_row(t, x.data(), r.data(), 4096);
            ASSERT_EQ(a, r) << ggml_type_name(t) << " seed " << seed;
        }
    }
}

// ------------------------------------------------------------------------------------------
// matmul_rows == vec_dot, bit for bit, for any token count and row split
// ------------------------------------------------------------------------------------------

using DotFn = float (*)(GgmlType, int64_t, const void*, const void*);
using MatmulFn = void (*)(GgmlType, int64_t, const void*, size_t, const void*, size_t, int64_t, float*, int64_t,
                          int64_t, int64_t);

void check_matmul_bit_exact(GgmlType t, int64_t n_in, DotFn dot, MatmulFn matmul, const char* path) {
    const GgmlType xt = vec_dot_type(t);
    const int64_t n_rows = 13;
    const size_t row_bytes = ggml_row_size(t, n_in) + 64;  // padded rows: stride != packed size
    const size_t x_row_bytes = ggml_row_size(xt, n_in) + 32;
    std::vector<uint8_t> W(row_bytes * n_rows);
    for (int64_t r = 0; r < n_rows; ++r) {
        const auto row = r % 2 ? random_weight_row(t, n_in, 700 + static_cast<uint32_t>(r))
                               : quantize(t, gaussian(n_in, 700 + static_cast<uint32_t>(r)));
        std::memcpy(&W[static_cast<size_t>(r) * row_bytes], row.data(), row.size());
    }
    const int64_t max_tokens = 8;
    std::vector<uint8_t> X(x_row_bytes * max_tokens);
    for (int64_t tk = 0; tk < max_tokens; ++tk) {
        const auto xr = quantize(xt, gaussian(n_in, 800 + static_cast<uint32_t>(tk)));
        std::memcpy(&X[static_cast<size_t>(tk) * x_row_bytes], xr.data(), xr.size());
    }
    const int64_t ldy = n_rows + 3;
    const std::vector<std::vector<std::pair<int64_t, int64_t>>> splits = {
        {{0, 13}}, {{0, 5}, {5, 13}}, {{3, 4}}, {{0, 1}, {1, 7}, {7, 13}}, {{12, 13}, {0, 12}}};
    for (int64_t n_tokens : {1, 3, 5, 8}) {
        for (const auto& split : splits) {
            std::vector<float> y(static_cast<size_t>(ldy * n_tokens), std::nanf(""));
            for (const auto& [r0, r1] : split) {
                matmul(t, n_in, W.data(), row_bytes, X.data(), x_row_bytes, n_tokens, y.data(), ldy, r0, r1);
            }
            for (const auto& [r0, r1] : split) {
                for (int64_t tk = 0; tk < n_tokens; ++tk) {
                    for (int64_t r = r0; r < r1; ++r) {
                        const float expected = dot(t, n_in, &W[static_cast<size_t>(r) * row_bytes],
                                                   &X[static_cast<size_t>(tk) * x_row_bytes]);
                        const float got = y[static_cast<size_t>(tk * ldy + r)];
                        ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(expected))
                            << path << " " << ggml_type_name(t) << " n_in " << n_in << " tokens " << n_tokens
                            << " token " << tk << " row " << r << " got " << got << " expected " << expected;
                    }
                }
            }
        }
    }
}

class QuantMatmulTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(QuantMatmulTest, RowsBitIdenticalToVecDot) {
    const GgmlType t = GetParam();
    std::vector<int64_t> sizes = {512};
    if (is_float_type(t)) sizes.push_back(100);  // tail handling
    for (int64_t n_in : sizes) {
        check_matmul_bit_exact(t, n_in, &vec_dot, &matmul_rows, "dispatch");
        check_matmul_bit_exact(t, n_in, &ref::vec_dot, &ref::matmul_rows, "ref");
        if (avx2_supported()) check_matmul_bit_exact(t, n_in, &avx2::vec_dot, &avx2::matmul_rows, "avx2");
    }
}

TEST_P(QuantMatmulTest, LargeRowTiles) {
    // Enough rows that the AVX2 driver uses several 64 KiB row tiles.
    const GgmlType t = GetParam();
    const GgmlType xt = vec_dot_type(t);
    const int64_t n_in = 1024, n_rows = 200, n_tokens = 6;
    const size_t row_bytes = ggml_row_size(t, n_in), x_row_bytes = ggml_row_size(xt, n_in);
    std::vector<uint8_t> W = quantize(t, gaussian(n_in * n_rows, 900));
    std::vector<uint8_t> X = quantize(xt, gaussian(n_in * n_tokens, 901));
    std::vector<float> y(static_cast<size_t>(n_rows * n_tokens));
    matmul_rows(t, n_in, W.data(), row_bytes, X.data(), x_row_bytes, n_tokens, y.data(), n_rows, 0, n_rows);
    for (int64_t tk = 0; tk < n_tokens; ++tk) {
        for (int64_t r = 0; r < n_rows; ++r) {
            const float e = vec_dot(t, n_in, &W[static_cast<size_t>(r) * row_bytes], &X[static_cast<size_t>(tk) * x_row_bytes]);
            ASSERT_EQ(std::bit_cast<uint32_t>(y[static_cast<size_t>(tk * n_rows + r)]), std::bit_cast<uint32_t>(e))
                << ggml_type_name(t) << " token " << tk << " row " << r;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(WeightTypes, QuantMatmulTest, ::testing::ValuesIn(kWeightTypes), type_param_name);

}  // namespace
}  // namespace kvrag::kernels
