// fp16 / bf16 scalar conversions: known bit patterns, ties, subnormals, specials, and agreement
// with the hardware F16C path (through the avx2 kernels) when the CPU has it.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace kvrag::kernels {
namespace {

float bits_f(uint32_t b) { return std::bit_cast<float>(b); }

TEST(Fp16Test, ToFp32KnownPatterns) {
    EXPECT_EQ(fp16_to_fp32(0x3C00), 1.0f);
    EXPECT_EQ(fp16_to_fp32(0xC000), -2.0f);
    EXPECT_EQ(fp16_to_fp32(0x3555), 0.333251953125f);  // 2^-2 * (1 + 341/1024)
    EXPECT_EQ(fp16_to_fp32(0x7BFF), 65504.0f);                           // largest finite
    EXPECT_EQ(fp16_to_fp32(0x0400), std::ldexp(1.0f, -14));              // smallest normal
    EXPECT_EQ(fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));              // smallest subnormal
    EXPECT_EQ(fp16_to_fp32(0x03FF), std::ldexp(1023.0f, -24));           // largest subnormal
    EXPECT_EQ(fp16_to_fp32(0x8001), -std::ldexp(1.0f, -24));
    EXPECT_EQ(std::bit_cast<uint32_t>(fp16_to_fp32(0x0000)), 0x00000000u);
    EXPECT_EQ(std::bit_cast<uint32_t>(fp16_to_fp32(0x8000)), 0x80000000u);  // -0 keeps its sign
    EXPECT_EQ(fp16_to_fp32(0x7C00), std::numeric_limits<float>::infinity());
    EXPECT_EQ(fp16_to_fp32(0xFC00), -std::numeric_limits<float>::infinity());
    EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7E00)));
    EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7C01)));  // signalling-NaN pattern stays NaN
}

TEST(Fp16Test, FromFp32KnownPatterns) {
    EXPECT_EQ(fp32_to_fp16(1.0f), 0x3C00);
    EXPECT_EQ(fp32_to_fp16(-2.0f), 0xC000);
    EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);
    EXPECT_EQ(fp32_to_fp16(65519.99f), 0x7BFF);  // below the halfway point to 65536
    EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);   // exact tie, odd mantissa -> even = inf
    EXPECT_EQ(fp32_to_fp16(1e6f), 0x7C00);
    EXPECT_EQ(fp32_to_fp16(-1e6f), 0xFC00);
    EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::infinity()), 0x7C00);
    EXPECT_EQ(fp32_to_fp16(-std::numeric_limits<float>::infinity()), 0xFC00);
    EXPECT_EQ(fp32_to_fp16(0.0f), 0x0000);
    EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -14)), 0x0400);
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -24)), 0x0001);
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1023.0f, -24)), 0x03FF);
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -30)), 0x0000);  // underflow to zero
    EXPECT_EQ(fp32_to_fp16(bits_f(0x00000001)), 0x0000);     // fp32 subnormal
}

TEST(Fp16Test, RoundsTiesToEven) {
    // Normal range: 1 + 2^-11 lies halfway between 0x3C00 and 0x3C01 -> even 0x3C00;
    // 1 + 3*2^-11 halfway between 0x3C01 and 0x3C02 -> even 0x3C02.
    EXPECT_EQ(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
    EXPECT_EQ(fp32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
    // Just above a tie rounds up.
    EXPECT_EQ(fp32_to_fp16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3C01);
    // Subnormal range, in units of 2^-24: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 0.75 -> 1.
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);
    EXPECT_EQ(fp32_to_fp16(std::ldexp(3.0f, -25)), 0x0002);
    EXPECT_EQ(fp32_to_fp16(std::ldexp(5.0f, -25)), 0x0002);
    EXPECT_EQ(fp32_to_fp16(std::ldexp(3.0f, -26)), 0x0001);
    // Rounding up out of the subnormals lands on the smallest normal.
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1023.5f, -24)), 0x0400);
    // Mantissa carry bumps the exponent: 2047/1024 * 2^0 + half ulp -> 2.0.
    EXPECT_EQ(fp32_to_fp16(2.0f - std::ldexp(1.0f, -12)), 0x4000);
}

