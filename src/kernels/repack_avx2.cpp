// AVX2 matrix kernels over packed weights (kernels/repack.h; layouts in repack_layout.h).
//
// The micro-kernel is a tile of 8 weight rows (one packed group) x NT <= 4 tokens. Each
// activation block is broadcast four bytes at a time against a 32-byte weight vector that
// holds four elements of each of the eight rows, so `maddubs` leaves every row's partial sums
// in its own lanes: no horizontal sums, and one vcvtph2ps converts the eight rows' scales.
//
// Exactness: per block, each output's integer dot product is exact (int16 partial sums are
// bounded below, int32 after), then the float steps are the reference's, in block order:
//   Q4_0: acc = acc + float(isum) * (dw * dx)           (dw * dx exact: two fp16 values)
//   Q4_1: acc = acc + (float(isum) * (dw * dx) + mw * sx)
//   Q4_K: acc = acc + dx * (d * float(isum) - dmin * float(msum))
//   Q6_K: acc = acc + (d * dx) * float(isum)
// each product and sum rounded on its own, as in ref::vec_dot. The product goes through no_contract() so the compiler cannot fuse it with the
// sum into an FMA (GCC contracts vector intrinsics too), which would round once instead of twice.
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/gemm_f16.h"
#include "kernels/quant.h"
#include "kernels/quant_blocks.h"
#include "kernels/repack.h"
#include "kernels/repack_act.h"
#include "kernels/repack_driver.h"
#include "kernels/repack_layout.h"
#include "kernels/simd_avx2.h"

namespace kvrag::kernels::avx2 {

uint8_t* act_buffer(size_t bytes) {
    thread_local std::vector<uint8_t> buf;
    buf.resize(bytes + 64);
    return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~static_cast<uintptr_t>(63));
}

namespace {

// Q8_0 (sums slot: 8 * sum of the quants, an int32) or Q8_1 (sums slot: the block's s, a float).
template <class Block>
void group_q8_32(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
    const int64_t n_groups = (n_tokens + kActTok - 1) / kActTok;
    std::memset(dst, 0, static_cast<size_t>(n_groups * nb) * kActQ8_0Bytes);
    for (int64_t t = 0; t < n_tokens; ++t) {
        const auto* blocks = reinterpret_cast<const Block*>(x + static_cast<size_t>(t) * x_row_bytes);
        uint8_t* g = dst + static_cast<size_t>((t / kActTok) * nb) * kActQ8_0Bytes;
        const int k = static_cast<int>(t % kActTok);
        for (int64_t i = 0; i < nb; ++i) {
            uint8_t* b = g + static_cast<size_t>(i) * kActQ8_0Bytes;
            std::memcpy(b + 32 * k, blocks[i].qs, 32);
            const float dx = _cvtsh_ss(blocks[i].d);
            std::memcpy(b + kActScales + 4 * k, &dx, 4);
            if constexpr (std::is_same_v<Block, BlockQ8_1>) {
                const float sx = _cvtsh_ss(blocks[i].s);
                std::memcpy(b + kActSums + 4 * k, &sx, 4);
            } else {
                int32_t sum = 0;
                for (int j = 0; j < 32; ++j) sum += blocks[i].qs[j];
                sum *= 8;
                std::memcpy(b + kActSums + 4 * k, &sum, 4);
            }
        }
    }
}

}  // namespace

void group_q8_0(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
    group_q8_32<BlockQ8_0>(x, x_row_bytes, n_tokens, nb, dst);
}

void group_q8_1(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
    group_q8_32<BlockQ8_1>(x, x_row_bytes, n_tokens, nb, dst);
}

