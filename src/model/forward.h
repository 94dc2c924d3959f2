// The transformer forward pass over a batch of tokens (prefill, decode, or a mix of sequences).
//
// Reduction order per output element never depends on the batch composition or the thread
// count: every matmul element is one vec_dot over its row, every attention row is reduced over
// its own visible cells in position order. So a request's greedy output is the same alone, in a
// batch, or on any number of threads.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "model/hparams.h"
#include "model/kv_view.h"
#include "model/weights.h"

namespace kvrag::model {

class ForwardPass {
public:
    // n_ctx_seq: the most positions one sequence may hold in this context; it selects a LongRoPE
    // model's factor set (see rope_factors in weights.h). 0 means the trained context.
    ForwardPass(const ModelHParams& hp, const ModelWeights& w, int32_t n_ctx_seq = 0);

    // The RoPE divisors in use (what a KeyRotation for this context must be given).
    std::span<const float> rope_factors() const { return rope_factors_; }

    // Sliding-window models (hp.has_swa()): each token's visible list must hold consecutive
    // positions ending at its own (position pos - n_visible + 1 ... pos), which is what a
    // sequence's cell list gives; a local layer attends to the last min(n_visible, n_swa) of
    // them. When the view keeps local layers in cells of their own (kv.n_local_cells() > 0),
    // each token's local_cell / local_visible serve the local layers instead.
    // Runs the batch; K/V of every token are written to its cell. For each token with
    // want_logits, in batch order, appends (n_vocab) logits to logits_out (resized to
    // n_out * n_vocab). When hidden_out is given, it receives the final-normed hidden state
    // (n_out, n_embd) of the same tokens (for embeddings); with compute_logits false the
    // output head is skipped and logits_out stays empty.
    Result<void> run(std::span<const BatchToken> batch, KvView& kv, ThreadPool& pool,
                     std::vector<float>& logits_out, std::vector<float>* hidden_out = nullptr,
                     bool compute_logits = true);

private:
    void ensure_capacity(int64_t n_tokens, int32_t max_visible, int n_threads);
    // y (n, W.n_rows) = x (n, W.n_cols) W^T through xp_ (model/matmul.h).
    void matmul(const MatrixRef& W, const float* x, int64_t n, float* y, ThreadPool& pool);
    // local: a sliding-window layer (sees the last n_swa positions); local_cells: its K/V live
    // in the view's local cells, so each token attends to its local_visible list.
    void attention(std::span<const BatchToken> batch, const KvLayerRef& kv, bool local, bool local_cells, ThreadPool& pool);
    // q_, k_ of the batch: per-head RMSNorm (qk_norm models), RoPE with layer il's table,
    // and the query pre-scale of gemma3 / phi3.
    void rotate_qk(int64_t t0, int64_t t1, int il);
    // fn(t0, t1) over [0, n) in token ranges: split between the pool's threads for a prompt, on
    // the calling thread for a few tokens (a pool run costs more than they do). Each token's
    // result is the same either way.
    template <class Fn>
    void for_tokens(int64_t n, ThreadPool& pool, Fn&& fn);
    static constexpr int64_t kMinTokensToSplit = 16;

    const ModelHParams& hp_;
    const ModelWeights& w_;
    std::span<const float> rope_factors_;   // (n_rot / 2) divisors or empty
    int64_t cap_tokens_ = 0;
    int32_t cap_visible_ = 0;
    int cap_threads_ = 0;
    // Scratch, (n_tokens, width) row-major:
    std::vector<float> x_;      // (n, n_embd) residual stream
    std::vector<float> xn_;     // (n, n_embd) normed input of a sub-block
    std::vector<float> q_;      // (n, n_embd_q)
    std::vector<float> k_;      // (n, n_embd_kv)
    std::vector<float> v_;      // (n, n_embd_kv)
    std::vector<float> attn_;   // (n, n_embd_q)
    std::vector<float> gate_;   // (n, n_ff)
    std::vector<float> up_;     // (n, n_ff)
    std::vector<uint8_t> xp_;   // prepared activations (n, row bytes of the vec_dot type)
    std::vector<float> rope_;   // (n, n_rot / 2, 2) cos/sin per token (global layers)
    std::vector<float> rope_swa_;  // (n, n_rot / 2, 2) the same for local (sliding-window) layers
    std::vector<float> att_scratch_;  // per thread: scores (max_visible) + q/row buffers
    std::vector<std::pair<int64_t, int64_t>> blocks_;  // attention's token blocks [t0, t1)
    std::vector<float> out_rows_;     // (n_out, n_embd) final-normed rows that want logits
};

}  // namespace kvrag::model
