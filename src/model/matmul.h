// Matrix products of a forward pass: y (n, W.n_rows) = x (n, W.n_cols) W^T for n tokens,
// shared by the decoder (model/forward.*) and the encoder (model/encoder_forward.*).
//
// x is first brought to the vec_dot format of W's type (kernels::vec_dot_type: Q8_0 rows for
// Q4_0/Q8_0 weights, Q8_K for the K-quants, F16 for F16, F32 as it is) once, and the prepared
// rows then serve every matrix that reads the same input (q/k/v, gate/up). A packed matrix
// (kernels/repack.h) runs the tiled kernels, any other one kernels::matmul_rows. Each output
// element is computed by one thread with the same code whatever the thread count or the
// number of tokens sharing the product, so results never depend on either.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "core/ggml_type.h"
#include "core/thread_pool.h"
#include "model/weights.h"

namespace kvrag::model {

// x (n, n_cols) in a vec_dot format: rows of row_bytes bytes.
struct PreparedRows {
    const uint8_t* data;
    size_t row_bytes;
};

// Bytes prepare_rows may write for n rows of up to max_cols elements (4 per element bounds
// every format; Q8_1, the widest quantised one, takes 36 bytes per 32) plus slack.
size_t prepared_rows_bytes(int64_t n, int64_t max_cols);

// x in the vec_dot format of `type`: x itself when that format is F32, else converted into
// buf (prepared_rows_bytes(n, n_cols) bytes). Fewer than kMinRowsToSplitPrepare rows are
// converted on the calling thread (decode: one row, ~1 us, less than a pool run costs).
inline constexpr int64_t kMinRowsToSplitPrepare = 4;
PreparedRows prepare_rows(GgmlType type, const float* x, int64_t n, int64_t n_cols, uint8_t* buf, ThreadPool& pool);

// One product of matmul_products: y (n, W->n_rows).
struct Product {
    const MatrixRef* W;
    float* y;
};

// The products of matrices that share their prepared input, in one pool run: each thread does
// its share of every product, so a decode step waits at one barrier instead of one per matrix.
// Every W must have the vec_dot type xp was prepared for.
void matmul_products(std::initializer_list<Product> products, PreparedRows xp, int64_t n, ThreadPool& pool);

}  // namespace kvrag::model
