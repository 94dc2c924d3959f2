// Scalar IEEE half (fp16) and bfloat16 <-> fp32 conversions.
//
// Bit-exact and portable: no F16C needed, so the scalar reference kernels and the GGUF writer
// produce the same bits on every machine. fp32 -> fp16/bf16 rounds to nearest, ties to even
// (what F16C's vcvtps2ph does with imm 0), overflows to inf, keeps the sign of zero, and turns
// NaNs into quiet NaNs in both directions. The AVX2 kernels use F16C instructions; a test checks
// that they give the same bits.
#pragma once

#include <bit>
#include <cstdint>

namespace kvrag::kernels {

// fp16 -> fp32 is exact: every half value (subnormals included) is a normal float.
constexpr float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) {  // inf, or NaN: keep the payload, and quiet it as F16C's vcvtph2ps does
        const uint32_t quiet = mant != 0 ? 0x00400000u : 0u;
        return std::bit_cast<float>(sign | 0x7f800000u | quiet | (mant << 13));
    }
    if (exp == 0) {
        if (mant == 0) return std::bit_cast<float>(sign);  // +-0
        // Subnormal: mant * 2^-24. Shift until the implicit bit appears; each shift lowers
        // the exponent by one.
        exp = 1;
        while ((mant & 0x400u) == 0) {
            mant <<= 1;
            --exp;
        }
        mant &= 0x3ffu;
    }
    // Rebias 15 -> 127.
    return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

constexpr uint16_t fp32_to_fp16(float f) {
    const uint32_t x = std::bit_cast<uint32_t>(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t abs = x & 0x7fffffffu;
    if (abs > 0x7f800000u) {  // NaN: force the quiet bit so a payload that lived only in the
                              // low 13 bits does not turn into inf
        return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
    }
    // 65520 = 65504 + half an ulp: from there on, round-to-nearest-even gives inf.
    if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
    if (abs < 0x38800000u) {
        // Below the smallest normal half (2^-14): the result is a subnormal in units of 2^-24.
        const uint32_t exp = abs >> 23;
        const uint32_t shift = 126u - exp;  // value = mant24 >> shift (in 2^-24 units)
        if (shift > 24) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to zero
        const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
        uint32_t q = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) ++q;  // may carry into the smallest normal
        return static_cast<uint16_t>(sign | q);
    }
    // Normal: rebias 127 -> 15 and drop 13 mantissa bits; a carry out of the mantissa bumps the
    // exponent, which is exactly the right result.
    uint32_t h = (abs - 0x38000000u) >> 13;
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
}

// bf16 is the top half of an fp32.
constexpr float bf16_to_fp32(uint16_t b) {
    return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

constexpr uint16_t fp32_to_bf16(float f) {
    const uint32_t x = std::bit_cast<uint32_t>(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {  // NaN: truncate and keep it quiet
        return static_cast<uint16_t>((x >> 16) | 0x40u);
    }
    // Round to nearest even; a carry into the exponent (including into inf) is correct.
    return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace kvrag::kernels
