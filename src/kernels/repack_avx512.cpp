// AVX-512 matrix kernels over packed weights (kernels/repack.h; layouts in repack_layout.h):
// the tiles of repack_avx2.cpp on 512-bit vectors, for CPUs with AVX-512 F/BW/VL/DQ and VNNI.
// F16 is in gemm_f16_avx512.cpp.
//
// A vector holds two packed 8-row groups side by side: lanes 0-7 are group g's rows, lanes 8-15
// group g + 1's (one 32-byte load from each), so the activation bytes are still one broadcast
// for all sixteen lanes and every lane still collects one row's dot product with no horizontal
// sums. A tile is 2 groups (16 rows) x up to 4 tokens, over the same regrouped activations as
// the AVX2 tiles (repack_act.h).
//
// Exactness: the integer part of each block is the same exact integer as in the AVX2 tile, only
// computed with other instructions: `vpdpbusd` (VNNI: four u8 x s8 products added into an int32
// lane, no int16 step) for Q4_0, Q5_0, Q4_1, Q5_1 and Q8_0; for the K-quants the same maddubs / madd steps on
// wider vectors (their int16 bounds are argued in repack_avx2.cpp), with `vpdpwssd` fusing the
// madd by the sub-block scales and its add. The float steps per block are the reference's, in
// the same order and with the same roundings (no_contract keeps GCC from fusing them), so every
// output equals the AVX2 kernel's and ref::vec_dot's bit for bit
// (tests/kernels/repack_test.cpp runs each kernel available on the machine against both).
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/gemm_f16.h"
#include "kernels/quant.h"
#include "kernels/repack.h"
#include "kernels/repack_act.h"
#include "kernels/repack_driver.h"
#include "kernels/repack_layout.h"

namespace kvrag::kernels::avx512 {
namespace {

using avx2::kActKScales;
using avx2::kActKSums;
using avx2::kActQ8_0Bytes;
using avx2::kActQ8_K16Bytes;
using avx2::kActQ8_KBytes;
using avx2::kActScales;
using avx2::kActSums;
using avx2::kActTok;

// An opaque use of v: the multiply that produced it cannot be fused with a later add ("v": any
// of the 32 vector registers).
inline __m512 no_contract(__m512 v) {
    __asm__("" : "+v"(v));
    return v;
}

inline __m512i broadcast_i32(const void* p) {
    int32_t v;
    std::memcpy(&v, p, sizeof(v));
    return _mm512_set1_epi32(v);
}

inline float load_f32(const void* p) {
    float v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

// 32 bytes at a (lanes 0-7) and 32 at b (lanes 8-15).
inline __m512i load_pair(const uint8_t* a, const uint8_t* b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a))),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)), 1);
}

// 16 bytes at a and 16 at b as one 256-bit vector.
inline __m256i load_pair_128(const uint8_t* a, const uint8_t* b) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
                                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
}

// The eight fp16 scales of each group as sixteen floats.
inline __m512 scales_pair(const uint8_t* a, const uint8_t* b) { return _mm512_cvtph_ps(load_pair_128(a, b)); }

// As in repack_avx2.cpp: decode streams each matrix once, so each group's block kPrefetchBytes
// ahead is requested at the start of a block.
inline constexpr size_t kPrefetchBytes = 2048;

