// `kvrag bench`: prefill and decode throughput of a model over lists of lengths and context
// depths, with min / median / max over the repetitions, and decode's bytes read per token set
// against this machine's measured memory bandwidth (decode streams every weight and the KV
// cells it attends to once per token, so bandwidth bounds it). The measuring is in
// tools/model_bench; this file parses the lists and prints the table and the summary line.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <map>

#include "cli/commands.h"
#include "core/thread_pool.h"
#include "kvcache/kv_store.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "tools/grammar_bench.h"
#include "tools/model_bench.h"

namespace kvrag::cli {
namespace {

// The longest length or depth a list may hold; a context past this is not a laptop's.
constexpr int32_t kMaxListValue = 1 << 20;

// "64,512,2048" -> {64, 512, 2048}, duplicates dropped (they would repeat a summary key).
// Errc::cli_usage naming the option and the offending element otherwise: not a whole
// number, below `lo`, above kMaxListValue, or empty (",," or a trailing comma).
Result<std::vector<int32_t>> parse_list(const std::string& option, const std::string& text, int32_t lo) {
    std::vector<int32_t> out;
    size_t start = 0;
    while (true) {
        const size_t comma = std::min(text.find(',', start), text.size());
        const std::string item = text.substr(start, comma - start);
        int64_t v = 0;
        const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
        if (item.empty() || ec != std::errc() || end != item.data() + item.size() || v < lo || v > kMaxListValue) {
            return Error{Errc::cli_usage, option + " '" + text + "': '" + item + "' is not a whole number in [" +
                                              std::to_string(lo) + ", " + std::to_string(kMaxListValue) +
                                              "]; give a comma-separated list such as 64,512"};
        }
        if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(static_cast<int32_t>(v));
        if (comma == text.size()) break;
        start = comma + 1;
    }
    return out;
}

// The weight type holding the most matrix bytes: what people call the model's quantisation
// (a Q8_0 file still has F32 norms, a Q4_K_M one a Q6_K head).
std::string main_weight_type(const model::Model& m) {
    std::map<std::string, uint64_t> bytes;
    for (const auto& t : m.file().tensors()) {
        if (t.ne.size() >= 2) bytes[std::string(ggml_type_name(t.type))] += t.n_bytes;
    }
    std::string best = "none";
    uint64_t most = 0;
    for (const auto& [name, n] : bytes) {
        if (n > most) most = n, best = name;
    }
    std::transform(best.begin(), best.end(), best.begin(), [](unsigned char c) { return std::tolower(c); });
    return best;
}

// The file name, with anything that would split a key=value token replaced.
std::string summary_model_name(const std::string& path) {
    std::string s = std::filesystem::path(path).filename().string();
    for (char& c : s) {
        if (c == ' ' || c == '\t' || c == '=') c = '_';
    }
    return s.empty() ? "model" : s;
}

}  // namespace

Runner add_bench(CLI::App& app) {
    struct Args {
        std::string model_path;
        std::string n_prompt = "128", n_gen = "64", depth = "0";
        int32_t reps = 3, threads = 0, n_ctx = 0;
        std::string kv_type = "f16";
        std::string grammar;
    };
    auto a = std::make_shared<Args>();
    app.add_option("-m,--model", a->model_path, "GGUF model file")->required();
    app.add_option("-p,--n-prompt", a->n_prompt, "prompt lengths for the prefill tests, e.g. 64,512,2048 (default 128)");
    app.add_option("-n,--n-gen", a->n_gen, "token counts for the decode tests, e.g. 64,128 (default 64)");
    app.add_option("-d,--depth", a->depth, "tokens already in the context under each test, e.g. 0,2048 (default 0)");
    app.add_option("-r,--reps", a->reps, "repetitions per test (default 3)")->check(CLI::Range(1, 100));
    app.add_option("-t,--threads", a->threads, "threads; default physical cores")->check(CLI::Range(0, 1024));
    app.add_option("-c,--ctx", a->n_ctx, "context limit in tokens (default and maximum: the model's)")
        ->check(CLI::Range(0, kMaxListValue));
    app.add_option("--kv-type", a->kv_type, "KV cell type: f16, q8_0 or f32 (default f16)");
    app.add_option("--grammar", a->grammar,
                   "also time constrained decoding's per-token work (token mask + matcher) for a JSON answer: "
                   "json (a schema grammar) or json_object");
    return [a] {
        // Every argument is checked before the model is loaded: a typo should not cost a load.
        auto n_prompt = parse_list("-p", a->n_prompt, 1);
        if (!n_prompt) return fail(n_prompt.error());
        auto n_gen = parse_list("-n", a->n_gen, 1);
        if (!n_gen) return fail(n_gen.error());
        auto depths = parse_list("--depth", a->depth, 0);
        if (!depths) return fail(depths.error());
        auto kv_type = parse_kv_type(a->kv_type);
        if (!kv_type) return fail(kv_type.error());
        if (!a->grammar.empty() && a->grammar != "json" && a->grammar != "json_object") {
            return fail(Error{Errc::cli_usage, "--grammar '" + a->grammar + "' is not one of json, json_object"});
        }
        warn_threads(a->threads);

        auto m = model::Model::load(a->model_path, terminal_progress("loading"));
        if (!m) return fail(m.error());
        const auto& hp = (*m)->hparams();
        auto geo = kvcache::make_geometry(hp, *kv_type);
        if (!geo) return fail(geo.error());
        // The model's trained context bounds every test; --ctx may only lower it.
        const int32_t n_ctx = a->n_ctx > 0 ? std::min(a->n_ctx, hp.n_ctx_train) : hp.n_ctx_train;
        const tools::BenchPlan plan = tools::plan_bench(*n_prompt, *n_gen, *depths, n_ctx);
        for (const auto& t : plan.skipped) {
            std::fprintf(stderr, "kvrag: warning: skipping %s: depth %d + %d tokens = %d > context %d%s\n",
                         t.name().c_str(), t.depth, t.n_tokens, t.n_cells(), n_ctx,
                         n_ctx < hp.n_ctx_train ? " (--ctx)" : " (the model's)");
        }

        ThreadPool pool(a->threads > 0 ? a->threads : physical_core_count());
        const std::string type = main_weight_type(**m);
        std::printf("model: %s (%.2f M params, %.1f MiB weights, %s; decode reads %.1f MiB of weights per token)\n",
                    a->model_path.c_str(), static_cast<double>((*m)->n_params()) / 1e6,
                    static_cast<double>((*m)->weight_bytes()) / 1048576.0, type.c_str(),
                    tools::decode_weight_bytes((*m)->weights(), hp) / 1048576.0);
        std::printf("threads: %d, kv: %s (%zu bytes per cell), context: %d, repetitions: %d\n", pool.size(),
                    a->kv_type.c_str(), geo->bytes_per_cell(), n_ctx, a->reps);
        std::fflush(stdout);
        // Measured first, so each decode row can print its share of it as soon as it is done.
        const double bw = tools::measure_read_bandwidth(pool);
        std::printf("memory read bandwidth: %.1f GB/s (best of 3 passes over 1 GiB, read as the decode kernels read)\n\n", bw);
        std::printf("%-18s %7s %11s %11s %11s %11s %9s %6s\n", "test", "depth", "min t/s", "median t/s", "max t/s",
                    "MiB/token", "GB/s", "of bw");
        std::fflush(stdout);

        std::vector<tools::BenchResult> results;
        auto r = tools::run_bench(**m, plan, a->reps, *kv_type, pool, [&](const tools::BenchResult& res) {
            const std::string label = (res.test.kind == tools::BenchKind::prefill ? "pp" : "tg") + std::to_string(res.test.n_tokens);
            std::printf("%-18s %7d %11.2f %11.2f %11.2f", label.c_str(), res.test.depth, res.min(), res.median(), res.max());
            if (res.test.kind == tools::BenchKind::decode) {
                const double gbs = res.bytes_per_token * res.median() / 1e9;
                std::printf(" %11.2f %9.2f %5.0f%%", res.bytes_per_token / 1048576.0, gbs, 100.0 * gbs / bw);
            }
            std::printf("\n");
            std::fflush(stdout);
            results.push_back(res);
        });
        if (!r) return fail(r.error());
        if (pool.overruns() > 0) {
            // Adaptive participation (core/thread_pool.h) kept the figures from collapsing, but
            // they are not what this machine does when it is free.
            std::fprintf(stderr,
                         "kvrag: note: %llu thread-pool runs waited over 0.5 ms for a worker that was not running, and %llu "
                         "runs used fewer than %d threads: the machine is busy or -t exceeds its free cores\n",
                         static_cast<unsigned long long>(pool.overruns()), static_cast<unsigned long long>(pool.reduced_runs()),
                         pool.size());
        }

        // One line, one token per figure, keys fixed by the test names: what scripts grep.
        std::string line = "bench model=" + summary_model_name(a->model_path) + " type=" + type + " kv=" + a->kv_type +
                           " threads=" + std::to_string(pool.size()) + " reps=" + std::to_string(a->reps);
        char num[64];
        for (const auto& res : results) {
            std::snprintf(num, sizeof(num), "%.2f", res.median());
            line += " " + res.test.name() + "=" + num;
        }
        std::snprintf(num, sizeof(num), "%.2f", bw);
        line += std::string(" bw_gbs=") + num;
        if (!a->grammar.empty()) {
            // A step whose drawn token fits the grammar pays the fast figure; one that does not
            // pays the full mask as well. The _est figures assume every step is masked (the
            // worst case: a model that never follows the grammar, e.g. random weights).
            auto tok = tokenizer::Tokenizer::from_gguf((*m)->file());
            if (!tok) return fail(tok.error());
            auto g = tools::run_grammar_bench(**tok, a->grammar, a->reps);
            if (!g) return fail(g.error());
            std::printf("\ngrammar %s: %d tokens replayed, full mask + advance %.1f us/token median (min %.1f, max %.1f); "
                        "with the per-state mask cache %.1f us/token; drawn token checked without a mask %.1f us/token; "
                        "vocabulary trie built in %.1f ms\n",
                        g->kind.c_str(), g->n_tokens, g->median_us(), g->us_per_token.front(), g->us_per_token.back(), g->cached_median_us(),
                        g->fast_median_us(), g->build_ms);
            std::snprintf(num, sizeof(num), "%.1f", g->median_us());
            line += " grammar_" + g->kind + "_us_per_token=" + num;
            std::snprintf(num, sizeof(num), "%.1f", g->cached_median_us());
            line += " grammar_" + g->kind + "_cached_us_per_token=" + num;
            std::snprintf(num, sizeof(num), "%.1f", g->fast_median_us());
            line += " grammar_" + g->kind + "_fast_us_per_token=" + num;
            for (const auto& res : results) {
                if (res.test.kind != tools::BenchKind::decode || res.median() <= 0) continue;
                const double tg_us = 1e6 / res.median();
                std::snprintf(num, sizeof(num), "%.2f", 1e6 / (tg_us + g->median_us()));
                line += " " + res.test.name() + "_grammar_" + g->kind + "_est=" + num;
            }
        }
        for (const auto& res : results) {
            if (res.test.kind != tools::BenchKind::decode) continue;
            std::snprintf(num, sizeof(num), "%.3f", res.bytes_per_token * res.median() / 1e9 / bw);
            line += " " + res.test.name() + "_bw_ratio=" + num;
        }
        line += " pool_overruns=" + std::to_string(pool.overruns());
        std::printf("\n%s\n", line.c_str());
        return 0;
    };
}

}  // namespace kvrag::cli
