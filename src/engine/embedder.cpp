#include "engine/embedder.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace kvrag::engine {

const char* embedder_kind_name(EmbedderKind k) { return k == EmbedderKind::reranker ? "reranker" : "embedding"; }

int64_t EmbedResult::total_tokens() const { return std::accumulate(n_tokens.begin(), n_tokens.end(), int64_t{0}); }
int64_t RerankResult::total_tokens() const { return std::accumulate(n_tokens.begin(), n_tokens.end(), int64_t{0}); }

void l2_normalize(float* v, int64_t n) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += v[i] * v[i];  // float product, double sum
    const double norm = std::sqrt(sum);
    const float scale = norm > 0.0 ? static_cast<float>(1.0 / norm) : 0.0f;
    for (int64_t i = 0; i < n; ++i) v[i] *= scale;
}

Result<std::unique_ptr<Embedder>> Embedder::create(LoadedModel model, const EmbedderConfig& config) {
    const model::ModelHParams& hp = model.model->hparams();
    if (!model.model->is_encoder()) {
        return Error{Errc::model_unsupported_arch,
                     model.model->file().path() + ": architecture '" + hp.arch_name +
                         "' is a text-generation (decoder) model, not an embedding or rerank model (supported: bert, "
                         "nomic-bert); pass it with -m, and give a BERT-family GGUF to --embed-model / --rerank-model "
                         "(without one, embeddings come from the chat model's mean-pooled hidden state)"};
    }
    if (config.n_threads < 0 || config.n_threads > 1024) {
        return Error{Errc::engine_bad_config, "thread count " + std::to_string(config.n_threads) + " is outside 0..1024"};
    }
    if (config.max_pass_tokens < 1) {
        return Error{Errc::engine_bad_config, "max_pass_tokens " + std::to_string(config.max_pass_tokens) + " must be >= 1"};
    }
    return std::unique_ptr<Embedder>(new Embedder(std::move(model), config));
}

Embedder::Embedder(LoadedModel model, const EmbedderConfig& config) : model_(std::move(model)), config_(config) {
    config_.n_threads = config.n_threads > 0 ? config.n_threads : physical_core_count();
    pool_ = std::make_unique<ThreadPool>(config_.n_threads);
    forward_ = std::make_unique<model::EncoderForward>(model_.model->hparams(), model_.model->encoder_weights());
}

EmbedderKind Embedder::kind() const {
    return default_pooling() == PoolingType::rank ? EmbedderKind::reranker : EmbedderKind::embedding;
}

std::vector<int32_t> Embedder::tokenize(std::string_view text) const {
    // add_special: [CLS] ... [SEP]; parse_special: as llama-server and llama-embedding tokenize.
    return model_.tokenizer->encode(text, /*add_special=*/true, /*parse_special=*/true);
}

std::vector<int32_t> Embedder::tokenize_pair(std::string_view query, std::string_view document, PairLayout layout) const {
    const tokenizer::Tokenizer& tok = *model_.tokenizer;
    std::vector<int32_t> ids;
    if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());  // [CLS]
    const auto q = tok.encode(query, false, true);
    ids.insert(ids.end(), q.begin(), q.end());
    if (tok.sep_id() >= 0) ids.push_back(tok.sep_id());
    const auto d = tok.encode(document, false, true);
    ids.insert(ids.end(), d.begin(), d.end());
    if (layout == PairLayout::hf && tok.sep_id() >= 0) ids.push_back(tok.sep_id());
    return ids;
}

Result<EmbedResult> Embedder::embed(std::span<const std::string> texts, const EmbedOptions& options) {
    std::vector<std::vector<int32_t>> inputs;
    inputs.reserve(texts.size());
    for (const std::string& t : texts) inputs.push_back(tokenize(t));
    return embed_tokens(inputs, options);
}

Result<EmbedResult> Embedder::embed_tokens(std::span<const std::vector<int32_t>> inputs, const EmbedOptions& options) {
    const PoolingType pooling = options.pooling.value_or(default_pooling());
    if (pooling == PoolingType::rank && !model_.model->encoder_weights().has_rank_head()) {
        return Error{Errc::request_invalid, "pooling rank needs a classifier head; " + model_.model->file().path() +
                                                " is an embedding model (use mean, cls or last)"};
    }
    return run(inputs, pooling, options.normalize && pooling != PoolingType::rank);
}

