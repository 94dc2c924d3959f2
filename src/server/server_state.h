// What the server's parts share: configuration, the loaded engine and scheduler, health and
// the served model's names. Owned by the lifecycle (server.cpp); middleware, the OpenAI routes
// and streaming read it. engine, scheduler and chat_template are set once, before health turns
// ok (the middleware refuses every route but /health until then).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "engine/embedder.h"
#include "engine/engine.h"
#include "engine/scheduler.h"
#include "server/openai_api.h"
#include "server/server.h"

namespace kvrag::server {

enum class Health { loading, ok, error };

// An encoder model the server runs beside (or instead of) the chat model: the embedding model
// (--embed-model) or the reranker (--rerank-model). Its work goes through the scheduler as
// encode jobs (the Embedder is the scheduler's Encoder).
struct EncoderModel {
    std::string id;                        // file name without .gguf
    std::vector<std::string> aliases;      // the model's own name, when it differs
    std::string path;
    std::unique_ptr<engine::Embedder> embedder;
    bool answers_to(const std::string& name) const;
};

struct ServerState {
    explicit ServerState(const ServeConfig& config);

    // "chatcmpl-<salt><counter>": unique per process run, not guessable across runs.
    std::string new_id(const char* prefix);

    ServeConfig cfg;
    std::string model_id;                  // the chat model's file name without .gguf ("" without one)
    std::vector<std::string> aliases;      // the model's own name, when it differs
    int64_t created = 0;                   // for /v1/models
    std::atomic<Health> health{Health::loading};
    std::string health_message;            // set before health turns error
    std::atomic<bool> draining{false};
    std::atomic<int> open_streams{0};

    std::unique_ptr<engine::Engine> engine;       // the chat model; null in an encoder-only server
    std::unique_ptr<EncoderModel> embed_model;    // null: /v1/embeddings uses the chat model
    std::unique_ptr<EncoderModel> rerank_model;   // null: /v1/rerank answers 404
    std::unique_ptr<engine::Scheduler> scheduler;
    std::optional<chat::ChatTemplate> chat_template;
    ApiLimits limits;

private:
    uint64_t id_salt_ = 0;
    std::atomic<uint64_t> id_counter_{0};
};

}  // namespace kvrag::server