void group_q8_k(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
    const int64_t n_groups = (n_tokens + kActTok - 1) / kActTok;
    std::memset(dst, 0, static_cast<size_t>(n_groups * nb) * kActQ8_KBytes);
    for (int64_t t = 0; t < n_tokens; ++t) {
        const auto* blocks = reinterpret_cast<const BlockQ8_K*>(x + static_cast<size_t>(t) * x_row_bytes);
        uint8_t* g = dst + static_cast<size_t>((t / kActTok) * nb) * kActQ8_KBytes;
        const int k = static_cast<int>(t % kActTok);
        for (int64_t i = 0; i < nb; ++i) {
            uint8_t* b = g + static_cast<size_t>(i) * kActQ8_KBytes;
            std::memcpy(b + kQK_K * k, blocks[i].qs, kQK_K);
            std::memcpy(b + kActKScales + 4 * k, &blocks[i].d, 4);
            for (int p = 0; p < 4; ++p) {
                // |sum of 32 quants| <= 4064: fits int16.
                const int lo = blocks[i].bsums[4 * p] + blocks[i].bsums[4 * p + 1];
                const int hi = blocks[i].bsums[4 * p + 2] + blocks[i].bsums[4 * p + 3];
                const uint32_t word = static_cast<uint16_t>(lo) | (static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16);
                std::memcpy(b + kActKSums + 16 * k + 4 * p, &word, 4);
            }
        }
    }
}

void group_q8_k16(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
    const int64_t n_groups = (n_tokens + kActTok - 1) / kActTok;
    std::memset(dst, 0, static_cast<size_t>(n_groups * nb) * kActQ8_K16Bytes);
    for (int64_t t = 0; t < n_tokens; ++t) {
        const auto* blocks = reinterpret_cast<const BlockQ8_K*>(x + static_cast<size_t>(t) * x_row_bytes);
        uint8_t* g = dst + static_cast<size_t>((t / kActTok) * nb) * kActQ8_K16Bytes;
        const int k = static_cast<int>(t % kActTok);
        for (int64_t i = 0; i < nb; ++i) {
            uint8_t* b = g + static_cast<size_t>(i) * kActQ8_K16Bytes;
            std::memcpy(b + kQK_K * k, blocks[i].qs, kQK_K);
            std::memcpy(b + kActKScales + 4 * k, &blocks[i].d, 4);
            std::memcpy(b + kActKSums + 32 * k, blocks[i].bsums, 32);
        }
    }
}

