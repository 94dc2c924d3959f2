// The endpoints of encoder work: POST /v1/embeddings, and POST /v1/rerank and /rerank (the
// shapes are in openai_api.h and rerank_api.h). Embeddings come from the embedding model when
// the server has one (--embed-model, or -m of an embedding model), else from the chat model's
// mean-pooled hidden state; a request naming the chat model gets the chat model's. Rerank
// needs a reranker (--rerank-model). Every computation is a scheduler job: encoder models run
// as encode jobs (no KV cells, grouped with the encode jobs queued behind them), the chat model
// as embed jobs.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "server/server_state.h"

namespace httplib {
class Server;
}

namespace kvrag::server {

void add_encoder_routes(httplib::Server& http, ServerState& state);

// One L2-normalised vector per text, from the embedding model when loaded (its default
// pooling), else from the chat model (mean pooling). `alive` false cancels while queued.
// Errors: request_invalid (no model can embed), request_too_long (a text past the model's
// context, with the numbers), the scheduler's queue errors.
Result<std::vector<std::vector<float>>> embed_texts(ServerState& state, std::span<const std::string> texts,
                                                    const std::function<bool()>& alive = nullptr);

// One relevance score per document (higher is better; the reranker's raw output), in input
// order. A (query, document) pair past the reranker's context is cut to it at the end (the
// document's tail goes). Errors: request_model_not_found when no reranker is loaded, the
// scheduler's queue errors. n_tokens: the tokens read, when given.
Result<std::vector<float>> rerank_documents(ServerState& state, std::string_view query, std::span<const std::string> documents,
                                            const std::function<bool()>& alive = nullptr, int64_t* n_tokens = nullptr);

}  // namespace kvrag::server
