// `kvrag serve`: an OpenAI-compatible HTTP server over one engine (see docs/server.md).
//
// Start-up order: bind the port (so /health can say "loading"), load the model, create the
// engine and the scheduler, then serve until SIGINT/SIGTERM. Shutdown: new generation requests
// get 503, queued ones end with 503, running ones may finish for the grace period and are then
// cancelled (their streams end with an error event and [DONE]); then the listener closes and
// the process exits 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/ggml_type.h"
#include "engine/engine.h"
#include "server/chat_history.h"
#include "server/server_context.h"

namespace kvrag::server {

struct ServeConfig {
    std::string model_path;             // a chat model, or an encoder (embedding/rerank) model
    std::string embed_model_path;       // --embed-model: /v1/embeddings and the memory use it
    std::string rerank_model_path;      // --rerank-model: /v1/rerank, and the memory's rerank stage
    std::string host = "127.0.0.1";
    int port = 8080;                    // 0 = any free port (printed at start-up)
    int32_t ctx = 0;                    // KV cells in all; 0 = min(4096, trained context)
    int32_t parallel = 4;               // requests running at once
    int32_t threads = 0;                // 0 = physical cores
    int32_t batch = 256;                // tokens per forward step (decode + prefill chunks)
    GgmlType kv_type = GgmlType::F16;
    engine::ContextPolicy policy = engine::ContextPolicy::error;
    HistoryPolicy chat_history = HistoryPolicy::drop;  // chat requests that do not fit (chat_history.h)
    std::vector<std::string> aliases;   // --alias: more names of the chat model, listed in /v1/models
    bool strict_model_names = false;    // unknown model names get 404 instead of the served model
    std::vector<std::string> cors_origins = {"*"};  // --cors: allowed browser origins; empty = CORS off
    std::string api_key;                // empty = no authentication
    double timeout_s = 0.0;             // per request, queue + run; 0 = none
    double queue_timeout_s = 30.0;      // longest wait for KV room
    int32_t max_queue = 64;             // waiting requests beyond which submit answers 429
    int32_t default_max_tokens = 256;   // when a request sets none (capped to the context)
    size_t max_body_bytes = 4u << 20;   // larger bodies get 413
    double shutdown_grace_s = 5.0;      // running requests may finish this long after a signal
    std::string chat_template;          // forced template name (or Jinja source); "" = the model's
    std::string replica_name;           // --replica-name: sent as X-Kvrag-Replica on every response; "" = none
    std::vector<ServerExtension> extensions;
};

// Runs the server until a signal; returns the process exit code (0 after a clean shutdown).
int run_server(const ServeConfig& config);

}  // namespace kvrag::server
