#include "memory/prompt_builder.h"

#include <algorithm>

namespace kvrag::memory {
namespace {

int32_t count_plain(const tokenizer::Tokenizer& tok, const std::string& s) {
    return static_cast<int32_t>(tok.encode(s, false, false).size());
}

// The first n tokens of s, as text (n >= 0).
std::string cut_tokens(const tokenizer::Tokenizer& tok, const std::string& s, int32_t n) {
    const auto ids = tok.encode(s, false, false);
    if (static_cast<int32_t>(ids.size()) <= n) return s;
    return tok.decode(std::span<const int32_t>(ids.data(), static_cast<size_t>(std::max(0, n))));
}

}  // namespace

std::string user_message(const std::vector<std::string>& sources, const std::string& question) {
    std::string out;
    if (!sources.empty()) {
        out = "Sources:\n\n";
        for (size_t i = 0; i < sources.size(); ++i) out += "[" + std::to_string(i + 1) + "] " + sources[i] + "\n\n";
    }
    out += "Question: " + question;
    return out;
}

Result<BuiltPrompt> build_prompt(const chat::ChatTemplate& tmpl, const tokenizer::Tokenizer& tok, const PromptParts& parts,
                                 const PromptBudget& b) {
    BuiltPrompt out;
    out.budget = b.n_ctx - b.max_tokens;

    // Renders system + history[h0, end) + user, and tokenises it as the engine will see it.
    auto render = [&](size_t h0, const std::string& user, std::string* text) -> Result<std::vector<int32_t>> {
        std::vector<chat::Message> msgs;
        msgs.push_back({"system", parts.instructions});
        for (size_t i = h0; i < parts.history.size(); ++i) msgs.push_back(parts.history[i]);
        msgs.push_back({"user", user});
        auto r = tmpl.render(msgs, /*add_generation_prompt=*/true);
        if (!r) return r.error();
        if (text) *text = *r;
        return tok.encode(*r, /*add_special=*/true, /*parse_special=*/true);
    };
    // Template overhead of a structure with k history messages: the same render, empty contents.
    auto overhead = [&](size_t k) -> Result<int32_t> {
        std::vector<chat::Message> msgs;
        msgs.push_back({"system", ""});
        for (size_t i = 0; i < k; ++i) msgs.push_back({i % 2 == 0 ? "user" : "assistant", ""});
        msgs.push_back({"user", ""});
        auto r = tmpl.render(msgs, true);
        if (!r) return r.error();
        return static_cast<int32_t>(tok.encode(*r, true, true).size());
    };

    auto base = overhead(0);
    if (!base) return base.error();
    out.n_overhead = *base;
    constexpr int32_t kSlack = 4;  // joins between parts may tokenise a little differently
    const int32_t fixed = *base + count_plain(tok, parts.instructions) + count_plain(tok, "Question: ") + kSlack;
    if (out.budget - fixed < 1) {
        return Error{Errc::memory_bad_input, "context " + std::to_string(b.n_ctx) + " - max_tokens " + std::to_string(b.max_tokens) +
                                                 " leaves " + std::to_string(out.budget) + " prompt tokens; the instructions and chat template need " +
                                                 std::to_string(fixed) + " before any question. Raise --ctx or lower --max-tokens"};
    }

    // 1. the question (cut only if it cannot fit with nothing else)
    std::string question = parts.question;
    int32_t n_q = count_plain(tok, question);
    if (fixed + n_q > out.budget) {
        question = cut_tokens(tok, question, out.budget - fixed);
        n_q = count_plain(tok, question);
        out.question_truncated = true;
    }
    int32_t avail = out.budget - fixed - n_q;

    // 2. history: whole user/assistant pairs, newest first, within its share
    size_t h0 = parts.history.size();
    {
        const int32_t cap = std::min(avail, b.history_tokens);
        int32_t used = 0;
        int32_t per_msg = 0;
        if (!parts.history.empty()) {
            auto two = overhead(2);
            if (!two) return two.error();
            per_msg = (std::max(0, *two - *base) + 1) / 2;
        }
        while (h0 >= 2) {
            const int32_t cost = count_plain(tok, parts.history[h0 - 1].content) + count_plain(tok, parts.history[h0 - 2].content) +
                                 2 * per_msg + 2;
            if (used + cost > cap) break;
            used += cost;
            h0 -= 2;
        }
        avail -= used;
    }

    // 3. sources, best first; those that do not fit are skipped. If not even the best one
    // fits, it is cut to the space left.
    std::vector<std::string> sources;
    std::vector<int32_t> included;
    {
        const int32_t header = count_plain(tok, "Sources:\n\n") + 1;
        const int32_t label = 6;  // "[12] " and the blank line after the text
        int32_t used = header;
        for (size_t i = 0; i < parts.sources.size(); ++i) {
            const int32_t cost = count_plain(tok, parts.sources[i]) + label;
            if (used + cost <= avail) {
                sources.push_back(parts.sources[i]);
                included.push_back(static_cast<int32_t>(i));
                used += cost;
            }
        }
        if (sources.empty() && !parts.sources.empty() && avail - header - label >= 16) {
            sources.push_back(cut_tokens(tok, parts.sources.front(), avail - header - label));
            included.push_back(0);
            out.source_cut = true;
        }
    }

    // 4. exact check; trim until it fits (bounded: every round removes something)
    const int32_t max_rounds = static_cast<int32_t>(sources.size() + parts.history.size()) + 64;
    for (int32_t round = 0; round <= max_rounds; ++round) {
        auto toks = render(h0, user_message(sources, question), &out.text);
        if (!toks) return toks.error();
        const int32_t over = static_cast<int32_t>(toks->size()) - out.budget;
        if (over <= 0) {
            out.tokens = std::move(*toks);
            out.included = std::move(included);
            out.n_history = static_cast<int32_t>(parts.history.size() - h0);
            return out;
        }
        if (!sources.empty()) {
            sources.pop_back();
            included.pop_back();
            if (sources.empty()) out.source_cut = false;
        } else if (h0 + 2 <= parts.history.size()) {
            h0 += 2;
        } else {
            const int32_t n_now = count_plain(tok, question);
            question = cut_tokens(tok, question, std::max(0, n_now - over - 2));
            out.question_truncated = true;
        }
    }
    return Error{Errc::memory_bad_input, "could not fit the prompt into " + std::to_string(out.budget) + " tokens"};
}

}  // namespace kvrag::memory
