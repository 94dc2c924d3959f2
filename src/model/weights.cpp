#include "model/weights.h"

#include "kernels/quant.h"
#include "kernels/repack.h"

namespace kvrag::model {
std::string shape_string(const std::vector<int64_t>& ne) {
    std::string s = "[";
    for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

namespace {


const gguf::TensorInfo& need(const gguf::GgufFile& f, const std::string& name, const std::vector<int64_t>& ne) {
    const gguf::TensorInfo* t = f.find_tensor(name);
    if (!t) {
        throw_error(Errc::model_missing_tensor, f.path() + ": required tensor '" + name + "' " + shape_string(ne) +
                                                    " is missing");
    }
    if (t->ne != ne) {
        throw_error(Errc::model_bad_shape, f.path() + ": tensor '" + name + "' has shape " + t->shape_string() +
                                               "; expected " + shape_string(ne));
    }
    if (!ggml_type_traits(t->type).supported) {
        throw_error(Errc::gguf_unsupported_type,
                    f.path() + ": tensor '" + name + "' has type " + std::string(ggml_type_name(t->type)) +
                        ", which kvrag cannot compute with; supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K");
    }
    return *t;
}

MatrixRef matrix(const gguf::GgufFile& f, const std::string& name, int64_t n_cols, int64_t n_rows) {
    const gguf::TensorInfo& t = need(f, name, {n_cols, n_rows});
    return MatrixRef{t.data, t.type, n_cols, n_rows, ggml_row_size(t.type, n_cols), nullptr};
}

// Small 1-D tensors (norms, biases) are dequantised once into floats.
std::vector<float> vector_f32(const gguf::GgufFile& f, const std::string& name, int64_t n) {
    const gguf::TensorInfo& t = need(f, name, {n});
    std::vector<float> out(static_cast<size_t>(n));
    kernels::dequantize_row(t.type, t.data, out.data(), n);
    return out;
}

// Rows [r0, r0 + n_rows) of a fused matrix, as a matrix of their own (rows are stored one after
// another, each quantised on its own, so a row range is a valid matrix of any type).
MatrixRef row_slice(const MatrixRef& m, int64_t r0, int64_t n_rows) {
    MatrixRef s = m;
    s.data = m.data + static_cast<size_t>(r0) * m.row_bytes;
    s.n_rows = n_rows;
    return s;
}

}  // namespace

std::span<const float> rope_factors(const ModelWeights& w, const ModelHParams& hp, int32_t n_ctx_seq) {
    if (!w.rope_freq_factors.empty()) return w.rope_freq_factors;  // rope_freqs first, as the reference
    if (w.has_longrope()) {
        // A set the file lacks means plain RoPE at those contexts (the reference engine's rule).
        const int64_t padded = (static_cast<int64_t>(n_ctx_seq) + 255) / 256 * 256;
        return padded > hp.n_ctx_orig ? std::span<const float>(w.rope_factors_long) : std::span<const float>(w.rope_factors_short);
    }
    return w.rope_freq_factors;
}

Result<ModelWeights> bind_weights(const gguf::GgufFile& f, const ModelHParams& hp) {
    return catch_errors([&]() {
        const std::string a = hp.arch_name + ".";
        if (auto e = f.get_int(a + "expert_count"); e && *e && **e > 0) {
            throw_error(Errc::model_unsupported_arch, f.path() + ": mixture-of-experts models (" + a + "expert_count " +
                                                          std::to_string(**e) + ") are not supported yet");
        }
        ModelWeights w;
        const int64_t n_embd = hp.n_embd, n_q = hp.n_embd_q(), n_kv = hp.n_embd_kv(), n_ff = hp.n_ff;
        const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
        if (!emb || emb->ne.size() != 2 || emb->ne[0] != n_embd) {
            throw_error(emb ? Errc::model_bad_shape : Errc::model_missing_tensor,
                        f.path() + ": tensor 'token_embd.weight' " +
                            (emb ? "has shape " + emb->shape_string() : std::string("is missing")) +
                            "; expected [" + std::to_string(n_embd) + ", n_vocab]");
        }
        const int64_t n_vocab = emb->ne[1];
        w.tok_embd = matrix(f, "token_embd.weight", n_embd, n_vocab);
        w.output_norm = vector_f32(f, "output_norm.weight", n_embd);
        if (f.find_tensor("output.weight")) {
            w.output = matrix(f, "output.weight", n_embd, n_vocab);
        } else {
            w.output = w.tok_embd;  // tied embeddings
            w.tied_output = true;
        }
        if (f.find_tensor("rope_freqs.weight")) w.rope_freq_factors = vector_f32(f, "rope_freqs.weight", hp.n_rot / 2);
        if (f.find_tensor("rope_factors_long.weight") || f.find_tensor("rope_factors_short.weight")) {
            // LongRoPE: the original context length (hparams) chooses the set; a file may carry
            // only one of them (the other context range then runs plain RoPE).
            if (f.find_tensor("rope_factors_long.weight")) w.rope_factors_long = vector_f32(f, "rope_factors_long.weight", hp.n_rot / 2);
            if (f.find_tensor("rope_factors_short.weight")) w.rope_factors_short = vector_f32(f, "rope_factors_short.weight", hp.n_rot / 2);
        }
        const bool fused = hp.arch == Arch::phi3;   // attn_qkv and gate+up in ffn_up
        for (int il = 0; il < hp.n_layer; ++il) {
            const std::string p = "blk." + std::to_string(il) + ".";
            LayerWeights l;
            l.attn_norm = vector_f32(f, p + "attn_norm.weight", n_embd);
            if (fused) {
                // attn_qkv rows: Q (n_embd_q), then K (n_embd_kv), then V (n_embd_kv).
                const MatrixRef qkv = matrix(f, p + "attn_qkv.weight", n_embd, n_q + 2 * n_kv);
                l.wq = row_slice(qkv, 0, n_q);
                l.wk = row_slice(qkv, n_q, n_kv);
                l.wv = row_slice(qkv, n_q + n_kv, n_kv);
            } else {
                l.wq = matrix(f, p + "attn_q.weight", n_embd, n_q);
                l.wk = matrix(f, p + "attn_k.weight", n_embd, n_kv);
                l.wv = matrix(f, p + "attn_v.weight", n_embd, n_kv);
            }
            l.wo = matrix(f, p + "attn_output.weight", n_q, n_embd);
            if (hp.arch == Arch::qwen2) {
                l.bq = vector_f32(f, p + "attn_q.bias", n_q);
                l.bk = vector_f32(f, p + "attn_k.bias", n_kv);
                l.bv = vector_f32(f, p + "attn_v.bias", n_kv);
            }
            if (hp.qk_norm) {
                l.q_norm = vector_f32(f, p + "attn_q_norm.weight", hp.head_dim);
                l.k_norm = vector_f32(f, p + "attn_k_norm.weight", hp.head_dim);
            }
            if (hp.arch == Arch::gemma3) {
                // Stored as Hugging Face's (1 + w): the converter already added the 1.
                l.post_attn_norm = vector_f32(f, p + "post_attention_norm.weight", n_embd);
                l.post_ffn_norm = vector_f32(f, p + "post_ffw_norm.weight", n_embd);
            }
            l.ffn_norm = vector_f32(f, p + "ffn_norm.weight", n_embd);
            if (fused) {
                // ffn_up rows: the gate (n_ff), then up (n_ff).
                const MatrixRef gate_up = matrix(f, p + "ffn_up.weight", n_embd, 2 * n_ff);
                l.w_gate = row_slice(gate_up, 0, n_ff);
                l.w_up = row_slice(gate_up, n_ff, n_ff);
            } else {
                l.w_gate = matrix(f, p + "ffn_gate.weight", n_embd, n_ff);
                l.w_up = matrix(f, p + "ffn_up.weight", n_embd, n_ff);
            }
            l.w_down = matrix(f, p + "ffn_down.weight", n_ff, n_embd);
            w.layers.push_back(std::move(l));
        }
        return w;
    });
}

void pack_weights(ModelWeights& w, const OnPacked& on_packed) {
    auto pack = [&](MatrixRef& m, bool rows_still_read) {
        m.packed = kernels::repack(m.type, m.data, m.row_bytes, m.n_rows, m.n_cols);
        if (m.packed && !rows_still_read && on_packed) on_packed(m);
    };
    for (LayerWeights& l : w.layers) {
        for (MatrixRef* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) pack(*m, false);
    }
    // When tied, tok_embd keeps no packed copy: the lookup reads the rows as stored.
    pack(w.output, w.tied_output);
}

}  // namespace kvrag::model
