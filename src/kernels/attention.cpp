#include "kernels/attention.h"

#include <array>
#include <cstring>

#include "kernels/fp16.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace kvrag::kernels {
namespace {

// fp16 -> fp32 for all 65536 halves: the attention inner loops convert one value per
// multiply, and a table lookup is cheaper than the bit manipulation.
const std::array<float, 65536>& f16_table() {
    static const std::array<float, 65536> table = [] {
        std::array<float, 65536> t{};
        for (uint32_t i = 0; i < 65536; ++i) t[i] = fp16_to_fp32(static_cast<uint16_t>(i));
        return t;
    }();
    return table;
}

void attention_f16(const AttentionArgs& a, float* out, float* scratch) {
    const auto& tab = f16_table();
    const int32_t hd = a.head_dim;
    float* scores = scratch;                  // (n_visible)
    float* qr = scratch + a.n_visible;        // (head_dim) q rounded to f16, as floats
    for (int32_t d = 0; d < hd; ++d) qr[d] = tab[fp32_to_fp16(a.q[d])];
    for (int32_t c = 0; c < a.n_visible; ++c) {
        uint16_t kh[1024];
        std::memcpy(kh, a.k + static_cast<size_t>(a.cells[c]) * a.row_bytes + a.head_offset, static_cast<size_t>(hd) * 2);
        float acc = 0.0f;
        for (int32_t d = 0; d < hd; ++d) acc += qr[d] * tab[kh[d]];
        scores[c] = acc * a.scale;
    }
    softmax(scores, a.n_visible);
    for (int32_t d = 0; d < hd; ++d) out[d] = 0.0f;
    for (int32_t c = 0; c < a.n_visible; ++c) {
        uint16_t vh[1024];
        std::memcpy(vh, a.v + static_cast<size_t>(a.cells[c]) * a.row_bytes + a.head_offset, static_cast<size_t>(hd) * 2);
        const float p = tab[fp32_to_fp16(scores[c])];
        for (int32_t d = 0; d < hd; ++d) out[d] += p * tab[vh[d]];
    }
}

void attention_f32(const AttentionArgs& a, float* out, float* scratch) {
    const int32_t hd = a.head_dim;
    float* scores = scratch;
    for (int32_t c = 0; c < a.n_visible; ++c) {
        float kr[1024];
        std::memcpy(kr, a.k + static_cast<size_t>(a.cells[c]) * a.row_bytes + a.head_offset, static_cast<size_t>(hd) * 4);
        float acc = 0.0f;
        for (int32_t d = 0; d < hd; ++d) acc += a.q[d] * kr[d];
        scores[c] = acc * a.scale;
    }
    softmax(scores, a.n_visible);
    for (int32_t d = 0; d < hd; ++d) out[d] = 0.0f;
    for (int32_t c = 0; c < a.n_visible; ++c) {
        float vr[1024];
        std::memcpy(vr, a.v + static_cast<size_t>(a.cells[c]) * a.row_bytes + a.head_offset, static_cast<size_t>(hd) * 4);
        const float p = scores[c];
        for (int32_t d = 0; d < hd; ++d) out[d] += p * vr[d];
    }
}

// Any other cell type (q8_0): Q is brought to the cache type's dot format (as the reference
// engine's K·Q matmul does) and V rows are dequantised.
void attention_generic(const AttentionArgs& a, float* out, float* scratch) {
    const int32_t hd = a.head_dim;
    float* scores = scratch;
    float* qbuf = scratch + a.n_visible;      // q in vec_dot format: at most (head_dim) floats
    float* vrow = qbuf + hd + 16;
    quantize_row(vec_dot_type(a.type), a.q, qbuf, hd);
    for (int32_t c = 0; c < a.n_visible; ++c) {
        scores[c] = vec_dot(a.type, hd, a.k + static_cast<size_t>(a.cells[c]) * a.row_bytes + a.head_offset, qbuf) * a.scale;
    }
    softmax(scores, a.n_visible);
    for (int32_t d = 0; d < hd; ++d) out[d] = 0.0f;
    for (int32_t c = 0; c < a.n_visible; ++c) {
        dequantize_row(a.type, a.v + static_cast<size_t>(a.cells[c]) * a.row_bytes + a.head_offset, vrow, hd);
        const float p = scores[c];
        for (int32_t d = 0; d < hd; ++d) out[d] += p * vrow[d];
    }
}

}  // namespace

