// kvrag embed / kvrag rerank: embeddings and rerank scores from the command line.
//
// embed prints one JSON array of floats per input text, one per line, in input order (an
// array of per-token arrays with --pooling none). BERT-family models run through the
// Embedder; a decoder (chat) model falls back to Engine::embed, its mean-pooled hidden state,
// as the server and memory pipeline do without an embedding model.
// rerank prints one score per document, one per line, in input order.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "engine/context_size.h"
#include "engine/embedder.h"
#include "engine/engine.h"

namespace kvrag::cli {
namespace {

// Shortest decimal that reads back to the same float, so the printed vectors are exact.
std::string format_float(float v) {
    // JSON has no inf/nan; they cannot come out of a finite model, but never print invalid JSON.
    if (!std::isfinite(v)) return "null";
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof(buf), v);
    return std::string(buf, r.ptr);
}

void print_array(const float* v, int64_t n) {
    std::string line = "[";
    for (int64_t i = 0; i < n; ++i) {
        if (i) line += ',';
        line += format_float(v[i]);
    }
    line += ']';
    std::fputs(line.c_str(), stdout);
}

struct EmbedArgs {
    std::string model_path;
    std::vector<std::string> texts;
    std::string pooling;  // empty = the model's
    bool no_normalize = false;
    int32_t threads = 0;
};

Result<std::unique_ptr<engine::Embedder>> make_embedder(engine::LoadedModel loaded, int32_t threads) {
    engine::EmbedderConfig cfg;
    cfg.n_threads = threads;
    return engine::Embedder::create(std::move(loaded), cfg);
}

// A chat model: Engine::embed, mean or last pooling of the final hidden state, normalised.
int run_decoder_embed(engine::LoadedModel loaded, const EmbedArgs& a) {
    engine::Pooling pooling = engine::Pooling::mean;
    if (!a.pooling.empty()) {
        auto p = engine::parse_pooling(a.pooling);
        if (!p) {
            return fail(Error{Errc::cli_usage, "--pooling " + a.pooling + ": a " + loaded.model->hparams().arch_name +
                                                   " (decoder) model embeds with mean or last pooling only"});
        }
        pooling = *p;
    }
    if (a.no_normalize) {
        return fail(Error{Errc::cli_usage, "--no-normalize: a " + loaded.model->hparams().arch_name +
                                               " (decoder) model's embeddings are always L2-normalised; use a BERT-family "
                                               "embedding model for raw vectors"});
    }
    engine::EngineConfig cfg;
    cfg.n_threads = a.threads;
    cfg.n_ctx = engine::default_context_size(loaded.model->hparams(), 0).n_ctx;
    auto eng = engine::Engine::create(std::move(loaded), cfg);
    if (!eng) return fail(eng.error());
    for (const std::string& t : a.texts) {
        auto v = (*eng)->embed(t, pooling);
        if (!v) return fail(v.error());
        print_array(v->data(), static_cast<int64_t>(v->size()));
        std::fputc('\n', stdout);
    }
    return 0;
}

int run_embed(const EmbedArgs& a) {
    warn_threads(a.threads);
    auto loaded = engine::LoadedModel::load(a.model_path, terminal_progress("loading " + a.model_path));
    if (!loaded) return fail(loaded.error());
    if (!loaded->model->is_encoder()) return run_decoder_embed(std::move(*loaded), a);
    engine::EmbedOptions opt;
    if (!a.pooling.empty()) {
        auto p = model::parse_pooling_type(a.pooling);
        if (!p) return fail(Error{Errc::cli_usage, "--pooling: " + p.error().message});
        opt.pooling = *p;
    }
    opt.normalize = !a.no_normalize;
    auto emb = make_embedder(std::move(*loaded), a.threads);
    if (!emb) return fail(emb.error());
    auto r = (*emb)->embed(a.texts, opt);
    if (!r) return fail(r.error());
    const bool per_token = opt.pooling.value_or((*emb)->default_pooling()) == model::PoolingType::none;
    const int64_t dim = (*emb)->dim();
    for (const auto& v : r->vectors) {
        if (per_token) {
            std::fputc('[', stdout);
            for (int64_t row = 0; row * dim < static_cast<int64_t>(v.size()); ++row) {
                if (row) std::fputc(',', stdout);
                print_array(v.data() + row * dim, dim);
            }
            std::fputc(']', stdout);
        } else {
            print_array(v.data(), static_cast<int64_t>(v.size()));
        }
        std::fputc('\n', stdout);
    }
    return 0;
}

struct RerankArgs {
    std::string model_path;
    std::string query;
    std::vector<std::string> documents;
    bool hf_pairs = false;
    int32_t threads = 0;
};

int run_rerank(const RerankArgs& a) {
    warn_threads(a.threads);
    auto loaded = engine::LoadedModel::load(a.model_path, terminal_progress("loading " + a.model_path));
    if (!loaded) return fail(loaded.error());
    auto emb = make_embedder(std::move(*loaded), a.threads);
    if (!emb) return fail(emb.error());
    auto r = (*emb)->rerank(a.query, a.documents, a.hf_pairs ? engine::PairLayout::hf : engine::PairLayout::server);
    if (!r) return fail(r.error());
    for (float s : r->scores) std::printf("%s\n", format_float(s).c_str());
    return 0;
}

}  // namespace

Runner add_embed(CLI::App& app) {
    auto a = std::make_shared<EmbedArgs>();
    app.add_option("-m,--model", a->model_path, "GGUF model: a BERT-family embedding model (bert, nomic-bert), or a chat model "
                                                "(mean-pooled hidden state)")
        ->required();
    app.add_option("texts", a->texts, "texts to embed; one JSON array per text is printed, one per line")->required();
    app.add_option("--pooling", a->pooling, "none, mean, cls, last or rank; default: the model's own (pooling_type)");
    app.add_flag("--no-normalize", a->no_normalize, "print the pooled vectors without L2 normalisation");
    app.add_option("-t,--threads", a->threads, "threads; default: physical cores")->check(CLI::Range(0, 1024));
    return [a] { return run_embed(*a); };
}

Runner add_rerank(CLI::App& app) {
    auto a = std::make_shared<RerankArgs>();
    app.add_option("-m,--model", a->model_path, "GGUF reranker (bert with a classifier head, e.g. bge-reranker)")->required();
    app.add_option("query", a->query, "the query")->required();
    app.add_option("documents", a->documents, "documents to score; one score per line, in this order")->required();
    app.add_flag("--hf-pairs", a->hf_pairs,
                 "lay pairs out as [CLS] query [SEP] document [SEP] (Hugging Face, llama-embedding) instead of "
                 "llama-server's [CLS] query [SEP] document");
    app.add_option("-t,--threads", a->threads, "threads; default: physical cores")->check(CLI::Range(0, 1024));
    return [a] { return run_rerank(*a); };
}

}  // namespace kvrag::cli
