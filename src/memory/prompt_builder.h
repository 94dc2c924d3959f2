// Assembles the ask prompt under a token budget so that it ALWAYS fits:
//
//   [system: instructions] [history: user/assistant turns, newest kept] [user: sources + question]
//
// The instructions come first and never change, so every ask shares that prefix and the KV
// manager's prefix cache reuses it; a conversation's earlier turns follow, so consecutive
// turns share even more. Budget: prompt tokens <= n_ctx - max_tokens, where the template's
// overhead is measured by rendering the same structure with empty contents. What gives way,
// in order: sources that do not fit are skipped (lower-ranked first; a top source too big on
// its own is cut to the space left), history beyond its share is dropped oldest first, and a
// question too long for what remains is cut (question_truncated). The final prompt is
// tokenised exactly and trimmed again if joins changed the count, so the bound is exact.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace kvrag::memory {

struct PromptParts {
    std::string instructions;
    std::vector<chat::Message> history;  // oldest first, alternating user / assistant
    std::vector<std::string> sources;    // best first, "name (part 3):\ntext"; numbered [1].. as included
    std::string question;
};

struct PromptBudget {
    int32_t n_ctx = 0;           // positions the sequence may use
    int32_t max_tokens = 0;      // reserved for the answer
    int32_t history_tokens = 0;  // most tokens the history may take
};

struct BuiltPrompt {
    std::vector<int32_t> tokens;   // what to prefill (BOS included when the model adds one)
    std::string text;              // rendered prompt
    std::vector<int32_t> included; // indices into parts.sources, in prompt order ([1], [2], ...)
    bool source_cut = false;       // the only included source was cut to fit
    int32_t n_history = 0;         // newest history messages included
    bool question_truncated = false;
    int32_t n_overhead = 0;        // tokens the template adds around empty contents
    int32_t budget = 0;            // n_ctx - max_tokens
};

// Error memory_bad_input (with the numbers) when even the instructions, the template and one
// token of question cannot fit in n_ctx - max_tokens.
Result<BuiltPrompt> build_prompt(const chat::ChatTemplate& tmpl, const tokenizer::Tokenizer& tok, const PromptParts& parts,
                                 const PromptBudget& budget);

// The user message: "Sources:\n\n[1] <s1>\n\n[2] <s2>...\n\nQuestion: <q>" (no sources: just the question).
std::string user_message(const std::vector<std::string>& sources, const std::string& question);

}  // namespace kvrag::memory
