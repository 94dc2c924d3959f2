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
#include "engine/engine.h"
#include "engine/scheduler.h"
#include "server/openai_api.h"
#include "server/server.h"

namespace kvrag::server {

enum class Health { loading, ok, error };

struct ServerState {
    explicit ServerState(const ServeConfig& config);

    // "chatcmpl-<salt><counter>": unique per process run, not guessable across runs.
    std::string new_id(const char* prefix);

    ServeConfig cfg;
    std::string model_id;                  // file name without .gguf
    std::vector<std::string> aliases;      // the model's own name, when it differs
    int64_t created = 0;                   // for /v1/models
    std::atomic<Health> health{Health::loading};
    std::string health_message;            // set before health turns error
    std::atomic<bool> draining{false};
    std::atomic<int> open_streams{0};

    std::unique_ptr<engine::Engine> engine;
    std::unique_ptr<engine::Scheduler> scheduler;
    std::optional<chat::ChatTemplate> chat_template;
    ApiLimits limits;

private:
    uint64_t id_salt_ = 0;
    std::atomic<uint64_t> id_counter_{0};
};

}  // namespace kvrag::server
