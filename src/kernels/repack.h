// Weight matrices rearranged once at load into the order the AVX2 matrix kernels read them.
//
// A packed matrix keeps groups of kPackRows (8) consecutive weight rows together, block column
// by block column: for each block i, the eight rows' scales sit side by side (one vcvtph2ps
// converts all eight) and their quants are interleaved four bytes per row, so one 32-byte
// load holds four elements of each of the eight rows. The kernel then multiplies that vector
// by four activation bytes broadcast to every lane: each int32 lane collects one row's dot
// product, with no horizontal sums, and a tile of 8 rows x up to 4 tokens stays in registers.
//
// Results: every output is bit-identical to vec_dot (and to ref::vec_dot) for that row and token,
// whatever the number of tokens or the row range: the integer part of each block is exact, and
// the float steps per output are the reference's, block by block, in block order.
//
// Packed types: Q4_0, Q5_0 and Q8_0 (activations Q8_0), Q4_1 and Q5_1 (activations Q8_1), Q4_K,
// Q5_K and Q6_K (activations Q8_K), F16 and BF16 (activations of the same type; element k of the
// eight rows side by side, one FMA chain per lane, see gemm_f16_avx2.cpp). Anything else (F32):
// can_repack() is false and the caller keeps using matmul_rows on the original rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/ggml_type.h"

namespace kvrag::kernels {

inline constexpr int kPackRows = 8;  // weight rows per interleaved group

// An immutable packed copy of one weight matrix (n_rows, n_cols). The last group is padded
// with zero rows when n_rows % kPackRows != 0; their outputs are computed and never stored.
class PackedMatrix {
public:
    PackedMatrix(GgmlType type, int64_t n_rows, int64_t n_cols, size_t group_bytes);
    PackedMatrix(const PackedMatrix&) = delete;
    PackedMatrix& operator=(const PackedMatrix&) = delete;

    GgmlType type() const { return type_; }
    int64_t n_rows() const { return n_rows_; }
    int64_t n_cols() const { return n_cols_; }
    int64_t n_groups() const { return (n_rows_ + kPackRows - 1) / kPackRows; }
    size_t group_bytes() const { return group_bytes_; }  // one group of kPackRows rows
    size_t bytes() const { return group_bytes_ * static_cast<size_t>(n_groups()); }
    const uint8_t* group(int64_t g) const { return data_.get() + group_bytes_ * static_cast<size_t>(g); }
    uint8_t* mutable_group(int64_t g) { return data_.get() + group_bytes_ * static_cast<size_t>(g); }

private:
    struct FreeAligned {
        void operator()(uint8_t* p) const;
    };
    GgmlType type_;
    int64_t n_rows_, n_cols_;
    size_t group_bytes_;
    std::unique_ptr<uint8_t, FreeAligned> data_;  // (n_groups, group_bytes), 64-byte aligned
};

// True when repack() packs this type on the path the kernels use now: AVX2 in use (not
// KVRAG_FORCE_SCALAR), a packed type, n_cols a positive multiple of its block size (F16, BF16:
// any positive n_cols).
bool can_repack(GgmlType type, int64_t n_cols);

// Packs W: (n_rows, n_cols) of `type`, rows row_bytes apart. nullptr when !can_repack(type, n_cols).
// Allocates the packed copy (about the size of W); reads W once.
std::shared_ptr<const PackedMatrix> repack(GgmlType type, const void* W, size_t row_bytes, int64_t n_rows,
                                           int64_t n_cols);

// For each token t in [0, n_tokens) and row r in [r0, r1):
//   y[t*ldy + r] = vec_dot(w.type(), w.n_cols(), row r of the original W, x + t*x_row_bytes)
// bit for bit. x: (n_tokens, n_cols) of vec_dot_type(w.type()), rows x_row_bytes apart;
// y: (n_tokens, ldy) floats. Any [r0, r1) within [0, n_rows) works; ranges that start and end
// on a multiple of kPackRows (or at n_rows) avoid computing a group twice.
void matmul_packed(const PackedMatrix& w, const void* x, size_t x_row_bytes, int64_t n_tokens, float* y,
                   int64_t ldy, int64_t r0, int64_t r1);

// The AVX2 kernel behind matmul_packed (x86-64 only; call only when avx2_supported()).
namespace avx2 {
void matmul_packed(const PackedMatrix& w, const void* x, size_t x_row_bytes, int64_t n_tokens, float* y,
                   int64_t ldy, int64_t r0, int64_t r1);
}  // namespace avx2

// The AVX-512 kernels behind matmul_packed (x86-64 only; call only when avx512_supported()):
// every packed type (has_kernel: Q4_0, Q5_0, Q4_1, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16).
namespace avx512 {
bool has_kernel(GgmlType type);
void matmul_packed(const PackedMatrix& w, const void* x, size_t x_row_bytes, int64_t n_tokens, float* y,
                   int64_t ldy, int64_t r0, int64_t r1);
}  // namespace avx512

}  // namespace kvrag::kernels