// attention_generic for every head of a GQA group and up to kAttentionMaxQueries queries over
// one cell list (attention_multi's contract), each output exactly what attention_generic gives
// it: the same vec_dot per score, the same softmax, the same `out += p * v` per element in cell
// order. What is shared: each K row is read once for all heads and queries that see it (the
// scores of one cell are taken together), and each V row is dequantised once for all of them,
// where the per-head path dequantised it once per head and query.
void attention_generic_multi(const AttentionArgs* qs, int n_queries, float* const* outs, float* scratch) {
    const AttentionArgs& a = qs[0];  // k, v, row_bytes, head_offset, cells, head_dim, n_q_heads, scale, type: shared
    const int32_t hd = a.head_dim, nq = a.n_q_heads;
    int32_t nv_max = 0;
    for (int j = 0; j < n_queries; ++j) nv_max = qs[j].n_visible > nv_max ? qs[j].n_visible : nv_max;
    const int n_heads = n_queries * nq;  // (query, head) pairs, h = j * nq + g
    // scratch: scores (n_heads, nv_max) | q in vec_dot format (n_heads, hd floats of room) | one V row
    float* scores = scratch;
    float* qbuf = scores + static_cast<size_t>(n_heads) * nv_max;
    float* vrow = qbuf + static_cast<size_t>(n_heads) * hd + 16;
    const GgmlType qt = vec_dot_type(a.type);
    const size_t q_bytes = static_cast<size_t>(hd) * sizeof(float);
    for (int j = 0; j < n_queries; ++j) {
        for (int32_t g = 0; g < nq; ++g) {
            quantize_row(qt, qs[j].q + static_cast<size_t>(g) * hd, reinterpret_cast<uint8_t*>(qbuf) + static_cast<size_t>(j * nq + g) * q_bytes, hd);
        }
    }
    for (int32_t c = 0; c < nv_max; ++c) {
        const uint8_t* k = a.k + static_cast<size_t>(a.cells[c]) * a.row_bytes + a.head_offset;
        for (int j = 0; j < n_queries; ++j) {
            if (c >= qs[j].n_visible) continue;
            for (int32_t g = 0; g < nq; ++g) {
                const int h = j * nq + g;
                scores[static_cast<size_t>(h) * nv_max + c] = vec_dot(a.type, hd, k, reinterpret_cast<const uint8_t*>(qbuf) + static_cast<size_t>(h) * q_bytes) * a.scale;
            }
        }
    }
    for (int j = 0; j < n_queries; ++j) {
        for (int32_t g = 0; g < nq; ++g) softmax(scores + static_cast<size_t>(j * nq + g) * nv_max, qs[j].n_visible);
        std::memset(outs[j], 0, static_cast<size_t>(nq) * hd * sizeof(float));
    }
    for (int32_t c = 0; c < nv_max; ++c) {
        dequantize_row(a.type, a.v + static_cast<size_t>(a.cells[c]) * a.row_bytes + a.head_offset, vrow, hd);
        for (int j = 0; j < n_queries; ++j) {
            if (c >= qs[j].n_visible) continue;
            for (int32_t g = 0; g < nq; ++g) {
                const float p = scores[static_cast<size_t>(j * nq + g) * nv_max + c];
                float* out = outs[j] + static_cast<size_t>(g) * hd;
                for (int32_t d = 0; d < hd; ++d) out[d] += p * vrow[d];
            }
        }
    }
}

namespace {

bool is_generic(GgmlType t) { return t != GgmlType::F16 && t != GgmlType::F32; }

bool q8_0_avx2(const AttentionArgs& a) { return a.type == GgmlType::Q8_0 && avx2::attention_q8_0_supports(a.head_dim) && using_avx2(); }

// One query head: the reference path for every cell type.
void attention_one_head(const AttentionArgs& a, float* out, float* scratch) {
    if (a.type == GgmlType::F16 && a.head_dim <= 1024) {
        attention_f16(a, out, scratch);
    } else if (a.type == GgmlType::F32 && a.head_dim <= 1024) {
        attention_f32(a, out, scratch);
    } else {
        attention_generic(a, out, scratch);
    }
}

}  // namespace

size_t attention_scratch_floats(int32_t n_visible, int32_t head_dim, int32_t n_q_heads, int32_t n_queries) {
    // Reference: scores (n_visible) + q and one row (2 x head_dim) + padding. AVX2 f16: scores
    // (n_queries, n_q_heads, n_visible) + rounded q (n_queries, n_q_heads, head_dim) + a
    // converted tile of rows (kTile, head_dim) + alignment slack; the larger of the two.
    const size_t ref = static_cast<size_t>(n_visible) + 3 * static_cast<size_t>(head_dim) + 64;
    const size_t simd = static_cast<size_t>(n_queries) * n_q_heads * (static_cast<size_t>(n_visible) + head_dim) +
                        32 * static_cast<size_t>(head_dim) + 64;
    return ref > simd ? ref : simd;
}

void attention_ref(const AttentionArgs& a, float* out, float* scratch) {
    AttentionArgs one = a;
    one.n_q_heads = 1;
    for (int32_t g = 0; g < a.n_q_heads; ++g) {
        one.q = a.q + static_cast<size_t>(g) * a.head_dim;
        attention_one_head(one, out + static_cast<size_t>(g) * a.head_dim, scratch);
    }
}

void attention(const AttentionArgs& a, float* out, float* scratch) {
    if (a.type == GgmlType::F16 && a.head_dim % 8 == 0 && using_avx512()) {
        float* const outs[1] = {out};
        avx512::attention_f16_multi(&a, 1, outs, scratch);
    } else if (a.type == GgmlType::F16 && a.head_dim % 8 == 0 && using_avx2()) {
        avx2::attention_f16(a, out, scratch);
    } else if (q8_0_avx2(a)) {
        float* const outs[1] = {out};
        avx2::attention_q8_0_multi(&a, 1, outs, scratch);
    } else if (is_generic(a.type)) {
        float* const outs[1] = {out};
        attention_generic_multi(&a, 1, outs, scratch);
    } else {
        attention_ref(a, out, scratch);
    }
}

void attention_multi(const AttentionArgs* qs, int n_queries, float* const* outs, float* scratch) {
    if (qs[0].type == GgmlType::F16 && qs[0].head_dim % 8 == 0 && using_avx512()) {
        avx512::attention_f16_multi(qs, n_queries, outs, scratch);
    } else if (qs[0].type == GgmlType::F16 && qs[0].head_dim % 8 == 0 && using_avx2()) {
        avx2::attention_f16_multi(qs, n_queries, outs, scratch);
    } else if (q8_0_avx2(qs[0])) {
        avx2::attention_q8_0_multi(qs, n_queries, outs, scratch);
    } else if (is_generic(qs[0].type)) {
        attention_generic_multi(qs, n_queries, outs, scratch);
    } else {
        for (int j = 0; j < n_queries; ++j) attention(qs[j], outs[j], scratch);
    }
}

}  // namespace kvrag::kernels
