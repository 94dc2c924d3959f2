// What the server offers to modules that add their own routes (the memory/RAG module with
// `kvrag serve --memory DIR`). See docs/server.md, "Extending the server".
//
// An extension registers routes on http() in add_routes(), before the server listens; its
// handlers then run behind the same API-key check, readiness check and request log as the
// built-in endpoints. engine() and the generation helpers are usable from on_ready() and from
// request handlers (never from add_routes(): the model is loaded after the port is bound).
// Errors are answered with send_error() from server/http_io.h, the mapping every route uses.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chat/chat_template.h"
#include "core/error.h"
#include "engine/embedder.h"
#include "engine/engine.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace kvrag::server {

class ServerContext {
public:
    virtual ~ServerContext() = default;

    virtual httplib::Server& http() = 0;
    // The chat model's engine, or null when the server runs only encoder models: tokenize() is
    // thread-safe. Do not call start()/step()/embed(): work goes through submit() and embed()
    // below, which share the scheduler's queue and limits.
    virtual engine::Engine* engine() = 0;
    virtual const std::string& model_id() const = 0;
    // The embedding model (--embed-model) and the reranker (--rerank-model), or null. Use their
    // tokenize()/max_tokens()/dim(); compute through embed_texts() and rerank().
    virtual const engine::Embedder* embedding_model() const = 0;
    virtual const engine::Embedder* rerank_model() const = 0;

    // Blocking generation through the scheduler: queued, admitted and batched like an HTTP
    // request. `alive` (e.g. client_alive(req)) is polled about every 50 ms; false cancels and
    // frees the request's cells. Errors: request_queue_full, request_queue_timeout (no
    // room within the queue timeout), request_too_long (with the numbers), request_invalid, engine errors.
    virtual Result<engine::GenerateResult> submit(std::vector<int32_t> prompt, const engine::GenerateOptions& options,
                                                  const std::function<bool()>& alive = nullptr) = 0;
    // The same, calling on_piece with each piece of text as the scheduler produces it (false
    // cancels the request). The default runs submit() and hands over the whole text at once,
    // for contexts that cannot stream (test fakes).
    virtual Result<engine::GenerateResult> submit_streaming(std::vector<int32_t> prompt, const engine::GenerateOptions& options,
                                                            const engine::TextCallback& on_piece,
                                                            const std::function<bool()>& alive = nullptr) {
        auto r = submit(std::move(prompt), options, alive);
        if (r && on_piece && !r->text.empty()) on_piece(r->text, r->tokens.empty() ? -1 : r->tokens.back());
        return r;
    }
    // Embedding by the chat model through the scheduler's queue: waits for KV room up to the
    // queue timeout.
    virtual Result<std::vector<float>> embed(std::span<const int32_t> tokens, engine::Pooling pooling,
                                             const std::function<bool()>& alive = nullptr) = 0;
    // One L2-normalised vector per text from the embedding model, or from the chat model (mean
    // pooling) when there is none; through the scheduler.
    virtual Result<std::vector<std::vector<float>>> embed_texts(std::span<const std::string> texts,
                                                                const std::function<bool()>& alive = nullptr) = 0;
    // One score per document from the reranker (higher is more relevant); request_model_not_found
    // without one.
    virtual Result<std::vector<float>> rerank(std::string_view query, std::span<const std::string> documents,
                                              const std::function<bool()>& alive = nullptr) = 0;
    // Chat messages -> prompt tokens with the model's chat template (BOS as the model wants);
    // the template's end-of-turn strings are appended to `stop` when given.
    virtual Result<std::vector<int32_t>> chat_prompt(std::span<const chat::Message> messages,
                                                     std::vector<std::string>* stop = nullptr) = 0;

    // A poller for "is this request's client still connected?" (see client_connection.h).
    virtual std::function<bool()> client_alive(const httplib::Request& req) = 0;
    // Number of generated tokens to show in this request's log line.
    virtual void log_tokens(int64_t n) = 0;
};

struct ServerExtension {
    std::string name;
    std::function<void(ServerContext&)> add_routes;        // before listening
    std::function<Result<void>(ServerContext&)> on_ready;  // after loading; an error stops the server
    // On the first SIGINT/SIGTERM, before running requests are drained: stop background work
    // (the memory's ingestion workers) within about a second.
    std::function<void()> on_stop;
};

}  // namespace kvrag::server
