// OpenAI-style chat messages -> prompt text, in the format of the model's chat template.
//
// GGUF files carry the template as Jinja source (tokenizer.chat_template). kvrag does not run
// Jinja: detect() recognises the common families by distinctive markers in that source, in
// the order llama.cpp's llm_chat_detect_template uses, and render() writes each family with
// hand-written code. See docs/chat-templates.md for the formats, markers and known gaps.
//
// BOS rule: render() never starts its text with a BOS string ("<s>", "<|begin_of_text|>",
// "<bos>"). Tokenize the result with add_special=true and parse_special=true: the tokenizer
// adds BOS when its metadata asks for it, exactly as llama.cpp does with its built-in
// templates, so there is never a double BOS. Texts inside the conversation stay in the text
// and become control tokens through parse_special: "</s>" closing an assistant turn
// (llama2/mistral) and the "<s>" that the llama2-sys-bos variant puts before later turns.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace kvrag::gguf {
class GgufFile;
}

namespace kvrag::chat {

// A function call the assistant made (OpenAI's message.tool_calls[i]).
struct ToolCall {
    std::string id;         // "call_..." as the API gave or made it
    std::string name;
    std::string arguments;  // JSON text of the arguments object
};

struct Message {
    std::string role;  // "system", "user" or "assistant"; chat/tool_calls.h also takes "tool"
    std::string content;
    std::vector<ToolCall> tool_calls{};  // assistant messages that called tools (tool_calls.h renders them)
    std::string tool_call_id{};        // role "tool": the call this result answers
};

class ChatTemplate {
public:
    // Every concrete format kvrag renders. The six family names used on the command line map
    // to one of these; the others are the llama.cpp variants that detect() can pick.
    enum class Kind {
        chatml,
        llama2,            // [INST] ... [/INST], a system message as plain text
        llama2_sys,        // + <<SYS>> block
        llama2_sys_bos,    // + "<s>" before every [INST] after the first
        llama2_sys_strip,  // + contents trimmed
        llama3,
        mistral_v1,
        mistral_v3,
        mistral_v3_tekken,
        mistral_v7,
        mistral_v7_tekken,
        gemma,
        phi3,
        qwen3,             // chatml + Qwen3's <think> handling (thinking off unless enabled)
        phi4_mini,         // <|{role}|>{content}<|end|>, no newlines (Phi-4-mini)
        phi35,             // phi3, an empty system message left out (Phi-3.5-mini)
    };

    // Family names: "chatml", "llama2", "llama3", "mistral" (= "mistral-v3"), "gemma",
    // "phi3", "qwen3"; variant names: "phi3.5", "phi4-mini", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip",
    // "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7", "mistral-v7-tekken".
    // Error: request_invalid, listing the known names.
    static Result<ChatTemplate> by_name(std::string_view name);
    // Recognises a Jinja chat template by its markers (a known name is also accepted, as in
    // llama.cpp). Error: tokenizer_unsupported, "unrecognised chat template (first 80 chars:
    // ...); use --chat-template NAME with one of: ...".
    static Result<ChatTemplate> detect(std::string_view jinja_source);
    // forced (non-empty) wins: a name, or Jinja source (anything containing "{{" or "{%"),
    // which is detected. Else tokenizer.chat_template from the file is detected; when the
    // file has none (or an empty one), chatml, and note() says so. Errors: those of by_name /
    // detect, and gguf_wrong_key_type when tokenizer.chat_template is not a string.
    static Result<ChatTemplate> for_model(const gguf::GgufFile& file, std::string_view forced = "");

    // The exact format: one of the names by_name accepts ("mistral" reports "mistral-v3").
    std::string_view name() const;
    // The family: "chatml", "llama2", "llama3", "mistral", "gemma", "phi3" or "qwen3"
    // (phi4-mini belongs to phi3).
    std::string_view family() const;
    Kind kind() const { return kind_; }
    // Empty, unless for_model fell back to chatml: then why, e.g.
    // "no tokenizer.chat_template in the model; using chatml".
    std::string note() const { return note_; }

    // Qwen3's thinking switch (the template's enable_thinking). Off by default: the generation
    // prompt then ends with an empty "<think>\n\n</think>\n\n" block, as Qwen3's template
    // writes it for enable_thinking=false, so the model answers without reasoning first. Other
    // formats ignore it (they have no such switch).
    void set_thinking(bool enable) { thinking_ = enable; }
    bool thinking() const { return thinking_; }

    // Renders the conversation. add_generation_prompt appends the assistant header for the
    // formats that have one (chatml, llama3, gemma, phi3); llama2 and mistral need none, the
    // model answers right after "[/INST]". Errors (request_invalid): an empty message list;
    // a role other than system/user/assistant, naming its index and the role.
    Result<std::string> render(std::span<const Message> messages, bool add_generation_prompt) const;

    // Texts that end an assistant turn in this format ("<|im_end|>", "<|eot_id|>",
    // "<end_of_turn>", "<|end|>", "</s>"), for use as stop strings when the model's EOG
    // token set does not already cover them.
    std::vector<std::string> end_of_turn_strings() const;

    // All names by_name accepts, families first, comma-separated (for help and errors).
    static std::string known_names();

private:
    explicit ChatTemplate(Kind kind, std::string note = {}) : kind_(kind), note_(std::move(note)) {}

    Kind kind_;
    std::string note_;
    bool thinking_ = false;
};

}  // namespace kvrag::chat
