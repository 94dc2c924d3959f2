// AVX-512 product of packed F16 or BF16 weight groups (kernels/gemm_f16.h) with activations of
// the same type: the AVX2 kernel of gemm_f16_avx2.cpp on 512-bit vectors, for prompts (calls with fewer than
// kMinTokens tokens, decode among them, stay on the AVX2 kernel: they are bound by reading the
// weights, not by arithmetic).
//
// A vector holds element k of two packed 8-row groups (lanes 0-7 group g, lanes 8-15 group
// g + 1: two 16-byte loads, one vcvtph2ps, or for BF16 a zero-extend and a shift), so one broadcast activation value feeds sixteen
// rows. The register tile is 2 such pairs (32 rows) x 12 tokens: 24 of the 32 vector registers
// hold accumulators, and per element 4 weight loads, 2 conversions and 12 broadcasts feed 24
// FMAs (the AVX2 tile: 12 FMAs for 2 conversions and 6 broadcasts).
//
// Exactness: each output is the AVX2 kernel's chain acc = fma(w[k], x[k], acc), k = 0, 1, ...
// from 0 (ref::vec_dot's order for F16 and BF16), one lane per output; the blocking only pauses a chain
// in y. So results equal the AVX2 kernel's and ref::vec_dot's bit for bit.
//
// Blocking as in the AVX2 kernel: a block of kTokBlock tokens is widened to f32 once, in panels
// of kKBlock elements (avx2::widen_panel, 6 tokens per group, element-major); each block of
// kRowBlock groups (64 rows) then runs over every panel in turn, its outputs staying in L1.
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/gemm_f16.h"

namespace kvrag::kernels::avx512 {
namespace {

constexpr int kGroupTok = kF16PanelTokens;          // tokens per widened activation group (6)
constexpr int kTokTile = 2 * kGroupTok;             // tokens per tile: two activation groups
constexpr int kTokGroups = 8;                       // activation groups per panel
constexpr int kTokBlock = kGroupTok * kTokGroups;   // tokens per panel (48)
constexpr int64_t kKBlock = 512;                    // elements per panel
constexpr int64_t kRowBlock = 8;                    // weight groups whose outputs stay in L1
constexpr int64_t kMinTokens = 8;                   // fewer: the AVX2 kernel

std::vector<float>& panel_scratch() {
    thread_local std::vector<float> buf;
    return buf;
}

// 16 bytes at a and 16 at b (element k of two groups) as sixteen 16-bit values.
inline __m256i load_pair(const uint8_t* a, const uint8_t* b) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
                                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
}

// Sixteen 16-bit floats widened to f32 (exact either way).
struct HalfF16 {
    static __m512 widen_pair(const uint8_t* a, const uint8_t* b) { return _mm512_cvtph_ps(load_pair(a, b)); }
};
struct HalfBF16 {
    static __m512 widen_pair(const uint8_t* a, const uint8_t* b) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load_pair(a, b)), 16));
    }
};

// acc[p * NT + t] lane l: the chain of row l % 8 of group (l < 8 ? a[p] : b[p]) for token t,
// advanced over kn elements. Tokens 0..5 read x0, 6..11 x1 (each (kn, kGroupTok) floats).
// Not inlined, with its accumulators in locals (as in the AVX2 kernel: inlined, GCC kept them
// in memory).
template <class Half, int RP, int NT>
__attribute__((noinline)) void f16_tile(int64_t kn, const uint8_t* const* a, const uint8_t* const* b, const float* x0,
                                        const float* x1, __m512* acc) {
    __m512 c[RP][NT];
    for (int p = 0; p < RP; ++p)
        for (int t = 0; t < NT; ++t) c[p][t] = acc[p * NT + t];
    const uint8_t* pa[RP];
    const uint8_t* pb[RP];
    for (int p = 0; p < RP; ++p) {
        pa[p] = a[p];
        pb[p] = b[p];
    }
    for (int64_t k = 0; k < kn; ++k, x0 += kGroupTok, x1 += kGroupTok) {
        __m512 wv[RP];
        for (int p = 0; p < RP; ++p) wv[p] = Half::widen_pair(pa[p] + 16 * k, pb[p] + 16 * k);
        for (int t = 0; t < NT; ++t) {
            const __m512 xb = _mm512_set1_ps(t < kGroupTok ? x0[t] : x1[t - kGroupTok]);
            for (int p = 0; p < RP; ++p) c[p][t] = _mm512_fmadd_ps(wv[p], xb, c[p][t]);
        }
    }
    for (int p = 0; p < RP; ++p)
        for (int t = 0; t < NT; ++t) acc[p * NT + t] = c[p][t];
}

using TileFn = void (*)(int64_t, const uint8_t* const*, const uint8_t* const*, const float*, const float*, __m512*);

template <class Half>
TileFn tile_for(int rp, int nt) {
    if (rp == 2) return nt == kTokTile ? f16_tile<Half, 2, kTokTile> : f16_tile<Half, 2, kGroupTok>;
    return nt == kTokTile ? f16_tile<Half, 1, kTokTile> : f16_tile<Half, 1, kGroupTok>;
}

