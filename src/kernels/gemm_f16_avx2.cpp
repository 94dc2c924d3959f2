// AVX2 product of packed F16 or BF16 weight groups (kernels/gemm_f16.h, layout in
// repack_layout.h) with activations of the same type. The two types differ only in how eight
// values are widened to f32 (vcvtph2ps, or a zero-extend and a 16-bit shift), both exact, so
// everything below is written once over a `Half` load (LoadF16 or LoadBF16, simd_avx2.h).
//
// Lane r of a vector is weight row r of an 8-row group: one 16-byte load + vcvtph2ps gives
// element k of all eight rows, and one activation value broadcast to every lane feeds them all,
// so each lane's FMA chain is one output's dot product with no horizontal sums. The register
// tile is 2 groups (16 rows) x 6 tokens: 12 accumulators, and per element 2 weight loads and 6
// broadcasts for 12 FMAs. Decode (one token) takes 4 groups at once instead, so four FMA chains
// hide the latency while one token's weights stream past.
//
// Exactness: each output is acc = fma(w[k], x[k], acc) for k = 0, 1, ... from acc = 0, the
// order of ref::vec_dot for F16 and BF16. The blocking below only pauses a chain (the accumulator goes
// to y and comes back unchanged), so results do not depend on the number of tokens, the row
// range or the blocking constants.
//
// Blocking: a token block's activations (kTokBlock tokens) are widened to f32 once, in panels
// of kKBlock elements (96 KiB each, in L2) laid out element-major per group of 6 tokens, so a
// tile's broadcasts read 24 consecutive bytes per element. Then each block of kRowBlock weight
// groups (64 rows) runs over every panel in turn: its 48 x 64 outputs (12 KiB) stay in L1
// between panels, and each 16-row x kKBlock weight panel (16 KiB) serves every token group from
// L1. Measured with scripts/kernel_bench.sh (single thread, 512 tokens, the bench model's four
// shapes, 5 rounds alternated, loaded machine): 44-50 GFLOP/s when each K panel swept all the
// rows (the outputs went back to L3 between panels) against 54-65 now. With at most 6 tokens
// there is one panel over the whole row length.
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/gemm_f16.h"
#include "kernels/simd_avx2.h"

