// AVX2/FMA/F16C attention over f16 and q8_0 cells for one GQA group (see attention.h for the
// contract).
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
#include "kernels/quant.h"
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



// Stores the first n (at most 8; all when n >= 8) of eight scores.
inline void store_scores(__m256 r, int32_t n, float* s) {
    if (n >= 8) {
        _mm256_storeu_ps(s, r);
    } else {
        alignas(32) float tmp[8];
        _mm256_store_ps(tmp, r);
        std::memcpy(s, tmp, static_cast<size_t>(n) * sizeof(float));
    }
}

// f16 cells: q rounded to f16 (as the reference's f16 matmul rounds its input), K rows widened
// to f32, scores as eight FMA chains (one per cell) reduced by reduce8, the probabilities
// rounded to f16 again before P V.
struct F16Cells {
    static constexpr bool kRoundP = true;
    static void prepare_q(const float* q, int32_t hd, float* area) {
        for (int32_t i = 0; i < hd; i += 8) _mm256_storeu_ps(area + i, round_f16(_mm256_loadu_ps(q + i)));
    }
    static void load_k(const AttentionArgs& a, int32_t c0, int32_t n, float* tile) { load_tile(a, a.k, c0, n, tile); }
    static void load_v(const AttentionArgs& a, int32_t c0, int32_t n, float* tile) { load_tile(a, a.v, c0, n, tile); }
    static void scores(const float* q, const float* tile, int32_t hd, int32_t n, __m256 scale, float* s) {
        for (int32_t i = 0; i < n; i += 8) {
            const float* k = tile + static_cast<size_t>(i) * hd;
            __m256 acc[8];
            for (auto& x : acc) x = _mm256_setzero_ps();
            for (int32_t d = 0; d < hd; d += 8) {
                const __m256 qv = _mm256_loadu_ps(q + d);
                for (int c = 0; c < 8; ++c) acc[c] = _mm256_fmadd_ps(qv, _mm256_load_ps(k + static_cast<size_t>(c) * hd + d), acc[c]);
            }
            store_scores(_mm256_mul_ps(reduce8(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]), scale), n - i, s + i);
        }
    }
};