namespace {

// Pins v to a register at this point. GCC otherwise reassociates the int16 sums of a block
// (integer adds are associative) into a tree over all its maddubs results and spills them.
inline void keep(__m256i& v) { __asm__("" : "+x"(v)); }

inline __m256i broadcast_i32(const void* p) {
    int32_t v;
    std::memcpy(&v, p, sizeof(v));
    return _mm256_set1_epi32(v);
}

// Decode (one token) streams each packed matrix from memory once, and does little work per
// byte: the hardware prefetchers alone left Q6_K at 4-5 GB/s and Q4_0 at 7-9 GB/s per thread
// (a 16384 x 4096 matrix, tools/kernel_bench). Prefetching the block kPrefetchBytes ahead at
// the start of each block raised them to 8-12 and 10-13 GB/s; Q4_K and Q8_0 did not change.
inline constexpr size_t kPrefetchBytes = 2048;

template <int NT, size_t kBlockBytes>
inline void prefetch_for_decode(const uint8_t* block) {
    if constexpr (NT == 1) {
        for (size_t off = 0; off < kBlockBytes; off += 64) {
            _mm_prefetch(reinterpret_cast<const char*>(block + kPrefetchBytes + off), _MM_HINT_T0);
        }
    }
}

// Q4_0, Q5_0, Q4_1 and Q5_1 (F = PackQ4Family<Block>): out[t] lane r = row r of the group .
// token t, for t < NT, in ref's order:
//   Q4_0, Q5_0: acc = acc + float(isum) * (dw * dx),  isum = q . x - offset * sum(x)
//   Q4_1, Q5_1: acc = acc + (float(isum) * (dw * dx) + mw * sx),  isum = q . x
// (dw * dx exact: two fp16 values). The activations' sums come regrouped: 8 * sum(x) for Q8_0
// (Q5_0's 16 * sum is that doubled), sx = dx * sum(x) as a float for Q8_1.
// Bounds: stored quants q <= 15 (31 with the fifth bit) and |x| <= 127, so a maddubs pair is at
// most 3810 (7874); four-bit quants add all eight of a block's pairs in one int16 lane (<= 30480),
// five-bit ones keep the low and high halves apart (four pairs each, <= 31496): exact.
template <int NT, class F>
inline void q4_family_tile(int64_t nb, const uint8_t* w, const uint8_t* xa, __m256* out) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), bit4 = _mm256_set1_epi8(0x10);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, w += F::kBytes, xa += kActQ8_0Bytes) {
        prefetch_for_decode<NT, F::kBytes>(w);
        __m256i s16[NT], s16h[NT];
        for (int t = 0; t < NT; ++t) s16[t] = s16h[t] = _mm256_setzero_si256();
        __m256i qh = _mm256_setzero_si256();
        if constexpr (F::kHasHighBit) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + F::kQuants + 128));
        for (int m = 0; m < 4; ++m) {
            const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + F::kQuants + 32 * m));
            __m256i lo = _mm256_and_si256(raw, m4);                         // elements 4m..4m+3
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);  // elements 16+4m..
            if constexpr (F::kHasHighBit) {
                // Bit m (low) and bit 4 + m (high) of each byte moved to bit 4; the masks drop
                // what the 16-bit shifts carry over from the neighbouring byte.
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(qh, 4 - m), bit4));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_srli_epi16(qh, m), bit4));
            }
            for (int t = 0; t < NT; ++t) {
                const uint8_t* xq = xa + 32 * t;
                s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, broadcast_i32(xq + 4 * m)));
                __m256i& sh = F::kHasHighBit ? s16h[t] : s16[t];
                sh = _mm256_add_epi16(sh, _mm256_maddubs_epi16(hi, broadcast_i32(xq + 16 + 4 * m)));
                keep(s16[t]);
                if constexpr (F::kHasHighBit) keep(s16h[t]);
            }
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
        __m256 mw = _mm256_setzero_ps();
        if constexpr (F::kHasMin) mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16)));
        for (int t = 0; t < NT; ++t) {
            __m256i isum = _mm256_madd_epi16(s16[t], ones);
            if constexpr (F::kHasHighBit) isum = _mm256_add_epi32(isum, _mm256_madd_epi16(s16h[t], ones));
            const __m256i sums = broadcast_i32(xa + kActSums + 4 * t);
            if constexpr (F::kOffset == 8) isum = _mm256_sub_epi32(isum, sums);
            if constexpr (F::kOffset == 16) isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sums, 1));
            const __m256 s = _mm256_mul_ps(dw, _mm256_broadcast_ss(reinterpret_cast<const float*>(xa + kActScales + 4 * t)));
            __m256 step = no_contract(_mm256_mul_ps(_mm256_cvtepi32_ps(isum), s));
            if constexpr (F::kHasMin) {
                const __m256 sx = _mm256_castsi256_ps(sums);  // Q8_1: the float dx * sum(x)
                step = _mm256_add_ps(step, no_contract(_mm256_mul_ps(mw, sx)));
            }
            acc[t] = _mm256_add_ps(acc[t], step);
        }
    }
    for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