template <class Half>
void matmul_groups(GgmlType half, const uint8_t* groups, int64_t g_first, int64_t n_cols, const void* x, size_t x_row_bytes,
                   int64_t n_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1) {
    const size_t group_bytes = f16_group_bytes(n_cols);
    const int64_t g_begin = r0 / kPackRows, g_end = (r1 + kPackRows - 1) / kPackRows;
    const int64_t kb = std::min<int64_t>(kKBlock, n_cols);
    const int64_t n_panels = (n_cols + kb - 1) / kb;
    const int64_t panel_groups = std::min<int64_t>(kTokGroups, (n_tokens + kGroupTok - 1) / kGroupTok);
    const int64_t panel_floats = panel_groups * kb * kGroupTok;
    std::vector<float>& buf = panel_scratch();
    buf.resize(static_cast<size_t>(n_panels * panel_floats));
    const auto* xb = static_cast<const uint8_t*>(x);
    for (int64_t tb = 0; tb < n_tokens; tb += kTokBlock) {
        const int64_t tb_end = std::min(n_tokens, tb + kTokBlock);
        for (int64_t p = 0; p < n_panels; ++p) {
            const int64_t k0 = p * kb;
            avx2::widen_panel(half, xb, x_row_bytes, tb, tb_end, k0, std::min(kb, n_cols - k0), buf.data() + p * panel_floats);
        }
        for (int64_t rb = g_begin; rb < g_end; rb += kRowBlock) {
            const int64_t rb_end = std::min(g_end, rb + kRowBlock);
            for (int64_t p = 0; p < n_panels; ++p) {
                const int64_t k0 = p * kb;
                const int64_t kn = std::min(kb, n_cols - k0);
                const float* panel = buf.data() + p * panel_floats;
                for (int64_t g = rb; g < rb_end; g += 4) {
                    // Up to two pairs of groups; a lone last group is paired with itself.
                    const int64_t n_groups = std::min<int64_t>(4, rb_end - g);
                    const int rp = static_cast<int>((n_groups + 1) / 2);
                    const uint8_t* a[2];
                    const uint8_t* b[2];
                    __mmask16 rows[2] = {0, 0};
                    int64_t row0[2] = {0, 0};
                    for (int q = 0; q < rp; ++q) {
                        const int64_t ga = g + 2 * q;
                        const bool has_b = ga + 1 < g + n_groups;
                        a[q] = groups + static_cast<size_t>(ga - g_first) * group_bytes + static_cast<size_t>(k0) * 16;
                        b[q] = has_b ? a[q] + group_bytes : a[q];
                        row0[q] = ga * kPackRows;
                        const int64_t lo = std::max(r0, row0[q]) - row0[q];
                        const int64_t hi = std::min(r1, row0[q] + (has_b ? 2 : 1) * kPackRows) - row0[q];
                        rows[q] = static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
                    }
                    for (int64_t t = tb; t < tb_end; t += kTokTile) {
                        // Two activation groups when more than one group's worth of tokens is
                        // left; the slots of missing tokens are zero and never stored.
                        const int nt = tb_end - t > kGroupTok ? kTokTile : kGroupTok;
                        const int n_real = static_cast<int>(std::min<int64_t>(nt, tb_end - t));
                        const float* x0 = panel + ((t - tb) / kGroupTok) * kn * kGroupTok;
                        const float* x1 = nt == kTokTile ? x0 + kn * kGroupTok : x0;
                        __m512 acc[2 * kTokTile];
                        for (int q = 0; q < rp; ++q) {
                            for (int j = 0; j < nt; ++j) {
                                acc[q * nt + j] = k0 == 0 || j >= n_real
                                                      ? _mm512_setzero_ps()
                                                      : _mm512_maskz_loadu_ps(rows[q], y + (t + j) * ldy + row0[q]);
                            }
                        }
                        tile_for<Half>(rp, nt)(kn, a, b, x0, x1, acc);
                        for (int q = 0; q < rp; ++q) {
                            for (int j = 0; j < n_real; ++j) _mm512_mask_storeu_ps(y + (t + j) * ldy + row0[q], rows[q], acc[q * nt + j]);
                        }
                    }
                }
            }
        }
    }
}

}  // namespace

void matmul_half_groups(GgmlType half, const uint8_t* groups, int64_t g_first, int64_t n_cols, const void* x,
                        size_t x_row_bytes, int64_t n_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1) {
    if (r0 >= r1 || n_tokens <= 0 || n_cols <= 0) return;
    if (n_tokens < kMinTokens) {
        return avx2::matmul_half_groups(half, groups, g_first, n_cols, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
    }
    if (half == GgmlType::BF16) return matmul_groups<HalfBF16>(half, groups, g_first, n_cols, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
    matmul_groups<HalfF16>(half, groups, g_first, n_cols, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
}

}  // namespace kvrag::kernels::avx512

#endif  // x86-64
