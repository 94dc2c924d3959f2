// Attention of one query head over a list of cached positions.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/ggml_type.h"

namespace kvrag::kernels {

struct AttentionArgs {
    const float* q = nullptr;          // (head_dim) query, already rotated
    const uint8_t* k = nullptr;        // K plane of the layer: (n_cells, row_bytes)
    const uint8_t* v = nullptr;        // V plane of the layer: (n_cells, row_bytes)
    size_t row_bytes = 0;
    size_t head_offset = 0;            // byte offset of this kv head inside a row
    GgmlType type = GgmlType::F16;     // cell type: F16, F32 or Q8_0
    const int32_t* cells = nullptr;    // (n_cells_visible) in position order
    int32_t n_visible = 0;
    int32_t head_dim = 0;
    float scale = 1.0f;                // 1 / sqrt(head_dim)
};

// out (head_dim) = softmax(scale * q K^T) V over the visible cells. scratch must hold
// n_visible + 3 * head_dim + 64 floats. The reduction runs over cells in position order, so
// the result depends only on this head's inputs, never on other tokens of the batch.
// With an f16 cache, q and the probabilities are rounded to f16 before their products, as the
// reference engine's f16 matmuls do.
void attention_head(const AttentionArgs& a, float* out, float* scratch);

}  // namespace kvrag::kernels
