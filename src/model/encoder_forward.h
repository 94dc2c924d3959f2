// The forward pass of encoder-only BERT-family models (bert, nomic-bert, bert rerankers):
// many whole sequences per pass, bidirectional attention inside each sequence, no KV cache.
//
// Per pass, the sequences are laid end to end in one (n_tokens, n_embd) activation matrix, so
// every matmul runs once over all of them; attention, pooling and positions are per sequence.
// As in ForwardPass, every output element is reduced in an order that depends only on its own
// sequence (one vec_dot per matmul element, attention over the sequence's own tokens in order,
// norms per row), so a text gives the same bits alone, in any batch, on any thread count.
//
// The math follows the reference engine (llama.cpp) on ../shared/data/README.md's list:
//   x = tok_embd[t] + token_types[0] + position_embd[pos] (bert; nomic-bert has no positions)
//   x = LayerNorm(x)                                      (token_embd_norm)
//   per layer (post-norm):
//     q, k, v = Wq x + bq, ... (or the fused Wqkv); nomic-bert: NEOX RoPE over the whole head
//     x = LayerNorm(x + Wo softmax(q k^T / sqrt(head_dim)) v + bo)   (attn_output_norm)
//     bert:  f = W_down gelu(W_up x + b_up) + b_down     (ggml's f16-table GELU)
//     nomic: f = W_down (silu(W_gate x) * W_up x)
//     x = LayerNorm(x + f)                               (layer_output_norm)
//   pooling: mean over all tokens ([CLS] and [SEP] included), cls (first token), last token,
//   rank (first token through tanh(cls) then cls.output), or none (every token).
// Activations are brought to each weight's vec_dot type before its matmul (f16 for F16
// weights, Q8_0 blocks for Q8_0, Q8_K for K-quants), as ggml does.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "model/encoder_weights.h"
#include "model/hparams.h"

namespace kvrag::model {

class EncoderForward {
public:
    // hp and w must outlive this object (they live in the Model).
    EncoderForward(const ModelHParams& hp, const EncoderWeights& w);

    // Floats per output row: n_embd for none/mean/cls/last, n_cls_out for rank.
    int32_t output_dim(PoolingType pooling) const;

    // Runs one pass over n_seqs = seq_starts.size() - 1 sequences.
    //   tokens:     (n_tokens) ids of all sequences end to end, special tokens included
    //   seq_starts: (n_seqs + 1) offsets into tokens, ascending, seq_starts[0] = 0 and
    //               seq_starts[n_seqs] = n_tokens; sequence s is [seq_starts[s], seq_starts[s+1])
    //   out:        resized to (n_seqs, output_dim) pooled rows, or (n_tokens, n_embd) for
    //               pooling none; never normalised
    // Errors (nothing is computed): tokenizer_bad_token for an id outside the vocabulary,
    // request_too_long for a sequence longer than n_ctx_train (the message names both),
    // request_invalid for an empty sequence or bad offsets, model_bad_hparams for rank pooling
    // on a model without a classifier head.
    Result<void> run(std::span<const int32_t> tokens, std::span<const int32_t> seq_starts, PoolingType pooling,
                     ThreadPool& pool, std::vector<float>& out);

private:
    void ensure_capacity(int64_t n_tokens, int32_t max_seq, int n_threads);
    // y (n, W.n_rows) = x (n, W.n_cols) W^T through xp_ (model/matmul.h).
    void matmul(const MatrixRef& W, const float* x, int64_t n, float* y, ThreadPool& pool);
    void add_bias(float* y, const std::vector<float>& b, int64_t n, int64_t width);
    // x (n, n_embd) = LayerNorm(x + y) with the given weight and bias.
    void residual_norm(float* x, const float* y, const std::vector<float>& w, const std::vector<float>& b, int64_t n,
                       ThreadPool& pool);
    void attention(std::span<const int32_t> seq_starts, int64_t n, ThreadPool& pool);

    const ModelHParams& hp_;
    const EncoderWeights& w_;
    int64_t cap_tokens_ = 0;
    int32_t cap_seq_ = 0;
    int cap_threads_ = 0;
    // Scratch, (n_tokens, width) row-major:
    std::vector<float> x_;      // (n, n_embd) hidden state
    std::vector<float> y_;      // (n, n_embd) sub-block output
    std::vector<float> q_;      // (n, n_embd)
    std::vector<float> k_;      // (n, n_embd)
    std::vector<float> v_;      // (n, n_embd)
    std::vector<float> qkv_;    // (n, 3 n_embd) fused projection (nomic-bert)
    std::vector<float> attn_;   // (n, n_embd)
    std::vector<float> up_;     // (n, n_ff)
    std::vector<float> gate_;   // (n, n_ff)
    std::vector<uint8_t> xp_;   // prepared activations (n, row bytes of the vec_dot type)
    std::vector<float> rope_;   // (max_seq, head_dim / 2, 2) cos/sin per position
    std::vector<int32_t> seq_of_;  // (n) sequence of each token
    std::vector<float> att_scratch_;  // per thread: scores (64, max_seq) + V^T (head_dim, max_seq)
    std::vector<float> head_;   // (n_seqs, n_embd) pooled rows for the rank head
};

}  // namespace kvrag::model
