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

const auto& shape_str = shape_string;

const gguf::TensorInfo& need(const gguf::GgufFile& f, const std::string& name, const std::vector<int64_t>& ne) {
    const gguf::TensorInfo* t = f.find_tensor(name);
    if (!t) {
        throw_error(Errc::model_missing_tensor, f.path() + ": required tensor '" + name + "' " + shape_str(ne) +
                                                    " is missing");
    }
    if (t->ne != ne) {
        throw_error(Errc::model_bad_shape, f.path() + ": tensor '" + name + "' has shape " + t->shape_string() +
                                               "; expected " + shape_str(ne));
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

}  // namespace

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
        for (int il = 0; il < hp.n_layer; ++il) {
            const std::string p = "blk." + std::to_string(il) + ".";
            LayerWeights l;
            l.attn_norm = vector_f32(f, p + "attn_norm.weight", n_embd);
            l.wq = matrix(f, p + "attn_q.weight", n_embd, n_q);
            l.wk = matrix(f, p + "attn_k.weight", n_embd, n_kv);
            l.wv = matrix(f, p + "attn_v.weight", n_embd, n_kv);
            l.wo = matrix(f, p + "attn_output.weight", n_q, n_embd);
            if (hp.arch == Arch::qwen2) {
                l.bq = vector_f32(f, p + "attn_q.bias", n_q);
                l.bk = vector_f32(f, p + "attn_k.bias", n_kv);
                l.bv = vector_f32(f, p + "attn_v.bias", n_kv);
            }
            l.ffn_norm = vector_f32(f, p + "ffn_norm.weight", n_embd);
            l.w_gate = matrix(f, p + "ffn_gate.weight", n_embd, n_ff);
            l.w_up = matrix(f, p + "ffn_up.weight", n_embd, n_ff);
            l.w_down = matrix(f, p + "ffn_down.weight", n_ff, n_embd);
            w.layers.push_back(std::move(l));
        }
        return w;
    });
}

void pack_weights(ModelWeights& w) {
    auto pack = [](MatrixRef& m) {
        m.packed = kernels::repack(m.type, m.data, m.row_bytes, m.n_rows, m.n_cols);
    };
    for (LayerWeights& l : w.layers) {
        for (MatrixRef* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) pack(*m);
    }
    pack(w.output);  // when tied, tok_embd keeps no packed copy: the lookup reads rows as stored
}

}  // namespace kvrag::model
