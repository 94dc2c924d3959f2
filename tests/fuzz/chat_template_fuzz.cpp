// libFuzzer target: the chat template code on arbitrary input. Two kinds of run, chosen by the
// first byte:
//   - detection: the rest is a template source (or name) for ChatTemplate::detect / by_name;
//     a recognised one renders a fixed conversation, an unrecognised one gives an error whose
//     message stays on one line (excerpt() escapes control characters for that);
//   - rendering: every format renders arbitrary messages (roles and contents from the input).
//
// Invariants (chat_template.h): render fails exactly when the list is empty or a role is not
// system/user/assistant, and then with request_invalid; otherwise each message's content
// (trimmed: some formats trim) appears in the text, the generation header ends it for the
// formats that have one, and the text never starts with a BOS string unless a content put it
// there.
#define KVRAG_FUZZ_TARGET "chat_template_fuzz"

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "chat/chat_template.h"
#include "fuzz_check.h"

namespace {

using kvrag::chat::ChatTemplate;
using kvrag::chat::Message;

const char* const kNames[] = {"chatml",     "llama2",         "llama3",           "mistral",    "gemma",
                              "phi3",       "llama2-sys",     "llama2-sys-bos",   "llama2-sys-strip",
                              "mistral-v1", "mistral-v3",     "mistral-v3-tekken", "mistral-v7", "mistral-v7-tekken"};

// The same whitespace set chat_template.cpp trims (ASCII only).
std::string_view trim(std::string_view s) {
    auto sp = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; };
    while (!s.empty() && sp(s.front())) s.remove_prefix(1);
    while (!s.empty() && sp(s.back())) s.remove_suffix(1);
    return s;
}

bool starts_with_bos(std::string_view s) {
    for (std::string_view bos : {"<s>", "<|begin_of_text|>", "<bos>"}) {
        if (s.substr(0, bos.size()) == bos) return true;
    }
    return false;
}

void check_render(const ChatTemplate& t, const std::vector<Message>& msgs, bool add_gen) {
    auto r = t.render(msgs, add_gen);
    bool roles_ok = !msgs.empty();
    for (const auto& m : msgs) roles_ok = roles_ok && (m.role == "system" || m.role == "user" || m.role == "assistant");
    if (!roles_ok) {
        KVRAG_FUZZ_CHECK(!r, "render accepted an empty list or an unknown role");
        KVRAG_FUZZ_CHECK(r.error().code == kvrag::Errc::request_invalid, "render's error is not request_invalid");
        return;
    }
    KVRAG_FUZZ_CHECK(r.ok(), "render refused a valid conversation");
    const std::string& out = *r;
    bool bos_in_content = false;
    for (const auto& m : msgs) {
        KVRAG_FUZZ_CHECK(out.find(trim(m.content)) != std::string::npos, "a message's content is missing from the prompt");
        bos_in_content = bos_in_content || m.content.find("<s>") != std::string::npos ||
                         m.content.find("<|begin_of_text|>") != std::string::npos || m.content.find("<bos>") != std::string::npos;
    }
    if (!bos_in_content) KVRAG_FUZZ_CHECK(!starts_with_bos(out), "the prompt starts with a BOS string");
    if (add_gen) {
        std::string_view header;
        const std::string_view family = t.family();
        if (family == "chatml") header = "<|im_start|>assistant\n";
        if (family == "llama3") header = "<|start_header_id|>assistant<|end_header_id|>\n\n";
        if (family == "gemma") header = "<start_of_turn>model\n";
        if (family == "phi3") header = t.name() == "phi4-mini" ? "<|assistant|>" : "<|assistant|>\n";
        if (family == "qwen3") header = t.thinking() ? "<|im_start|>assistant\n" : "<|im_start|>assistant\n<think>\n\n</think>\n\n";
        KVRAG_FUZZ_CHECK(std::string_view(out).substr(out.size() - std::min(out.size(), header.size())) == header,
                         "the generation prompt does not end the text");
    }
    KVRAG_FUZZ_CHECK(!t.end_of_turn_strings().empty(), "a format without end-of-turn strings");
}

void fuzz_detect(std::string_view src) {
    auto t = ChatTemplate::detect(src);
    if (t) {
        const std::vector<Message> conv = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}};
        check_render(*t, conv, true);
        KVRAG_FUZZ_CHECK(ChatTemplate::by_name(t->name()).ok(), "detect() gave a format by_name() does not know");
    } else {
        KVRAG_FUZZ_CHECK(t.error().message.find('\n') == std::string::npos, "detect's error message spans lines");
    }
    auto n = ChatTemplate::by_name(src);
    if (!n) KVRAG_FUZZ_CHECK(n.error().message.find('\n') == std::string::npos, "by_name's error message spans lines");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzedDataProvider in(data, size);
    const uint8_t mode = in.ConsumeIntegral<uint8_t>();
    if (mode % 4 == 0) {
        fuzz_detect(in.ConsumeRemainingBytesAsString());
        return 0;
    }
    auto t = ChatTemplate::by_name(kNames[mode % std::size(kNames)]);
    KVRAG_FUZZ_CHECK(t.ok(), "a listed format name is unknown");
    const bool add_gen = in.ConsumeBool();
    std::vector<Message> msgs;
    const size_t n = in.ConsumeIntegralInRange<size_t>(0, 12);
    for (size_t i = 0; i < n && in.remaining_bytes() > 0; ++i) {
        Message m;
        const uint8_t r = in.ConsumeIntegral<uint8_t>();
        // Mostly the valid roles, so the renderers themselves get most of the runs.
        m.role = r < 80 ? "user" : r < 160 ? "assistant" : r < 240 ? "system" : in.ConsumeRandomLengthString(16);
        m.content = in.ConsumeRandomLengthString(256);
        msgs.push_back(std::move(m));
    }
    check_render(*t, msgs, add_gen);
    return 0;
}