// q8_0 cells (34-byte blocks: an f16 scale and 32 int8). Scores exactly as vec_dot(Q8_0) gives
// them: q quantised to Q8_0 (the cache type's dot format), per block an exact integer sum,
// then acc += float(isum) * (d_k * d_q) block by block, scaled at the end. Eight cells share a
// vector, one lane each: the K tile is transposed once so that each 32-byte vector holds four
// consecutive bytes of eight cells, and a broadcast of four q bytes multiplies all eight with
// one maddubs (|q| against k carrying q's sign; every Q8_0 value is within [-127, 127], so the
// pair sums never saturate). V rows are dequantised into the f32 tile (d * q, as
// dequantize_row) and go through the same P V as f16 cells.
struct Q8_0Cells {
    static constexpr bool kRoundP = false;
    static constexpr int32_t kBlock = 34, kQK = 32;
    // Room per query head in the q area, in floats: q's int8 values, their magnitudes, and the
    // block scales (hd + hd + hd / 32 * 4 bytes, within hd floats).
    static void prepare_q(const float* q, int32_t hd, float* area) {
        uint8_t blocks[kMaxHeadDim / kQK * kBlock];
        quantize_row(GgmlType::Q8_0, q, blocks, hd);
        auto* qs = reinterpret_cast<int8_t*>(area);
        auto* qa = reinterpret_cast<uint8_t*>(area) + hd;
        auto* qd = reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(area) + 2 * hd);
        for (int32_t b = 0; b < hd / kQK; ++b) {
            uint16_t d;
            std::memcpy(&d, blocks + b * kBlock, 2);
            qd[b] = _cvtsh_ss(d);
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blocks + b * kBlock + 2));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + b * kQK), v);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(qa + b * kQK), _mm256_abs_epi8(v));
        }
    }
    // Tile layout: for each group of eight cells and block, eight vectors (bytes 4s..4s+3 of the
    // eight cells' block, s = 0..7), then the group's block scales: (kTile / 8) x nb x (8 x 32
    // bytes), then (kTile / 8) x nb x 8 floats. Cells past n are zero (their scores are dropped).
    static void load_k(const AttentionArgs& a, int32_t c0, int32_t n, float* tile) {
        const int32_t nb = a.head_dim / kQK;
        auto* kq = reinterpret_cast<__m256i*>(tile);
        float* kd = tile + static_cast<size_t>(kTile / 8) * nb * 64;
        for (int32_t g = 0; g < kTile / 8; ++g) {
            const uint8_t* rows[8];
            for (int c = 0; c < 8; ++c) {
                const int32_t i = 8 * g + c;
                rows[c] = i < n ? a.k + static_cast<size_t>(a.cells[c0 + i]) * a.row_bytes + a.head_offset : nullptr;
            }
            for (int32_t b = 0; b < nb; ++b) {
                __m256i r[8];
                alignas(32) float d[8];
                for (int c = 0; c < 8; ++c) {
                    if (rows[c] == nullptr) {
                        r[c] = _mm256_setzero_si256();
                        d[c] = 0.0f;
                        continue;
                    }
                    const uint8_t* blk = rows[c] + static_cast<size_t>(b) * kBlock;
                    uint16_t h;
                    std::memcpy(&h, blk, 2);
                    d[c] = _cvtsh_ss(h);
                    r[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
                }
                transpose8x32(r, kq + (static_cast<size_t>(g) * nb + b) * 8);
                _mm256_store_ps(kd + (static_cast<size_t>(g) * nb + b) * 8, _mm256_load_ps(d));
            }
        }
    }
    static void load_v(const AttentionArgs& a, int32_t c0, int32_t n, float* tile) {
        const int32_t hd = a.head_dim;
        for (int32_t i = 0; i < n; ++i) {
            const uint8_t* row = a.v + static_cast<size_t>(a.cells[c0 + i]) * a.row_bytes + a.head_offset;
            avx2::dequantize_row(GgmlType::Q8_0, row, tile + static_cast<size_t>(i) * hd, hd);
        }
        if (n < kTile) std::memset(tile + static_cast<size_t>(n) * hd, 0, static_cast<size_t>(kTile - n) * hd * sizeof(float));
    }
    static void scores(const float* area, const float* tile, int32_t hd, int32_t n, __m256 scale, float* s) {
        const int32_t nb = hd / kQK;
        switch ((n + 7) / 8) {
            case 1: group_scores<1>(area, tile, nb, n, scale, s); break;
            case 2: group_scores<2>(area, tile, nb, n, scale, s); break;
            case 3: group_scores<3>(area, tile, nb, n, scale, s); break;
            default: group_scores<4>(area, tile, nb, n, scale, s); break;
        }
    }

    static constexpr int32_t kMaxHeadDim = 1024;  // prepare_q's stack buffer

   private:

    // out[s] = dword s of every row r[0..7] (an 8 x 8 transpose of 32-bit elements).
    static void transpose8x32(const __m256i* r, __m256i* out) {
        const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
        const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
        const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
        const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
        _mm256_store_si256(out + 0, _mm256_permute2x128_si256(u0, u4, 0x20));
        _mm256_store_si256(out + 1, _mm256_permute2x128_si256(u1, u5, 0x20));
        _mm256_store_si256(out + 2, _mm256_permute2x128_si256(u2, u6, 0x20));
        _mm256_store_si256(out + 3, _mm256_permute2x128_si256(u3, u7, 0x20));
        _mm256_store_si256(out + 4, _mm256_permute2x128_si256(u0, u4, 0x31));
        _mm256_store_si256(out + 5, _mm256_permute2x128_si256(u1, u5, 0x31));
        _mm256_store_si256(out + 6, _mm256_permute2x128_si256(u2, u6, 0x31));
        _mm256_store_si256(out + 7, _mm256_permute2x128_si256(u3, u7, 0x31));
    }

    // Scores of the first NG groups of eight cells; each broadcast of q serves all NG groups.
    template <int NG>
    static void group_scores(const float* area, const float* tile, int32_t nb, int32_t n, __m256 scale, float* s) {
        const auto* qs = reinterpret_cast<const int8_t*>(area);
        const auto* qa = reinterpret_cast<const uint8_t*>(area) + nb * kQK;
        const auto* qd = reinterpret_cast<const float*>(reinterpret_cast<const uint8_t*>(area) + 2 * nb * kQK);
        const auto* kq = reinterpret_cast<const __m256i*>(tile);
        const float* kd = tile + static_cast<size_t>(kTile / 8) * nb * 64;
        const __m256i ones = _mm256_set1_epi16(1);
        __m256 acc[NG];
        for (int g = 0; g < NG; ++g) acc[g] = _mm256_setzero_ps();
        for (int32_t b = 0; b < nb; ++b) {
            __m256i isum[NG];
            for (int g = 0; g < NG; ++g) isum[g] = _mm256_setzero_si256();
            for (int st = 0; st < 8; ++st) {
                int32_t qw, aw;
                std::memcpy(&qw, qs + b * kQK + 4 * st, 4);
                std::memcpy(&aw, qa + b * kQK + 4 * st, 4);
                const __m256i qv = _mm256_set1_epi32(qw), av = _mm256_set1_epi32(aw);
                for (int g = 0; g < NG; ++g) {
                    const __m256i kv = _mm256_load_si256(kq + (static_cast<size_t>(g) * nb + b) * 8 + st);
                    isum[g] = _mm256_add_epi32(isum[g], _mm256_madd_epi16(_mm256_maddubs_epi16(av, _mm256_sign_epi8(kv, qv)), ones));
                }
            }
            const __m256 dq = _mm256_set1_ps(qd[b]);
            for (int g = 0; g < NG; ++g) {
                const __m256 dd = _mm256_mul_ps(_mm256_load_ps(kd + (static_cast<size_t>(g) * nb + b) * 8), dq);
                acc[g] = _mm256_add_ps(acc[g], no_contract(_mm256_mul_ps(_mm256_cvtepi32_ps(isum[g]), dd)));  // two roundings, as vec_dot
            }
        }
        for (int g = 0; g < NG; ++g) store_scores(_mm256_mul_ps(acc[g], scale), n - 8 * g, s + 8 * g);
    }
};

