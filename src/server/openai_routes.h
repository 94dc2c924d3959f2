// The built-in endpoints: /health, /v1/models, /v1/completions, /v1/chat/completions,
// /metrics and /v1/kv (the encoder endpoints, /v1/embeddings and /v1/rerank, are in
// encoder_routes.h). Request parsing and response shapes are pure functions
// in openai_api.h; these handlers tokenize, queue the job with the scheduler, wait for it while
// watching the client, and answer (streaming.h for server-sent events).
#pragma once

#include <span>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "chat/tool_calls.h"
#include "core/error.h"
#include "server/server_state.h"

namespace httplib {
class Server;
}

namespace kvrag::server {

void add_openai_routes(httplib::Server& http, ServerState& state);

// Chat messages -> prompt tokens with the model's chat template (BOS as the model wants); the
// template's end-of-turn strings are appended to `stop` when given. With tools offered, or tool
// calls and results in the conversation, they are rendered as chat/tool_calls.h says.
// thinking: Qwen3's enable_thinking (other templates have no such switch).
Result<std::vector<int32_t>> chat_prompt(ServerState& state, std::span<const chat::Message> messages, std::vector<std::string>* stop,
                                         std::span<const chat::ToolFunction> tools = {}, bool thinking = false);

}  // namespace kvrag::server
