// AVX2/FMA/F16C attention over f16 cells for one GQA group (see attention.h for the contract).
//
// The work is blocked by tiles of kTile cells: a tile's K (then V) rows are converted to f32
// once into scratch and then used by every query head of the group from L1, and by every query
// of the call (attention_f16_multi: consecutive prompt tokens of one sequence), so each cached
// row is read and converted once per group and query block instead of once per head and token,
// and the inner loops are pure FMAs. Scores: eight cells at a time, one accumulator per cell (eight independent FMA chains),
// reduced to eight scores with a transpose-style hadd. P V: each head keeps up to 64 output
// floats in registers across the tile's cells. Both reductions run over cells in position order
// and tiles start at fixed positions (0, kTile, ...), so a token's result never depends on the
// batch it is in.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels/attention.h"
#include "kernels/ops.h"
#include "kernels/simd_avx2.h"

namespace kvrag::kernels::avx2 {
namespace {

constexpr int32_t kTile = 32;   // cells per converted tile: 32 x head_dim floats (8 KiB at 64)
constexpr int32_t kDBlock = 8;  // ymm registers of output per head and pass (64 floats)

// f16 row (n, a multiple of 8) -> f32.
inline void convert_row(const uint16_t* src, float* dst, int32_t n) {
    for (int32_t d = 0; d < n; d += 8) {
        _mm256_storeu_ps(dst + d, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + d))));
    }
}

// Rounds to f16 and back (nearest even), as the reference rounds a matmul input.
inline __m256 round_f16(__m256 x) { return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT)); }

inline float round_f16(float x) { return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT))); }

// Sums each of eight accumulators: returns [sum(a0), ..., sum(a7)].
inline __m256 reduce8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6, __m256 a7) {
    const __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    const __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

// Converts rows [c0, c0 + n) of a plane (K or V) into tile (kTile, hd); rows past n are zero.
void load_tile(const AttentionArgs& a, const uint8_t* plane, int32_t c0, int32_t n, float* tile) {
    const int32_t hd = a.head_dim;
    for (int32_t i = 0; i < n; ++i) {
        const auto* row = reinterpret_cast<const uint16_t*>(plane + static_cast<size_t>(a.cells[c0 + i]) * a.row_bytes + a.head_offset);
        convert_row(row, tile + static_cast<size_t>(i) * hd, hd);
    }
    if (n < kTile) std::memset(tile + static_cast<size_t>(n) * hd, 0, static_cast<size_t>(kTile - n) * hd * sizeof(float));
}

// o[0, 8*NB) += sum over the tile's n cells of p[i] * v_i (p already rounded to f16), in cell
// order; NB is a template constant so the accumulators stay in registers.
// The loops over b are unrolled by hand-written pragmas: without them GCC 12 kept acc[] on the
// stack and stored and reloaded all eight vectors for every cell (a store-forwarding chain per
// FMA), and this function was 15 % of an F16 pp2048 profile.
template <int NB>
void accumulate_pv(const float* p, const float* tile, int32_t hd, int32_t n, float* o) {
    __m256 acc[NB];
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) acc[b] = _mm256_loadu_ps(o + 8 * b);
    for (int32_t i = 0; i < n; ++i) {
        const __m256 pv = _mm256_set1_ps(p[i]);
        const float* v = tile + static_cast<size_t>(i) * hd;
#pragma GCC unroll 8
        for (int b = 0; b < NB; ++b) acc[b] = _mm256_fmadd_ps(pv, _mm256_load_ps(v + 8 * b), acc[b]);
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) _mm256_storeu_ps(o + 8 * b, acc[b]);
}


}  // namespace

void attention_f16(const AttentionArgs& a, float* out, float* scratch) { attention_f16_multi(&a, 1, &out, scratch); }

