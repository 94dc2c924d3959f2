#include "model/matmul.h"

#include <algorithm>

#include "kernels/quant.h"
#include "kernels/repack.h"

namespace kvrag::model {

size_t prepared_rows_bytes(int64_t n, int64_t max_cols) {
    return static_cast<size_t>(n) * static_cast<size_t>(max_cols) * sizeof(float) + 64;
}

PreparedRows prepare_rows(GgmlType type, const float* x, int64_t n, int64_t n_cols, uint8_t* buf, ThreadPool& pool) {
    const GgmlType vt = kernels::vec_dot_type(type);
    const size_t row = ggml_row_size(vt, n_cols);
    if (vt == GgmlType::F32) return {reinterpret_cast<const uint8_t*>(x), row};  // already in dot format
    auto convert = [&](int ith, int nth) {
        auto [t0, t1] = ThreadPool::split(n, ith, nth);
        for (int64_t t = t0; t < t1; ++t) kernels::quantize_row(vt, x + t * n_cols, buf + t * row, n_cols);
    };
    if (n < kMinRowsToSplitPrepare) convert(0, 1);
    else pool.run(convert);
    return {buf, row};
}

void matmul_products(std::initializer_list<Product> products, PreparedRows xp, int64_t n, ThreadPool& pool) {
    pool.run([&](int ith, int nth) {
        for (const Product& p : products) {
            const MatrixRef& W = *p.W;
            if (W.packed) {
                // Whole 8-row groups per thread, so no thread computes a group another one stores.
                const int64_t n_groups = (W.n_rows + kernels::kPackRows - 1) / kernels::kPackRows;
                auto [g0, g1] = ThreadPool::split(n_groups, ith, nth);
                const int64_t r0 = g0 * kernels::kPackRows, r1 = std::min(g1 * kernels::kPackRows, W.n_rows);
                if (r0 < r1) kernels::matmul_packed(*W.packed, xp.data, xp.row_bytes, n, p.y, W.n_rows, r0, r1);
            } else {
                auto [r0, r1] = ThreadPool::split(W.n_rows, ith, nth);
                if (r0 < r1) {
                    kernels::matmul_rows(W.type, W.n_cols, W.data, W.row_bytes, xp.data, xp.row_bytes, n, p.y, W.n_rows, r0, r1);
                }
            }
        }
    });
}

}  // namespace kvrag::model
