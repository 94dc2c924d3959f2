#include "tools/model_bench.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>

#include "kvcache/kv_store.h"
#include "model/forward.h"

namespace kvrag::tools {
namespace {

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double matrix_bytes(const model::MatrixRef& m) {
    return static_cast<double>(m.row_bytes) * static_cast<double>(m.n_rows);
}

// The token at `pos`: any fixed spread over the vocabulary does, speed does not depend on it.
int32_t bench_token(int32_t pos, int32_t n_vocab) {
    return static_cast<int32_t>((static_cast<int64_t>(pos) * 7919 + 13) % n_vocab);
}

// Writing the depth prefix in slices keeps the forward pass's scratch (it grows with the batch)
// at the size a real chunked prefill would use; the cells come out the same either way.
constexpr int32_t kFillSlice = 512;

// Everything a test needs, allocated once for the whole plan.
struct Bench {
    const model::ModelHParams& hp;
    model::ForwardPass fwd;
    kvcache::KvStore kv;
    ThreadPool& pool;
    std::vector<int32_t> cells;  // (n_cells) 0, 1, 2, ...: position p lives in cell p
    std::vector<float> logits;
    std::vector<model::BatchToken> batch;

    // Tokens at positions [p0, p1) as one batch; each sees every cell before it and its own.
    void fill_batch(int32_t p0, int32_t p1, bool last_wants_logits) {
        batch.resize(static_cast<size_t>(p1 - p0));
        for (int32_t pos = p0; pos < p1; ++pos) {
            batch[pos - p0] = {bench_token(pos, hp.n_vocab), pos, pos, cells.data(), pos + 1,
                               last_wants_logits && pos + 1 == p1};
        }
    }

    // Untimed: the context the tests at `depth` sit on.
    Result<void> fill_depth(int32_t depth) {
        for (int32_t p0 = 0; p0 < depth; p0 += kFillSlice) {
            fill_batch(p0, std::min(depth, p0 + kFillSlice), false);
            if (auto r = fwd.run(batch, kv, pool, logits, nullptr, false); !r) return r;
        }
        return {};
    }

