#include "model/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

#include "kernels/attention.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "kernels/repack.h"
#include "model/matmul.h"

namespace kvrag::model {

ForwardPass::ForwardPass(const ModelHParams& hp, const ModelWeights& w, int32_t n_ctx_seq)
    : hp_(hp), w_(w), rope_factors_(model::rope_factors(w, hp, n_ctx_seq > 0 ? n_ctx_seq : hp.n_ctx_train)) {}

void ForwardPass::ensure_capacity(int64_t n, int32_t max_visible, int n_threads) {
    if (n > cap_tokens_) {
        cap_tokens_ = n;
        x_.assign(n * hp_.n_embd, 0.0f);
        xn_.assign(n * hp_.n_embd, 0.0f);
        q_.assign(n * hp_.n_embd_q(), 0.0f);
        k_.assign(n * hp_.n_embd_kv(), 0.0f);
        v_.assign(n * hp_.n_embd_kv(), 0.0f);
        attn_.assign(n * hp_.n_embd_q(), 0.0f);
        gate_.assign(n * hp_.n_ff, 0.0f);
        up_.assign(n * hp_.n_ff, 0.0f);
        rope_.assign(n * hp_.n_rot, 0.0f);
        rope_swa_.assign(hp_.has_swa() ? n * hp_.n_rot : 0, 0.0f);
        // Prepared rows of the widest input (n_ff or n_embd_q).
        const int64_t widest = std::max<int64_t>({hp_.n_embd, hp_.n_ff, hp_.n_embd_q()});
        xp_.assign(prepared_rows_bytes(n, widest), 0);
    }
    if (max_visible > cap_visible_ || n_threads > cap_threads_) {
        cap_visible_ = std::max(cap_visible_, max_visible);
        cap_threads_ = std::max(cap_threads_, n_threads);
        const int32_t group = hp_.n_head / hp_.n_head_kv;
        att_scratch_.assign(static_cast<size_t>(cap_threads_) *
                                kernels::attention_scratch_floats(cap_visible_, hp_.head_dim, group, kernels::kAttentionMaxQueries),
                            0.0f);
    }
}

void ForwardPass::matmul(const MatrixRef& W, const float* x, int64_t n, float* y, ThreadPool& pool) {
    matmul_products({{&W, y}}, prepare_rows(W.type, x, n, W.n_cols, xp_.data(), pool), n, pool);
}

template <class Fn>
void ForwardPass::for_tokens(int64_t n, ThreadPool& pool, Fn&& fn) {
    if (n < kMinTokensToSplit || pool.size() == 1) {
        fn(int64_t{0}, n);
        return;
    }
    pool.run([&](int ith, int nth) {
        auto [t0, t1] = ThreadPool::split(n, ith, nth);
        if (t0 < t1) fn(t0, t1);
    });
}

void ForwardPass::rotate_qk(int64_t t0, int64_t t1, int il) {
    const int32_t n_q = hp_.n_embd_q(), n_kv = hp_.n_embd_kv(), hd = hp_.head_dim;
    const LayerWeights& L = w_.layers[il];
    if (hp_.qk_norm) {
        for (int64_t t = t0; t < t1; ++t) {
            for (int32_t h = 0; h < hp_.n_head; ++h) {
                float* q = &q_[t * n_q + h * hd];
                kernels::rmsnorm(q, q, L.q_norm.data(), hd, hp_.rms_eps);
            }
            for (int32_t h = 0; h < hp_.n_head_kv; ++h) {
                float* k = &k_[t * n_kv + h * hd];
                kernels::rmsnorm(k, k, L.k_norm.data(), hd, hp_.rms_eps);
            }
        }
    }
    const std::vector<float>& table = hp_.is_swa(il) ? rope_swa_ : rope_;
    for (int64_t t = t0; t < t1; ++t) {
        const float* cs = &table[t * hp_.n_rot];
        for (int32_t h = 0; h < hp_.n_head; ++h) kernels::rope_apply(&q_[t * n_q + h * hd], cs, hp_.n_rot, hp_.rope_neox);
        for (int32_t h = 0; h < hp_.n_head_kv; ++h) kernels::rope_apply(&k_[t * n_kv + h * hd], cs, hp_.n_rot, hp_.rope_neox);
    }
    if (hp_.q_prescale > 0.0f) {
        // Scaled before Q is rounded for the Q.K product, as the reference does for these models.
        for (int64_t i = t0 * n_q; i < t1 * n_q; ++i) q_[i] *= hp_.q_prescale;
    }
}

void ForwardPass::attention(std::span<const BatchToken> batch, const KvLayerRef& kv, bool local, bool local_cells, ThreadPool& pool) {
    const int32_t hd = hp_.head_dim, n_head_kv = hp_.n_head_kv, group = hp_.n_head / hp_.n_head_kv;
    const size_t per_thread = kernels::attention_scratch_floats(cap_visible_, hd, group, kernels::kAttentionMaxQueries);
    const size_t head_bytes = ggml_row_size(kv.type, hd);
    // The cells token t attends over: its visible list, for a local (sliding-window) layer only
    // the last n_swa of them.
    auto cells_of = [&](int64_t t) {
        const int32_t* cells = local_cells ? batch[t].local_visible : batch[t].visible;
        int32_t n = local_cells ? batch[t].n_local_visible : batch[t].n_visible;
        if (local && n > hp_.n_swa) {
            // Positions (pos - n_swa, pos]: the last n_swa of the consecutive visible cells.
            cells += n - hp_.n_swa;
            n = hp_.n_swa;
        }
        return std::pair<const int32_t*, int32_t>{cells, n};
    };
    // Blocks of up to kAttentionMaxQueries consecutive tokens over the same cell list (a prompt's
    // tokens in one sequence): attention_multi converts each cached row once for the block.
    blocks_.clear();
    for (int64_t t = 0; t < static_cast<int64_t>(batch.size());) {
        int64_t end = t + 1;
        while (end < static_cast<int64_t>(batch.size()) && end - t < kernels::kAttentionMaxQueries &&
               cells_of(end).first == cells_of(t).first) {
            ++end;
        }
        blocks_.emplace_back(t, end);
        t = end;
    }
    const int64_t n_items = static_cast<int64_t>(blocks_.size()) * n_head_kv;  // (block, kv head) pairs
    pool.run([&](int ith, int nth) {
        float* scratch = att_scratch_.data() + ith * per_thread;
        // Round-robin over (block, kv head): under the causal mask later tokens see more cells,
        // and contiguous ranges would give the last thread most of the work. Which thread runs
        // an item, and which block a token is in, never changes its result.
        for (int64_t j = ith; j < n_items; j += nth) {
            const auto [t0, t1] = blocks_[static_cast<size_t>(j / n_head_kv)];
            const int32_t hk = static_cast<int32_t>(j % n_head_kv);
            kernels::AttentionArgs args[kernels::kAttentionMaxQueries];
            float* outs[kernels::kAttentionMaxQueries];
            for (int64_t t = t0; t < t1; ++t) {
                kernels::AttentionArgs& a = args[t - t0];
                a.q = &q_[t * hp_.n_embd_q() + static_cast<int64_t>(hk) * group * hd];
                a.k = kv.k;
                a.v = kv.v;
                a.row_bytes = kv.row_bytes;
                a.head_offset = static_cast<size_t>(hk) * head_bytes;
                a.type = kv.type;
                std::tie(a.cells, a.n_visible) = cells_of(t);
                a.head_dim = hd;
                a.n_q_heads = group;
                a.scale = hp_.q_prescale > 0.0f ? 1.0f : 1.0f / std::sqrt(static_cast<float>(hd));
                outs[t - t0] = &attn_[t * hp_.n_embd_q() + static_cast<int64_t>(hk) * group * hd];
            }
            kernels::attention_multi(args, static_cast<int>(t1 - t0), outs, scratch);
        }
    });
}

Result<void> ForwardPass::run(std::span<const BatchToken> batch, KvView& kv, ThreadPool& pool,
                              std::vector<float>& logits_out, std::vector<float>* hidden_out, bool compute_logits) {
    const int64_t n = static_cast<int64_t>(batch.size());
    logits_out.clear();
    if (hidden_out) hidden_out->clear();
    if (n == 0) return {};
    int32_t max_visible = 0;
    for (const BatchToken& bt : batch) {
        if (bt.token < 0 || bt.token >= w_.tok_embd.n_rows) {
            return Error{Errc::tokenizer_bad_token, "token id " + std::to_string(bt.token) + " is outside the vocabulary [0, " +
                                                        std::to_string(w_.tok_embd.n_rows) + ")"};
        }
        if (bt.cell < 0 || bt.cell >= kv.n_cells() || bt.n_visible < 1 || bt.n_visible > kv.n_cells()) {
            return Error{Errc::engine_internal, "batch token at pos " + std::to_string(bt.pos) + " has cell " +
                                                    std::to_string(bt.cell) + " / " + std::to_string(bt.n_visible) +
                                                    " visible cells, cache has " + std::to_string(kv.n_cells())};
        }
        max_visible = std::max(max_visible, bt.n_visible);
    }
    if (kv.n_local_cells() > 0) {
        // Local layers keep their own cells (a sliding-window cache): check those lists too.
        for (const BatchToken& bt : batch) {
            if (bt.local_cell < 0 || bt.local_cell >= kv.n_local_cells() || bt.n_local_visible < 1 ||
                bt.n_local_visible > kv.n_local_cells() || bt.local_visible == nullptr) {
                return Error{Errc::engine_internal, "batch token at pos " + std::to_string(bt.pos) + " has local cell " +
                                                        std::to_string(bt.local_cell) + " / " + std::to_string(bt.n_local_visible) +
                                                        " visible local cells, cache has " + std::to_string(kv.n_local_cells())};
            }
            max_visible = std::max(max_visible, bt.n_local_visible);
        }
    }
    ensure_capacity(n, max_visible, pool.size());
    const int32_t n_embd = hp_.n_embd, n_q = hp_.n_embd_q(), n_kv = hp_.n_embd_kv(), n_ff = hp_.n_ff;
    const int32_t hd = hp_.head_dim;

    // 1. Embedding lookup: x[t] = tok_embd[token]
    for (int64_t t = 0; t < n; ++t) {
        kernels::dequantize_row(w_.tok_embd.type, w_.tok_embd.data + static_cast<size_t>(batch[t].token) * w_.tok_embd.row_bytes,
                                &x_[t * n_embd], n_embd);
    }
    if (hp_.arch == Arch::gemma3) {
        // Gemma scales token embeddings by sqrt(n_embd), in f32.
        const float scale = std::sqrt(static_cast<float>(n_embd));
        for (int64_t i = 0; i < n * n_embd; ++i) x_[i] *= scale;
    }
    // RoPE angles per token, shared by all layers (local layers have their own table) and heads.
    // LongRoPE's attn_factor multiplies both cos and sin.
    const float* ff = rope_factors_.empty() ? nullptr : rope_factors_.data();
    for (int64_t t = 0; t < n; ++t) {
        float* cs = &rope_[t * hp_.n_rot];
        kernels::rope_table(cs, static_cast<float>(batch[t].pos), hp_.n_rot, hp_.rope_freq_base, hp_.rope_freq_scale, ff);
        if (hp_.rope_attn_factor != 1.0f) {
            for (int32_t i = 0; i < hp_.n_rot; ++i) cs[i] *= hp_.rope_attn_factor;
        }
        if (hp_.has_swa()) {
            kernels::rope_table(&rope_swa_[t * hp_.n_rot], static_cast<float>(batch[t].pos), hp_.n_rot, hp_.rope_freq_base_swa,
                                1.0f, nullptr);
        }
    }

    for (int il = 0; il < hp_.n_layer; ++il) {
        const LayerWeights& L = w_.layers[il];
        // 2. Attention sub-block: xn = rmsnorm(x) * attn_norm
        for_tokens(n, pool, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) kernels::rmsnorm(&xn_[t * n_embd], &x_[t * n_embd], L.attn_norm.data(), n_embd, hp_.rms_eps);
        });
        // q, k, v projections; one activation preparation serves all three when their vec_dot
        // types agree (Q4_K_M: Q4_K q/k with a Q6_K v all take Q8_K rows).
        const GgmlType q_dot = kernels::vec_dot_type(L.wq.type);
        if (q_dot == kernels::vec_dot_type(L.wk.type) && q_dot == kernels::vec_dot_type(L.wv.type)) {
            const PreparedRows xp = prepare_rows(L.wq.type, xn_.data(), n, n_embd, xp_.data(), pool);
            matmul_products({{&L.wq, q_.data()}, {&L.wk, k_.data()}, {&L.wv, v_.data()}}, xp, n, pool);
        } else {
            matmul(L.wq, xn_.data(), n, q_.data(), pool);
            matmul(L.wk, xn_.data(), n, k_.data(), pool);
            matmul(L.wv, xn_.data(), n, v_.data(), pool);
        }
        // Biases, q/k norms, rotation of q and k by their positions, then k and v of every batch
        // token stored in its cell before any token attends (a token sees the earlier tokens of
        // its own sequence from the same batch). A local layer of a sliding-window cache writes
        // to the token's local cell instead.
        const KvLayerRef kvl = kv.layer(il);
        const bool own_cells = hp_.is_swa(il) && kv.n_local_cells() > 0;
        for_tokens(n, pool, [&](int64_t t0, int64_t t1) {
            if (!L.bq.empty()) {
                for (int64_t t = t0; t < t1; ++t) {
                    kernels::add_inplace(&q_[t * n_q], L.bq.data(), n_q);
                    kernels::add_inplace(&k_[t * n_kv], L.bk.data(), n_kv);
                    kernels::add_inplace(&v_[t * n_kv], L.bv.data(), n_kv);
                }
            }
            rotate_qk(t0, t1, il);
            for (int64_t t = t0; t < t1; ++t) {
                const size_t off = static_cast<size_t>(own_cells ? batch[t].local_cell : batch[t].cell) * kvl.row_bytes;
                for (int32_t h = 0; h < hp_.n_head_kv; ++h) {
                    const size_t hoff = off + h * ggml_row_size(kvl.type, hd);
                    kernels::quantize_row(kvl.type, &k_[t * n_kv + h * hd], kvl.k + hoff, hd);
                    kernels::quantize_row(kvl.type, &v_[t * n_kv + h * hd], kvl.v + hoff, hd);
                }
            }
        });
        attention(batch, kvl, hp_.is_swa(il), own_cells, pool);
        // x += attn Wo (gemma3: normed by post_attention_norm first)
        matmul(L.wo, attn_.data(), n, xn_.data(), pool);
        // Residual, then 3. feed-forward: x += W_down (act(W_gate xn) * (W_up xn)); act is silu,
        // or GELU for gemma3.
        for_tokens(n, pool, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) {
                if (!L.post_attn_norm.empty()) {
                    kernels::rmsnorm(&xn_[t * n_embd], &xn_[t * n_embd], L.post_attn_norm.data(), n_embd, hp_.rms_eps);
                }
                kernels::add_inplace(&x_[t * n_embd], &xn_[t * n_embd], n_embd);
                kernels::rmsnorm(&xn_[t * n_embd], &x_[t * n_embd], L.ffn_norm.data(), n_embd, hp_.rms_eps);
            }
        });
        if (kernels::vec_dot_type(L.w_gate.type) == kernels::vec_dot_type(L.w_up.type)) {
            const PreparedRows xp = prepare_rows(L.w_gate.type, xn_.data(), n, n_embd, xp_.data(), pool);
            matmul_products({{&L.w_gate, gate_.data()}, {&L.w_up, up_.data()}}, xp, n, pool);
        } else {
            matmul(L.w_gate, xn_.data(), n, gate_.data(), pool);
            matmul(L.w_up, xn_.data(), n, up_.data(), pool);
        }
        for_tokens(n, pool, [&](int64_t t0, int64_t t1) {
            if (hp_.arch == Arch::gemma3) {
                kernels::gelu(&gate_[t0 * n_ff], &gate_[t0 * n_ff], (t1 - t0) * n_ff);
                for (int64_t i = t0 * n_ff; i < t1 * n_ff; ++i) gate_[i] *= up_[i];
            } else {
                for (int64_t t = t0; t < t1; ++t) kernels::silu_mul(&gate_[t * n_ff], &gate_[t * n_ff], &up_[t * n_ff], n_ff);
            }
        });
        matmul(L.w_down, gate_.data(), n, xn_.data(), pool);
        for_tokens(n, pool, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) {
                if (!L.post_ffn_norm.empty()) {
                    kernels::rmsnorm(&xn_[t * n_embd], &xn_[t * n_embd], L.post_ffn_norm.data(), n_embd, hp_.rms_eps);
                }
                kernels::add_inplace(&x_[t * n_embd], &xn_[t * n_embd], n_embd);
            }
        });
    }

    // 4. Final norm and output head, only for the tokens that want logits.
    int64_t n_out = 0;
    for (const BatchToken& bt : batch) n_out += bt.want_logits ? 1 : 0;
    if (n_out == 0) return {};
    out_rows_.resize(static_cast<size_t>(n_out) * n_embd);
    int64_t o = 0;
    for (int64_t t = 0; t < n; ++t) {
        if (!batch[t].want_logits) continue;
        kernels::rmsnorm(&out_rows_[o * n_embd], &x_[t * n_embd], w_.output_norm.data(), n_embd, hp_.rms_eps);
        ++o;
    }
    if (hidden_out) hidden_out->assign(out_rows_.begin(), out_rows_.end());
    if (!compute_logits) return {};
    const int64_t n_vocab = w_.output.n_rows;
    logits_out.resize(static_cast<size_t>(n_out) * n_vocab);
    if (n_out > cap_tokens_) ensure_capacity(n_out, max_visible, pool.size());
    matmul(w_.output, out_rows_.data(), n_out, logits_out.data(), pool);
    if (hp_.final_logit_softcap > 0.0f) {
        const float c = hp_.final_logit_softcap;
        for (float& l : logits_out) l = c * std::tanh(l / c);
    }
    return {};
}

}  // namespace kvrag::model
