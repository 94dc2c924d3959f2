#include "model/encoder_forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/ops.h"
#include "kernels/quant.h"
#include "model/matmul.h"

namespace kvrag::model {

namespace {

// Query rows whose scores are held at once: scratch grows with kQueryBlock * len instead of
// len^2 (an 8192-token text would need 256 MiB per thread for all its scores).
constexpr int32_t kQueryBlock = 64;

// Floats of attention scratch per thread: scores of one block of query rows, (kQueryBlock,
// len), and the head's V transposed, (head_dim, len).
size_t attention_floats(int32_t max_seq, int32_t head_dim) {
    return static_cast<size_t>(max_seq) * kQueryBlock + static_cast<size_t>(max_seq) * head_dim;
}

}  // namespace

EncoderForward::EncoderForward(const ModelHParams& hp, const EncoderWeights& w) : hp_(hp), w_(w) {}

int32_t EncoderForward::output_dim(PoolingType pooling) const {
    return pooling == PoolingType::rank ? hp_.n_cls_out : hp_.n_embd;
}

void EncoderForward::ensure_capacity(int64_t n, int32_t max_seq, int n_threads) {
    const int64_t n_embd = hp_.n_embd, n_ff = hp_.n_ff;
    if (n > cap_tokens_) {
        cap_tokens_ = n;
        x_.assign(n * n_embd, 0.0f);
        y_.assign(n * n_embd, 0.0f);
        q_.assign(n * n_embd, 0.0f);
        k_.assign(n * n_embd, 0.0f);
        v_.assign(n * n_embd, 0.0f);
        if (!w_.layers.empty() && w_.layers[0].wqkv.data) qkv_.assign(n * 3 * n_embd, 0.0f);
        attn_.assign(n * n_embd, 0.0f);
        up_.assign(n * n_ff, 0.0f);
        if (!w_.layers.empty() && w_.layers[0].w_gate.data) gate_.assign(n * n_ff, 0.0f);
        xp_.assign(prepared_rows_bytes(n, std::max(n_embd, n_ff)), 0);
        seq_of_.resize(static_cast<size_t>(n));
    }
    if (max_seq > cap_seq_ || n_threads > cap_threads_) {
        cap_seq_ = std::max(cap_seq_, max_seq);
        cap_threads_ = std::max(cap_threads_, n_threads);
        att_scratch_.assign(static_cast<size_t>(cap_threads_) * attention_floats(cap_seq_, hp_.head_dim), 0.0f);
        rope_.assign(static_cast<size_t>(cap_seq_) * hp_.head_dim, 0.0f);
    }
}

// The products go through model/matmul.h, as the decoder's do: F32, F16, BF16, Q8_0 and the
// K-quants all work (packed matrices on the tiled kernels), and every element is computed the
// same way whatever the batch or thread count.
void EncoderForward::matmul(const MatrixRef& W, const float* x, int64_t n, float* y, ThreadPool& pool) {
    matmul_products({{&W, y}}, prepare_rows(W.type, x, n, W.n_cols, xp_.data(), pool), n, pool);
}

void EncoderForward::add_bias(float* y, const std::vector<float>& b, int64_t n, int64_t width) {
    if (b.empty()) return;
    for (int64_t t = 0; t < n; ++t) kernels::add_inplace(y + t * width, b.data(), width);
}

void EncoderForward::residual_norm(float* x, const float* y, const std::vector<float>& w, const std::vector<float>& b,
                                   int64_t n, ThreadPool& pool) {
    const int64_t n_embd = hp_.n_embd;
    pool.run([&](int ith, int nth) {
        auto [t0, t1] = ThreadPool::split(n, ith, nth);
        for (int64_t t = t0; t < t1; ++t) {
            kernels::add_inplace(x + t * n_embd, y + t * n_embd, n_embd);
            kernels::layernorm(x + t * n_embd, x + t * n_embd, w.data(), b.data(), n_embd, hp_.norm_eps);
        }
    });
}

void EncoderForward::attention(std::span<const int32_t> seq_starts, int64_t n, ThreadPool& pool) {
    const int32_t hd = hp_.head_dim, n_head = hp_.n_head;
    const int64_t n_embd = hp_.n_embd;
    const size_t row_bytes = static_cast<size_t>(n_embd) * sizeof(float);
    const int64_t n_items = (static_cast<int64_t>(seq_starts.size()) - 1) * n_head;  // (sequence, head) pairs
    const size_t per_thread = attention_floats(cap_seq_, hd);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    pool.run([&](int ith, int nth) {
        float* scores = att_scratch_.data() + ith * per_thread;
        float* vt = scores + static_cast<size_t>(cap_seq_) * kQueryBlock;
        // Round-robin: sequences differ in length. One thread computes a whole (sequence, head),
        // so which thread runs it never changes the result.
        for (int64_t j = ith; j < n_items; j += nth) {
            const int64_t s = j / n_head;
            const int32_t h = static_cast<int32_t>(j % n_head);
            const int32_t s0 = seq_starts[s], len = seq_starts[s + 1] - s0;
            const float* kh = &k_[s0 * n_embd + h * hd];
            const float* vh = &v_[s0 * n_embd + h * hd];
            // V transposed, (head_dim, len), so that P V is again one dot product per element.
            for (int32_t c = 0; c < len; ++c) {
                for (int32_t d = 0; d < hd; ++d) vt[static_cast<size_t>(d) * len + c] = vh[c * n_embd + d];
            }
            for (int32_t t0 = 0; t0 < len; t0 += kQueryBlock) {
                const int32_t nb = std::min(kQueryBlock, len - t0);
                const float* qh = &q_[(s0 + t0) * n_embd + h * hd];
                // scores (nb, len) = q k^T, with the sequence's K rows as the rows of an F32
                // matmul (the reference's f32 mul_mat; no cache, so nothing is rounded to f16).
                kernels::matmul_rows(GgmlType::F32, hd, kh, row_bytes, qh, row_bytes, nb, scores, len, 0, len);
                // softmax(scale * scores) per query row: every key of the sequence is visible.
                for (int32_t t = 0; t < nb; ++t) {
                    float* row = scores + static_cast<size_t>(t) * len;
                    for (int32_t c = 0; c < len; ++c) row[c] *= scale;
                    kernels::softmax_fast(row, len);
                }
                // out (nb, head_dim) = P V
                kernels::matmul_rows(GgmlType::F32, len, vt, static_cast<size_t>(len) * sizeof(float), scores,
                                     static_cast<size_t>(len) * sizeof(float), nb, &attn_[(s0 + t0) * n_embd + h * hd],
                                     n_embd, 0, hd);
            }
        }
    });
}

Result<void> EncoderForward::run(std::span<const int32_t> tokens, std::span<const int32_t> seq_starts, PoolingType pooling,
                                 ThreadPool& pool, std::vector<float>& out) {
    out.clear();
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (seq_starts.size() < 2 || seq_starts.front() != 0 || seq_starts.back() != n) {
        return Error{Errc::request_invalid, "encoder pass: sequence offsets must run from 0 to " + std::to_string(n)};
    }
    const int64_t n_seqs = static_cast<int64_t>(seq_starts.size()) - 1;
    int32_t max_seq = 0;
    for (int64_t s = 0; s < n_seqs; ++s) {
        const int32_t len = seq_starts[s + 1] - seq_starts[s];
        if (len < 1) return Error{Errc::request_invalid, "encoder pass: sequence " + std::to_string(s) + " is empty"};
        if (len > hp_.n_ctx_train) {
            return Error{Errc::request_too_long, "input of " + std::to_string(len) + " tokens > the model's context " +
                                                     std::to_string(hp_.n_ctx_train) + "; split the text into smaller chunks"};
        }
        max_seq = std::max(max_seq, len);
    }
    const int64_t n_vocab = w_.tok_embd.n_rows;
    for (int32_t id : tokens) {
        if (id < 0 || id >= n_vocab) {
            return Error{Errc::tokenizer_bad_token, "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                                        std::to_string(n_vocab) + ")"};
        }
    }
    if (pooling == PoolingType::rank && !w_.has_rank_head()) {
        return Error{Errc::model_bad_hparams, "pooling rank needs a classifier head (cls.output.weight); this " +
                                                  hp_.arch_name + " model has none: it embeds, it does not rerank"};
    }
    ensure_capacity(n, max_seq, pool.size());
    const int64_t n_embd = hp_.n_embd, n_ff = hp_.n_ff;
    const int32_t hd = hp_.head_dim;
    for (int64_t s = 0; s < n_seqs; ++s) {
        for (int32_t t = seq_starts[s]; t < seq_starts[s + 1]; ++t) seq_of_[t] = static_cast<int32_t>(s);
    }

    // 1. Input embedding: (token row + token-type row 0) + position row, then LayerNorm.
    std::vector<float> pos_row(static_cast<size_t>(n_embd));
    for (int64_t t = 0; t < n; ++t) {
        float* xt = &x_[t * n_embd];
        kernels::dequantize_row(w_.tok_embd.type, w_.tok_embd.data + static_cast<size_t>(tokens[t]) * w_.tok_embd.row_bytes, xt,
                                n_embd);
        if (!w_.type_embd0.empty()) kernels::add_inplace(xt, w_.type_embd0.data(), n_embd);
        if (w_.pos_embd.data) {
            const int64_t pos = t - seq_starts[seq_of_[t]];
            kernels::dequantize_row(w_.pos_embd.type, w_.pos_embd.data + static_cast<size_t>(pos) * w_.pos_embd.row_bytes,
                                    pos_row.data(), n_embd);
            kernels::add_inplace(xt, pos_row.data(), n_embd);
        }
        kernels::layernorm(xt, xt, w_.embd_norm.data(), w_.embd_norm_b.data(), n_embd, hp_.norm_eps);
    }
    // RoPE angles per position (nomic-bert), shared by every sequence, layer and head.
    const bool rope = hp_.arch == Arch::nomic_bert;
    if (rope) {
        for (int32_t p = 0; p < max_seq; ++p) {
            kernels::rope_table(&rope_[static_cast<size_t>(p) * hd], static_cast<float>(p), hd, hp_.rope_freq_base,
                                hp_.rope_freq_scale, nullptr);
        }
    }

    for (int il = 0; il < hp_.n_layer; ++il) {
        const EncoderLayerWeights& L = w_.layers[il];
        // 2. q, k, v projections (one activation preparation for all three when types agree).
        if (L.wqkv.data) {
            matmul(L.wqkv, x_.data(), n, qkv_.data(), pool);
            add_bias(qkv_.data(), L.bqkv, n, 3 * n_embd);
            for (int64_t t = 0; t < n; ++t) {
                const float* row = &qkv_[t * 3 * n_embd];
                std::memcpy(&q_[t * n_embd], row, n_embd * sizeof(float));
                std::memcpy(&k_[t * n_embd], row + n_embd, n_embd * sizeof(float));
                std::memcpy(&v_[t * n_embd], row + 2 * n_embd, n_embd * sizeof(float));
            }
        } else if (kernels::vec_dot_type(L.wq.type) == kernels::vec_dot_type(L.wk.type) &&
                   kernels::vec_dot_type(L.wq.type) == kernels::vec_dot_type(L.wv.type)) {
            const PreparedRows xp = prepare_rows(L.wq.type, x_.data(), n, n_embd, xp_.data(), pool);
            matmul_products({{&L.wq, q_.data()}, {&L.wk, k_.data()}, {&L.wv, v_.data()}}, xp, n, pool);
        } else {
            matmul(L.wq, x_.data(), n, q_.data(), pool);
            matmul(L.wk, x_.data(), n, k_.data(), pool);
            matmul(L.wv, x_.data(), n, v_.data(), pool);
        }
        add_bias(q_.data(), L.bq, n, n_embd);
        add_bias(k_.data(), L.bk, n, n_embd);
        add_bias(v_.data(), L.bv, n, n_embd);
        if (rope) {
            for (int64_t t = 0; t < n; ++t) {
                const float* cs = &rope_[static_cast<size_t>(t - seq_starts[seq_of_[t]]) * hd];
                for (int32_t h = 0; h < hp_.n_head; ++h) {
                    kernels::rope_apply(&q_[t * n_embd + h * hd], cs, hd, /*neox=*/true);
                    kernels::rope_apply(&k_[t * n_embd + h * hd], cs, hd, /*neox=*/true);
                }
            }
        }
        // 3. Bidirectional attention within each sequence, output projection, post-norm.
        attention(seq_starts, n, pool);
        matmul(L.wo, attn_.data(), n, y_.data(), pool);
        add_bias(y_.data(), L.bo, n, n_embd);
        residual_norm(x_.data(), y_.data(), L.attn_out_norm, L.attn_out_norm_b, n, pool);

        // 4. Feed-forward, post-norm.
        if (L.w_gate.data && kernels::vec_dot_type(L.w_gate.type) == kernels::vec_dot_type(L.w_up.type)) {
            const PreparedRows xp = prepare_rows(L.w_up.type, x_.data(), n, n_embd, xp_.data(), pool);
            matmul_products({{&L.w_gate, gate_.data()}, {&L.w_up, up_.data()}}, xp, n, pool);
        } else {
            if (L.w_gate.data) matmul(L.w_gate, x_.data(), n, gate_.data(), pool);
            matmul(L.w_up, x_.data(), n, up_.data(), pool);
        }
        add_bias(up_.data(), L.b_up, n, n_ff);
        pool.run([&](int ith, int nth) {
            auto [t0, t1] = ThreadPool::split(n, ith, nth);
            for (int64_t t = t0; t < t1; ++t) {
                float* u = &up_[t * n_ff];
                if (L.w_gate.data) {
                    kernels::silu_mul(u, &gate_[t * n_ff], u, n_ff);
                } else {
                    kernels::gelu(u, u, n_ff);
                }
            }
        });
        matmul(L.w_down, up_.data(), n, y_.data(), pool);
        add_bias(y_.data(), L.b_down, n, n_embd);
        residual_norm(x_.data(), y_.data(), L.out_norm, L.out_norm_b, n, pool);
    }

    // 5. Pooling.
    if (pooling == PoolingType::none) {
        out.assign(x_.begin(), x_.begin() + n * n_embd);
        return {};
    }
    head_.resize(static_cast<size_t>(n_seqs) * n_embd);
    for (int64_t s = 0; s < n_seqs; ++s) {
        const int32_t s0 = seq_starts[s], s1 = seq_starts[s + 1];
        float* dst = &head_[s * n_embd];
        if (pooling == PoolingType::mean) {
            // Each token weighs 1/len, summed per component (the reference multiplies by a
            // 1/len matrix); double keeps the sum independent of long-sequence rounding.
            const float inv = 1.0f / static_cast<float>(s1 - s0);
            for (int64_t d = 0; d < n_embd; ++d) {
                double acc = 0.0;
                for (int32_t t = s0; t < s1; ++t) acc += static_cast<double>(x_[t * n_embd + d] * inv);
                dst[d] = static_cast<float>(acc);
            }
        } else {
            const int32_t t = pooling == PoolingType::last ? s1 - 1 : s0;  // cls and rank: the first token
            std::memcpy(dst, &x_[static_cast<int64_t>(t) * n_embd], n_embd * sizeof(float));
        }
    }
    if (pooling != PoolingType::rank) {
        out = head_;
        return {};
    }
    // Rank head: tanh(cls h + cls_b) when there is a dense layer, then cls.output.
    const float* h = head_.data();
    if (w_.cls.data) {
        matmul(w_.cls, head_.data(), n_seqs, y_.data(), pool);
        add_bias(y_.data(), w_.cls_b, n_seqs, n_embd);
        for (int64_t i = 0; i < n_seqs * n_embd; ++i) y_[i] = std::tanh(y_[i]);
        h = y_.data();
    }
    const int64_t n_out = w_.cls_out.n_rows;
    out.resize(static_cast<size_t>(n_seqs * n_out));
    matmul(w_.cls_out, h, n_seqs, out.data(), pool);
    add_bias(out.data(), w_.cls_out_b, n_seqs, n_out);
    return {};
}

}  // namespace kvrag::model