template <int NT, size_t kBlockBytes>
inline void prefetch_for_decode(const uint8_t* a, const uint8_t* b) {
    if constexpr (NT == 1) {
        for (size_t off = 0; off < kBlockBytes; off += 64) {
            _mm_prefetch(reinterpret_cast<const char*>(a + kPrefetchBytes + off), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchBytes + off), _MM_HINT_T0);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Q4_0, Q5_0, Q4_1, Q5_1 (x Q8_0 / Q8_1) and Q8_0 x Q8_0 (VNNI)
// ------------------------------------------------------------------------------------------

// Q4_0, Q5_0, Q4_1 and Q5_1 (F = PackQ4Family<Block>): out[t] lane l = row l % 8 of group
// (l < 8 ? a : b) . token t. Per block, as repack_avx2.cpp's q4_family_tile:
//   Q4_0, Q5_0: isum = sum q x - offset * sum x, acc = acc + float(isum) * (dw * dx)
//   Q4_1, Q5_1: isum = sum q x, acc = acc + (float(isum) * (dw * dx) + mw * sx)
// with q the stored unsigned quants (fifth bit included), summed exactly by vpdpbusd.
template <int NT, class F>
inline void q4_family_tile(int64_t nb, const uint8_t* a, const uint8_t* b, const uint8_t* xa, __m512* out) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), bit4 = _mm512_set1_epi8(0x10);
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, a += F::kBytes, b += F::kBytes, xa += kActQ8_0Bytes) {
        prefetch_for_decode<NT, F::kBytes>(a, b);
        __m512i isum[NT];
        for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
        __m512i qh = _mm512_setzero_si512();
        if constexpr (F::kHasHighBit) qh = load_pair(a + F::kQuants + 128, b + F::kQuants + 128);
        for (int m = 0; m < 4; ++m) {
            const __m512i raw = load_pair(a + F::kQuants + 32 * m, b + F::kQuants + 32 * m);
            __m512i lo = _mm512_and_si512(raw, m4);                         // elements 4m..4m+3
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);  // elements 16+4m..
            if constexpr (F::kHasHighBit) {  // bits m and 4 + m of each byte moved to bit 4
                lo = _mm512_or_si512(lo, _mm512_and_si512(_mm512_slli_epi16(qh, 4 - m), bit4));
                hi = _mm512_or_si512(hi, _mm512_and_si512(_mm512_srli_epi16(qh, m), bit4));
            }
            for (int t = 0; t < NT; ++t) {
                const uint8_t* xq = xa + 32 * t;
                isum[t] = _mm512_dpbusd_epi32(isum[t], lo, broadcast_i32(xq + 4 * m));
                isum[t] = _mm512_dpbusd_epi32(isum[t], hi, broadcast_i32(xq + 16 + 4 * m));
            }
        }
        const __m512 dw = scales_pair(a, b);
        __m512 mw = _mm512_setzero_ps();
        if constexpr (F::kHasMin) mw = scales_pair(a + 16, b + 16);
        for (int t = 0; t < NT; ++t) {
            __m512i total = isum[t];
            const __m512i sums = broadcast_i32(xa + kActSums + 4 * t);
            if constexpr (F::kOffset == 8) total = _mm512_sub_epi32(total, sums);
            if constexpr (F::kOffset == 16) total = _mm512_sub_epi32(total, _mm512_slli_epi32(sums, 1));
            const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(load_f32(xa + kActScales + 4 * t)));
            __m512 step = no_contract(_mm512_mul_ps(_mm512_cvtepi32_ps(total), s));
            if constexpr (F::kHasMin) step = _mm512_add_ps(step, no_contract(_mm512_mul_ps(mw, _mm512_castsi512_ps(sums))));
            acc[t] = _mm512_add_ps(acc[t], step);
        }
    }
    for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

// Signed weights: vpdpbusd takes unsigned bytes, so the weights go in as w + 128 (w ^ 0x80) and
// 128 * sum x comes off again: 16 * (8 * sum x), the regrouped sums. Exact in int32.
template <int NT>
inline void q8_0_tile(int64_t nb, const uint8_t* a, const uint8_t* b, const uint8_t* xa, __m512* out) {
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, a += kPackQ8_0BlockBytes, b += kPackQ8_0BlockBytes, xa += kActQ8_0Bytes) {
        prefetch_for_decode<NT, kPackQ8_0BlockBytes>(a, b);
        __m512i isum[NT];
        for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
        for (int m = 0; m < 8; ++m) {
            const __m512i uw = _mm512_xor_si512(load_pair(a + 16 + 32 * m, b + 16 + 32 * m), flip);
            for (int t = 0; t < NT; ++t) isum[t] = _mm512_dpbusd_epi32(isum[t], uw, broadcast_i32(xa + 32 * t + 4 * m));
        }
        const __m512 dw = scales_pair(a, b);
        for (int t = 0; t < NT; ++t) {
            const __m512i total = _mm512_sub_epi32(isum[t], _mm512_slli_epi32(broadcast_i32(xa + kActSums + 4 * t), 4));
            const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(load_f32(xa + kActScales + 4 * t)));
            acc[t] = _mm512_add_ps(acc[t], no_contract(_mm512_mul_ps(_mm512_cvtepi32_ps(total), s)));
        }
    }
    for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