TEST(Fp16Test, NanStaysNan) {
    const uint16_t h = fp32_to_fp16(std::numeric_limits<float>::quiet_NaN());
    EXPECT_EQ(h & 0x7C00, 0x7C00);
    EXPECT_NE(h & 0x03FF, 0);
    // A NaN whose payload is only in the low 13 bits must not become inf.
    const uint16_t h2 = fp32_to_fp16(bits_f(0x7F800001));
    EXPECT_NE(h2 & 0x03FF, 0);
    EXPECT_EQ(fp32_to_fp16(bits_f(0xFFC00000)) & 0x8000, 0x8000);  // sign kept
}

TEST(Fp16Test, EveryHalfRoundTrips) {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const float f = fp16_to_fp32(static_cast<uint16_t>(h));
        if (std::isnan(f)) continue;
        ASSERT_EQ(fp32_to_fp16(f), h) << "half 0x" << std::hex << h;
    }
}

TEST(Fp16Test, MatchesF16CHardware) {
    if (!avx2_supported()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C; nothing to compare against";
    // Random fp32 bit patterns (all exponents, so overflow, subnormal and NaN cases appear) plus
    // values near the fp16 range; avx2::quantize_row(F16) uses vcvtps2ph.
    std::mt19937 rng(1234);
    std::vector<float> src(1 << 16);
    for (size_t i = 0; i < src.size(); ++i) {
        src[i] = (i % 2) ? bits_f(rng()) : std::ldexp(static_cast<float>(rng() % 100000) / 997.0f, static_cast<int>(rng() % 50) - 35);
    }
    std::vector<uint16_t> hw(src.size()), sw(src.size());
    avx2::quantize_row(GgmlType::F16, src.data(), hw.data(), static_cast<int64_t>(src.size()));
    ref::quantize_row(GgmlType::F16, src.data(), sw.data(), static_cast<int64_t>(src.size()));
    for (size_t i = 0; i < src.size(); ++i) {
        ASSERT_EQ(hw[i], sw[i]) << "fp32 bits 0x" << std::hex << std::bit_cast<uint32_t>(src[i]);
    }
    // And every half back to fp32.
    std::vector<uint16_t> all(0x10000);
    for (uint32_t h = 0; h < 0x10000; ++h) all[h] = static_cast<uint16_t>(h);
    std::vector<float> a(all.size()), b(all.size());
    avx2::dequantize_row(GgmlType::F16, all.data(), a.data(), static_cast<int64_t>(all.size()));
    ref::dequantize_row(GgmlType::F16, all.data(), b.data(), static_cast<int64_t>(all.size()));
    for (size_t i = 0; i < all.size(); ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(a[i]), std::bit_cast<uint32_t>(b[i])) << "half 0x" << std::hex << i;
    }
}

TEST(Fp16Bf16Test, KnownPatterns) {
    EXPECT_EQ(bf16_to_fp32(0x3F80), 1.0f);
    EXPECT_EQ(bf16_to_fp32(0xC000), -2.0f);
    EXPECT_EQ(fp32_to_bf16(1.0f), 0x3F80);
    EXPECT_EQ(fp32_to_bf16(-0.0f), 0x8000);
    EXPECT_EQ(fp32_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
    EXPECT_EQ(fp32_to_bf16(bits_f(0x7F7FFFFF)), 0x7F80);  // FLT_MAX rounds to inf
    // Ties to even: 0x3F808000 is halfway between 0x3F80 and 0x3F81 -> 0x3F80;
    // 0x3F818000 halfway between 0x3F81 and 0x3F82 -> 0x3F82.
    EXPECT_EQ(fp32_to_bf16(bits_f(0x3F808000)), 0x3F80);
    EXPECT_EQ(fp32_to_bf16(bits_f(0x3F818000)), 0x3F82);
    EXPECT_EQ(fp32_to_bf16(bits_f(0x3F808001)), 0x3F81);
    // Subnormals are kept (bf16 has fp32's exponent range).
    EXPECT_EQ(fp32_to_bf16(bits_f(0x00010000)), 0x0001);
    // NaN stays NaN even when the payload is only in the low 16 bits.
    const uint16_t n = fp32_to_bf16(bits_f(0x7F800001));
    EXPECT_EQ(n & 0x7F80, 0x7F80);
    EXPECT_NE(n & 0x007F, 0);
    for (uint32_t b = 0; b < 0x10000; ++b) {
        const float f = bf16_to_fp32(static_cast<uint16_t>(b));
        if (std::isnan(f)) continue;
        ASSERT_EQ(fp32_to_bf16(f), b);
    }
}

}  // namespace
}  // namespace kvrag::kernels
