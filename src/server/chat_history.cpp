#include "server/chat_history.h"

#include <algorithm>
#include <string>

namespace kvrag::server {

Result<HistoryPolicy> parse_history_policy(std::string_view name) {
    if (name == "drop") return HistoryPolicy::drop;
    if (name == "summarize") return HistoryPolicy::summarize;
    if (name == "error") return HistoryPolicy::error;
    return Error{Errc::request_invalid, "chat history policy '" + std::string(name) + "' is not one of drop, summarize, error"};
}

const char* history_policy_name(HistoryPolicy p) {
    switch (p) {
        case HistoryPolicy::drop: return "drop";
        case HistoryPolicy::summarize: return "summarize";
        case HistoryPolicy::error: return "error";
    }
    return "drop";
}

int32_t default_answer_budget(int32_t default_max_tokens, int32_t n_ctx) { return std::max(1, std::min(default_max_tokens, n_ctx / 4)); }

namespace {

std::string tokens_text(int64_t prompt, int32_t budget, std::string_view budget_what, int32_t n_ctx) {
    return std::to_string(prompt) + " prompt tokens + " + std::string(budget_what) + " = " + std::to_string(prompt + budget) + " > context " +
           std::to_string(n_ctx);
}

}  // namespace

Result<HistoryFit> fit_history(std::span<const chat::Message> messages, int32_t answer_budget, std::string_view budget_what,
                               int32_t n_ctx, HistoryPolicy policy, const RenderFn& render) {
    HistoryFit fit;
    fit.kept.assign(messages.begin(), messages.end());
    auto all = render(fit.kept);
    if (!all) return all.error();
    const auto fits = [&](const std::vector<int32_t>& p) { return static_cast<int64_t>(p.size()) + answer_budget <= n_ctx; };
    if (fits(*all)) {
        fit.prompt = std::move(*all);
        return fit;
    }
    if (policy == HistoryPolicy::error) {
        return Error{Errc::request_too_long, "the conversation (" + std::to_string(messages.size()) + " messages) takes " +
                                                 tokens_text(static_cast<int64_t>(all->size()), answer_budget, budget_what, n_ctx) +
                                                 "; chat_history 'error' keeps every message: send fewer, or use chat_history 'drop'"};
    }

    // Pinned: the leading system messages and everything from the last user message on.
    const size_t n = messages.size();
    size_t head = 0;
    while (head < n && messages[head].role == "system") ++head;
    size_t tail = n;
    for (size_t i = n; i-- > head;) {
        if (messages[i].role == "user") {
            tail = i;
            break;
        }
    }
    if (tail == n) tail = n > head ? n - 1 : head;  // no user message: keep the last one
    // Droppable units between them, oldest first: a turn starts at a user message and runs
    // until the next one (whatever precedes the first user message is a unit of its own).
    std::vector<size_t> unit_end;  // exclusive end index of each unit
    for (size_t i = head; i < tail;) {
        size_t j = i + 1;
        while (j < tail && messages[j].role != "user") ++j;
        unit_end.push_back(j);
        i = j;
    }
    const auto build = [&](size_t n_units) {
        std::vector<chat::Message> kept(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(head));
        const size_t from = n_units == 0 ? head : unit_end[n_units - 1];
        kept.insert(kept.end(), messages.begin() + static_cast<std::ptrdiff_t>(from), messages.end());
        return kept;
    };
    // Dropping more units never lengthens the prompt, so the fewest that fit is found by
    // bisection: O(log n) renders even for a very long history.
    size_t lo = 1, hi = unit_end.size();  // answer in [lo, hi]; hi (all droppable gone) may still not fit
    {
        auto p = render(build(hi));
        if (!p) return p.error();
        if (!fits(*p)) {
            return Error{Errc::request_too_long,
                         "even after dropping all " + std::to_string(tail - head) + " older messages, the system message" +
                             (head == 1 ? "" : "s") + " and the last user message take " +
                             tokens_text(static_cast<int64_t>(p->size()), answer_budget, budget_what, n_ctx) +
                             "; shorten them, lower max_tokens, or start the server with a larger context"};
        }
    }
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        auto p = render(build(mid));
        if (!p) return p.error();
        if (fits(*p)) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    fit.kept = build(hi);
    auto final_prompt = render(fit.kept);
    if (!final_prompt) return final_prompt.error();
    fit.prompt = std::move(*final_prompt);
    const size_t from = unit_end[hi - 1];
    fit.dropped.assign(messages.begin() + static_cast<std::ptrdiff_t>(head), messages.begin() + static_cast<std::ptrdiff_t>(from));
    return fit;
}

std::vector<chat::Message> summary_request(std::span<const chat::Message> dropped, size_t max_chars) {
    std::string transcript;
    for (const auto& m : dropped) transcript += m.role + ": " + m.content + "\n";
    if (transcript.size() > max_chars) transcript.erase(0, transcript.size() - max_chars);  // the oldest text goes first
    return {chat::Message{"system", "You summarise conversations. Reply with a short summary of the facts, names and decisions "
                                    "in the conversation below, in at most three sentences."},
            chat::Message{"user", transcript}};
}

chat::Message summary_message(std::string_view summary) {
    return chat::Message{"system", "Summary of the earlier conversation: " + std::string(summary)};
}

}  // namespace kvrag::server
