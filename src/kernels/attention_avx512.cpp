// AVX-512 attention over f16 cells for one GQA group: avx2::attention_f16_multi
// (attention_avx2.cpp) on 512-bit vectors, with every output bit for bit the same.
//
// What keeps it identical: each score is still one 8-lane FMA chain over the head dimension in
// steps of 8, reduced by the AVX2 kernel's transpose-style hadd tree, then scaled; only now two
// cells share a vector (lanes 0-7 cell c, lanes 8-15 cell c + 8). For that the K tile is laid
// out pair-interleaved when it is converted (load_k_tile): the 8-float chunk d of cells c and
// c + 8 sit side by side, so one 64-byte load feeds both chains. The softmax is the AVX2 one
// (exact two-pass, double sum). P V and the conversions are element-wise (one FMA chain per
// output element in cell order), so their width does not change any result.
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <cstring>

#include "kernels/attention.h"
#include "kernels/ops.h"

namespace kvrag::kernels::avx512 {
namespace {

constexpr int32_t kTile = 32;   // cells per converted tile, as in the AVX2 kernel
constexpr int32_t kPair = 16;   // cells per interleaved group of the K tile
constexpr int32_t kDBlock = 8;  // zmm registers of output per head and pass (128 floats)

inline __m512 round_f16(__m512 x) { return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT)); }

inline float round_f16(float x) { return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT))); }

inline const uint16_t* row_of(const AttentionArgs& a, const uint8_t* plane, int32_t cell_index) {
    return reinterpret_cast<const uint16_t*>(plane + static_cast<size_t>(a.cells[cell_index]) * a.row_bytes + a.head_offset);
}

// K rows [c0, c0 + n) into the pair-interleaved tile: chunk d (8 floats) of tile cell i is at
// (i / 16) * 16 * hd + (i % 8) * 2 * hd + d * 16 + ((i % 16) / 8) * 8. Cells past n are zero.
void load_k_tile(const AttentionArgs& a, int32_t c0, int32_t n, float* tile) {
    const int32_t hd = a.head_dim;
    auto at = [&](int32_t i) { return tile + static_cast<size_t>(i / kPair) * kPair * hd + static_cast<size_t>(i % 8) * 2 * hd + ((i % kPair) / 8) * 8; };
    for (int32_t i = 0; i < n; ++i) {
        const uint16_t* row = row_of(a, a.k, c0 + i);
        float* dst = at(i);
        for (int32_t d = 0; d < hd; d += 8) {
            _mm256_storeu_ps(dst + 2 * d, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + d))));
        }
    }
    for (int32_t i = n; i < kTile; ++i) {
        float* dst = at(i);
        for (int32_t d = 0; d < hd; d += 8) _mm256_storeu_ps(dst + 2 * d, _mm256_setzero_ps());
    }
}

// V rows [c0, c0 + n) into tile (kTile, hd), row-major; rows past n are zero.
void load_v_tile(const AttentionArgs& a, int32_t c0, int32_t n, float* tile) {
    const int32_t hd = a.head_dim;
    for (int32_t i = 0; i < n; ++i) {
        const uint16_t* row = row_of(a, a.v, c0 + i);
        float* dst = tile + static_cast<size_t>(i) * hd;
        int32_t d = 0;
        for (; d + 16 <= hd; d += 16) {
            _mm512_storeu_ps(dst + d, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + d))));
        }
        if (d < hd) _mm256_storeu_ps(dst + d, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + d))));
    }
    if (n < kTile) std::memset(tile + static_cast<size_t>(n) * hd, 0, static_cast<size_t>(kTile - n) * hd * sizeof(float));
}

// _mm256_hadd_ps within each 256-bit half: per 128-bit lane [a0+a1, a2+a3, b0+b1, b2+b3].
inline __m512 hadd(__m512 a, __m512 b) { return _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x88), _mm512_shuffle_ps(a, b, 0xDD)); }

