#include "server/encoder_routes.h"

#include <httplib.h>

#include <algorithm>
#include <memory>

#include "server/client_connection.h"
#include "server/http_io.h"
#include "server/middleware.h"
#include "server/openai_api.h"
#include "server/rerank_api.h"

namespace kvrag::server {
namespace {

// The names /v1/embeddings answers to: every loaded model that can embed. The embedding
// model's name picks it, the chat model's name picks the chat model.
ApiLimits embedding_limits(const ServerState& st) {
    ApiLimits l = st.limits;
    l.strict_model_names = st.cfg.strict_model_names;
    if (const EncoderModel* m = st.embed_model.get()) {
        if (l.model_id.empty()) {
            l.model_id = m->id;
        } else {
            l.model_aliases.push_back(m->id);
        }
        l.model_aliases.insert(l.model_aliases.end(), m->aliases.begin(), m->aliases.end());
    }
    return l;
}

bool names_chat_model(const ServerState& st, const std::string& name) {
    if (!st.engine || name.empty()) return false;
    if (st.embed_model && st.embed_model->answers_to(name)) return false;
    return name == st.model_id || std::find(st.aliases.begin(), st.aliases.end(), name) != st.aliases.end();
}

// Embeddings from an encoder model through the scheduler.
Result<std::vector<std::vector<float>>> encode(ServerState& st, EncoderModel& m, std::vector<std::vector<int32_t>> inputs,
                                               const engine::EmbedOptions& options, const std::function<bool()>& alive) {
    return st.scheduler->encode(*m.embedder, std::move(inputs), options, "embedding", alive);
}

// Embeddings from the chat model (one embed job per input, mean or last pooling).
Result<std::vector<std::vector<float>>> chat_embed(ServerState& st, const std::vector<std::vector<int32_t>>& inputs,
                                                   engine::Pooling pooling, const std::function<bool()>& alive) {
    std::vector<std::vector<float>> out;
    for (const auto& input : inputs) {
        auto v = st.scheduler->embed(input, pooling, alive);
        if (!v) return v.error();
        out.push_back(std::move(*v));
    }
    return out;
}

void handle_embeddings(ServerState& st, const httplib::Request& req, httplib::Response& res) {
    json body;
    if (auto e = parse_body(req.body, body)) return send_error(res, *e);
    EmbeddingRequest er;
    const ApiLimits limits = embedding_limits(st);
    if (auto e = parse_embedding_request(body, limits, er)) return send_error(res, *e);
    const bool use_chat = !st.embed_model || names_chat_model(st, er.model);
    if (use_chat && !st.engine) {
        return send_error(res, Error{Errc::request_invalid, "this server has no model that embeds (it serves only the reranker '" +
                                                                (st.rerank_model ? st.rerank_model->id : std::string()) +
                                                                "'); start it with --embed-model EMBED.gguf"},
                          "model");
    }
    auto conn = std::make_shared<ClientConnection>(req);
    const auto alive = [conn] { return conn->alive(); };
    std::vector<std::vector<int32_t>> inputs = std::move(er.token_inputs);
    Result<std::vector<std::vector<float>>> vectors = std::vector<std::vector<float>>{};
    std::string model_name;
    if (use_chat) {
        engine::Pooling pooling = engine::Pooling::mean;
        if (!er.pooling.empty()) {
            auto p = engine::parse_pooling(er.pooling);
            if (!p) return send_error(res, p.error(), "pooling");
            pooling = *p;
        }
        engine::GenerateOptions tok_opt;  // BOS as the model says, special texts as plain text
        for (const auto& t : er.texts) inputs.push_back(st.engine->tokenize(t, tok_opt));
        vectors = chat_embed(st, inputs, pooling, alive);
        model_name = st.model_id;
    } else {
        EncoderModel& m = *st.embed_model;
        engine::EmbedOptions options;
        if (!er.pooling.empty()) {
            auto p = model::parse_pooling_type(er.pooling);
            if (!p) return send_error(res, p.error(), "pooling");
            if (*p == model::PoolingType::none || *p == model::PoolingType::rank) {
                return send_error(res, ApiError::bad_request("'pooling' '" + er.pooling + "' is not available on /v1/embeddings, which returns one vector per input: use mean, cls or last", "pooling"));
            }
            options.pooling = *p;
        }
        for (const auto& t : er.texts) inputs.push_back(m.embedder->tokenize(t));
        vectors = encode(st, m, inputs, options, alive);
        model_name = m.id;
    }
    if (!vectors) return send_error(res, vectors.error(), "input");
    int64_t n_tokens = 0;
    for (const auto& in : inputs) n_tokens += static_cast<int64_t>(in.size());
    log_tokens(n_tokens);
    send_json(res, 200, embedding_response(er.model.empty() ? model_name : er.model, *vectors, er.base64, n_tokens));
}

void handle_rerank(ServerState& st, const httplib::Request& req, httplib::Response& res) {
    json body;
    if (auto e = parse_body(req.body, body)) return send_error(res, *e);
    RerankRequest rr;
    if (auto e = parse_rerank_request(body, rr)) return send_error(res, *e);
    if (!st.rerank_model) {
        return send_error(res, Error{Errc::request_model_not_found, "this server has no rerank model; start it with --rerank-model RERANK.gguf"},
                          "model");
    }
    if (!rr.model.empty() && !st.rerank_model->answers_to(rr.model) && st.limits.strict_model_names) {
        return send_error(res, Error{Errc::request_model_not_found, "The model '" + rr.model + "' does not exist; this server reranks with '" +
                                                                        st.rerank_model->id + "'"},
                          "model");
    }
    auto conn = std::make_shared<ClientConnection>(req);
    int64_t n_tokens = 0;
    auto scores = rerank_documents(st, rr.query, rr.documents, [conn] { return conn->alive(); }, &n_tokens);
    if (!scores) return send_error(res, scores.error(), "documents");
    log_tokens(n_tokens);
    send_json(res, 200, rerank_response(rr, st.rerank_model->id, *scores, n_tokens));
}

}  // namespace

Result<std::vector<std::vector<float>>> embed_texts(ServerState& st, std::span<const std::string> texts, const std::function<bool()>& alive) {
    if (st.embed_model) {
        std::vector<std::vector<int32_t>> inputs;
        for (const auto& t : texts) inputs.push_back(st.embed_model->embedder->tokenize(t));
        return encode(st, *st.embed_model, std::move(inputs), engine::EmbedOptions{}, alive);
    }
    if (!st.engine) return Error{Errc::request_invalid, "this server has no model that embeds; start it with --embed-model EMBED.gguf"};
    std::vector<std::vector<int32_t>> inputs;
    engine::GenerateOptions tok_opt;
    for (const auto& t : texts) inputs.push_back(st.engine->tokenize(t, tok_opt));
    return chat_embed(st, inputs, engine::Pooling::mean, alive);
}

Result<std::vector<float>> rerank_documents(ServerState& st, std::string_view query, std::span<const std::string> documents,
                                            const std::function<bool()>& alive, int64_t* n_tokens) {
    if (!st.rerank_model) return Error{Errc::request_model_not_found, "this server has no rerank model; start it with --rerank-model RERANK.gguf"};
    engine::Embedder& e = *st.rerank_model->embedder;
    // A pair past the reranker's context is cut at its end (the document's tail), as Jina's and
    // Cohere's rerank APIs do by default: a long document is judged by its beginning.
    std::vector<std::vector<int32_t>> pairs = e.rerank_pairs(query, documents, engine::PairLayout::server, /*truncate=*/true);
    int64_t n = 0;
    for (const auto& p : pairs) n += static_cast<int64_t>(p.size());
    if (n_tokens) *n_tokens = n;
    engine::EmbedOptions options;
    options.pooling = model::PoolingType::rank;
    options.normalize = false;
    auto rows = st.scheduler->encode(e, std::move(pairs), options, "rerank", alive);
    if (!rows) return rows.error();
    std::vector<float> scores;
    for (size_t i = 0; i < rows->size(); ++i) {
        const auto& row = (*rows)[i];
        if (row.empty()) return Error{Errc::engine_internal, "the reranker returned no score for document " + std::to_string(i)};
        scores.push_back(row[0]);
    }
    return scores;
}

void add_encoder_routes(httplib::Server& http, ServerState& st) {
    using Req = const httplib::Request&;
    using Res = httplib::Response&;
    http.Post("/v1/embeddings", [&st](Req req, Res res) { handle_embeddings(st, req, res); });
    http.Post("/v1/rerank", [&st](Req req, Res res) { handle_rerank(st, req, res); });
    http.Post("/rerank", [&st](Req req, Res res) { handle_rerank(st, req, res); });
}

}  // namespace kvrag::server
