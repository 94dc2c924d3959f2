// Small AVX2 helpers shared by the *_avx2.cpp kernels: horizontal sums, nibble and bit
// unpacking, byte dot products, the guard that keeps a product out of an FMA, and the f32 /
// f16 / bf16 row loads. Include only
// from files CMake compiles with -mavx2 -mfma -mf16c.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/fp16.h"

namespace kvrag::kernels::avx2 {

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }  // exact, same value as fp16_to_fp32

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// e^x for 8 lanes: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two parts so r is exact), e^r
// by its degree-6 Taylor polynomial (relative error below 2e-7 there), 2^n through the exponent
// bits. x is clamped to [-87.3, 88.7] first (e^x stays a normal float); below -87.3 the result
// is 0.
inline __m256 exp_ps(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f);
    const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.7f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    // n <= 128 after the clamp: 2^n as a float needs n <= 127, so split off one factor of 2.
    const __m256 half_n = _mm256_round_ps(_mm256_mul_ps(n, _mm256_set1_ps(0.5f)), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 rest_n = _mm256_sub_ps(n, half_n);
    const __m256i e1 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(half_n), _mm256_set1_epi32(127)), 23);
    const __m256i e2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(rest_n), _mm256_set1_epi32(127)), 23);
    const __m256 v = _mm256_mul_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e1)), _mm256_castsi256_ps(e2));
    return _mm256_andnot_ps(underflow, v);
}

inline int hsum_i32(__m128i v) {
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4E));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xB1));
    return _mm_cvtsi128_si32(v);
}

// 16 bytes of packed nibbles -> 32 bytes: [low nibbles of qs[0..16), high nibbles of qs[0..16)],
// i.e. byte j = element j of a Q4_0/Q4_1/Q5_* block.
inline __m256i bytes_from_nibbles(const uint8_t* qs) {
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m256i b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

// Byte j = 0xFF where bit j of the little-endian uint32 at qh is set, else 0.
inline __m256i bytes_from_bits(const uint8_t* qh) {
    uint32_t bits;
    std::memcpy(&bits, qh, sizeof(bits));
    // Byte j takes byte j/8 of `bits`, then tests bit j%8.
    const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                            0x0202020202020202, 0x0303030303030303);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), shuf);
    const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

// 8 int32 sums of 4 products each, w unsigned [0, 128), x signed.
inline __m256i dot_u8_i8(__m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}

// Same for signed w in [-127, 127] (x must not be -128 where w < 0; Q8_0/Q8_1 never are).
inline __m256i dot_i8_i8(__m256i w, __m256i x) {
    return dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

template <class T>
const T* at(const void* p, int64_t i = 0) { return static_cast<const T*>(p) + i; }

// An opaque use of p: the multiply that produced it cannot be fused with a later add (GCC
// contracts `a * b + c` into an FMA, which rounds once where the reference rounds twice).
inline float no_contract(float p) {
    __asm__("" : "+x"(p));
    return p;
}

inline int hsum_i32x8(__m256i v) {
    return hsum_i32(_mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
}

// The same guard for eight products at once.
inline __m256 no_contract(__m256 v) {
    __asm__("" : "+x"(v));
    return v;
}

// Loads 8 elements of a float-like row as fp32 (exact for all three types), or one.
struct LoadF32 {
    using Elem = float;
    static __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
    static float load1(const float* p) { return *p; }
};
struct LoadF16 {
    using Elem = uint16_t;
    static __m256 load8(const uint16_t* p) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static float load1(const uint16_t* p) { return _cvtsh_ss(*p); }
};
struct LoadBF16 {
    using Elem = uint16_t;
    static __m256 load8(const uint16_t* p) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    }
    static float load1(const uint16_t* p) { return bf16_to_fp32(*p); }
};

}  // namespace kvrag::kernels::avx2

#endif  // x86-64