// The AVX2 kernel's reduce8 on both 256-bit halves at once: lane c of each half is the sum of
// accumulator c's eight lanes of that half, added in the same tree.
inline __m512 reduce8_pairs(const __m512* acc) {
    const __m512 s0123 = hadd(hadd(acc[0], acc[1]), hadd(acc[2], acc[3]));
    const __m512 s4567 = hadd(hadd(acc[4], acc[5]), hadd(acc[6], acc[7]));
    // Per 256-bit half: (low 128 of s0123, low 128 of s4567) + (high 128 of each), as
    // _mm256_permute2f128_ps(.., 0x20) + (.., 0x31) in the AVX2 kernel.
    const __m512 t_lo = _mm512_shuffle_f32x4(s0123, s4567, _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 t_hi = _mm512_shuffle_f32x4(s0123, s4567, _MM_SHUFFLE(3, 1, 3, 1));
    const __m512 lo = _mm512_shuffle_f32x4(t_lo, t_lo, _MM_SHUFFLE(3, 1, 2, 0));
    const __m512 hi = _mm512_shuffle_f32x4(t_hi, t_hi, _MM_SHUFFLE(3, 1, 2, 0));
    return _mm512_add_ps(lo, hi);
}

// o[0, 16*NB) += sum over the tile's n cells of p[i] * v_i, in cell order; `last` masks the
// final vector's lanes (head_dim % 16 == 8).
template <int NB>
void accumulate_pv(const float* p, const float* tile, int32_t hd, int32_t n, float* o, __mmask16 last) {
    __m512 acc[NB];
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_maskz_loadu_ps(b + 1 == NB ? last : __mmask16{0xFFFF}, o + 16 * b);
    for (int32_t i = 0; i < n; ++i) {
        const __m512 pv = _mm512_set1_ps(p[i]);
        const float* v = tile + static_cast<size_t>(i) * hd;
#pragma GCC unroll 8
        for (int b = 0; b < NB; ++b) {
            acc[b] = _mm512_fmadd_ps(pv, _mm512_maskz_loadu_ps(b + 1 == NB ? last : __mmask16{0xFFFF}, v + 16 * b), acc[b]);
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) _mm512_mask_storeu_ps(o + 16 * b, b + 1 == NB ? last : __mmask16{0xFFFF}, acc[b]);
}

}  // namespace

void attention_f16_multi(const AttentionArgs* qs, int n_queries, float* const* outs, float* scratch) {
    const AttentionArgs& a = qs[0];  // k, v, row_bytes, head_offset, cells, head_dim, n_q_heads, scale: shared
    const int32_t hd = a.head_dim, nq = a.n_q_heads;
    int32_t nv_max = 0;
    for (int j = 0; j < n_queries; ++j) nv_max = qs[j].n_visible > nv_max ? qs[j].n_visible : nv_max;
    // scratch as in the AVX2 kernel: scores | q rounded to f16 | tile (kTile, hd), aligned
    const size_t scores_per_query = static_cast<size_t>(nq) * nv_max;
    float* scores = scratch;
    float* qr = scores + scores_per_query * n_queries;
    float* tile = qr + static_cast<size_t>(n_queries) * nq * hd;
    tile = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(tile) + 31) & ~static_cast<uintptr_t>(31));

    for (int j = 0; j < n_queries; ++j) {
        float* qj = qr + static_cast<size_t>(j) * nq * hd;
        int32_t i = 0;
        for (; i + 16 <= nq * hd; i += 16) _mm512_storeu_ps(qj + i, round_f16(_mm512_loadu_ps(qs[j].q + i)));
        for (; i < nq * hd; ++i) qj[i] = round_f16(qs[j].q[i]);
    }

    // 1. scores = scale * q K^T, sixteen cells per step (two per vector).
    const __m512 scale = _mm512_set1_ps(a.scale);
    for (int32_t c0 = 0; c0 < nv_max; c0 += kTile) {
        load_k_tile(a, c0, nv_max - c0 < kTile ? nv_max - c0 : kTile, tile);
        for (int j = 0; j < n_queries; ++j) {
            const int32_t nv = qs[j].n_visible;
            if (c0 >= nv) continue;
            const int32_t n = nv - c0 < kTile ? nv - c0 : kTile;
            for (int32_t g = 0; g < nq; ++g) {
                const float* q = qr + (static_cast<size_t>(j) * nq + g) * hd;
                float* s = scores + scores_per_query * j + static_cast<size_t>(g) * nv + c0;
                for (int32_t i = 0; i < n; i += kPair) {
                    const float* k = tile + static_cast<size_t>(i / kPair) * kPair * hd;
                    __m512 acc[8];
                    for (auto& x : acc) x = _mm512_setzero_ps();
                    for (int32_t d = 0; d < hd; d += 8) {
                        const __m512 qv = _mm512_broadcast_f32x8(_mm256_loadu_ps(q + d));
                        for (int c = 0; c < 8; ++c) {
                            acc[c] = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k + static_cast<size_t>(c) * 2 * hd + 2 * d), acc[c]);
                        }
                    }
                    const __m512 r = _mm512_mul_ps(reduce8_pairs(acc), scale);
                    const int32_t left = n - i < kPair ? n - i : kPair;
                    _mm512_mask_storeu_ps(s + i, static_cast<__mmask16>((1u << left) - 1u), r);
                }
            }
        }
    }

    // 2. Softmax per head (the AVX2 one), then the probabilities rounded to f16 once.
    for (int j = 0; j < n_queries; ++j) {
        const int32_t nv = qs[j].n_visible;
        for (int32_t g = 0; g < nq; ++g) {
            float* p = scores + scores_per_query * j + static_cast<size_t>(g) * nv;
            avx2::softmax(p, nv);
            int32_t i = 0;
            for (; i + 16 <= nv; i += 16) _mm512_storeu_ps(p + i, round_f16(_mm512_loadu_ps(p + i)));
            for (; i < nv; ++i) p[i] = round_f16(p[i]);
        }
        std::memset(outs[j], 0, static_cast<size_t>(nq) * hd * sizeof(float));
    }

    // 3. out = P V; up to 128 output floats per head in registers.
    for (int32_t c0 = 0; c0 < nv_max; c0 += kTile) {
        load_v_tile(a, c0, nv_max - c0 < kTile ? nv_max - c0 : kTile, tile);
        for (int j = 0; j < n_queries; ++j) {
            const int32_t nv = qs[j].n_visible;
            if (c0 >= nv) continue;
            const int32_t n = nv - c0 < kTile ? nv - c0 : kTile;
            for (int32_t g = 0; g < nq; ++g) {
                const float* p = scores + scores_per_query * j + static_cast<size_t>(g) * nv + c0;
                float* o = outs[j] + static_cast<size_t>(g) * hd;
                for (int32_t d0 = 0; d0 < hd; d0 += 16 * kDBlock) {
                    const int32_t left = hd - d0;  // a multiple of 8
                    const int32_t nb = (left + 15) / 16 < kDBlock ? (left + 15) / 16 : kDBlock;
                    const __mmask16 last = left >= 16 * nb ? __mmask16{0xFFFF} : __mmask16{0x00FF};
                    const float* t = tile + d0;
                    switch (nb) {
                        case 1: accumulate_pv<1>(p, t, hd, n, o + d0, last); break;
                        case 2: accumulate_pv<2>(p, t, hd, n, o + d0, last); break;
                        case 3: accumulate_pv<3>(p, t, hd, n, o + d0, last); break;
                        case 4: accumulate_pv<4>(p, t, hd, n, o + d0, last); break;
                        case 5: accumulate_pv<5>(p, t, hd, n, o + d0, last); break;
                        case 6: accumulate_pv<6>(p, t, hd, n, o + d0, last); break;
                        case 7: accumulate_pv<7>(p, t, hd, n, o + d0, last); break;
                        default: accumulate_pv<8>(p, t, hd, n, o + d0, last); break;
                    }
                }
            }
        }
    }
}

}  // namespace kvrag::kernels::avx512

#endif  // x86-64
