// Keeping a chat inside its context: which messages of a /v1/chat/completions request go into
// the prompt when the whole conversation plus room for the answer does not fit.
//
// OpenAI clients resend the whole history every turn, so a long chat on a small context grows
// past it. The policy (`--chat-history`, or the request's `chat_history` field):
//   drop       (default) the oldest turns leave the prompt first, one turn (a user message and
//              the assistant/tool replies after it) at a time, until the rest fits. The system
//              messages at the start and the last user message (with what follows it) always
//              stay; if even they do not fit, the request fails with the numbers.
//   summarize  as drop, then the dropped turns are replaced by one system message holding a
//              short summary the model writes of them (the route generates it).
//   error      nothing is dropped: a conversation that does not fit gets 400 with its true
//              token counts.
// The answer budget is the request's max_tokens, or min(--default-max-tokens, context / 4)
// when it gives none, so every turn keeps room to answer.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "chat/chat_template.h"
#include "core/error.h"

namespace kvrag::server {

enum class HistoryPolicy { drop, summarize, error };
Result<HistoryPolicy> parse_history_policy(std::string_view name);  // request_invalid naming the choices
const char* history_policy_name(HistoryPolicy p);

// Renders messages into prompt tokens (the chat template, then the tokenizer).
using RenderFn = std::function<Result<std::vector<int32_t>>(std::span<const chat::Message>)>;

struct HistoryFit {
    std::vector<chat::Message> kept;     // what the prompt is built from, in order
    std::vector<chat::Message> dropped;  // left out, in order (for a summary)
    std::vector<int32_t> prompt;         // render(kept)
};

// The answer budget when the request gives no max_tokens: min(default_max_tokens, n_ctx / 4),
// at least 1.
int32_t default_answer_budget(int32_t default_max_tokens, int32_t n_ctx);

// Fits `messages` so that prompt + answer_budget <= n_ctx (see the file comment; summarize
// fits like drop here). Errors: request_too_long with the numbers (what the conversation, or
// what the messages that must stay, take, the budget and the context); render's errors.
// `budget_what` names the budget in messages ("max_tokens 64", "the default answer budget 64").
Result<HistoryFit> fit_history(std::span<const chat::Message> messages, int32_t answer_budget, std::string_view budget_what,
                               int32_t n_ctx, HistoryPolicy policy, const RenderFn& render);

// The prompt that asks the model to summarise dropped turns, as chat messages; `max_chars`
// bounds the transcript (its oldest text is cut first).
std::vector<chat::Message> summary_request(std::span<const chat::Message> dropped, size_t max_chars);

// The system message that stands for the dropped turns.
chat::Message summary_message(std::string_view summary);

}  // namespace kvrag::server