// Q8_0 x Q8_0: out[t] lane r = row r of the group . token t, for t < NT, in ref's order like
// q4_family_tile: acc = acc + float(isum) * (dw * dx). Signed weights use the sign trick,
// |w| * (x * sign(w)): a maddubs pair is at most 2 * 128 * 127 = 32512 (|w| = 128 only for a
// stored -128; activations are never -128), so each is widened to int32 at once; exact.
template <int NT>
inline void q8_0_tile(int64_t nb, const uint8_t* w, const uint8_t* xa, __m256* out) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, w += kPackQ8_0BlockBytes, xa += kActQ8_0Bytes) {
        prefetch_for_decode<NT, kPackQ8_0BlockBytes>(w);
        __m256i isum[NT];
        for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
        for (int m = 0; m < 8; ++m) {
            const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 16 + 32 * m));
            const __m256i aw = _mm256_abs_epi8(raw);
            for (int t = 0; t < NT; ++t) {
                const __m256i sx = _mm256_sign_epi8(broadcast_i32(xa + 32 * t + 4 * m), raw);
                isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones));
            }
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
        for (int t = 0; t < NT; ++t) {
            const __m256 s = _mm256_mul_ps(dw, _mm256_broadcast_ss(reinterpret_cast<const float*>(xa + kActScales + 4 * t)));
            acc[t] = _mm256_add_ps(acc[t], no_contract(_mm256_mul_ps(_mm256_cvtepi32_ps(isum[t]), s)));
        }
    }
    for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

// Stores a tile's outputs for rows [lo, hi) of the group starting at row0, tokens [t0, t0 + NT).
template <int NT>
inline void store_tile(const __m256* out, float* y, int64_t ldy, int64_t t0, int64_t row0, int64_t lo, int64_t hi) {
    if (lo == row0 && hi == row0 + kPackRows) {
        for (int t = 0; t < NT; ++t) _mm256_storeu_ps(y + (t0 + t) * ldy + row0, out[t]);
        return;
    }
    for (int t = 0; t < NT; ++t) {
        alignas(32) float lanes[kPackRows];
        _mm256_store_ps(lanes, out[t]);
        for (int64_t r = lo; r < hi; ++r) y[(t0 + t) * ldy + r] = lanes[r - row0];
    }
}

// ------------------------------------------------------------------------------------------
// Q4_K x Q8_K
// ------------------------------------------------------------------------------------------

