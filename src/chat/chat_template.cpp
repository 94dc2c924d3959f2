#include "chat/chat_template.h"

#include <algorithm>
#include <array>
#include <cstdio>

#include "gguf/gguf_file.h"

namespace kvrag::chat {
namespace {

using Kind = ChatTemplate::Kind;

// ============================================================================================
// Names
// ============================================================================================

struct NameEntry {
    std::string_view name;
    Kind kind;
    bool alias = false;  // accepted by by_name, never reported by name()
};

// Families first (what --chat-template help shows), then the variants.
constexpr std::array kNames = {
    NameEntry{"chatml", Kind::chatml},
    NameEntry{"llama2", Kind::llama2},
    NameEntry{"llama3", Kind::llama3},
    NameEntry{"mistral", Kind::mistral_v3, true},
    NameEntry{"gemma", Kind::gemma},
    NameEntry{"phi3", Kind::phi3},
    NameEntry{"qwen3", Kind::qwen3},
    NameEntry{"llama2-sys", Kind::llama2_sys},
    NameEntry{"llama2-sys-bos", Kind::llama2_sys_bos},
    NameEntry{"llama2-sys-strip", Kind::llama2_sys_strip},
    NameEntry{"mistral-v1", Kind::mistral_v1},
    NameEntry{"mistral-v3", Kind::mistral_v3},
    NameEntry{"mistral-v3-tekken", Kind::mistral_v3_tekken},
    NameEntry{"mistral-v7", Kind::mistral_v7},
    NameEntry{"mistral-v7-tekken", Kind::mistral_v7_tekken},
    NameEntry{"phi3.5", Kind::phi35},
    NameEntry{"phi4-mini", Kind::phi4_mini},
};

const NameEntry* find_name(std::string_view name) {
    for (const auto& e : kNames) {
        if (e.name == name) return &e;
    }
    return nullptr;
}

// ============================================================================================
// Text helpers
// ============================================================================================

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

// ASCII whitespace trimmed from both ends (Jinja's |trim and Python's str.strip() on the
// texts that matter; UTF-8 bytes >= 0x80 are never whitespace here).
std::string_view trim(std::string_view s) {
    size_t b = 0, e = s.size();
    while (b < e && is_space(s[b])) ++b;
    while (e > b && is_space(s[e - 1])) --e;
    return s.substr(b, e - b);
}

bool contains(std::string_view haystack, std::string_view needle) {
    return haystack.find(needle) != std::string_view::npos;
}

// The first n bytes of s, cut back to a UTF-8 character boundary, on one line: control
// characters escaped, so an error message stays a single readable line.
std::string excerpt(std::string_view s, size_t n) {
    if (s.size() > n) {
        size_t cut = n;
        while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
        s = s.substr(0, cut);
    }
    std::string out;
    for (char c : s) {
        switch (c) {
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned char>(c));
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
    return out;
}

// ============================================================================================
// Renderers. Each gets a validated, non-empty conversation. Formats from the HF templates and
// llama.cpp's llm_chat_apply_template (see docs/chat-templates.md); no leading BOS anywhere.
// ============================================================================================

// <|im_start|>{role}\n{content}<|im_end|>\n ... [<|im_start|>assistant\n]
void render_chatml(std::span<const Message> msgs, bool add_gen, std::string& out) {
    for (const auto& m : msgs) {
        out += "<|im_start|>";
        out += m.role;
        out += '\n';
        out += m.content;
        out += "<|im_end|>\n";
    }
    if (add_gen) out += "<|im_start|>assistant\n";
}

// [INST] [<<SYS>>\n{sys}\n<</SYS>>\n\n]{user} [/INST]{assistant}</s>[<s>][INST] {user} [/INST]
// The first "[INST] " is written up front (its BOS comes from the tokenizer); a new "[INST] "
// opens after each assistant turn, preceded by "<s>" in the sys-bos variant.
void render_llama2(Kind kind, std::span<const Message> msgs, std::string& out) {
    const bool system_block = kind != Kind::llama2;
    const bool bos_inside = kind == Kind::llama2_sys_bos;
    const bool strip = kind == Kind::llama2_sys_strip;
    bool inside_turn = true;
    out += "[INST] ";
    for (const auto& m : msgs) {
        const std::string_view content = strip ? trim(m.content) : std::string_view(m.content);
        if (!inside_turn) {
            out += bos_inside ? "<s>[INST] " : "[INST] ";
            inside_turn = true;
        }
        if (m.role == "system") {
            if (system_block) {
                out += "<<SYS>>\n";
                out += content;
                out += "\n<</SYS>>\n\n";
            } else {
                out += content;  // no system support: plain text ahead of the user message
                out += '\n';
            }
        } else if (m.role == "user") {
            out += content;
            out += " [/INST]";
        } else {
            out += content;
            out += "</s>";
            inside_turn = false;
        }
    }
}

// v1:        " [INST] {sys}\n\n{user} [/INST] {assistant}</s>"
// v3:        "[INST] {sys}\n\n{user}[/INST] {assistant (trimmed)}</s>"
// v3-tekken: "[INST]{sys}\n\n{user}[/INST]{assistant}</s>"
// The system message goes into the [INST] block that is open when it appears.
void render_mistral_v1_v3(Kind kind, std::span<const Message> msgs, std::string& out) {
    const std::string_view lead = kind == Kind::mistral_v1 ? " " : "";
    const std::string_view after_inst = kind == Kind::mistral_v3_tekken ? "" : " ";
    const bool trim_assistant = kind == Kind::mistral_v3;
    bool inside_turn = false;
    for (const auto& m : msgs) {
        if (!inside_turn) {
            out += lead;
            out += "[INST]";
            out += after_inst;
            inside_turn = true;
        }
        if (m.role == "system") {
            out += m.content;
            out += "\n\n";
        } else if (m.role == "user") {
            out += m.content;
            out += lead;
            out += "[/INST]";
        } else {
            out += after_inst;
            out += trim_assistant ? trim(m.content) : std::string_view(m.content);
            out += "</s>";
            inside_turn = false;
        }
    }
}

// v7:        "[SYSTEM_PROMPT] {sys}[/SYSTEM_PROMPT][INST] {user}[/INST] {assistant}</s>"
// v7-tekken: the same without the spaces after the opening tags.
void render_mistral_v7(Kind kind, std::span<const Message> msgs, std::string& out) {
    const std::string_view sp = kind == Kind::mistral_v7 ? " " : "";
    for (const auto& m : msgs) {
        if (m.role == "system") {
            out += "[SYSTEM_PROMPT]";
            out += sp;
            out += m.content;
            out += "[/SYSTEM_PROMPT]";
        } else if (m.role == "user") {
            out += "[INST]";
            out += sp;
            out += m.content;
            out += "[/INST]";
        } else {
            out += sp;
            out += m.content;
            out += "</s>";
        }
    }
}

// <|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|> ...
// [<|start_header_id|>assistant<|end_header_id|>\n\n]. "<|begin_of_text|>" is the BOS token.
void render_llama3(std::span<const Message> msgs, bool add_gen, std::string& out) {
    for (const auto& m : msgs) {
        out += "<|start_header_id|>";
        out += m.role;
        out += "<|end_header_id|>\n\n";
        out += trim(m.content);
        out += "<|eot_id|>";
    }
    if (add_gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
}

// <start_of_turn>{user|model}\n{content|trim}<end_of_turn>\n ... [<start_of_turn>model\n]
// Gemma has no system role. As Gemma 3's template: a first system message's text, as given
// (untrimmed, even empty), and "\n\n" go in front of the first turn after it. Where the template
// would drop text, kvrag keeps it (nothing a client sends is silently ignored): a system message
// with no turn after it (the template writes nothing of it) and later system texts (which the
// template refuses: roles must alternate) are trimmed and put in front of the next user message
// the same way, or become a user turn of their own at the end.
void render_gemma(std::span<const Message> msgs, bool add_gen, std::string& out) {
    std::string first_prefix, system_prompt;
    size_t begin = 0;
    const bool turn_after_first = std::any_of(msgs.begin() + (msgs.empty() ? 0 : 1), msgs.end(),
                                              [](const Message& m) { return m.role != "system"; });
    if (!msgs.empty() && msgs[0].role == "system" && turn_after_first) {
        first_prefix = msgs[0].content + "\n\n";
        begin = 1;
    }
    bool prefix_pending = begin == 1;
    for (size_t i = begin; i < msgs.size(); ++i) {
        const Message& m = msgs[i];
        if (m.role == "system") {
            if (!system_prompt.empty()) system_prompt += "\n\n";
            system_prompt += trim(m.content);
            continue;
        }
        const bool is_user = m.role == "user";
        out += "<start_of_turn>";
        out += is_user ? "user" : "model";
        out += '\n';
        if (prefix_pending) out += first_prefix;  // the first turn written
        prefix_pending = false;
        if (is_user && !system_prompt.empty()) {
            out += system_prompt;
            out += "\n\n";
            system_prompt.clear();
        }
        out += trim(m.content);
        out += "<end_of_turn>\n";
    }
    if (!system_prompt.empty()) {
        out += "<start_of_turn>user\n";
        out += system_prompt;
        out += "<end_of_turn>\n";
    }
    if (add_gen) out += "<start_of_turn>model\n";
}

// <|{role}|>\n{content}<|end|>\n ... [<|assistant|>\n]. Phi-3.5-mini's template writes a
// system message only when its content is not empty (skip_empty_system); Phi-3-mini's always.
void render_phi3(std::span<const Message> msgs, bool add_gen, bool skip_empty_system, std::string& out) {
    for (const auto& m : msgs) {
        if (skip_empty_system && m.role == "system" && m.content.empty()) continue;
        out += "<|";
        out += m.role;
        out += "|>\n";
        out += m.content;
        out += "<|end|>\n";
    }
    if (add_gen) out += "<|assistant|>\n";
}

// <|{role}|>{content}<|end|> ... [<|assistant|>] (Phi-4-mini: no newlines anywhere).
void render_phi4_mini(std::span<const Message> msgs, bool add_gen, std::string& out) {
    for (const auto& m : msgs) {
        out += "<|";
        out += m.role;
        out += "|>";
        out += m.content;
        out += "<|end|>";
    }
    if (add_gen) out += "<|assistant|>";
}

// Python's str.strip / lstrip / rstrip of newlines only (Qwen3's template uses '\n' args).
std::string_view strip_newlines(std::string_view s, bool left, bool right) {
    while (left && !s.empty() && s.front() == '\n') s.remove_prefix(1);
    while (right && !s.empty() && s.back() == '\n') s.remove_suffix(1);
    return s;
}

// Qwen3's template without tools: chatml turns, but an assistant message's "<think>...</think>"
// part is split off. Assistant turns before the last user message keep only the answer; after
// it, the last message (or one with non-empty reasoning) is written as
// "<think>\n{reasoning}\n</think>\n\n{answer}". With thinking off the generation prompt is
// followed by an empty think block (the template's enable_thinking=false).
void render_qwen3(std::span<const Message> msgs, bool add_gen, bool thinking, std::string& out) {
    size_t last_query = msgs.size() - 1;
    for (size_t i = msgs.size(); i-- > 0;) {
        if (msgs[i].role == "user") {
            last_query = i;
            break;
        }
    }
    for (size_t i = 0; i < msgs.size(); ++i) {
        const Message& m = msgs[i];
        if (m.role != "assistant") {
            out += "<|im_start|>";
            out += m.role;
            out += '\n';
            out += m.content;
            out += "<|im_end|>\n";
            continue;
        }
        std::string_view content = m.content, reasoning;
        if (const size_t end = content.find("</think>"); end != std::string_view::npos) {
            std::string_view before = strip_newlines(content.substr(0, end), false, true);
            if (const size_t open = before.rfind("<think>"); open != std::string_view::npos) before = before.substr(open + 7);
            reasoning = strip_newlines(before, true, false);
            content = strip_newlines(content.substr(content.rfind("</think>") + 8), true, false);
        }
        out += "<|im_start|>assistant\n";
        const bool after_query = i > last_query;
        if (after_query && (i + 1 == msgs.size() || !reasoning.empty())) {
            out += "<think>\n";
            out += strip_newlines(reasoning, true, true);
            out += "\n</think>\n\n";
            out += strip_newlines(content, true, false);
        } else {
            out += content;
        }
        out += "<|im_end|>\n";
    }
    if (add_gen) {
        out += "<|im_start|>assistant\n";
        if (!thinking) out += "<think>\n\n</think>\n\n";
    }
}

// ============================================================================================
// Detection: llama.cpp's llm_chat_detect_template order, restricted to kvrag's families.
// Markers of formats kvrag does not render (phi4, SmolVLM) that share a marker with one it
// does are checked first so that they are reported as unrecognised rather than misrendered.
// ============================================================================================

enum class Detected { none, found };

Detected detect_kind(std::string_view t, Kind& kind) {
    if (contains(t, "<|im_start|>")) {
        if (contains(t, "<|im_sep|>")) return Detected::none;          // phi4
        if (contains(t, "<end_of_utterance>")) return Detected::none;  // SmolVLM
        // Qwen3's hybrid-thinking templates are the ones with the enable_thinking switch.
        kind = contains(t, "enable_thinking") ? Kind::qwen3 : Kind::chatml;
        return Detected::found;
    }
    if (t.substr(0, 7) == "mistral" || contains(t, "[INST]")) {
        if (contains(t, "[SYSTEM_PROMPT]")) {
            // v7-tekken spells the tags without a following space; v7 writes "[INST] ".
            kind = contains(t, "[INST] ") || contains(t, "[SYSTEM_PROMPT] ") ? Kind::mistral_v7
                                                                            : Kind::mistral_v7_tekken;
            return Detected::found;
        }
        if (contains(t, "' [INST] ' + system_message") || contains(t, "[AVAILABLE_TOOLS]")) {
            // Mistral's official v1 / v3 / v3-tekken templates.
            if (contains(t, " [INST]")) {
                kind = Kind::mistral_v1;
            } else if (contains(t, "\"[INST]\"")) {
                kind = Kind::mistral_v3_tekken;
            } else {
                kind = Kind::mistral_v3;
            }
            return Detected::found;
        }
        // Llama 2 and the many [INST] templates derived from it.
        if (contains(t, "content.strip()")) {
            kind = Kind::llama2_sys_strip;
        } else if (contains(t, "bos_token + '[INST]")) {
            kind = Kind::llama2_sys_bos;
        } else if (contains(t, "<<SYS>>")) {
            kind = Kind::llama2_sys;
        } else {
            kind = Kind::llama2;
        }
        return Detected::found;
    }
    if (contains(t, "<|assistant|>") && contains(t, "<|end|>")) {
        // Phi-4-mini writes the role tag and the content with nothing between them.
        kind = contains(t, "'|>' + message['content']")                          ? Kind::phi4_mini
               : contains(t, "message['role'] == 'system' and message['content']") ? Kind::phi35
                                                                                     : Kind::phi3;
        return Detected::found;
    }
    if (contains(t, "<start_of_turn>")) {
        kind = Kind::gemma;
        return Detected::found;
    }
    if (contains(t, "<|start_header_id|>") && contains(t, "<|end_header_id|>")) {
        kind = Kind::llama3;
        return Detected::found;
    }
    return Detected::none;
}

}  // namespace

// ============================================================================================
// ChatTemplate
// ============================================================================================

std::string ChatTemplate::known_names() {
    std::string s;
    for (const auto& e : kNames) {
        if (!s.empty()) s += ", ";
        s += e.name;
    }
    return s;
}

Result<ChatTemplate> ChatTemplate::by_name(std::string_view name) {
    if (const NameEntry* e = find_name(name)) return ChatTemplate(e->kind);
    return Error{Errc::request_invalid, "unknown chat template name '" + excerpt(name, 80) +
                                            "'; known names: " + known_names()};
}

Result<ChatTemplate> ChatTemplate::detect(std::string_view jinja_source) {
    if (const NameEntry* e = find_name(jinja_source)) return ChatTemplate(e->kind);
    Kind kind = Kind::chatml;
    if (detect_kind(jinja_source, kind) == Detected::found) return ChatTemplate(kind);
    return Error{Errc::tokenizer_unsupported,
                 "unrecognised chat template (first 80 chars: \"" + excerpt(jinja_source, 80) +
                     "\"); use --chat-template NAME with one of: " + known_names()};
}

Result<ChatTemplate> ChatTemplate::for_model(const gguf::GgufFile& file, std::string_view forced) {
    if (!forced.empty()) {
        const bool looks_jinja = contains(forced, "{{") || contains(forced, "{%");
        return looks_jinja ? detect(forced) : by_name(forced);
    }
    auto src = file.get_string("tokenizer.chat_template");
    if (!src) return src.error();
    if (!src->has_value()) {
        return ChatTemplate(Kind::chatml, "no tokenizer.chat_template in the model; using chatml");
    }
    if (trim(**src).empty()) {
        return ChatTemplate(Kind::chatml, "tokenizer.chat_template in the model is empty; using chatml");
    }
    return detect(**src);
}

std::string_view ChatTemplate::name() const {
    for (const auto& e : kNames) {
        if (e.kind == kind_ && !e.alias) return e.name;
    }
    return "chatml";  // unreachable: every Kind has a name
}

std::string_view ChatTemplate::family() const {
    switch (kind_) {
        case Kind::chatml: return "chatml";
        case Kind::llama2:
        case Kind::llama2_sys:
        case Kind::llama2_sys_bos:
        case Kind::llama2_sys_strip: return "llama2";
        case Kind::llama3: return "llama3";
        case Kind::mistral_v1:
        case Kind::mistral_v3:
        case Kind::mistral_v3_tekken:
        case Kind::mistral_v7:
        case Kind::mistral_v7_tekken: return "mistral";
        case Kind::gemma: return "gemma";
        case Kind::phi3:
        case Kind::phi35:
        case Kind::phi4_mini: return "phi3";
        case Kind::qwen3: return "qwen3";
    }
    return "chatml";
}

Result<std::string> ChatTemplate::render(std::span<const Message> messages,
                                         bool add_generation_prompt) const {
    if (messages.empty()) {
        return Error{Errc::request_invalid, "messages is empty; a chat needs at least one message"};
    }
    for (size_t i = 0; i < messages.size(); ++i) {
        const std::string& role = messages[i].role;
        // Llama 3.1's tool results come back in "ipython" turns (chat/tool_calls.cpp writes them).
        const bool llama3_tool = kind_ == Kind::llama3 && role == "ipython";
        if (role != "system" && role != "user" && role != "assistant" && !llama3_tool) {
            return Error{Errc::request_invalid,
                         "messages[" + std::to_string(i) + "] has role '" + excerpt(role, 40) +
                             "'; chat template " + std::string(name()) +
                             " supports the roles system, user, assistant"};
        }
    }

    std::string out;
    switch (kind_) {
        case Kind::chatml: render_chatml(messages, add_generation_prompt, out); break;
        case Kind::llama2:
        case Kind::llama2_sys:
        case Kind::llama2_sys_bos:
        case Kind::llama2_sys_strip: render_llama2(kind_, messages, out); break;
        case Kind::llama3: render_llama3(messages, add_generation_prompt, out); break;
        case Kind::mistral_v1:
        case Kind::mistral_v3:
        case Kind::mistral_v3_tekken: render_mistral_v1_v3(kind_, messages, out); break;
        case Kind::mistral_v7:
        case Kind::mistral_v7_tekken: render_mistral_v7(kind_, messages, out); break;
        case Kind::gemma: render_gemma(messages, add_generation_prompt, out); break;
        case Kind::phi3: render_phi3(messages, add_generation_prompt, false, out); break;
        case Kind::phi35: render_phi3(messages, add_generation_prompt, true, out); break;
        case Kind::phi4_mini: render_phi4_mini(messages, add_generation_prompt, out); break;
        case Kind::qwen3: render_qwen3(messages, add_generation_prompt, thinking_, out); break;
    }
    return out;
}

std::vector<std::string> ChatTemplate::end_of_turn_strings() const {
    const std::string_view f = family();
    if (f == "chatml" || f == "qwen3") return {"<|im_end|>"};
    if (f == "llama3") return {"<|eot_id|>"};
    if (f == "gemma") return {"<end_of_turn>"};
    if (f == "phi3") return {"<|end|>"};
    return {"</s>"};  // llama2, mistral: the assistant turn ends with EOS
}

}  // namespace kvrag::chat
