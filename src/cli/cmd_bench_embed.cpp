// kvrag bench-embed: ingestion throughput of an embedding model, in tokens/s, for batches of
// chunk-sized texts (what `kvrag ingest` sends), to compare with llama-embedding on the same
// model and thread count.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "engine/embedder.h"

namespace kvrag::cli {
namespace {

struct BenchEmbedArgs {
    std::string model_path;
    int32_t n_texts = 64;
    int32_t n_tokens = 256;   // per text, [CLS] and [SEP] included (a typical RAG chunk)
    int32_t reps = 3;
    int32_t threads = 0;
    int32_t pass_tokens = engine::EmbedderConfig{}.max_pass_tokens;
};

// Text i: words from a fixed list, rotated by i so texts differ; tokenized, cut to n_tokens - 1
// tokens and closed with [SEP], so every text has exactly n_tokens tokens.
std::vector<std::vector<int32_t>> make_inputs(const engine::Embedder& e, int32_t n_texts, int32_t n_tokens) {
    static const char* const kWords[] = {"the", "cache", "model", "answers", "a", "question", "with", "document",
                                          "chunks", "and", "search", "results", "from", "memory", "of", "context"};
    constexpr int kN = sizeof(kWords) / sizeof(kWords[0]);
    const int32_t sep = e.model().tokenizer->sep_id();
    std::vector<std::vector<int32_t>> out;
    for (int32_t i = 0; i < n_texts; ++i) {
        std::string text;
        for (int32_t w = 0; w < 2 * n_tokens; ++w) text += std::string(kWords[(w * 7 + i) % kN]) + " ";
        std::vector<int32_t> ids = e.tokenize(text);
        ids.resize(static_cast<size_t>(std::max(1, n_tokens - 1)));
        if (sep >= 0) ids.push_back(sep);
        out.push_back(std::move(ids));
    }
    return out;
}

int run_bench_embed(const BenchEmbedArgs& a) {
    warn_threads(a.threads);
    auto loaded = engine::LoadedModel::load(a.model_path, terminal_progress("loading " + a.model_path));
    if (!loaded) return fail(loaded.error());
    engine::EmbedderConfig cfg;
    cfg.n_threads = a.threads;
    cfg.max_pass_tokens = a.pass_tokens;
    auto emb = engine::Embedder::create(std::move(*loaded), cfg);
    if (!emb) return fail(emb.error());
    engine::Embedder& e = **emb;
    const int32_t n_tokens = std::min(a.n_tokens, e.max_tokens());
    const auto inputs = make_inputs(e, a.n_texts, n_tokens);
    // Pooling mean for throughput (a reranker's rank head is one more tiny matmul per text).
    const engine::EmbedOptions opt{e.kind() == engine::EmbedderKind::reranker ? model::PoolingType::cls : model::PoolingType::mean, true};
    if (auto warm = e.embed_tokens(std::span(inputs).first(1), opt); !warm) return fail(warm.error());
    double best = 0.0, total_s = 0.0;
    int64_t total_tokens = 0;
    for (int32_t r = 0; r < a.reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        auto res = e.embed_tokens(inputs, opt);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!res) return fail(res.error());
        const int64_t n = res->total_tokens();
        total_tokens += n;
        total_s += s;
        best = std::max(best, static_cast<double>(n) / s);
        std::printf("rep %d: %lld tokens in %.3f s = %.1f tokens/s\n", r + 1, static_cast<long long>(n), s, static_cast<double>(n) / s);
    }
    std::printf("bench-embed model=%s arch=%s texts=%d tokens_per_text=%d pass_tokens=%d threads=%d reps=%d "
                "tokens_per_s=%.1f best_tokens_per_s=%.1f\n",
                a.model_path.c_str(), e.model().model->hparams().arch_name.c_str(), a.n_texts, n_tokens, a.pass_tokens,
                e.n_threads(), a.reps, total_s > 0 ? static_cast<double>(total_tokens) / total_s : 0.0, best);
    return 0;
}

}  // namespace

Runner add_bench_embed(CLI::App& app) {
    auto a = std::make_shared<BenchEmbedArgs>();
    app.add_option("-m,--model", a->model_path, "GGUF embedding or rerank model (bert, nomic-bert)")->required();
    app.add_option("--texts", a->n_texts, "texts per batch")->capture_default_str()->check(CLI::Range(1, 1 << 16));
    app.add_option("--tokens", a->n_tokens, "tokens per text ([CLS] and [SEP] included; capped at the model's context)")
        ->capture_default_str()
        ->check(CLI::Range(2, 1 << 16));
    app.add_option("-r,--reps", a->reps, "repetitions")->capture_default_str()->check(CLI::Range(1, 1000));
    app.add_option("--pass-tokens", a->pass_tokens, "tokens per forward pass")->capture_default_str()->check(CLI::Range(1, 1 << 20));
    app.add_option("-t,--threads", a->threads, "threads; default: physical cores")->check(CLI::Range(0, 1024));
    return [a] { return run_bench_embed(*a); };
}

}  // namespace kvrag::cli
