#include "model/key_rotation.h"

#include "core/check.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace kvrag::model {

KeyRotation::KeyRotation(const ModelHParams& hp, std::span<const float> freq_factors)
    : n_layer_(hp.n_layer), n_head_kv_(hp.n_head_kv), head_dim_(hp.head_dim), n_rot_(hp.n_rot), neox_(hp.rope_neox), hp_(hp),
      freq_factors_(freq_factors.begin(), freq_factors.end()),
      scratch_(static_cast<size_t>(hp.head_dim) + 2 * static_cast<size_t>(hp.n_rot), 0.0f) {
    KVRAG_CHECK(freq_factors_.empty() || static_cast<int32_t>(freq_factors_.size()) == n_rot_ / 2,
                "rope freq_factors must hold n_rot / 2 values");
}

void KeyRotation::rotate(KvView& kv, int32_t cell, int32_t delta, Layers layers) {
    KVRAG_CHECK(cell >= 0 && cell < (layers == Layers::local ? kv.n_local_cells() : kv.n_cells()), "cell outside the KV view");
    float* head = scratch_.data();          // (head_dim)
    float* cos_sin = head + head_dim_;      // (n_rot / 2, 2) global layers
    float* cos_sin_swa = cos_sin + n_rot_;  // (n_rot / 2, 2) sliding-window layers: own base, no scaling or factors
    // The table of a position delta is exactly the rotation R(delta).
    kernels::rope_table(cos_sin, static_cast<float>(delta), n_rot_, hp_.rope_freq_base, hp_.rope_freq_scale,
                        freq_factors_.empty() ? nullptr : freq_factors_.data());
    if (hp_.has_swa()) kernels::rope_table(cos_sin_swa, static_cast<float>(delta), n_rot_, hp_.rope_freq_base_swa, 1.0f, nullptr);
    for (int il = 0; il < n_layer_; ++il) {
        if ((layers == Layers::global && hp_.is_swa(il)) || (layers == Layers::local && !hp_.is_swa(il))) continue;
        const float* table = hp_.is_swa(il) ? cos_sin_swa : cos_sin;
        const KvLayerRef l = kv.layer(il);
        const size_t head_bytes = ggml_row_size(l.type, head_dim_);
        KVRAG_CHECK(head_bytes * static_cast<size_t>(n_head_kv_) == l.row_bytes, "K row width is not n_head_kv * head_dim");
        uint8_t* k = l.k + static_cast<size_t>(cell) * l.row_bytes;  // (n_head_kv, head_dim) in l.type
        for (int32_t h = 0; h < n_head_kv_; ++h) {
            uint8_t* kh = k + static_cast<size_t>(h) * head_bytes;
            kernels::dequantize_row(l.type, kh, head, head_dim_);
            kernels::rope_apply(head, table, n_rot_, neox_);
            kernels::quantize_row(l.type, head, kh, head_dim_);
        }
    }
}

}  // namespace kvrag::model