    // One timed run of `t`, in tokens/s. Prefill is one batch whose last token gets logits, as
    // a request's prompt does; decode is n_tokens single-token steps, each with logits.
    Result<double> time_once(const BenchTest& t) {
        const int32_t p0 = t.depth, p1 = t.depth + t.n_tokens;
        if (t.kind == BenchKind::prefill) {
            fill_batch(p0, p1, true);
            const double t0 = now_s();
            if (auto r = fwd.run(batch, kv, pool, logits); !r) return r.error();
            return t.n_tokens / (now_s() - t0);
        }
        const double t0 = now_s();
        for (int32_t pos = p0; pos < p1; ++pos) {
            fill_batch(pos, pos + 1, true);
            if (auto r = fwd.run(batch, kv, pool, logits); !r) return r.error();
        }
        return t.n_tokens / (now_s() - t0);
    }
};

}  // namespace

std::string BenchTest::name() const {
    std::string s = (kind == BenchKind::prefill ? "pp" : "tg") + std::to_string(n_tokens);
    if (depth > 0) s += "_depth" + std::to_string(depth);
    return s;
}

BenchPlan plan_bench(const std::vector<int32_t>& n_prompt, const std::vector<int32_t>& n_gen,
                     const std::vector<int32_t>& depths, int32_t n_ctx) {
    BenchPlan plan;
    auto add = [&](BenchKind kind, int32_t n, int32_t depth) {
        const BenchTest t{kind, n, depth};
        // In 64 bits: depth and n are each checked by the caller, not their sum.
        if (static_cast<int64_t>(depth) + n > n_ctx) {
            plan.skipped.push_back(t);
        } else {
            plan.tests.push_back(t);
            plan.n_cells = std::max(plan.n_cells, t.n_cells());
        }
    };
    for (int32_t depth : depths) {
        for (int32_t n : n_prompt) add(BenchKind::prefill, n, depth);
        for (int32_t n : n_gen) add(BenchKind::decode, n, depth);
    }
    return plan;
}

double BenchResult::median() const {
    const size_t n = tok_s.size();
    return n % 2 ? tok_s[n / 2] : 0.5 * (tok_s[n / 2 - 1] + tok_s[n / 2]);
}

double decode_weight_bytes(const model::ModelWeights& w, const model::ModelHParams& hp) {
    double bytes = matrix_bytes(w.output);
    if (!w.tied_output) bytes += static_cast<double>(w.tok_embd.row_bytes);
    for (const auto& l : w.layers) {
        for (const auto* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) bytes += matrix_bytes(*m);
        bytes += static_cast<double>(l.bq.size() + l.bk.size() + l.bv.size()) * sizeof(float);
    }
    // Two norms per layer and the final one, f32.
    bytes += static_cast<double>(2 * hp.n_layer + 1) * hp.n_embd * sizeof(float);
    return bytes;
}

double measure_read_bandwidth(ThreadPool& pool) {
    const size_t n = (1024ull << 20) / sizeof(uint64_t);
    std::vector<uint64_t> buf(n);
    std::iota(buf.begin(), buf.end(), 0);
    // Each thread's sum is stored so the compiler cannot drop the loads.
    std::vector<uint64_t> sums(static_cast<size_t>(pool.size()));
    using Lane = uint64_t __attribute__((vector_size(16)));  // SSE2: every x86-64 has it
    constexpr int64_t kLine = 8;                               // uint64_t per 64-byte line
    constexpr int64_t kAhead = 2048 / sizeof(uint64_t);        // prefetch distance, as the kernels'
    double best = 0.0;
    for (int rep = 0; rep < 3; ++rep) {
        const double t0 = now_s();
        pool.run([&](int ith, int nth) {
            auto [b, e] = ThreadPool::split(static_cast<int64_t>(n / kLine), ith, nth);
            b *= kLine;
            e *= kLine;
            // Four vector accumulators (one 64-byte line per step), so the adds do not serialise.
            Lane s0{}, s1{}, s2{}, s3{};
            for (int64_t i = b; i < e; i += kLine) {
                if (i + kAhead < e) __builtin_prefetch(&buf[static_cast<size_t>(i + kAhead)]);
                Lane v[4];
                std::memcpy(v, &buf[static_cast<size_t>(i)], sizeof(v));
                s0 += v[0];
                s1 += v[1];
                s2 += v[2];
                s3 += v[3];
            }
            const Lane s = s0 + s1 + s2 + s3;
            sums[ith] = s[0] + s[1];
        });
        const double dt = now_s() - t0;
        best = std::max(best, static_cast<double>(n * sizeof(uint64_t)) / dt / 1e9);
    }
    return best;
}

Result<void> run_bench(const model::Model& m, const BenchPlan& plan, int32_t reps, GgmlType kv_type, ThreadPool& pool,
                       const std::function<void(const BenchResult&)>& on_result) {
    if (plan.tests.empty()) return {};
    const auto& hp = m.hparams();
    auto geo = kvcache::make_geometry(hp, kv_type);
    if (!geo) return geo.error();
    Bench b{hp, model::ForwardPass(hp, m.weights()), kvcache::KvStore(*geo, plan.n_cells), pool, {}, {}, {}};
    b.cells.resize(static_cast<size_t>(plan.n_cells));
    std::iota(b.cells.begin(), b.cells.end(), 0);
    const double weight_bytes = decode_weight_bytes(m.weights(), hp);
    const double cell_bytes = static_cast<double>(geo->bytes_per_cell());

    // Warm-up, untimed: one decode step pages in every weight and starts the pool's threads,
    // so the first test's first repetition is not charged for either.
    if (auto r = b.time_once({BenchKind::decode, 1, 0}); !r) return r.error();

    int32_t filled = -1;
    for (const BenchTest& t : plan.tests) {
        if (t.depth != filled) {
            if (auto r = b.fill_depth(t.depth); !r) return r;
            filled = t.depth;
        }
        BenchResult res{t, {}, 0.0};
        for (int32_t rep = 0; rep < reps; ++rep) {
            auto tok_s = b.time_once(t);
            if (!tok_s) return tok_s.error();
            res.tok_s.push_back(*tok_s);
        }
        std::sort(res.tok_s.begin(), res.tok_s.end());
        if (t.kind == BenchKind::decode) {
            // Step i (of n) attends over depth + i + 1 cells, K and V in every layer: on average
            // depth + (n + 1) / 2 of them.
            const double mean_cells = t.depth + (t.n_tokens + 1) / 2.0;
            res.bytes_per_token = weight_bytes + mean_cells * cell_bytes;
        }
        on_result(res);
    }
    return {};
}

}  // namespace kvrag::tools
