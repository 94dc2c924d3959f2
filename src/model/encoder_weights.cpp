#include "model/encoder_weights.h"

#include "kernels/quant.h"
#include "kernels/repack.h"
#include "model/weights.h"

namespace kvrag::model {
namespace {


// Looks tensors up by name, checking shape and type; every failure names the tensor.
class Binder {
public:
    explicit Binder(const gguf::GgufFile& f) : f_(f) {}

    // nullptr when the tensor is absent and optional; throws otherwise.
    const gguf::TensorInfo* find(const std::string& name, const std::vector<int64_t>& ne, bool required) const {
        const gguf::TensorInfo* t = f_.find_tensor(name);
        if (!t) {
            if (!required) return nullptr;
            throw_error(Errc::model_missing_tensor,
                        f_.path() + ": required tensor '" + name + "' " + shape_string(ne) + " is missing");
        }
        if (t->ne != ne) {
            throw_error(Errc::model_bad_shape, f_.path() + ": tensor '" + name + "' has shape " + t->shape_string() +
                                                   "; expected " + shape_string(ne));
        }
        if (!kernels::has_weight_kernels(t->type)) {
            throw_error(Errc::gguf_unsupported_type,
                        f_.path() + ": tensor '" + name + "' has type " + std::string(ggml_type_name(t->type)) +
                            ", which kvrag cannot compute with; supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K");
        }
        return t;
    }

    MatrixRef matrix(const std::string& name, int64_t n_cols, int64_t n_rows, bool required = true) const {
        const gguf::TensorInfo* t = find(name, {n_cols, n_rows}, required);
        if (!t) return {};
        return MatrixRef{t->data, t->type, n_cols, n_rows, ggml_row_size(t->type, n_cols), nullptr};
    }

    // Norms and biases are small: dequantised once into floats. Empty when absent and optional.
    std::vector<float> vec(const std::string& name, int64_t n, bool required = true) const {
        const gguf::TensorInfo* t = find(name, {n}, required);
        if (!t) return {};
        std::vector<float> out(static_cast<size_t>(n));
        kernels::dequantize_row(t->type, t->data, out.data(), n);
        return out;
    }

