// The OpenAI request fields beyond plain sampling: response_format (structured output through
// the grammar engine), logit_bias, logprobs / top_logprobs / echo, and tools / tool_choice;
// and the JSON they answer with (logprobs objects, tool calls). Pure functions, as
// openai_api.h: every rule is unit-testable without a server.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chat/tool_call_parser.h"
#include "chat/tool_calls.h"
#include "sampling/grammar.h"
#include "sampling/logprobs.h"
#include "server/openai_api.h"
#include "tokenizer/tokenizer.h"

namespace kvrag::server {

// Each reads its fields from `body` into `out` (ordered: the same body with its key order, or
// null). Absent or null fields leave the defaults.
std::optional<ApiError> parse_response_format(const json& body, const nlohmann::ordered_json* ordered, GenerationRequest& out);
std::optional<ApiError> parse_logit_bias(const json& body, GenerationRequest& out);
std::optional<ApiError> parse_logprobs(const json& body, bool chat, GenerationRequest& out);
std::optional<ApiError> parse_tools(const json& body, const nlohmann::ordered_json* ordered, GenerationRequest& out);

// The grammar that forces a call (tool_choice required: any offered tool; named: that one),
// written in `format`'s syntax, its arguments valid against the tool's parameters schema.
// Errors: the schema compiler's, naming the tool.
Result<std::shared_ptr<const sampling::Grammar>> tool_call_grammar(const GenerationRequest& req, chat::ToolFormat format);

// "call_" + 24 random alphanumerics.
std::string new_tool_call_id();

// The "logprobs" value of a choice (or of one stream chunk) for these tokens. chat:
// {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]};
// completions: {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}.
// text_offset counts characters (code points, as OpenAI's Python does), from *text_chars (the
// characters before the first token's text, e.g. an echoed prompt's; 0 when null), which is
// advanced past these tokens. A token that begins inside a character (a byte token after the
// first byte of a character) gets that character's offset.
json logprobs_json(bool chat, std::span<const sampling::TokenLogprobs> lps, const tokenizer::Tokenizer& tok, size_t* text_chars = nullptr);

// Characters `bytes` adds to a text: its bytes that begin a character (not UTF-8 continuation
// bytes), so a character split over several tokens counts once, at its first byte.
size_t utf8_chars(std::string_view bytes);

// message.tool_calls / a stream delta's tool_calls: [{index, id, type: function, function: {name, arguments}}].
json tool_calls_json(const std::vector<chat::ToolCall>& calls);

// A stream delta's tool_calls for one event of the tool-call parser, as OpenAI streams a call:
// call_begin -> [{index, id, type: function, function: {name, arguments: ""}}] (id: the call's);
// call_arguments -> [{index, function: {arguments: fragment}}], which a client concatenates.
json tool_call_delta_json(const chat::ToolCallEvent& e, const std::string& id);

}  // namespace kvrag::server