// out[t] lane r = row r of the group . token t, for t < NT; the float steps are ref's:
//   acc = acc + dx * (d * float(isum) - dmin * float(msum))
// isum = sum_j sc_j * dot_j and msum = sum_j m_j * ysum_j are exact. Q4_K (kBlockBytes
// kPackQ4_KBlockBytes): q <= 15, so a maddubs pair is at most 3840 and a sub-block's int16 lanes
// take all 8 of them (<= 30720) before the madd by sc <= 63. Q5_K (kPackQ5_KBlockBytes, whole
// 5-bit values): q <= 31, a pair is at most 7936, so the int16 lanes are widened after every 4
// pairs (<= 31744). |isum| < 2^31 either way.
template <int NT, size_t kBlockBytes>
inline void q45_k_tile(int64_t nb, const uint8_t* w, const uint8_t* xa, __m256* out) {
    constexpr bool kHasHighBit = kBlockBytes == kPackQ5_KBlockBytes;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i m31 = _mm256_set1_epi8(0x1F), bit5 = _mm256_set1_epi8(0x20), m60 = _mm256_set1_epi8(0x60);
    const __m256i m80 = _mm256_set1_epi8(static_cast<char>(0x80)), mc0 = _mm256_set1_epi8(static_cast<char>(0xC0));
    const __m256i me0 = _mm256_set1_epi8(static_cast<char>(0xE0));
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, w += kBlockBytes, xa += kActQ8_KBytes) {
        prefetch_for_decode<NT, kBlockBytes>(w);
        __m256i isum[NT];
        for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
        for (int j = 0; j < 8; ++j) {
            // Sub-block j's scale of each row in both int16 halves of its int32 lane.
            const __m256i sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + kPackQ4_KScales + 8 * j)));
            const __m256i scv = _mm256_or_si256(sc, _mm256_slli_epi32(sc, 16));
            if constexpr (kHasHighBit) {
                // Five vectors hold the sub-block's eight: elements 4k .. 4k + 3 (k < 5) in bits
                // 0..4 of vector k, the other three in pieces in bits 5..7 (repack_layout.h).
                const uint8_t* q = w + kPackQ5_KQuants + 160 * j;
                __m256i b[5];
                for (int k = 0; k < 5; ++k) b[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * k));
                __m256i v[8];
                for (int k = 0; k < 5; ++k) v[k] = _mm256_and_si256(b[k], m31);
                // Masks before the epi16 shifts: no bits cross into the neighbouring byte.
                v[5] = _mm256_or_si256(_mm256_srli_epi16(_mm256_and_si256(b[0], me0), 5), _mm256_srli_epi16(_mm256_and_si256(b[1], m60), 2));
                v[6] = _mm256_or_si256(_mm256_or_si256(_mm256_srli_epi16(_mm256_and_si256(b[1], m80), 7),
                                                       _mm256_srli_epi16(_mm256_and_si256(b[2], me0), 4)),
                                       _mm256_srli_epi16(_mm256_and_si256(b[3], bit5), 1));
                v[7] = _mm256_or_si256(_mm256_srli_epi16(_mm256_and_si256(b[3], mc0), 6), _mm256_srli_epi16(_mm256_and_si256(b[4], me0), 3));
                for (int half = 0; half < 2; ++half) {
                    for (int t = 0; t < NT; ++t) {
                        const uint8_t* xq = xa + kQK_K * t + 32 * j + 16 * half;
                        __m256i s = _mm256_add_epi16(_mm256_maddubs_epi16(v[4 * half], broadcast_i32(xq)),
                                                     _mm256_maddubs_epi16(v[4 * half + 1], broadcast_i32(xq + 4)));
                        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(v[4 * half + 2], broadcast_i32(xq + 8)));
                        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(v[4 * half + 3], broadcast_i32(xq + 12)));
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s, scv));
                    }
                }
                continue;
            }
            __m256i s16[NT];
            for (int t = 0; t < NT; ++t) s16[t] = _mm256_setzero_si256();
            for (int m = 0; m < 4; ++m) {
                const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + kPackQ4_KQuants + 128 * j + 32 * m));
                const __m256i lo = _mm256_and_si256(raw, m4);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                for (int t = 0; t < NT; ++t) {
                    const uint8_t* xq = xa + kQK_K * t + 32 * j;
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, broadcast_i32(xq + 4 * m)));
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(hi, broadcast_i32(xq + 16 + 4 * m)));
                    keep(s16[t]);
                }
            }
            for (int t = 0; t < NT; ++t) isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], scv));
        }
        __m256i msum[NT];
        for (int t = 0; t < NT; ++t) msum[t] = _mm256_setzero_si256();
        for (int p = 0; p < 4; ++p) {
            const __m256i mins = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + kPackQ4_KMins + 16 * p)));
            for (int t = 0; t < NT; ++t) {
                msum[t] = _mm256_add_epi32(msum[t], _mm256_madd_epi16(mins, broadcast_i32(xa + kActKSums + 16 * t + 4 * p)));
            }
        }
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
        const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16)));
        for (int t = 0; t < NT; ++t) {
            const __m256 a = no_contract(_mm256_mul_ps(d, _mm256_cvtepi32_ps(isum[t])));
            const __m256 b = no_contract(_mm256_mul_ps(dmin, _mm256_cvtepi32_ps(msum[t])));
            const __m256 dx = _mm256_broadcast_ss(reinterpret_cast<const float*>(xa + kActKScales + 4 * t));
            acc[t] = _mm256_add_ps(acc[t], no_contract(_mm256_mul_ps(dx, _mm256_sub_ps(a, b))));
        }
    }
    for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

// ------------------------------------------------------------------------------------------
// Q6_K x Q8_K
// ------------------------------------------------------------------------------------------

