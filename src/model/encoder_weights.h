// Weights of encoder-only BERT-family models (architectures `bert` and `nomic-bert`, and the
// reranker form of `bert` with a `cls` + `cls.output` head), bound by name and shape to the
// tensors of a mapped GGUF file. Decoders use ModelWeights (model/weights.h) instead.
//
// Tensor names are the ones llama.cpp's convert_hf_to_gguf.py writes:
//   token_embd, token_types, position_embd (bert only), token_embd_norm{,.bias};
//   per layer: attn_q/attn_k/attn_v (bert) or attn_qkv (nomic-bert), attn_output,
//   attn_output_norm, ffn_up, ffn_gate (nomic-bert), ffn_down, layer_output_norm;
//   cls, cls.output (rank head, optional).
// Biases are bound when the file has them (bge has all of them, nomic-embed none), with the
// same shape checks as the weights.
#pragma once

#include <cstdint>
#include <vector>

#include "core/error.h"
#include "gguf/gguf_file.h"
#include "model/hparams.h"
#include "model/weights.h"

namespace kvrag::model {

struct EncoderLayerWeights {
    // Attention. bert: separate wq, wk, wv (n_embd, n_embd); nomic-bert: fused wqkv
    // (3 n_embd, n_embd) whose output rows are q, then k, then v. Unused ones have data null.
    MatrixRef wq, wk, wv, wqkv;
    std::vector<float> bq, bk, bv, bqkv;  // (n_embd) x3, (3 n_embd); empty when absent
    MatrixRef wo;                         // (n_embd, n_embd)
    std::vector<float> bo;                // (n_embd) or empty
    std::vector<float> attn_out_norm, attn_out_norm_b;  // (n_embd) LayerNorm after attention
    // Feed-forward. bert: down(gelu(up x + b_up)) + b_down; nomic-bert: down(silu(gate x) * up x).
    MatrixRef w_up, w_gate, w_down;       // (n_ff, n_embd) x2, (n_embd, n_ff); w_gate null for bert
    std::vector<float> b_up, b_down;      // (n_ff), (n_embd) or empty
    std::vector<float> out_norm, out_norm_b;  // (n_embd) LayerNorm after the feed-forward
};

struct EncoderWeights {
    MatrixRef tok_embd;                   // (n_vocab, n_embd)
    std::vector<float> type_embd0;        // (n_embd) row 0 of token_types, or empty when absent
    MatrixRef pos_embd;                   // (n_pos, n_embd) absolute positions; bert only
    std::vector<float> embd_norm, embd_norm_b;  // (n_embd) LayerNorm of the input embedding
    std::vector<EncoderLayerWeights> layers;
    // Rank head (pooling rank): score = cls_out tanh(cls h_cls + cls_b) + cls_out_b.
    MatrixRef cls;                        // (n_embd, n_embd); data null when the file has none
    std::vector<float> cls_b;             // (n_embd) or empty
    MatrixRef cls_out;                    // (n_cls_out, n_embd); data null when none
    std::vector<float> cls_out_b;         // (n_cls_out) or empty

    bool has_rank_head() const { return cls_out.data != nullptr; }
};

// Binds every tensor hp.arch needs (hp from read_hparams; is_encoder(hp.arch) must hold).
// Errors name the tensor with the expected and found shapes:
//   model_missing_tensor "required tensor 'blk.1.ffn_down.weight' [256, 64] is missing",
//   model_bad_shape "tensor 'cls.output.weight' has shape [32, 1]; expected [64, 1]",
//   model_bad_hparams for pooling rank without a cls.output head,
//   gguf_unsupported_type for a tensor type without kernels.
Result<EncoderWeights> bind_encoder_weights(const gguf::GgufFile& file, const ModelHParams& hp);

// As pack_weights (model/weights.h) for the layers' matrices, so the encoder's products run on
// the same tiled kernels as a decoder's prompt. The embedding tables and the small rank head
// stay as stored.
void pack_encoder_weights(EncoderWeights& w, const OnPacked& on_packed = nullptr);

}  // namespace kvrag::model
