// AVX2 dot kernels of the K-quants (Q4_K, Q5_K, Q6_K) against Q8_K activations, for
// quant_avx2.cpp's row drivers. Same contract as the kernels there: a template over NT tokens,
// each token's operations the same whatever NT is, so every product equals vec_dot bit for bit.
// Include only from files CMake compiles with -mavx2 -mfma -mf16c.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/quant_blocks.h"
#include "kernels/simd_avx2.h"

namespace kvrag::kernels::avx2 {

// ------------------------------------------------------------------------------------------
// K-quants against Q8_K
// ------------------------------------------------------------------------------------------

// sum_j m_j * (bsums[2j] + bsums[2j+1]) for the 8 Q4_K/Q5_K sub-blocks; exact integer.
inline int k_min_sum(__m128i mins16, const BlockQ8_K& xb) {
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.bsums));
    const __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    return hsum_i32(_mm_madd_epi16(mins16, pairs));
}

// Q4_K (kHighBit = false) and Q5_K (true): each 64-element chunk c holds sub-blocks 2c (low
// nibbles) and 2c+1 (high nibbles); the Q5_K 5th bits sit in qh bits 2c and 2c+1.
template <class Block, bool kHighBit>
struct DotQ45K {
    template <int NT>
    static void dot(int64_t n, const void* wv, const void* const* xs, float* out) {
        const int64_t nb = n / kQK_K;
        const Block* w = at<Block>(wv);
        float acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        for (int64_t i = 0; i < nb; ++i) {
            uint8_t sc[8], mn[8];
            for (int j = 0; j < 8; ++j) unpack_scale_min_k4(j, w[i].scales, &sc[j], &mn[j]);
            int64_t mins_bits;
            std::memcpy(&mins_bits, mn, sizeof(mins_bits));
            const __m128i mins16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mins_bits));
            const float d = h2f(w[i].d);
            const float dmin = h2f(w[i].dmin);

            __m256i sumi[NT];
            for (int t = 0; t < NT; ++t) sumi[t] = _mm256_setzero_si256();
            [[maybe_unused]] __m256i hbits;
            if constexpr (kHighBit) hbits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i].qh));
            for (int c = 0; c < 4; ++c) {
                const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i].qs + 32 * c));
                __m256i lo = _mm256_and_si256(raw, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                if constexpr (kHighBit) {
                    // hbits was shifted right by 2c, so bits 0 and 1 of each byte are this chunk's.
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hbits, _mm256_set1_epi8(1)), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(hbits, _mm256_set1_epi8(2)), 3));
                    hbits = _mm256_srli_epi16(hbits, 2);
                }
                const __m256i s_lo = _mm256_set1_epi16(sc[2 * c]);
                const __m256i s_hi = _mm256_set1_epi16(sc[2 * c + 1]);
                for (int t = 0; t < NT; ++t) {
                    const int8_t* q8 = at<BlockQ8_K>(xs[t], i)->qs + 64 * c;
                    const __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8));
                    const __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32));
                    const __m256i pa = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xa), s_lo);
                    const __m256i pb = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xb), s_hi);
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(pa, pb));
                }
            }
            // The reference's float steps (exact integer sums first), which the packed 8-row
            // kernel (repack_avx2.cpp) keeps lane by lane: acc += dx * (d * isum - dmin * msum).
            for (int t = 0; t < NT; ++t) {
                const BlockQ8_K* xb = at<BlockQ8_K>(xs[t], i);
                const float a = no_contract(d * static_cast<float>(hsum_i32x8(sumi[t])));
                const float b = no_contract(dmin * static_cast<float>(k_min_sum(mins16, *xb)));
                acc[t] += no_contract(xb->d * (a - b));
            }
        }
        for (int t = 0; t < NT; ++t) out[t] = acc[t];
    }
};

// Q6_K: the 6-bit values are used unsigned (0..63) in maddubs; the -32 offset is removed
// afterwards as 32 * sum_j scale_j * bsum_j, computed from the Q8_K bsums (exact integers).
struct DotQ6K {
    template <int NT>
    static void dot(int64_t n, const void* wv, const void* const* xs, float* out) {
        const int64_t nb = n / kQK_K;
        const BlockQ6_K* w = at<BlockQ6_K>(wv);
        float acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        for (int64_t i = 0; i < nb; ++i) {
            const float d = h2f(w[i].d);
            const int8_t* sc = w[i].scales;
            const __m256i scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
            __m256i sumi[NT];
            for (int t = 0; t < NT; ++t) {
                const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at<BlockQ8_K>(xs[t], i)->bsums));
                sumi[t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(scales16, bs), 5));
            }
            for (int h = 0; h < 2; ++h) {
                const uint8_t* ql = w[i].ql + 64 * h;
                const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
                const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
                const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i].qh + 32 * h));
                for (int g = 0; g < 4; ++g) {
                    // Group g of this half: 32 elements [128h + 32g, +32), see quant_blocks.h.
                    __m256i q;
                    switch (g) {
                    case 0: q = _mm256_or_si256(_mm256_and_si256(ql0, m4),
                                                _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x03)), 4)); break;
                    case 1: q = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                                _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C)), 2)); break;
                    case 2: q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                                _mm256_and_si256(qh, _mm256_set1_epi8(0x30))); break;
                    default: q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                                 _mm256_and_si256(_mm256_srli_epi16(qh, 2), _mm256_set1_epi8(0x30))); break;
                    }
                    // int16 lanes 0-7 cover elements 0-15 (scale 2g), lanes 8-15 elements 16-31.
                    const int k = 8 * h + 2 * g;
                    const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[k + 1]), _mm_set1_epi16(sc[k]));
                    for (int t = 0; t < NT; ++t) {
                        const int8_t* q8 = at<BlockQ8_K>(xs[t], i)->qs + 128 * h + 32 * g;
                        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8));
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), scv));
                    }
                }
            }
            // The reference's float steps, as the packed kernel keeps them: acc += (d * dx) * isum.
            for (int t = 0; t < NT; ++t) {
                const float dx = at<BlockQ8_K>(xs[t], i)->d;
                acc[t] += no_contract((d * dx) * static_cast<float>(hsum_i32x8(sumi[t])));
            }
        }
        for (int t = 0; t < NT; ++t) out[t] = acc[t];
    }
};

}  // namespace kvrag::kernels::avx2

#endif  // x86-64
