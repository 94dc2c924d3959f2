// `kvrag bench`: prefill and decode throughput of a model, set against this machine's measured
// memory bandwidth (decode streams every weight once per token, so bandwidth bounds it).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <numeric>

#include "cli/commands.h"
#include "core/thread_pool.h"
#include "kvcache/kv_store.h"
#include "model/forward.h"
#include "model/model.h"

namespace kvrag::cli {
namespace {

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Read bandwidth in GB/s: every thread sums its share of a buffer much larger than the caches.
double measure_read_bandwidth(ThreadPool& pool) {
    const size_t n = (512ull << 20) / sizeof(uint64_t);
    std::vector<uint64_t> buf(n);
    std::iota(buf.begin(), buf.end(), 0);
    std::vector<uint64_t> sums(pool.size());
    double best = 0.0;
    for (int rep = 0; rep < 3; ++rep) {
        const double t0 = now_s();
        pool.run([&](int ith, int nth) {
            auto [b, e] = ThreadPool::split(static_cast<int64_t>(n), ith, nth);
            uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            int64_t i = b;
            for (; i + 4 <= e; i += 4) { s0 += buf[i]; s1 += buf[i + 1]; s2 += buf[i + 2]; s3 += buf[i + 3]; }
            for (; i < e; ++i) s0 += buf[i];
            sums[ith] = s0 + s1 + s2 + s3;
        });
        const double dt = now_s() - t0;
        best = std::max(best, static_cast<double>(n * sizeof(uint64_t)) / dt / 1e9);
    }
    return best;
}

}  // namespace

Runner add_bench(CLI::App& app) {
    struct Args {
        std::string model_path;
        int32_t n_prompt = 128, n_gen = 64, reps = 3, threads = 0;
        std::string kv_type = "f16";
    };
    auto a = std::make_shared<Args>();
    app.add_option("-m,--model", a->model_path, "GGUF model file")->required();
    app.add_option("-p,--n-prompt", a->n_prompt, "prompt tokens for the prefill test")->check(CLI::Range(1, 1 << 16));
    app.add_option("-n,--n-gen", a->n_gen, "tokens for the decode test")->check(CLI::Range(1, 1 << 16));
    app.add_option("-r,--reps", a->reps, "repetitions (median reported)")->check(CLI::Range(1, 100));
    app.add_option("-t,--threads", a->threads, "threads; default physical cores")->check(CLI::Range(0, 1024));
    app.add_option("--kv-type", a->kv_type, "KV cell type");
    return [a] {
        warn_threads(a->threads);
        auto m = model::Model::load(a->model_path, terminal_progress("loading"));
        if (!m) return fail(m.error());
        const auto& hp = (*m)->hparams();
        auto kv_type = parse_kv_type(a->kv_type);
        if (!kv_type) return fail(kv_type.error());
        auto geo = kvcache::make_geometry(hp, *kv_type);
        if (!geo) return fail(geo.error());
        const int32_t n_cells = a->n_prompt + a->n_gen;
        kvcache::KvStore kv(*geo, n_cells);
        ThreadPool pool(a->threads > 0 ? a->threads : physical_core_count());
        model::ForwardPass fwd(hp, (*m)->weights());
        std::vector<int32_t> cells(n_cells);
        std::iota(cells.begin(), cells.end(), 0);
        std::vector<float> logits;
        std::vector<double> pp, tg;
        for (int rep = 0; rep < a->reps; ++rep) {
            std::vector<model::BatchToken> batch(a->n_prompt);
            for (int32_t i = 0; i < a->n_prompt; ++i) {
                batch[i] = {static_cast<int32_t>((i * 7919 + rep) % hp.n_vocab), i, i, cells.data(), i + 1, i + 1 == a->n_prompt};
            }
            double t0 = now_s();
            if (auto r = fwd.run(batch, kv, pool, logits); !r) return fail(r.error());
            pp.push_back(a->n_prompt / (now_s() - t0));
            t0 = now_s();
            for (int32_t i = 0; i < a->n_gen; ++i) {
                const int32_t pos = a->n_prompt + i;
                model::BatchToken bt{static_cast<int32_t>((pos * 31) % hp.n_vocab), pos, pos, cells.data(), pos + 1, true};
                if (auto r = fwd.run({&bt, 1}, kv, pool, logits); !r) return fail(r.error());
            }
            tg.push_back(a->n_gen / (now_s() - t0));
        }
        std::sort(pp.begin(), pp.end());
        std::sort(tg.begin(), tg.end());
        const double pp_med = pp[pp.size() / 2], tg_med = tg[tg.size() / 2];
        const double bw = measure_read_bandwidth(pool);
        // A decode step reads every weight once, except the embedding table, of which it reads
        // one row (unless the output head is tied to it).
        const auto& w = (*m)->weights();
        const double emb_bytes = w.tied_output ? 0.0 : static_cast<double>(w.tok_embd.row_bytes) * static_cast<double>(w.tok_embd.n_rows);
        const double bytes_per_token = static_cast<double>((*m)->weight_bytes()) - emb_bytes;
        std::map<std::string, int> types;
        for (const auto& t : (*m)->file().tensors()) types[std::string(ggml_type_name(t.type))] += 1;
        std::string type_list;
        for (const auto& [n, c] : types) type_list += (type_list.empty() ? "" : ",") + n + "x" + std::to_string(c);
        std::printf("model: %s (%.2f M params, %.1f MiB weights, %.1f MiB read per decoded token, %s)\n", a->model_path.c_str(),
                    (*m)->n_params() / 1e6, static_cast<double>((*m)->weight_bytes()) / 1048576.0, bytes_per_token / 1048576.0,
                    type_list.c_str());
        std::printf("threads: %d, kv: %s\n", pool.size(), a->kv_type.c_str());
        std::printf("pp%d: %.1f tok/s (median of %d)\n", a->n_prompt, pp_med, a->reps);
        std::printf("tg%d: %.1f tok/s (median of %d)\n", a->n_gen, tg_med, a->reps);
        std::printf("memory read bandwidth: %.1f GB/s; decode streams %.1f GB/s of weights = %.0f%% of it\n", bw,
                    bytes_per_token * tg_med / 1e9, 100.0 * bytes_per_token * tg_med / 1e9 / bw);
        return 0;
    };
}

}  // namespace kvrag::cli