    const gguf::GgufFile& file() const { return f_; }

private:
    const gguf::GgufFile& f_;
};

}  // namespace

Result<EncoderWeights> bind_encoder_weights(const gguf::GgufFile& f, const ModelHParams& hp) {
    return catch_errors([&]() {
        if (!is_encoder(hp.arch)) {
            throw_error(Errc::model_unsupported_arch, f.path() + ": '" + hp.arch_name + "' is not an encoder architecture");
        }
        const Binder b(f);
        const int64_t n_embd = hp.n_embd, n_ff = hp.n_ff;
        const bool nomic = hp.arch == Arch::nomic_bert;
        EncoderWeights w;

        const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
        if (!emb || emb->ne.size() != 2 || emb->ne[0] != n_embd) {
            throw_error(emb ? Errc::model_bad_shape : Errc::model_missing_tensor,
                        f.path() + ": tensor 'token_embd.weight' " +
                            (emb ? "has shape " + emb->shape_string() : std::string("is missing")) + "; expected [" +
                            std::to_string(n_embd) + ", n_vocab]");
        }
        w.tok_embd = b.matrix("token_embd.weight", n_embd, emb->ne[1]);
        // Only row 0 is ever used: llama.cpp gives every token type 0, even the document of a
        // rerank pair, and the oracle follows it.
        if (const gguf::TensorInfo* tt = f.find_tensor("token_types.weight")) {
            const int64_t n_types = tt->ne.size() == 2 ? tt->ne[1] : 0;
            const MatrixRef types = b.matrix("token_types.weight", n_embd, n_types >= 1 ? n_types : 1);
            w.type_embd0.resize(static_cast<size_t>(n_embd));
            kernels::dequantize_row(types.type, types.data, w.type_embd0.data(), n_embd);
        }
        if (!nomic) {
            const gguf::TensorInfo* pe = f.find_tensor("position_embd.weight");
            const int64_t n_pos = pe && pe->ne.size() == 2 ? pe->ne[1] : hp.n_ctx_train;
            if (n_pos < hp.n_ctx_train) {
                throw_error(Errc::model_bad_shape, f.path() + ": tensor 'position_embd.weight' has " + std::to_string(n_pos) +
                                                       " rows, fewer than context_length " + std::to_string(hp.n_ctx_train));
            }
            w.pos_embd = b.matrix("position_embd.weight", n_embd, n_pos);
        }
        w.embd_norm = b.vec("token_embd_norm.weight", n_embd);
        w.embd_norm_b = b.vec("token_embd_norm.bias", n_embd);

        for (int il = 0; il < hp.n_layer; ++il) {
            const std::string p = "blk." + std::to_string(il) + ".";
            EncoderLayerWeights l;
            if (nomic || f.find_tensor(p + "attn_qkv.weight")) {
                l.wqkv = b.matrix(p + "attn_qkv.weight", n_embd, 3 * n_embd);
                l.bqkv = b.vec(p + "attn_qkv.bias", 3 * n_embd, false);
            } else {
                l.wq = b.matrix(p + "attn_q.weight", n_embd, n_embd);
                l.wk = b.matrix(p + "attn_k.weight", n_embd, n_embd);
                l.wv = b.matrix(p + "attn_v.weight", n_embd, n_embd);
                l.bq = b.vec(p + "attn_q.bias", n_embd, false);
                l.bk = b.vec(p + "attn_k.bias", n_embd, false);
                l.bv = b.vec(p + "attn_v.bias", n_embd, false);
            }
            l.wo = b.matrix(p + "attn_output.weight", n_embd, n_embd);
            l.bo = b.vec(p + "attn_output.bias", n_embd, false);
            l.attn_out_norm = b.vec(p + "attn_output_norm.weight", n_embd);
            l.attn_out_norm_b = b.vec(p + "attn_output_norm.bias", n_embd);
            l.w_up = b.matrix(p + "ffn_up.weight", n_embd, n_ff);
            l.b_up = b.vec(p + "ffn_up.bias", n_ff, false);
            if (nomic) l.w_gate = b.matrix(p + "ffn_gate.weight", n_embd, n_ff);
            l.w_down = b.matrix(p + "ffn_down.weight", n_ff, n_embd);
            l.b_down = b.vec(p + "ffn_down.bias", n_embd, false);
            l.out_norm = b.vec(p + "layer_output_norm.weight", n_embd);
            l.out_norm_b = b.vec(p + "layer_output_norm.bias", n_embd);
            w.layers.push_back(std::move(l));
        }

        // Rank head: optional here, required when the pooling asks for it.
        w.cls = b.matrix("cls.weight", n_embd, n_embd, false);
        if (w.cls.data) w.cls_b = b.vec("cls.bias", n_embd, false);
        w.cls_out = b.matrix("cls.output.weight", n_embd, hp.n_cls_out, false);
        if (w.cls_out.data) w.cls_out_b = b.vec("cls.output.bias", hp.n_cls_out, false);
        if (hp.pooling == PoolingType::rank && !w.has_rank_head()) {
            throw_error(Errc::model_missing_tensor, f.path() + ": " + hp.arch_name +
                                                        ".pooling_type is 4 (rank) but the classifier head tensor "
                                                        "'cls.output.weight' [" + std::to_string(n_embd) + ", " +
                                                        std::to_string(hp.n_cls_out) + "] is missing");
        }
        return w;
    });
}

void pack_encoder_weights(EncoderWeights& w, const OnPacked& on_packed) {
    for (EncoderLayerWeights& l : w.layers) {
        for (MatrixRef* m : {&l.wq, &l.wk, &l.wv, &l.wqkv, &l.wo, &l.w_up, &l.w_gate, &l.w_down}) {
            if (!m->data) continue;  // not in this architecture (bert: no wqkv, no gate)
            m->packed = kernels::repack(m->type, m->data, m->row_bytes, m->n_rows, m->n_cols);
            if (m->packed && on_packed) on_packed(*m);
        }
    }
}

}  // namespace kvrag::model