// ------------------------------------------------------------------------------------------
// Q4_K and Q5_K x Q8_K
// ------------------------------------------------------------------------------------------

// Pins v to a register (see keep() in repack_avx2.cpp: GCC would otherwise turn a block's int16
// sums into a tree and spill it).
inline void keep(__m512i& v) { __asm__("" : "+v"(v)); }

// acc = acc + dx * (d * float(isum) - dmin * float(msum)), isum = sum_j sc_j * dot_j,
// msum = sum_j m_j * ysum_j, with the int16 bounds of q45_k_tile in repack_avx2.cpp.
template <int NT, size_t kBlockBytes>
inline void q45_k_tile(int64_t nb, const uint8_t* a, const uint8_t* b, const uint8_t* xa, __m512* out) {
    constexpr bool kHasHighBit = kBlockBytes == kPackQ5_KBlockBytes;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i m31 = _mm512_set1_epi8(0x1F), bit5 = _mm512_set1_epi8(0x20), m60 = _mm512_set1_epi8(0x60);
    const __m512i m80 = _mm512_set1_epi8(static_cast<char>(0x80)), mc0 = _mm512_set1_epi8(static_cast<char>(0xC0));
    const __m512i me0 = _mm512_set1_epi8(static_cast<char>(0xE0));
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, a += kBlockBytes, b += kBlockBytes, xa += kActQ8_KBytes) {
        prefetch_for_decode<NT, kBlockBytes>(a, b);
        __m512i isum[NT];
        for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
        for (int j = 0; j < 8; ++j) {
            // Sub-block j's scale of each row in both int16 halves of its int32 lane.
            const __m128i sc8 = _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a + kPackQ4_KScales + 8 * j)),
                                                   _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + kPackQ4_KScales + 8 * j)));
            const __m512i sc = _mm512_cvtepu8_epi32(sc8);
            const __m512i scv = _mm512_or_si512(sc, _mm512_slli_epi32(sc, 16));
            if constexpr (kHasHighBit) {
                const size_t q = kPackQ5_KQuants + 160 * static_cast<size_t>(j);
                __m512i w[5];
                for (int k = 0; k < 5; ++k) w[k] = load_pair(a + q + 32 * k, b + q + 32 * k);
                __m512i v[8];
                for (int k = 0; k < 5; ++k) v[k] = _mm512_and_si512(w[k], m31);
                v[5] = _mm512_or_si512(_mm512_srli_epi16(_mm512_and_si512(w[0], me0), 5), _mm512_srli_epi16(_mm512_and_si512(w[1], m60), 2));
                v[6] = _mm512_or_si512(_mm512_or_si512(_mm512_srli_epi16(_mm512_and_si512(w[1], m80), 7),
                                                       _mm512_srli_epi16(_mm512_and_si512(w[2], me0), 4)),
                                       _mm512_srli_epi16(_mm512_and_si512(w[3], bit5), 1));
                v[7] = _mm512_or_si512(_mm512_srli_epi16(_mm512_and_si512(w[3], mc0), 6), _mm512_srli_epi16(_mm512_and_si512(w[4], me0), 3));
                for (int half = 0; half < 2; ++half) {
                    for (int t = 0; t < NT; ++t) {
                        const uint8_t* xq = xa + kQK_K * t + 32 * j + 16 * half;
                        __m512i s = _mm512_add_epi16(_mm512_maddubs_epi16(v[4 * half], broadcast_i32(xq)),
                                                     _mm512_maddubs_epi16(v[4 * half + 1], broadcast_i32(xq + 4)));
                        s = _mm512_add_epi16(s, _mm512_maddubs_epi16(v[4 * half + 2], broadcast_i32(xq + 8)));
                        s = _mm512_add_epi16(s, _mm512_maddubs_epi16(v[4 * half + 3], broadcast_i32(xq + 12)));
                        isum[t] = _mm512_dpwssd_epi32(isum[t], s, scv);
                    }
                }
                continue;
            }
            __m512i s16[NT];
            for (int t = 0; t < NT; ++t) s16[t] = _mm512_setzero_si512();
            for (int m = 0; m < 4; ++m) {
                const size_t q = kPackQ4_KQuants + 128 * static_cast<size_t>(j) + 32 * static_cast<size_t>(m);
                const __m512i raw = load_pair(a + q, b + q);
                const __m512i lo = _mm512_and_si512(raw, m4);
                const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
                for (int t = 0; t < NT; ++t) {
                    const uint8_t* xq = xa + kQK_K * t + 32 * j;
                    s16[t] = _mm512_add_epi16(s16[t], _mm512_maddubs_epi16(lo, broadcast_i32(xq + 4 * m)));
                    s16[t] = _mm512_add_epi16(s16[t], _mm512_maddubs_epi16(hi, broadcast_i32(xq + 16 + 4 * m)));
                    keep(s16[t]);
                }
            }
            for (int t = 0; t < NT; ++t) isum[t] = _mm512_dpwssd_epi32(isum[t], s16[t], scv);
        }
        __m512i msum[NT];
        for (int t = 0; t < NT; ++t) msum[t] = _mm512_setzero_si512();
        for (int p = 0; p < 4; ++p) {
            const __m512i mins = _mm512_cvtepu8_epi16(load_pair_128(a + kPackQ4_KMins + 16 * p, b + kPackQ4_KMins + 16 * p));
            for (int t = 0; t < NT; ++t) {
                msum[t] = _mm512_dpwssd_epi32(msum[t], mins, broadcast_i32(xa + kActKSums + 16 * t + 4 * p));
            }
        }
        const __m512 d = scales_pair(a, b);
        const __m512 dmin = scales_pair(a + 16, b + 16);
        for (int t = 0; t < NT; ++t) {
            const __m512 p = no_contract(_mm512_mul_ps(d, _mm512_cvtepi32_ps(isum[t])));
            const __m512 q = no_contract(_mm512_mul_ps(dmin, _mm512_cvtepi32_ps(msum[t])));
            const __m512 dx = _mm512_set1_ps(load_f32(xa + kActKScales + 4 * t));
            acc[t] = _mm512_add_ps(acc[t], no_contract(_mm512_mul_ps(dx, _mm512_sub_ps(p, q))));
        }
    }
    for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

