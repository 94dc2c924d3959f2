// OpenAI request parsing and response shapes: JSON in, engine options out, JSON back.
//
// Pure functions (no sockets, no engine state), so every validation rule is unit-testable.
// Parsing never throws: a bad field becomes an ApiError naming the field (`param`) and the value.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/chat_template.h"
#include "chat/tool_calls.h"
#include "engine/engine.h"
#include "server/api_error.h"
#include "server/chat_history.h"

namespace kvrag::server {

// Checks the request body before JSON parsing; nullopt when it is valid UTF-8, else the byte
// offset of the first bad sequence.
std::optional<size_t> find_invalid_utf8(std::string_view s);

// Parses a request body into a JSON object, with clear messages for invalid UTF-8, syntax errors
// and non-object bodies.
std::optional<ApiError> parse_body(const std::string& body, json& out);

// What the server needs to validate a generation request.
struct ApiLimits {
    std::string model_id;                  // served name; requests naming another model get 404
    std::vector<std::string> model_aliases;
    // false (default): any other name is answered by the served model (clients send their own
    // defaults, e.g. gpt-4o-mini) and the response names the served model; true: 404.
    bool strict_model_names = false;
    int32_t n_ctx_seq = 2048;              // per-request context (prompt + max_tokens)
    int32_t default_max_tokens = 256;      // when the request gives none (capped to the context)
    // The KV cache's cells (0: unknown). With n > 1 and no max_tokens, the default answer
    // budget is capped so the n choices fit these cells together.
    int32_t n_cache_cells = 0;
    engine::ContextPolicy policy = engine::ContextPolicy::error;
    HistoryPolicy history = HistoryPolicy::drop;  // chat: when the conversation does not fit
};

// tool_choice: none (tools are not offered), auto (the model decides; its answer is parsed for
// calls), required (a call is forced by the grammar), named (that function is forced).
enum class ToolChoice { none, automatic, required, named };

// A parsed /v1/completions or /v1/chat/completions request.
struct GenerationRequest {
    bool chat = false;
    bool stream = false;
    std::string model;                       // as requested (may be empty)
    std::string prompt_text;                 // completions with a text prompt
    std::vector<int32_t> prompt_tokens;      // completions with a token-id prompt
    bool has_token_prompt = false;
    std::vector<chat::Message> messages;     // chat
    std::optional<int64_t> max_tokens;       // as given; resolved against the prompt later
    engine::GenerateOptions options;         // sampling, stop, policy (max_tokens set later)
    bool seed_given = false;
    std::optional<HistoryPolicy> history;    // chat: the request's chat_history, if given
    bool echo = false;                       // completions: the prompt's text before the answer
    // chat: logprobs true; options.n_logprobs then holds top_logprobs (0..20). completions:
    // options.n_logprobs = logprobs N.
    bool logprobs = false;
    std::vector<chat::ToolFunction> tools;   // chat: offered tools (empty with tool_choice none)
    ToolChoice tool_choice = ToolChoice::automatic;
    std::string tool_choice_name;            // ToolChoice::named
    std::string response_format = "text";    // "text", "json_object" or "json_schema" (grammar in options)
    int32_t n = 1;                           // choices (1..kMaxChoices)
    bool parallel_tool_calls = true;         // chat: false = at most one call per answer
    bool include_usage = true;               // streams: stream_options.include_usage (false: no usage)
    // chat: chat_template_kwargs.enable_thinking (Qwen3's thinking switch), as llama.cpp's and
    // vLLM's servers take it; unset = the template's default here (off).
    std::optional<bool> enable_thinking;
};

inline constexpr int32_t kMaxChoices = 16;

// Validates fields and types. The returned error names the field in `param`. raw_body, when
// given, is the body's text: JSON schemas (response_format, tool parameters) are read from it
// in their written key order, the order objects' properties are generated in.
std::optional<ApiError> parse_generation_request(const json& body, bool chat, const ApiLimits& limits, GenerationRequest& out,
                                                 std::string_view raw_body = {});

// Fills options.max_tokens from the request, or when the client gave none from
// `default_budget` (limits.default_max_tokens when negative), capped so prompt + max_tokens
// fits the context and, with n > 1, so the n choices fit the cache together (the engine's
// reservation: prompt + n x max_tokens + n - 1 cells); at least 1, so a request that cannot
// fit still gets the engine's error with the numbers.
std::optional<ApiError> resolve_max_tokens(GenerationRequest& req, int32_t n_prompt, const ApiLimits& limits, int32_t default_budget = -1);

// A parsed /v1/embeddings request: each input as text or as token ids.
struct EmbeddingRequest {
    std::string model;
    std::vector<std::string> texts;                 // when inputs are strings
    std::vector<std::vector<int32_t>> token_inputs; // when inputs are token-id arrays
    std::string pooling;                            // as given; "" = the model's default (checked by the route)
    bool base64 = false;                            // encoding_format "base64"
};
std::optional<ApiError> parse_embedding_request(const json& body, const ApiLimits& limits, EmbeddingRequest& out);

// ---- responses ----
struct Usage {
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
    json to_json() const;
};

// "stop" or "length" for a finished result (a stop string or end-of-generation token -> stop).
const char* openai_finish_reason(const engine::GenerateResult& r);

// logprobs: the choice's "logprobs" value (null when not asked for). calls: the tool calls
// parsed from the answer (chat; content becomes the text outside them, null when empty, and
// finish_reason "tool_calls", unless max_tokens cut the answer: then it stays "length"). echo_prefix goes before a completion's text.
json completion_response(const std::string& id, int64_t created, const std::string& model, bool chat,
                         const engine::GenerateResult& r, const json& logprobs = nullptr,
                         const chat::ParsedToolCalls* calls = nullptr, const std::string& echo_prefix = {});
// One streamed chunk: `text` as delta (chat: content; first chat chunk also carries the role),
// finish_reason null unless `finish` is given; usage only when given (the final chunk).
json stream_chunk(const std::string& id, int64_t created, const std::string& model, bool chat, const std::string& text,
                  bool with_role, const char* finish, const Usage* usage, const json& logprobs = nullptr);
json embedding_response(const std::string& model, const std::vector<std::vector<float>>& vectors, bool base64,
                        int64_t prompt_tokens);

// Standard base64 (RFC 4648, with padding) of raw bytes: embeddings' encoding_format "base64"
// carries little-endian float32s this way.
std::string base64_encode(std::string_view bytes);

}  // namespace kvrag::server