void attention_f16_multi(const AttentionArgs* qs, int n_queries, float* const* outs, float* scratch) {
    const AttentionArgs& a = qs[0];  // k, v, row_bytes, head_offset, cells, head_dim, n_q_heads, scale: shared
    const int32_t hd = a.head_dim, nq = a.n_q_heads;
    int32_t nv_max = 0;
    for (int j = 0; j < n_queries; ++j) nv_max = qs[j].n_visible > nv_max ? qs[j].n_visible : nv_max;
    // scratch: scores (n_queries, nq, nv_max) | q rounded to f16 (n_queries, nq, hd) | tile (kTile, hd), 32-byte aligned
    const size_t scores_per_query = static_cast<size_t>(nq) * nv_max;
    float* scores = scratch;
    float* qr = scores + scores_per_query * n_queries;
    float* tile = qr + static_cast<size_t>(n_queries) * nq * hd;
    tile = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(tile) + 31) & ~static_cast<uintptr_t>(31));

    for (int j = 0; j < n_queries; ++j) {
        float* qj = qr + static_cast<size_t>(j) * nq * hd;
        for (int32_t i = 0; i < nq * hd; i += 8) _mm256_storeu_ps(qj + i, round_f16(_mm256_loadu_ps(qs[j].q + i)));
    }

    // 1. scores = scale * q K^T, eight cells per step; each tile converted once for every query.
    const __m256 scale = _mm256_set1_ps(a.scale);
    for (int32_t c0 = 0; c0 < nv_max; c0 += kTile) {
        load_tile(a, a.k, c0, nv_max - c0 < kTile ? nv_max - c0 : kTile, tile);
        for (int j = 0; j < n_queries; ++j) {
            const int32_t nv = qs[j].n_visible;
            if (c0 >= nv) continue;
            const int32_t n = nv - c0 < kTile ? nv - c0 : kTile;
            for (int32_t g = 0; g < nq; ++g) {
                const float* q = qr + (static_cast<size_t>(j) * nq + g) * hd;
                float* s = scores + scores_per_query * j + static_cast<size_t>(g) * nv + c0;
                for (int32_t i = 0; i < n; i += 8) {
                    const float* k = tile + static_cast<size_t>(i) * hd;
                    __m256 acc[8];
                    for (auto& x : acc) x = _mm256_setzero_ps();
                    for (int32_t d = 0; d < hd; d += 8) {
                        const __m256 qv = _mm256_loadu_ps(q + d);
                        for (int c = 0; c < 8; ++c) acc[c] = _mm256_fmadd_ps(qv, _mm256_load_ps(k + static_cast<size_t>(c) * hd + d), acc[c]);
                    }
                    const __m256 r = _mm256_mul_ps(reduce8(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]), scale);
                    if (n - i >= 8) {
                        _mm256_storeu_ps(s + i, r);
                    } else {
                        alignas(32) float tmp[8];
                        _mm256_store_ps(tmp, r);
                        std::memcpy(s + i, tmp, static_cast<size_t>(n - i) * sizeof(float));
                    }
                }
            }
        }
    }

    // 2. Softmax per head (the exact two-pass one; exponentials eight at a time), then the
    // probabilities rounded to f16 once, not once per output block that uses them.
    for (int j = 0; j < n_queries; ++j) {
        const int32_t nv = qs[j].n_visible;
        for (int32_t g = 0; g < nq; ++g) {
            float* p = scores + scores_per_query * j + static_cast<size_t>(g) * nv;
            avx2::softmax(p, nv);  // ops_avx2.cpp
            int32_t i = 0;
            for (; i + 8 <= nv; i += 8) _mm256_storeu_ps(p + i, round_f16(_mm256_loadu_ps(p + i)));
            for (; i < nv; ++i) p[i] = round_f16(p[i]);
        }
        std::memset(outs[j], 0, static_cast<size_t>(nq) * hd * sizeof(float));
    }

    // 3. out = P V; up to 64 output floats per head in registers.
    for (int32_t c0 = 0; c0 < nv_max; c0 += kTile) {
        load_tile(a, a.v, c0, nv_max - c0 < kTile ? nv_max - c0 : kTile, tile);
        for (int j = 0; j < n_queries; ++j) {
            const int32_t nv = qs[j].n_visible;
            if (c0 >= nv) continue;
            const int32_t n = nv - c0 < kTile ? nv - c0 : kTile;
            for (int32_t g = 0; g < nq; ++g) {
                const float* p = scores + scores_per_query * j + static_cast<size_t>(g) * nv + c0;
                float* o = outs[j] + static_cast<size_t>(g) * hd;
                for (int32_t d0 = 0; d0 < hd; d0 += 8 * kDBlock) {
                    const int32_t nb = (hd - d0) / 8 < kDBlock ? (hd - d0) / 8 : kDBlock;
                    const float* t = tile + d0;
                    switch (nb) {
                        case 1: accumulate_pv<1>(p, t, hd, n, o + d0); break;
                        case 2: accumulate_pv<2>(p, t, hd, n, o + d0); break;
                        case 3: accumulate_pv<3>(p, t, hd, n, o + d0); break;
                        case 4: accumulate_pv<4>(p, t, hd, n, o + d0); break;
                        case 5: accumulate_pv<5>(p, t, hd, n, o + d0); break;
                        case 6: accumulate_pv<6>(p, t, hd, n, o + d0); break;
                        case 7: accumulate_pv<7>(p, t, hd, n, o + d0); break;
                        default: accumulate_pv<8>(p, t, hd, n, o + d0); break;
                    }
                }
            }
        }
    }
}

}  // namespace kvrag::kernels::avx2
