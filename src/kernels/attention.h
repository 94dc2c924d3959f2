// Attention of the query heads that share one KV head (a GQA group) over a list of cached
// positions.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/ggml_type.h"

namespace kvrag::kernels {

struct AttentionArgs {
    const float* q = nullptr;          // (n_q_heads, head_dim) queries, already rotated
    const uint8_t* k = nullptr;        // K plane of the layer: (n_cells, row_bytes)
    const uint8_t* v = nullptr;        // V plane of the layer: (n_cells, row_bytes)
    size_t row_bytes = 0;
    size_t head_offset = 0;            // byte offset of this kv head inside a row
    GgmlType type = GgmlType::F16;     // cell type: F16, F32 or Q8_0
    const int32_t* cells = nullptr;    // (n_visible) in position order
    int32_t n_visible = 0;
    int32_t head_dim = 0;
    int32_t n_q_heads = 1;             // query heads sharing this kv head (n_head / n_head_kv)
    float scale = 1.0f;                // 1 / sqrt(head_dim)
};

// Floats of scratch attention() needs; attention_multi() with n_queries queries.
size_t attention_scratch_floats(int32_t n_visible, int32_t head_dim, int32_t n_q_heads, int32_t n_queries = 1);

// Most queries attention_multi() takes at once.
inline constexpr int kAttentionMaxQueries = 4;

// out (n_q_heads, head_dim): for each query head, softmax(scale * q K^T) V over the visible
// cells. Two passes, as the reference engine computes attention without flash attention: all
// scores, an exact softmax (max-subtracted, summed in double), then P V. With an f16 cache, q and
// the probabilities are rounded to f16 before their products, as the reference's f16 matmuls do.
// Each K and V row is read once per group, not once per query head. Every output element
// reduces over the cells in position order with the same code whatever else is in the batch,
// so the result depends only on this group's inputs.
void attention(const AttentionArgs& a, float* out, float* scratch);

// attention() for n_queries (1..kAttentionMaxQueries) queries over one cell list: every field
// of qs[j] but q and n_visible equal qs[0]'s (the same cells pointer: consecutive prompt tokens
// of one sequence, each seeing a prefix of it). outs[j] gets exactly what attention(qs[j])
// gives; the f16 kernel converts each cached row once for all of them.
void attention_multi(const AttentionArgs* qs, int n_queries, float* const* outs, float* scratch);

// The scalar reference (one head at a time), for tests and KVRAG_FORCE_SCALAR.
void attention_ref(const AttentionArgs& a, float* out, float* scratch);

// The scalar path for q8_0 (any block type) cells over a GQA group and query block, each output
// bit for bit attention_ref's (every K row read and V row dequantised once for all heads and
// queries); what attention_multi runs for them without AVX2.
void attention_generic_multi(const AttentionArgs* qs, int n_queries, float* const* outs, float* scratch);

namespace avx2 {
// f16 cells, head_dim a multiple of 8; call only when avx2_supported().
void attention_f16(const AttentionArgs& a, float* out, float* scratch);
void attention_f16_multi(const AttentionArgs* qs, int n_queries, float* const* outs, float* scratch);
// q8_0 cells, when attention_q8_0_supports(head_dim) (a multiple of 32, at most 1024). The
// scores are bit for bit vec_dot(Q8_0)'s; the softmax's exponentials are avx2::softmax's and
// P V runs on FMAs, so outputs differ from attention_ref's in the last bits
// (attention_generic_multi is the exact path). Alone or in a query block, a query's output is the same.
bool attention_q8_0_supports(int32_t head_dim);
void attention_q8_0_multi(const AttentionArgs* qs, int n_queries, float* const* outs, float* scratch);
}  // namespace avx2

namespace avx512 {
// avx2::attention_f16_multi on 512-bit vectors, bit for bit the same; call only when
// avx512_supported().
void attention_f16_multi(const AttentionArgs* qs, int n_queries, float* const* outs, float* scratch);
}  // namespace avx512

}  // namespace kvrag::kernels