// ------------------------------------------------------------------------------------------
// Q6_K x Q8_K
// ------------------------------------------------------------------------------------------

// acc = acc + (d * dx) * float(isum), isum = sum_j sc_j * (q . x)_j - 32 * sum_j sc_j * bsum_j,
// as q6_k_tile in repack_avx2.cpp.
template <int NT>
inline void q6_k_tile(int64_t nb, const uint8_t* a, const uint8_t* b, const uint8_t* xa, __m512* out) {
    const __m512i m63 = _mm512_set1_epi8(0x3F);
    const __m512i mc0 = _mm512_set1_epi8(static_cast<char>(0xC0));
    // Within each 128-bit lane (four rows' int16 pairs): each row's scale of the even (odd)
    // sub-block in both int16 halves of its int32 lane.
    const __m512i dup_even = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13));
    const __m512i dup_odd = _mm512_broadcast_i32x4(_mm_setr_epi8(2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15));
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, a += kPackQ6_KBlockBytes, b += kPackQ6_KBlockBytes, xa += kActQ8_K16Bytes) {
        prefetch_for_decode<NT, kPackQ6_KBlockBytes>(a, b);
        __m512i isum[NT], corr[NT];
        for (int t = 0; t < NT; ++t) isum[t] = corr[t] = _mm512_setzero_si512();
        for (int p = 0; p < 8; ++p) {
            const __m512i pairs = _mm512_cvtepi8_epi16(load_pair_128(a + kPackQ6_KScales + 16 * p, b + kPackQ6_KScales + 16 * p));
            for (int t = 0; t < NT; ++t) {
                corr[t] = _mm512_dpwssd_epi32(corr[t], pairs, broadcast_i32(xa + kActKSums + 32 * t + 4 * p));
            }
            for (int k = 0; k < 2; ++k) {
                const int j = 2 * p + k;
                const __m512i scv = _mm512_shuffle_epi8(pairs, k == 0 ? dup_even : dup_odd);
                const size_t q = kPackQ6_KQuants + 96 * static_cast<size_t>(j);
                const __m512i b0 = load_pair(a + q, b + q);
                const __m512i b1 = load_pair(a + q + 32, b + q + 32);
                const __m512i b2 = load_pair(a + q + 64, b + q + 64);
                const __m512i v0 = _mm512_and_si512(b0, m63);
                const __m512i v1 = _mm512_and_si512(b1, m63);
                const __m512i v2 = _mm512_and_si512(b2, m63);
                const __m512i v3 = _mm512_or_si512(_mm512_or_si512(_mm512_srli_epi16(_mm512_and_si512(b0, mc0), 6),
                                                                   _mm512_srli_epi16(_mm512_and_si512(b1, mc0), 4)),
                                                   _mm512_srli_epi16(_mm512_and_si512(b2, mc0), 2));
                for (int t = 0; t < NT; ++t) {
                    const uint8_t* xq = xa + kQK_K * t + 16 * j;
                    const __m512i sa = _mm512_add_epi16(_mm512_maddubs_epi16(v0, broadcast_i32(xq)),
                                                        _mm512_maddubs_epi16(v1, broadcast_i32(xq + 4)));
                    const __m512i sb = _mm512_add_epi16(_mm512_maddubs_epi16(v2, broadcast_i32(xq + 8)),
                                                        _mm512_maddubs_epi16(v3, broadcast_i32(xq + 12)));
                    isum[t] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(isum[t], sa, scv), sb, scv);
                }
            }
        }
        const __m512 d = scales_pair(a, b);
        for (int t = 0; t < NT; ++t) {
            const __m512i total = _mm512_sub_epi32(isum[t], _mm512_slli_epi32(corr[t], 5));
            const __m512 s = _mm512_mul_ps(d, _mm512_set1_ps(load_f32(xa + kActKScales + 4 * t)));
            acc[t] = _mm512_add_ps(acc[t], no_contract(_mm512_mul_ps(s, _mm512_cvtepi32_ps(total))));
        }
    }
    for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