std::vector<std::vector<int32_t>> Embedder::rerank_pairs(std::string_view query, std::span<const std::string> documents, PairLayout layout,
                                                         bool truncate) const {
    std::vector<std::vector<int32_t>> pairs;
    pairs.reserve(documents.size());
    const auto limit = static_cast<size_t>(std::max(1, max_tokens()));
    for (const std::string& d : documents) {
        pairs.push_back(tokenize_pair(query, d, layout));
        if (truncate && pairs.back().size() > limit) pairs.back().resize(limit);
    }
    return pairs;
}

Result<RerankResult> Embedder::rerank(std::string_view query, std::span<const std::string> documents, PairLayout layout, bool truncate) {
    if (!model_.model->encoder_weights().has_rank_head()) {
        return Error{Errc::request_invalid, model_.model->file().path() +
                                                " is an embedding model without a classifier head (cls.output); rerank "
                                                "needs a reranker such as bge-reranker"};
    }
    if (documents.empty()) return Error{Errc::request_invalid, "rerank needs at least one document"};
    auto r = run(rerank_pairs(query, documents, layout, truncate), PoolingType::rank, false);
    if (!r) return r.error();
    RerankResult out;
    out.scores.reserve(documents.size());
    for (const auto& v : r->vectors) out.scores.push_back(v.front());  // the first output label
    out.n_tokens = std::move(r->n_tokens);
    return out;
}

Result<EmbedResult> Embedder::run(std::span<const std::vector<int32_t>> inputs, PoolingType pooling, bool normalize) {
    const int32_t n_ctx = max_tokens();
    EmbedResult res;
    res.vectors.resize(inputs.size());
    res.n_tokens.resize(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
        const size_t n = inputs[i].size();
        if (n == 0) return Error{Errc::request_invalid, "input " + std::to_string(i) + " is empty (0 tokens)"};
        if (n > static_cast<size_t>(n_ctx)) {
            return Error{Errc::request_too_long, "input " + std::to_string(i) + " has " + std::to_string(n) +
                                                     " tokens > the model's context " + std::to_string(n_ctx) +
                                                     "; split it into smaller chunks"};
        }
        res.n_tokens[i] = static_cast<int32_t>(n);
    }
    // Shortest first, so a pass holds texts of similar length (no padding is involved, but
    // the attention work per pass stays even and long texts do not crowd out short ones).
    std::vector<size_t> order(inputs.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return inputs[a].size() < inputs[b].size(); });

    const int32_t width = forward_->output_dim(pooling);
    std::vector<int32_t> tokens, starts;
    std::vector<float> out;
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t at = 0; at < order.size();) {
        // Pack [at, end): at least one input, then more while the pass stays within budget.
        tokens.clear();
        starts.assign(1, 0);
        size_t end = at;
        while (end < order.size()) {
            const auto& in = inputs[order[end]];
            if (end > at && tokens.size() + in.size() > static_cast<size_t>(config_.max_pass_tokens)) break;
            tokens.insert(tokens.end(), in.begin(), in.end());
            starts.push_back(static_cast<int32_t>(tokens.size()));
            ++end;
        }
        if (auto r = forward_->run(tokens, starts, pooling, *pool_, out); !r) return r.error();
        for (size_t j = at; j < end; ++j) {
            const size_t s = j - at;
            std::vector<float>& v = res.vectors[order[j]];
            if (pooling == PoolingType::none) {
                v.assign(out.begin() + static_cast<int64_t>(starts[s]) * width, out.begin() + static_cast<int64_t>(starts[s + 1]) * width);
            } else {
                v.assign(out.begin() + static_cast<int64_t>(s) * width, out.begin() + static_cast<int64_t>(s + 1) * width);
            }
            if (normalize) {
                for (size_t row = 0; row < v.size(); row += static_cast<size_t>(width)) l2_normalize(&v[row], width);
            }
        }
        at = end;
    }
    return res;
}

}  // namespace kvrag::engine