namespace kvrag::kernels::avx2 {
namespace {

constexpr int kTokTile = kF16PanelTokens;         // tokens per tile (and per activation group)
constexpr int kTokGroups = 8;                     // token groups per panel
constexpr int kTokBlock = kTokTile * kTokGroups;  // tokens per panel
constexpr int64_t kKBlock = 512;                  // elements per panel
constexpr int64_t kRowBlock = 8;                  // weight groups whose outputs stay in L1
constexpr int64_t kPrefetchBytes = 2048;          // decode: how far ahead of the loads

std::vector<float>& panel_scratch() {
    thread_local std::vector<float> buf;
    return buf;
}

template <class Half>
void widen_panel_impl(const uint8_t* x, size_t x_row_bytes, int64_t t0, int64_t t1, int64_t k0, int64_t kn, float* panel) {
    const int64_t n_groups = (t1 - t0 + kTokTile - 1) / kTokTile;
    if ((t1 - t0) % kTokTile != 0) {
        float* last = panel + (n_groups - 1) * kn * kTokTile;
        std::fill(last, last + kn * kTokTile, 0.0f);
    }
    for (int64_t t = t0; t < t1; ++t) {
        const auto* row = reinterpret_cast<const uint16_t*>(x + static_cast<size_t>(t) * x_row_bytes) + k0;
        float* dst = panel + ((t - t0) / kTokTile) * kn * kTokTile + (t - t0) % kTokTile;
        int64_t k = 0;
        for (; k + 8 <= kn; k += 8) {
            alignas(32) float v[8];
            _mm256_store_ps(v, Half::load8(row + k));
            for (int j = 0; j < 8; ++j) dst[(k + j) * kTokTile] = v[j];
        }
        for (; k < kn; ++k) dst[k * kTokTile] = Half::load1(row + k);
    }
}

// acc[g * NT + t] lane r: the chain of row r of group g for token t, advanced over kn elements.
// w: group 0 at element k0; the others group_bytes apart. xa: (kn, kTokTile) floats.
// Not inlined, with its accumulators in locals: inlined into f16_block, GCC kept them in memory
// and stored all twelve on every step.
template <class Half, int RG, int NT>
__attribute__((noinline)) void f16_tile(int64_t kn, const uint8_t* w, size_t group_bytes, const float* xa, __m256* acc) {
    __m256 a[RG][NT];
    for (int g = 0; g < RG; ++g)
        for (int t = 0; t < NT; ++t) a[g][t] = acc[g * NT + t];
    const uint8_t* wg[RG];
    for (int g = 0; g < RG; ++g) wg[g] = w + static_cast<size_t>(g) * group_bytes;
    for (int64_t k = 0; k < kn; ++k, xa += kTokTile) {
        if constexpr (NT == 1) {
            // Decode streams the weights once: each group's line kPrefetchBytes ahead is asked
            // for once per 64 bytes.
            if ((k & 3) == 0) {
                for (int g = 0; g < RG; ++g) _mm_prefetch(reinterpret_cast<const char*>(wg[g] + 16 * k + kPrefetchBytes), _MM_HINT_T0);
            }
        }
        __m256 wv[RG];
        for (int g = 0; g < RG; ++g) {
            wv[g] = Half::load8(reinterpret_cast<const uint16_t*>(wg[g] + 16 * k));
        }
        for (int t = 0; t < NT; ++t) {
            const __m256 xb = _mm256_broadcast_ss(xa + t);
            for (int g = 0; g < RG; ++g) a[g][t] = _mm256_fmadd_ps(wv[g], xb, a[g][t]);
        }
    }
    for (int g = 0; g < RG; ++g)
        for (int t = 0; t < NT; ++t) acc[g * NT + t] = a[g][t];
}

// Where one group's outputs go: y + base + lane for lanes [lo, hi).
struct GroupOut {
    int64_t base;  // index in y of lane 0 for token 0
    int lo, hi;
};

inline __m256 load_lanes(const float* y, int64_t at, int lo, int hi) {
    if (lo == 0 && hi == kPackRows) return _mm256_loadu_ps(y + at);
    alignas(32) float v[kPackRows] = {};
    for (int r = lo; r < hi; ++r) v[r] = y[at + r];
    return _mm256_load_ps(v);
}

inline void store_lanes(float* y, int64_t at, int lo, int hi, __m256 a) {
    if (lo == 0 && hi == kPackRows) return _mm256_storeu_ps(y + at, a);
    alignas(32) float v[kPackRows];
    _mm256_store_ps(v, a);
    for (int r = lo; r < hi; ++r) y[at + r] = v[r];
}

// One tile: RG groups x NT tokens over elements [k0, k0 + kn); the chains start at zero when
// first, else continue from y.
template <class Half, int RG, int NT>
void f16_block(int64_t kn, const uint8_t* w, size_t group_bytes, const float* xa, bool first, float* y, int64_t ldy,
               const GroupOut* out) {
    __m256 acc[RG * NT];
    for (int g = 0; g < RG; ++g) {
        for (int t = 0; t < NT; ++t) {
            acc[g * NT + t] = first ? _mm256_setzero_ps() : load_lanes(y, out[g].base + t * ldy, out[g].lo, out[g].hi);
        }
    }
    f16_tile<Half, RG, NT>(kn, w, group_bytes, xa, acc);
    for (int g = 0; g < RG; ++g) {
        for (int t = 0; t < NT; ++t) store_lanes(y, out[g].base + t * ldy, out[g].lo, out[g].hi, acc[g * NT + t]);
    }
}

using BlockFn = void (*)(int64_t, const uint8_t*, size_t, const float*, bool, float*, int64_t, const GroupOut*);

template <class Half, int RG>
BlockFn block_for_tokens(int nt) {
    switch (nt) {
    case 6: return f16_block<Half, RG, 6>;
    case 5: return f16_block<Half, RG, 5>;
    case 4: return f16_block<Half, RG, 4>;
    case 3: return f16_block<Half, RG, 3>;
    case 2: return f16_block<Half, RG, 2>;
    default: return f16_block<Half, RG, 1>;
    }
}

template <class Half>
BlockFn block_for(int rg, int nt) {
    switch (rg) {
    case 4: return f16_block<Half, 4, 1>;  // decode only
    case 3: return f16_block<Half, 3, 1>;
    case 2: return block_for_tokens<Half, 2>(nt);
    default: return block_for_tokens<Half, 1>(nt);
    }
}

template <class Half>
void matmul_groups(const uint8_t* groups, int64_t g_first, int64_t n_cols, const void* x, size_t x_row_bytes,
                   int64_t n_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1) {
    const size_t group_bytes = f16_group_bytes(n_cols);
    const int64_t g_begin = r0 / kPackRows, g_end = (r1 + kPackRows - 1) / kPackRows;
    const int rg_max = n_tokens == 1 ? 4 : 2;
    // One token group (decode, short prompts): no K blocks, so each weight group is read front to
    // back in one pass (the prefetchers' best case) and the chains never leave the registers.
    const int64_t kb = n_tokens <= kTokTile ? n_cols : std::min<int64_t>(kKBlock, n_cols);
    const int64_t panel_groups = std::min<int64_t>(kTokGroups, (n_tokens + kTokTile - 1) / kTokTile);
    // Every K panel of a token block is widened first, then each block of kRowBlock groups runs
    // over all of them: its outputs (48 tokens x 64 rows, 12 KiB) stay in L1 from one K panel to
    // the next instead of being read back from L3.
    const int64_t n_panels = (n_cols + kb - 1) / kb;
    const int64_t panel_floats = panel_groups * kb * kTokTile;
    std::vector<float>& buf = panel_scratch();
    buf.resize(static_cast<size_t>(n_panels * panel_floats));
    const auto* xb = static_cast<const uint8_t*>(x);
    for (int64_t tb = 0; tb < n_tokens; tb += kTokBlock) {
        const int64_t tb_end = std::min(n_tokens, tb + kTokBlock);
        for (int64_t p = 0; p < n_panels; ++p) {
            const int64_t k0 = p * kb;
            widen_panel_impl<Half>(xb, x_row_bytes, tb, tb_end, k0, std::min(kb, n_cols - k0), buf.data() + p * panel_floats);
        }
        for (int64_t rb = g_begin; rb < g_end; rb += kRowBlock) {
            const int64_t rb_end = std::min(g_end, rb + kRowBlock);
            for (int64_t p = 0; p < n_panels; ++p) {
                const int64_t k0 = p * kb;
                const int64_t kn = std::min(kb, n_cols - k0);
                const float* panel = buf.data() + p * panel_floats;
                for (int64_t g = rb; g < rb_end; g += rg_max) {
                    const int rg = static_cast<int>(std::min<int64_t>(rg_max, rb_end - g));
                    GroupOut out[4];
                    for (int i = 0; i < rg; ++i) {
                        const int64_t row0 = (g + i) * kPackRows;
                        out[i] = {tb * ldy + row0, static_cast<int>(std::max<int64_t>(r0 - row0, 0)),
                                  static_cast<int>(std::min<int64_t>(r1 - row0, kPackRows))};
                    }
                    const uint8_t* w = groups + static_cast<size_t>(g - g_first) * group_bytes + static_cast<size_t>(k0) * 16;
                    for (int64_t t = tb; t < tb_end; t += kTokTile) {
                        const int nt = static_cast<int>(std::min<int64_t>(kTokTile, tb_end - t));
                        const float* xa = panel + ((t - tb) / kTokTile) * kn * kTokTile;
                        GroupOut at[4];
                        for (int i = 0; i < rg; ++i) at[i] = {out[i].base + (t - tb) * ldy, out[i].lo, out[i].hi};
                        block_for<Half>(rg, nt)(kn, w, group_bytes, xa, k0 == 0, y, ldy, at);
                    }
                }
            }
        }
    }
}

}  // namespace

void widen_panel(GgmlType half, const uint8_t* x, size_t x_row_bytes, int64_t t0, int64_t t1, int64_t k0, int64_t kn,
                 float* panel) {
    if (half == GgmlType::BF16) return widen_panel_impl<LoadBF16>(x, x_row_bytes, t0, t1, k0, kn, panel);
    widen_panel_impl<LoadF16>(x, x_row_bytes, t0, t1, k0, kn, panel);
}

void matmul_half_groups(GgmlType half, const uint8_t* groups, int64_t g_first, int64_t n_cols, const void* x,
                        size_t x_row_bytes, int64_t n_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1) {
    if (r0 >= r1 || n_tokens <= 0 || n_cols <= 0) return;
    if (half == GgmlType::BF16) return matmul_groups<LoadBF16>(groups, g_first, n_cols, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
    matmul_groups<LoadF16>(groups, g_first, n_cols, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
}

}  // namespace kvrag::kernels::avx2

#endif  // x86-64
