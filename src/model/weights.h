// Model weights bound by name and shape to the tensors of a mapped GGUF file.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ggml_type.h"
#include "gguf/gguf_file.h"
#include "model/hparams.h"

namespace kvrag::kernels {
class PackedMatrix;
}

namespace kvrag::model {

// A 2-D weight matrix in the file: n_rows rows of n_cols elements each (ggml ne = [n_cols, n_rows]),
// each row row_bytes long. Used as y = W x, one output per row.
struct MatrixRef {
    const uint8_t* data = nullptr;
    GgmlType type = GgmlType::F32;
    int64_t n_cols = 0;   // input width
    int64_t n_rows = 0;   // output width
    size_t row_bytes = 0;
    // The same matrix repacked for the AVX2 kernels (kernels/repack.h), or null. Set by
    // pack_weights; data stays valid (the embedding lookup and the fallback read it).
    std::shared_ptr<const kernels::PackedMatrix> packed;
};

struct LayerWeights {
    std::vector<float> attn_norm;     // (n_embd)
    MatrixRef wq, wk, wv, wo;         // (n_embd_q, n_embd), (n_embd_kv, n_embd) x2, (n_embd, n_embd_q)
    std::vector<float> bq, bk, bv;    // qwen2 biases: (n_embd_q), (n_embd_kv) x2; empty for llama
    std::vector<float> q_norm, k_norm;  // qwen3, gemma3: (head_dim) RMSNorm weights shared by every head
    std::vector<float> post_attn_norm;  // gemma3: (n_embd) norm of the attention output
    std::vector<float> ffn_norm;      // (n_embd)
    MatrixRef w_gate, w_up, w_down;   // (n_ff, n_embd) x2, (n_embd, n_ff)
    std::vector<float> post_ffn_norm;   // gemma3: (n_embd) norm of the feed-forward output
};

struct ModelWeights {
    MatrixRef tok_embd;               // (n_vocab, n_embd): row t is token t's embedding
    std::vector<float> output_norm;   // (n_embd)
    MatrixRef output;                 // (n_vocab, n_embd); tok_embd when the model ties them
    bool tied_output = false;
    std::vector<float> rope_freq_factors;  // (n_rot / 2) or empty
    // phi3 LongRoPE (rope_factors_long / rope_factors_short): (n_rot / 2) each, or empty.
    // rope_factors() picks the set for a context length.
    std::vector<float> rope_factors_long, rope_factors_short;
    bool has_longrope() const { return !rope_factors_long.empty() || !rope_factors_short.empty(); }
    std::vector<LayerWeights> layers;
};

// The per-dimension RoPE divisors the forward pass and the key rotation use for sequences of up
// to n_ctx_seq positions: rope_freqs when the model has it; for LongRoPE models the long set
// when n_ctx_seq, rounded up to a multiple of 256 as the reference engine rounds its context,
// exceeds rope.scaling.original_context_length, else the short set. The choice is made once per
// context (as the reference engine does), not per current length. Empty: no factors.
std::span<const float> rope_factors(const ModelWeights& w, const ModelHParams& hp, int32_t n_ctx_seq);

// "[64, 32]": a tensor shape as the loaders' messages print it.
std::string shape_string(const std::vector<int64_t>& ne);

// Binds every tensor the architecture needs, checking its presence, shape and type. Errors
// name the tensor with expected vs found shape, e.g.
// "tensor 'blk.0.attn_k.weight' has shape [64, 32]; expected [64, 16]".
Result<ModelWeights> bind_weights(const gguf::GgufFile& file, const ModelHParams& hp);

// Called after a matrix got its packed copy, when nothing reads its stored rows any more (not
// for a tied output, whose rows the embedding lookup reads): the loader releases their pages.
using OnPacked = std::function<void(const MatrixRef&)>;

// Repacks every matrix the kernels can use packed (kernels::can_repack) and sets its `packed`.
// Costs one pass over those matrices and memory about their size; outputs do not change.
void pack_weights(ModelWeights& w, const OnPacked& on_packed = nullptr);

}  // namespace kvrag::model