// out[t] lane r = row r of the group . token t, for t < NT; the float steps are ref's:
//   acc = acc + (d * dx) * float(isum),  isum = sum_j sc_j * sum_l (q - 32) x
// computed as sum_j sc_j * (q . x)_j - 32 * sum_j sc_j * bsum_j, exact: q <= 63, so a maddubs
// pair is at most 16128 and two added 32256 (int16); times |sc| <= 128 in madd, and |isum|
// stays below 2^29. Sub-blocks go in pairs (2p, 2p + 1): one widening of their scales serves
// both madds (a byte shuffle puts each row's scale in both int16 halves of its lane) and the
// offset's madd against the bsums.
template <int NT>
inline void q6_k_tile(int64_t nb, const uint8_t* w, const uint8_t* xa, __m256* out) {
    const __m256i m63 = _mm256_set1_epi8(0x3F);
    const __m256i mc0 = _mm256_set1_epi8(static_cast<char>(0xC0));
    const __m256i dup_even = _mm256_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13,  //
                                              0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13);
    const __m256i dup_odd = _mm256_setr_epi8(2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15,  //
                                             2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15);
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, w += kPackQ6_KBlockBytes, xa += kActQ8_K16Bytes) {
        prefetch_for_decode<NT, kPackQ6_KBlockBytes>(w);
        __m256i isum[NT], corr[NT];
        for (int t = 0; t < NT; ++t) isum[t] = corr[t] = _mm256_setzero_si256();
        for (int p = 0; p < 8; ++p) {
            const __m256i pairs = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + kPackQ6_KScales + 16 * p)));
            for (int t = 0; t < NT; ++t) {
                corr[t] = _mm256_add_epi32(corr[t], _mm256_madd_epi16(pairs, broadcast_i32(xa + kActKSums + 32 * t + 4 * p)));
            }
            for (int k = 0; k < 2; ++k) {
                const int j = 2 * p + k;
                const __m256i scv = _mm256_shuffle_epi8(pairs, k == 0 ? dup_even : dup_odd);
                const uint8_t* q = w + kPackQ6_KQuants + 96 * j;
                const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
                const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32));
                const __m256i b2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64));
                // v: elements 16j + 4v .. 16j + 4v + 3 of each row (the masks come before the
                // epi16 shifts, so no bits cross into the neighbouring byte).
                const __m256i v0 = _mm256_and_si256(b0, m63);
                const __m256i v1 = _mm256_and_si256(b1, m63);
                const __m256i v2 = _mm256_and_si256(b2, m63);
                const __m256i v3 = _mm256_or_si256(_mm256_or_si256(_mm256_srli_epi16(_mm256_and_si256(b0, mc0), 6),
                                                                   _mm256_srli_epi16(_mm256_and_si256(b1, mc0), 4)),
                                                   _mm256_srli_epi16(_mm256_and_si256(b2, mc0), 2));
                for (int t = 0; t < NT; ++t) {
                    const uint8_t* xq = xa + kQK_K * t + 16 * j;
                    const __m256i sa = _mm256_add_epi16(_mm256_maddubs_epi16(v0, broadcast_i32(xq)),
                                                        _mm256_maddubs_epi16(v1, broadcast_i32(xq + 4)));
                    const __m256i sb = _mm256_add_epi16(_mm256_maddubs_epi16(v2, broadcast_i32(xq + 8)),
                                                        _mm256_maddubs_epi16(v3, broadcast_i32(xq + 12)));
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(_mm256_madd_epi16(sa, scv), _mm256_madd_epi16(sb, scv)));
                }
            }
        }
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
        for (int t = 0; t < NT; ++t) {
            const __m256i total = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(corr[t], 5));
            const __m256 s = _mm256_mul_ps(d, _mm256_broadcast_ss(reinterpret_cast<const float*>(xa + kActKScales + 4 * t)));
            acc[t] = _mm256_add_ps(acc[t], no_contract(_mm256_mul_ps(s, _mm256_cvtepi32_ps(total))));
        }
    }
    for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