// The skeleton both cell types share: scores for every query head over K tiles, an exact
// two-pass softmax per head, then P V over V tiles; each tile is converted once for every
// head and query of the call.
template <class Cells>
void attention_multi_impl(const AttentionArgs* qs, int n_queries, float* const* outs, float* scratch) {
    const AttentionArgs& a = qs[0];  // k, v, row_bytes, head_offset, cells, head_dim, n_q_heads, scale: shared
    const int32_t hd = a.head_dim, nq = a.n_q_heads;
    int32_t nv_max = 0;
    for (int j = 0; j < n_queries; ++j) nv_max = qs[j].n_visible > nv_max ? qs[j].n_visible : nv_max;
    // scratch: scores (n_queries, nq, nv_max) | q prepared (n_queries, nq, hd) | tile (kTile, hd), 32-byte aligned
    const size_t scores_per_query = static_cast<size_t>(nq) * nv_max;
    float* scores = scratch;
    float* qr = scores + scores_per_query * n_queries;
    float* tile = qr + static_cast<size_t>(n_queries) * nq * hd;
    tile = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(tile) + 31) & ~static_cast<uintptr_t>(31));

    for (int j = 0; j < n_queries; ++j) {
        for (int32_t g = 0; g < nq; ++g) Cells::prepare_q(qs[j].q + static_cast<size_t>(g) * hd, hd, qr + (static_cast<size_t>(j) * nq + g) * hd);
    }

    // 1. scores = scale * q K^T; each tile converted once for every query.
    const __m256 scale = _mm256_set1_ps(a.scale);
    for (int32_t c0 = 0; c0 < nv_max; c0 += kTile) {
        Cells::load_k(a, c0, nv_max - c0 < kTile ? nv_max - c0 : kTile, tile);
        for (int j = 0; j < n_queries; ++j) {
            const int32_t nv = qs[j].n_visible;
            if (c0 >= nv) continue;
            const int32_t n = nv - c0 < kTile ? nv - c0 : kTile;
            for (int32_t g = 0; g < nq; ++g) {
                Cells::scores(qr + (static_cast<size_t>(j) * nq + g) * hd, tile, hd, n, scale, scores + scores_per_query * j + static_cast<size_t>(g) * nv + c0);
            }
        }
    }

    // 2. Softmax per head (the exact two-pass one; exponentials eight at a time); f16 cells then
    // round the probabilities to f16 once, not once per output block that uses them.
    for (int j = 0; j < n_queries; ++j) {
        const int32_t nv = qs[j].n_visible;
        for (int32_t g = 0; g < nq; ++g) {
            float* p = scores + scores_per_query * j + static_cast<size_t>(g) * nv;
            avx2::softmax(p, nv);  // ops_avx2.cpp
            if constexpr (Cells::kRoundP) {
                int32_t i = 0;
                for (; i + 8 <= nv; i += 8) _mm256_storeu_ps(p + i, round_f16(_mm256_loadu_ps(p + i)));
                for (; i < nv; ++i) p[i] = round_f16(p[i]);
            }
        }
        std::memset(outs[j], 0, static_cast<size_t>(nq) * hd * sizeof(float));
    }

    // 3. out = P V; up to 64 output floats per head in registers.
    for (int32_t c0 = 0; c0 < nv_max; c0 += kTile) {
        Cells::load_v(a, c0, nv_max - c0 < kTile ? nv_max - c0 : kTile, tile);
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

}  // namespace

void attention_f16(const AttentionArgs& a, float* out, float* scratch) { attention_f16_multi(&a, 1, &out, scratch); }

void attention_f16_multi(const AttentionArgs* qs, int n_queries, float* const* outs, float* scratch) {
    attention_multi_impl<F16Cells>(qs, n_queries, outs, scratch);
}

bool attention_q8_0_supports(int32_t head_dim) {
    return head_dim > 0 && head_dim % Q8_0Cells::kQK == 0 && head_dim <= Q8_0Cells::kMaxHeadDim;
}

void attention_q8_0_multi(const AttentionArgs* qs, int n_queries, float* const* outs, float* scratch) {
    attention_multi_impl<Q8_0Cells>(qs, n_queries, outs, scratch);
}

}  // namespace kvrag::kernels::avx2
