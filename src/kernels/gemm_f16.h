// Internal to kernels/: the packed layout of 16-bit float weights (F16 and BF16: the same bytes
// interleaved, only the widening differs), its packer, and the products over packed groups,
// shared by repack (groups packed once at load) and avx2::matmul_rows (rows packed per call, for
// matrices that were not repacked). Layout in repack_layout.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/repack.h"

namespace kvrag::kernels {

// Bytes of one packed F16 or BF16 group of kPackRows rows of n_cols elements.
inline size_t f16_group_bytes(int64_t n_cols) { return static_cast<size_t>(n_cols) * 2 * kPackRows; }

// Interleaves kPackRows 16-bit rows (f16 or bf16; null = padding row, stored as zeros) into one
// group at dst.
void pack_f16_group(const uint8_t* const rows[kPackRows], int64_t n_cols, uint8_t* dst);

// Tokens per group of a widened activation panel (see widen_panel).
inline constexpr int kF16PanelTokens = 6;

namespace avx2 {

// panel (ceil((t1 - t0) / kF16PanelTokens), kn, kF16PanelTokens) floats <- tokens [t0, t1)
// x elements [k0, k0 + kn) of x (rows of `half` values, F16 or BF16, x_row_bytes apart):
// element-major per group of kF16PanelTokens tokens, so a tile's broadcasts read consecutive
// floats. Slots of missing tokens are zero.
void widen_panel(GgmlType half, const uint8_t* x, size_t x_row_bytes, int64_t t0, int64_t t1, int64_t k0, int64_t kn,
                 float* panel);

// For each token t in [0, n_tokens) and row r in [r0, r1), with half = F16 or BF16 (the type of
// the weights and of the activations):
//   y[t*ldy + r] = ref::vec_dot(half, n_cols, row r, x + t*x_row_bytes), bit for bit.
// Row r lives in group r / kPackRows, found at groups + (r / kPackRows - g_first) * group_bytes.
// x: (n_tokens, n_cols) rows, x_row_bytes apart. Only outputs in [r0, r1) are written.
void matmul_half_groups(GgmlType half, const uint8_t* groups, int64_t g_first, int64_t n_cols, const void* x,
                        size_t x_row_bytes, int64_t n_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1);

}  // namespace avx2

namespace avx512 {
// avx2::matmul_half_groups with 512-bit vectors, bit for bit the same (call only when
// avx512_supported()); calls with few tokens go to the AVX2 kernel.
void matmul_half_groups(GgmlType half, const uint8_t* groups, int64_t g_first, int64_t n_cols, const void* x,
                        size_t x_row_bytes, int64_t n_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1);
}  // namespace avx512
}  // namespace kvrag::kernels