// The per-type pieces, as in repack_avx2.cpp.
template <class Block>  // BlockQ4_0, BlockQ5_0 (activations Q8_0), BlockQ4_1, BlockQ5_1 (Q8_1)
struct KernelQ4Family {
    static constexpr int64_t kBlock = kQK4_0;
    static constexpr size_t kActBytes = kActQ8_0Bytes;
    static void group(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
        if constexpr (PackQ4Family<Block>::kHasMin) avx2::group_q8_1(x, x_row_bytes, n_tokens, nb, dst);
        else avx2::group_q8_0(x, x_row_bytes, n_tokens, nb, dst);
    }
    template <int NT>
    static void tile(int64_t nb, const uint8_t* a, const uint8_t* b, const uint8_t* xa, __m512* out) {
        q4_family_tile<NT, PackQ4Family<Block>>(nb, a, b, xa, out);
    }
};
struct KernelQ8_0 {
    static constexpr int64_t kBlock = kQK8_0;
    static constexpr size_t kActBytes = kActQ8_0Bytes;
    static void group(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
        avx2::group_q8_0(x, x_row_bytes, n_tokens, nb, dst);
    }
    template <int NT>
    static void tile(int64_t nb, const uint8_t* a, const uint8_t* b, const uint8_t* xa, __m512* out) {
        q8_0_tile<NT>(nb, a, b, xa, out);
    }
};
template <size_t kBlockBytes>
struct KernelQ45_K {
    static constexpr int64_t kBlock = kQK_K;
    static constexpr size_t kActBytes = kActQ8_KBytes;
    static void group(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
        avx2::group_q8_k(x, x_row_bytes, n_tokens, nb, dst);
    }
    template <int NT>
    static void tile(int64_t nb, const uint8_t* a, const uint8_t* b, const uint8_t* xa, __m512* out) {
        q45_k_tile<NT, kBlockBytes>(nb, a, b, xa, out);
    }
};
struct KernelQ6_K {
    static constexpr int64_t kBlock = kQK_K;
    static constexpr size_t kActBytes = kActQ8_K16Bytes;
    static void group(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
        avx2::group_q8_k16(x, x_row_bytes, n_tokens, nb, dst);
    }
    template <int NT>
    static void tile(int64_t nb, const uint8_t* a, const uint8_t* b, const uint8_t* xa, __m512* out) {
        q6_k_tile<NT>(nb, a, b, xa, out);
    }
};

