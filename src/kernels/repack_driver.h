// Internal to kernels/: what a packed product does around its micro-kernel, written once for
// the AVX2 tiles (repack_avx2.cpp) and the AVX-512 ones (repack_avx512.cpp): the activations
// regrouped once per product, row groups walked in L2-sized tiles with every token group of
// four sweeping a tile, the tile chosen by the tokens left, and the weight type mapped to its
// kernel. Everything here is a template over the including file's kernel types (which live in
// that file's anonymous namespace), so each ISA's instantiations are its own and code compiled
// for AVX-512 can never stand in for the AVX2 code.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/ggml_type.h"
#include "kernels/quant_blocks.h"
#include "kernels/repack.h"
#include "kernels/repack_act.h"
#include "kernels/repack_layout.h"

namespace kvrag::kernels {

// K: the per-type pieces (kBlock elements per block, kActBytes per regrouped activation block,
// group() regroups the activations). Groups: a class with
//   template <class K, int NT> static void run(const PackedMatrix&, int64_t nb, const uint8_t* xa,
//       float* y, int64_t ldy, int64_t t0, int64_t g0, int64_t g1, int64_t r0, int64_t r1);
// that runs the tile over row groups [g0, g1) for tokens [t0, t0 + NT) and stores rows in
// [r0, r1); kTileBytes of packed weights per L2 tile, rounded down to a multiple of kGroupStep
// groups (the groups one tile call takes).
template <class K, class Groups, size_t kTileBytes, int64_t kGroupStep>
void run_packed_product(const PackedMatrix& w, const void* x, size_t x_row_bytes, int64_t n_tokens, float* y, int64_t ldy,
                        int64_t r0, int64_t r1) {
    constexpr int kTok = avx2::kActTok;
    const int64_t nb = w.n_cols() / K::kBlock;
    const int64_t n_tgroups = (n_tokens + kTok - 1) / kTok;
    const size_t tgroup_bytes = static_cast<size_t>(nb) * K::kActBytes;
    uint8_t* act = avx2::act_buffer(tgroup_bytes * static_cast<size_t>(n_tgroups));
    K::group(static_cast<const uint8_t*>(x), x_row_bytes, n_tokens, nb, act);
    // Row groups in tiles of kTileBytes of packed weights (kept in L2); inside a tile every
    // token group (in L1) sweeps all its row groups.
    const int64_t g_begin = r0 / kPackRows, g_end = (r1 + kPackRows - 1) / kPackRows;
    const int64_t tile = std::max<int64_t>(kGroupStep, static_cast<int64_t>(kTileBytes / w.group_bytes()) / kGroupStep * kGroupStep);
    for (int64_t gt = g_begin; gt < g_end; gt += tile) {
        const int64_t gt_end = std::min(g_end, gt + tile);
        for (int64_t tg = 0; tg < n_tgroups; ++tg) {
            const uint8_t* xa = act + static_cast<size_t>(tg) * tgroup_bytes;
            const int64_t t0 = tg * kTok;
            switch (std::min<int64_t>(kTok, n_tokens - t0)) {
            case 4: Groups::template run<K, 4>(w, nb, xa, y, ldy, t0, gt, gt_end, r0, r1); break;
            case 3: Groups::template run<K, 3>(w, nb, xa, y, ldy, t0, gt, gt_end, r0, r1); break;
            case 2: Groups::template run<K, 2>(w, nb, xa, y, ldy, t0, gt, gt_end, r0, r1); break;
            default: Groups::template run<K, 1>(w, nb, xa, y, ldy, t0, gt, gt_end, r0, r1); break;
            }
        }
    }
}

// An ISA's kernels for the packed quantised types: Q4<Block> for the 4-bit types (BlockQ4_0,
// BlockQ5_0, BlockQ4_1, BlockQ5_1), Q8_0, Q45_K<packed block bytes> for Q4_K and Q5_K, Q6_K.
template <template <class> class Q4Kernel, class Q8_0Kernel, template <size_t> class Q45_KKernel, class Q6_KKernel>
struct PackedKernelSet {
    template <class Block>
    using Q4 = Q4Kernel<Block>;
    using Q8_0 = Q8_0Kernel;
    template <size_t kBlockBytes>
    using Q45_K = Q45_KKernel<kBlockBytes>;
    using Q6_K = Q6_KKernel;
};

// Calls f.template operator()<K>() with the kernel of a packed quantised type from a
// PackedKernelSet Ks; false for any other type (F16 and BF16 have their own products).
template <class Ks, class F>
bool with_packed_kernel(GgmlType type, F&& f) {
    switch (type) {
    case GgmlType::Q4_0: f.template operator()<typename Ks::template Q4<BlockQ4_0>>(); return true;
    case GgmlType::Q5_0: f.template operator()<typename Ks::template Q4<BlockQ5_0>>(); return true;
    case GgmlType::Q4_1: f.template operator()<typename Ks::template Q4<BlockQ4_1>>(); return true;
    case GgmlType::Q5_1: f.template operator()<typename Ks::template Q4<BlockQ5_1>>(); return true;
    case GgmlType::Q8_0: f.template operator()<typename Ks::Q8_0>(); return true;
    case GgmlType::Q4_K: f.template operator()<typename Ks::template Q45_K<kPackQ4_KBlockBytes>>(); return true;
    case GgmlType::Q5_K: f.template operator()<typename Ks::template Q45_K<kPackQ5_KBlockBytes>>(); return true;
    case GgmlType::Q6_K: f.template operator()<typename Ks::Q6_K>(); return true;
    default: return false;
    }
}

}  // namespace kvrag::kernels