// The per-type pieces of a packed product: K::kBlock elements per block, K::kActBytes per
// block of a regrouped token group, K::group() regroups the activations, K::tile<NT>() is the
// micro-kernel.
template <class Block>  // BlockQ4_0, BlockQ5_0 (activations Q8_0), BlockQ4_1, BlockQ5_1 (Q8_1)
struct KernelQ4Family {
    static constexpr int64_t kBlock = kQK4_0;
    static constexpr size_t kActBytes = kActQ8_0Bytes;
    static void group(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
        if constexpr (PackQ4Family<Block>::kHasMin) group_q8_1(x, x_row_bytes, n_tokens, nb, dst);
        else group_q8_0(x, x_row_bytes, n_tokens, nb, dst);
    }
    template <int NT>
    static void tile(int64_t nb, const uint8_t* w, const uint8_t* xa, __m256* out) {
        q4_family_tile<NT, PackQ4Family<Block>>(nb, w, xa, out);
    }
};
struct KernelQ8_0 {
    static constexpr int64_t kBlock = kQK8_0;
    static constexpr size_t kActBytes = kActQ8_0Bytes;
    static void group(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
        group_q8_0(x, x_row_bytes, n_tokens, nb, dst);  // the 8 * sums go unused
    }
    template <int NT>
    static void tile(int64_t nb, const uint8_t* w, const uint8_t* xa, __m256* out) { q8_0_tile<NT>(nb, w, xa, out); }
};
template <size_t kBlockBytes>  // kPackQ4_KBlockBytes: Q4_K; kPackQ5_KBlockBytes: Q5_K
struct KernelQ45_K {
    static constexpr int64_t kBlock = kQK_K;
    static constexpr size_t kActBytes = kActQ8_KBytes;
    static void group(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
        group_q8_k(x, x_row_bytes, n_tokens, nb, dst);
    }
    template <int NT>
    static void tile(int64_t nb, const uint8_t* w, const uint8_t* xa, __m256* out) {
        q45_k_tile<NT, kBlockBytes>(nb, w, xa, out);
    }
};

struct KernelQ6_K {
    static constexpr int64_t kBlock = kQK_K;
    static constexpr size_t kActBytes = kActQ8_K16Bytes;
    static void group(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst) {
        group_q8_k16(x, x_row_bytes, n_tokens, nb, dst);
    }
    template <int NT>
    static void tile(int64_t nb, const uint8_t* w, const uint8_t* xa, __m256* out) { q6_k_tile<NT>(nb, w, xa, out); }
};

// ------------------------------------------------------------------------------------------
// Driver
// ------------------------------------------------------------------------------------------

// One 8-row group per tile call.
struct Groups {
    template <class K, int NT>
    static void run(const PackedMatrix& w, int64_t nb, const uint8_t* xa, float* y, int64_t ldy, int64_t t0, int64_t g0,
                    int64_t g1, int64_t r0, int64_t r1) {
        for (int64_t g = g0; g < g1; ++g) {
            __m256 out[NT];
            K::template tile<NT>(nb, w.group(g), xa, out);
            const int64_t row0 = g * kPackRows;
            store_tile<NT>(out, y, ldy, t0, row0, std::max(r0, row0), std::min(r1, row0 + kPackRows));
        }
    }
};

using Kernels = PackedKernelSet<KernelQ4Family, KernelQ8_0, KernelQ45_K, KernelQ6_K>;

}  // namespace

void matmul_packed(const PackedMatrix& w, const void* x, size_t x_row_bytes, int64_t n_tokens, float* y, int64_t ldy,
                   int64_t r0, int64_t r1) {
    if (r0 >= r1 || n_tokens <= 0) return;
    if (w.type() == GgmlType::F16 || w.type() == GgmlType::BF16) {
        return matmul_half_groups(w.type(), w.group(0), 0, w.n_cols(), x, x_row_bytes, n_tokens, y, ldy, r0, r1);
    }
    // Row tiles of ~64 KiB of packed weights.
    if (!with_packed_kernel<Kernels>(w.type(), [&]<class K>() {
            run_packed_product<K, Groups, 64 * 1024, 1>(w, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
        })) {
        unsupported_type("matmul_packed", w.type());
    }
}

}  // namespace kvrag::kernels::avx2

#endif  // x86-64