// ------------------------------------------------------------------------------------------
// Driver
// ------------------------------------------------------------------------------------------

// Groups [g0, g1) two at a time; a last lone group is paired with itself and only its own
// lanes are stored. Lane l of a tile is row 8g + l; only rows in [r0, r1) are written.
struct GroupPairs {
    template <class K, int NT>
    static void run(const PackedMatrix& w, int64_t nb, const uint8_t* xa, float* y, int64_t ldy, int64_t t0, int64_t g0,
                    int64_t g1, int64_t r0, int64_t r1) {
        for (int64_t g = g0; g < g1; g += 2) {
            const uint8_t* a = w.group(g);
            const uint8_t* b = g + 1 < g1 ? w.group(g + 1) : a;
            __m512 out[NT];
            K::template tile<NT>(nb, a, b, xa, out);
            const int64_t row0 = g * kPackRows;
            const int64_t lo = std::max(r0, row0) - row0;
            const int64_t hi = std::min(r1, row0 + (g + 1 < g1 ? 2 : 1) * kPackRows) - row0;
            if (lo == 0 && hi == 2 * kPackRows) {
                for (int t = 0; t < NT; ++t) _mm512_storeu_ps(y + (t0 + t) * ldy + row0, out[t]);
            } else {
                const auto mask = static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
                for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * ldy + row0, mask, out[t]);
            }
        }
    }
};

using Kernels = PackedKernelSet<KernelQ4Family, KernelQ8_0, KernelQ45_K, KernelQ6_K>;

}  // namespace

bool has_kernel(GgmlType type) {
    switch (type) {
    case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q4_1: case GgmlType::Q5_1: case GgmlType::Q8_0:
    case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::F16: case GgmlType::BF16:
        return true;
    default:
        return false;
    }
}

void matmul_packed(const PackedMatrix& w, const void* x, size_t x_row_bytes, int64_t n_tokens, float* y, int64_t ldy,
                   int64_t r0, int64_t r1) {
    if (r0 >= r1 || n_tokens <= 0) return;
    if (w.type() == GgmlType::F16 || w.type() == GgmlType::BF16) {
        return matmul_half_groups(w.type(), w.group(0), 0, w.n_cols(), x, x_row_bytes, n_tokens, y, ldy, r0, r1);
    }
    // Row tiles of ~128 KiB of packed weights, an even number of groups.
    if (!with_packed_kernel<Kernels>(w.type(), [&]<class K>() {
            run_packed_product<K, GroupPairs, 128 * 1024, 2>(w, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
        })) {
        unsupported_type("avx512::matmul_packed", w.type());
    }
}

}  // namespace kvrag::kernels::avx512

#endif  // x86-64
