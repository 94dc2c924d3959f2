// Chat templates: golden renders per family, detection from Jinja excerpts, errors, and the
// for_model fallback on synthetic and shared GGUF files.
//
// Sources of the expected strings (the BOS rule removes the leading bos_token everywhere):
//   chatml  - the ChatML template as shipped by Qwen2-Instruct / OpenHermes-2.5
//             ('<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n').
//   llama3  - Meta-Llama-3-8B-Instruct's tokenizer_config.json template (content | trim).
//   gemma   - google/gemma-3 template (system text + "\n\n" prefixed to the first user turn,
//             role "model", content | trim).
//   phi3    - microsoft/Phi-3.5-mini-instruct template (system/user/assistant blocks).
//   qwen3   - Qwen/Qwen3 template (chatml turns; "<think>" split off assistant messages;
//             enable_thinking=false writes an empty think block after the generation prompt).
//   phi4-mini - microsoft/Phi-4-mini-instruct template ('<|' + role + '|>' + content + '<|end|>').
//   llama2  - Meta Llama-2-chat format as rendered by llama.cpp's four llama2 variants
//             (llama.cpp's llm_chat_apply_template; kvrag follows its BOS and spacing rules).
//   mistral - Mistral's documented v1 / v3 / v3-tekken / v7 / v7-tekken instruct formats
//             (mistralai cookbook "chat templates", as llama.cpp renders them).
#include "chat/chat_template.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace kvrag::chat {
namespace {

// A system message and three user turns; the second reply has padding to show which
// families trim.
const std::vector<Message> kChat = {
    {"system", "You are a terse assistant."},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "What is 2+2?"},
    {"assistant", "  4  "},
    {"user", "Thanks"},
};

std::string render_by_name(std::string_view name, bool add_gen = true) {
    auto t = ChatTemplate::by_name(name);
    EXPECT_TRUE(t.ok()) << name;
    if (!t) return {};
    auto r = t->render(kChat, add_gen);
    EXPECT_TRUE(r.ok()) << r.error().what();
    return r ? *r : std::string();
}

// ---------------------------------------------------------------------------------------------
// Golden renders
// ---------------------------------------------------------------------------------------------

TEST(ChatTemplateRender, Chatml) {
    EXPECT_EQ(render_by_name("chatml"),
              "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n"
              "<|im_start|>user\nHello<|im_end|>\n"
              "<|im_start|>assistant\nHi there<|im_end|>\n"
              "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
              "<|im_start|>assistant\n  4  <|im_end|>\n"
              "<|im_start|>user\nThanks<|im_end|>\n"
              "<|im_start|>assistant\n");
    // Without the generation prompt the text ends after the last message.
    const std::string no_gen = render_by_name("chatml", false);
    EXPECT_TRUE(no_gen.ends_with("<|im_start|>user\nThanks<|im_end|>\n"));
}

TEST(ChatTemplateRender, Llama3) {
    EXPECT_EQ(render_by_name("llama3"),
              "<|start_header_id|>system<|end_header_id|>\n\nYou are a terse assistant.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nThanks<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateRender, Gemma) {
    EXPECT_EQ(render_by_name("gemma"),
              "<start_of_turn>user\nYou are a terse assistant.\n\nHello<end_of_turn>\n"
              "<start_of_turn>model\nHi there<end_of_turn>\n"
              "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
              "<start_of_turn>model\n4<end_of_turn>\n"
              "<start_of_turn>user\nThanks<end_of_turn>\n"
              "<start_of_turn>model\n");
}

// Gemma 3's template (google/gemma-3-4b-it, rendered with jinja2): the first system text goes
// in front of the first turn as given (untrimmed, even empty) with "\n\n". Alone, the template
// writes nothing of it; kvrag keeps it as a user turn (never drops what a client sent; the
// chat_template fuzz target checks every content is in the prompt).
TEST(ChatTemplateRender, GemmaSystemAsTheTemplateWritesIt) {
    auto t = ChatTemplate::by_name("gemma").value();
    EXPECT_EQ(t.render(std::vector<Message>{{"system", " Be brief. "}, {"user", " Hi "}}, true).value(),
              "<start_of_turn>user\n Be brief. \n\nHi<end_of_turn>\n<start_of_turn>model\n");
    EXPECT_EQ(t.render(std::vector<Message>{{"system", ""}, {"user", "Hi"}}, true).value(),
              "<start_of_turn>user\n\n\nHi<end_of_turn>\n<start_of_turn>model\n");
    EXPECT_EQ(t.render(std::vector<Message>{{"system", " Be brief. "}}, true).value(),
              "<start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>model\n");
    EXPECT_EQ(t.render(std::vector<Message>{{"system", "A"}, {"system", "B"}}, true).value(),
              "<start_of_turn>user\nA\n\nB<end_of_turn>\n<start_of_turn>model\n");
    EXPECT_EQ(t.render(std::vector<Message>{{"system", "A "}, {"system", "B"}, {"user", "Q"}}, true).value(),
              "<start_of_turn>user\nA \n\nB\n\nQ<end_of_turn>\n<start_of_turn>model\n");
    // A system message later on (the template refuses it): in front of the next user turn.
    EXPECT_EQ(t.render(std::vector<Message>{{"user", "Hi"}, {"assistant", "Hello"}, {"system", " Be brief. "}, {"user", "Q"}}, true)
                  .value(),
              "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
              "<start_of_turn>user\nBe brief.\n\nQ<end_of_turn>\n<start_of_turn>model\n");
}

// microsoft/Phi-3.5-mini-instruct writes a system message only when it has content;
// Phi-3-mini-instruct always. Both are family "phi3".
TEST(ChatTemplateRender, Phi35LeavesAnEmptySystemMessageOut) {
    const std::vector<Message> msgs = {{"system", ""}, {"user", "Hi"}};
    EXPECT_EQ(ChatTemplate::by_name("phi3.5").value().render(msgs, true).value(), "<|user|>\nHi<|end|>\n<|assistant|>\n");
    EXPECT_EQ(ChatTemplate::by_name("phi3").value().render(msgs, true).value(),
              "<|system|>\n<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n");
}

TEST(ChatTemplateRender, Phi3) {
    EXPECT_EQ(render_by_name("phi3"),
              "<|system|>\nYou are a terse assistant.<|end|>\n"
              "<|user|>\nHello<|end|>\n"
              "<|assistant|>\nHi there<|end|>\n"
              "<|user|>\nWhat is 2+2?<|end|>\n"
              "<|assistant|>\n  4  <|end|>\n"
              "<|user|>\nThanks<|end|>\n"
              "<|assistant|>\n");
}

TEST(ChatTemplateRender, Qwen3ThinkingOffByDefault) {
    // As Qwen3's template renders with enable_thinking=false.
    EXPECT_EQ(render_by_name("qwen3"),
              "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n"
              "<|im_start|>user\nHello<|im_end|>\n"
              "<|im_start|>assistant\nHi there<|im_end|>\n"
              "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
              "<|im_start|>assistant\n  4  <|im_end|>\n"
              "<|im_start|>user\nThanks<|im_end|>\n"
              "<|im_start|>assistant\n<think>\n\n</think>\n\n");
    auto t = ChatTemplate::by_name("qwen3").value();
    EXPECT_FALSE(t.thinking());
    t.set_thinking(true);  // enable_thinking=true (the template's own default): no think block
    const std::vector<Message> one = {{"user", "Hi"}};
    EXPECT_EQ(t.render(one, true).value(), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(t.render(one, false).value(), "<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatTemplateRender, Qwen3DropsReasoningOfEarlierTurns) {
    auto t = ChatTemplate::by_name("qwen3").value();
    // A reply before the last user message keeps only its answer.
    const std::vector<Message> history = {
        {"user", "2+2?"},
        {"assistant", "<think>\nadd them\n</think>\n\n4"},
        {"user", "and 3+3?"},
    };
    EXPECT_EQ(t.render(history, true).value(),
              "<|im_start|>user\n2+2?<|im_end|>\n"
              "<|im_start|>assistant\n4<|im_end|>\n"
              "<|im_start|>user\nand 3+3?<|im_end|>\n"
              "<|im_start|>assistant\n<think>\n\n</think>\n\n");
    // The last message, after the last user turn, keeps its reasoning in a think block (and
    // gets an empty one when it has none).
    const std::vector<Message> tail = {{"user", "2+2?"}, {"assistant", "<think>\nadd\n</think>\n\n4"}};
    EXPECT_EQ(t.render(tail, false).value(),
              "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nadd\n</think>\n\n4<|im_end|>\n");
    const std::vector<Message> plain = {{"user", "2+2?"}, {"assistant", "4"}};
    EXPECT_EQ(t.render(plain, false).value(),
              "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>\n");
    EXPECT_EQ(t.end_of_turn_strings(), std::vector<std::string>{"<|im_end|>"});
}

TEST(ChatTemplateRender, Phi4Mini) {
    EXPECT_EQ(render_by_name("phi4-mini"),
              "<|system|>You are a terse assistant.<|end|>"
              "<|user|>Hello<|end|>"
              "<|assistant|>Hi there<|end|>"
              "<|user|>What is 2+2?<|end|>"
              "<|assistant|>  4  <|end|>"
              "<|user|>Thanks<|end|>"
              "<|assistant|>");
    EXPECT_EQ(ChatTemplate::by_name("phi4-mini").value().end_of_turn_strings(), std::vector<std::string>{"<|end|>"});
}

TEST(ChatTemplateRender, Llama2Variants) {
    // No <<SYS>> support: the system text goes in front of the first user message.
    EXPECT_EQ(render_by_name("llama2"),
              "[INST] You are a terse assistant.\nHello [/INST]Hi there</s>"
              "[INST] What is 2+2? [/INST]  4  </s>"
              "[INST] Thanks [/INST]");
    EXPECT_EQ(render_by_name("llama2-sys"),
              "[INST] <<SYS>>\nYou are a terse assistant.\n<</SYS>>\n\nHello [/INST]Hi there</s>"
              "[INST] What is 2+2? [/INST]  4  </s>"
              "[INST] Thanks [/INST]");
    // BOS text only between turns, never at the start (the tokenizer adds that one).
    EXPECT_EQ(render_by_name("llama2-sys-bos"),
              "[INST] <<SYS>>\nYou are a terse assistant.\n<</SYS>>\n\nHello [/INST]Hi there</s>"
              "<s>[INST] What is 2+2? [/INST]  4  </s>"
              "<s>[INST] Thanks [/INST]");
    EXPECT_EQ(render_by_name("llama2-sys-strip"),
              "[INST] <<SYS>>\nYou are a terse assistant.\n<</SYS>>\n\nHello [/INST]Hi there</s>"
              "[INST] What is 2+2? [/INST]4</s>"
              "[INST] Thanks [/INST]");
    // No generation prompt in this format: the flag changes nothing.
    EXPECT_EQ(render_by_name("llama2-sys", false), render_by_name("llama2-sys", true));
}

TEST(ChatTemplateRender, MistralVariants) {
    EXPECT_EQ(render_by_name("mistral"), render_by_name("mistral-v3"));
    EXPECT_EQ(render_by_name("mistral-v3"),
              "[INST] You are a terse assistant.\n\nHello[/INST] Hi there</s>"
              "[INST] What is 2+2?[/INST] 4</s>"
              "[INST] Thanks[/INST]");
    EXPECT_EQ(render_by_name("mistral-v1"),
              " [INST] You are a terse assistant.\n\nHello [/INST] Hi there</s>"
              " [INST] What is 2+2? [/INST]   4  </s>"
              " [INST] Thanks [/INST]");
    EXPECT_EQ(render_by_name("mistral-v3-tekken"),
              "[INST]You are a terse assistant.\n\nHello[/INST]Hi there</s>"
              "[INST]What is 2+2?[/INST]  4  </s>"
              "[INST]Thanks[/INST]");
    EXPECT_EQ(render_by_name("mistral-v7"),
              "[SYSTEM_PROMPT] You are a terse assistant.[/SYSTEM_PROMPT]"
              "[INST] Hello[/INST] Hi there</s>"
              "[INST] What is 2+2?[/INST]   4  </s>"
              "[INST] Thanks[/INST]");
    EXPECT_EQ(render_by_name("mistral-v7-tekken"),
              "[SYSTEM_PROMPT]You are a terse assistant.[/SYSTEM_PROMPT]"
              "[INST]Hello[/INST]Hi there</s>"
              "[INST]What is 2+2?[/INST]  4  </s>"
              "[INST]Thanks[/INST]");
}

TEST(ChatTemplateRender, NoFamilyStartsWithBosText) {
    const char* names[] = {"chatml", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip",
                           "llama3", "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7",
                           "mistral-v7-tekken", "gemma", "phi3"};
    for (const char* n : names) {
        const std::string s = render_by_name(n);
        for (const char* bos : {"<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"}) {
            EXPECT_FALSE(s.starts_with(bos)) << n << " starts with " << bos;
        }
    }
}

TEST(ChatTemplateRender, EndOfTurnStrings) {
    auto eot = [](std::string_view n) { return ChatTemplate::by_name(n).value().end_of_turn_strings(); };
    using V = std::vector<std::string>;
    EXPECT_EQ(eot("chatml"), V{"<|im_end|>"});
    EXPECT_EQ(eot("llama3"), V{"<|eot_id|>"});
    EXPECT_EQ(eot("gemma"), V{"<end_of_turn>"});
    EXPECT_EQ(eot("phi3"), V{"<|end|>"});
    EXPECT_EQ(eot("llama2-sys"), V{"</s>"});
    EXPECT_EQ(eot("mistral-v7"), V{"</s>"});
}

TEST(ChatTemplateRender, RejectsUnknownRoleAndEmptyList) {
    auto t = ChatTemplate::by_name("chatml").value();
    const std::vector<Message> bad = {{"user", "hi"}, {"assistant", "yo"}, {"tool", "42"}};
    auto r = t.render(bad, true);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::request_invalid);
    EXPECT_NE(r.error().message.find("messages[2]"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("'tool'"), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().what().substr(0, 6), "E5001 ");

    auto e = t.render(std::span<const Message>(), true);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code, Errc::request_invalid);
    EXPECT_NE(e.error().message.find("empty"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

TEST(ChatTemplateNames, FamiliesAndVariants) {
    struct Case {
        const char* name;
        const char* reported;
        const char* family;
    };
    const Case cases[] = {
        {"chatml", "chatml", "chatml"},         {"llama2", "llama2", "llama2"},
        {"llama3", "llama3", "llama3"},         {"mistral", "mistral-v3", "mistral"},
        {"gemma", "gemma", "gemma"},            {"phi3", "phi3", "phi3"},
        {"qwen3", "qwen3", "qwen3"},            {"phi4-mini", "phi4-mini", "phi3"},
        {"llama2-sys-bos", "llama2-sys-bos", "llama2"},
        {"mistral-v7-tekken", "mistral-v7-tekken", "mistral"},
    };
    for (const auto& c : cases) {
        auto t = ChatTemplate::by_name(c.name);
        ASSERT_TRUE(t.ok()) << c.name;
        EXPECT_EQ(t->name(), c.reported);
        EXPECT_EQ(t->family(), c.family);
        EXPECT_EQ(t->note(), "");
    }
}

TEST(ChatTemplateNames, UnknownNameListsKnownOnes) {
    auto r = ChatTemplate::by_name("vicuna");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::request_invalid);
    EXPECT_NE(r.error().message.find("'vicuna'"), std::string::npos);
    for (const char* n : {"chatml", "llama2", "llama3", "mistral", "gemma", "phi3"}) {
        EXPECT_NE(r.error().message.find(n), std::string::npos) << n;
    }
    EXPECT_FALSE(ChatTemplate::by_name("").ok());
    EXPECT_FALSE(ChatTemplate::by_name("ChatML").ok());  // names are case-sensitive
}

// ---------------------------------------------------------------------------------------------
// Detection from Jinja excerpts (the distinctive parts of the published templates)
// ---------------------------------------------------------------------------------------------

std::string detected(std::string_view src) {
    auto t = ChatTemplate::detect(src);
    if (!t) return "ERROR: " + t.error().what();
    return std::string(t->name());
}

TEST(ChatTemplateDetect, Families) {
    // Qwen2-Instruct (chatml with a default system message).
    EXPECT_EQ(detected("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                       "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
                       "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
                       "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
              "chatml");
    // Meta-Llama-3-8B-Instruct.
    EXPECT_EQ(detected("{% set loop_messages = messages %}{% for message in loop_messages %}"
                       "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
                       "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
                       "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
                       "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
              "llama3");
    // google/gemma-7b-it.
    EXPECT_EQ(detected("{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
                       "{{ raise_exception('System role not supported') }}{% endif %}"
                       "{% for message in messages %}{% if (message['role'] == 'assistant') %}"
                       "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
                       "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
                       "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"),
              "gemma");
    // microsoft/Phi-3.5-mini-instruct.
    EXPECT_EQ(detected("{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
                       "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
                       "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
                       "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
                       "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"),
              "phi3.5");  // family phi3; an empty system message is left out (ChatTemplateDetect.Phi35)
}

TEST(ChatTemplateDetect, Qwen3Gemma3Phi4Mini) {
    // Qwen/Qwen3-8B (the parts around the thinking switch).
    EXPECT_EQ(detected("{%- for message in messages %}{%- if (message.role == \"user\") %}"
                       "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}"
                       "{%- elif message.role == \"assistant\" %}{%- if '</think>' in content %}"
                       "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}{%- endif %}"
                       "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
                       "{%- if enable_thinking is defined and enable_thinking is false %}"
                       "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"),
              "qwen3");
    // google/gemma-3-4b-it.
    EXPECT_EQ(detected("{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
                       "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
                       "{%- set loop_messages = messages[1:] -%}{%- endif -%}{%- for message in loop_messages -%}"
                       "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
                       "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}"
                       "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"),
              "gemma");
    // microsoft/Phi-4-mini-instruct.
    EXPECT_EQ(detected("{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and "
                       "message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content'] + "
                       "'<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' + "
                       "message['role'] + '|>' + message['content'] + '<|end|>' }}{% endif %}{% endfor %}"
                       "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"),
              "phi4-mini");
}

TEST(ChatTemplateDetect, Phi35) {
    const std::string phi35 =
        "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + "
        "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + "
        "'<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";
    EXPECT_EQ(detected(phi35), "phi3.5");
    EXPECT_EQ(ChatTemplate::detect(phi35).value().family(), "phi3");
}

TEST(ChatTemplateDetect, Llama2Variants) {
    // meta-llama/Llama-2-7b-chat-hf: strips contents (and has BOS inside; strip wins, as in llama.cpp).
    EXPECT_EQ(detected("{% if loop.index0 == 0 and system_message != false %}"
                       "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
                       "{% endif %}{% if message['role'] == 'user' %}"
                       "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
                       "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"),
              "llama2-sys-strip");
    EXPECT_EQ(detected("{% if message['role'] == 'system' %}{{ '[INST] <<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}"
                       "{% elif message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"),
              "llama2-sys-bos");
    EXPECT_EQ(detected("{% if message['role'] == 'system' %}{{ '[INST] <<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}"
                       "{% elif message['role'] == 'user' %}{{ message['content'] + ' [/INST]' }}{% endif %}"),
              "llama2-sys");
    // mistralai/Mistral-7B-Instruct-v0.2 (no system support): llama.cpp treats it as llama2.
    EXPECT_EQ(detected("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                       "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
                       "{{ message['content'] + eos_token}}{% endif %}{% endfor %}"),
              "llama2");
}

TEST(ChatTemplateDetect, MistralVariants) {
    // Official v1 (Mistral-7B-Instruct-v0.1 / Mixtral-8x7B as republished by Mistral).
    EXPECT_EQ(detected("{%- if loop.first and system_message is defined %}"
                       "{{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
                       "{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"),
              "mistral-v1");
    // Official v3 (Mistral-7B-Instruct-v0.3): tools block, "[INST] " with a space after.
    EXPECT_EQ(detected("{%- if tools is not none and (message == user_messages[-1]) %}"
                       "{{- \"[AVAILABLE_TOOLS] [\" }}{%- endif %}"
                       "{{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}"),
              "mistral-v3");
    // v3-tekken (Mistral-Nemo): "[INST]" straight into the content.
    EXPECT_EQ(detected("{{- \"[AVAILABLE_TOOLS]\" + tools|tojson + \"[/AVAILABLE_TOOLS]\" }}"
                       "{{- \"[INST]\" + message[\"content\"] + \"[/INST]\" }}"),
              "mistral-v3-tekken");
    // v7 (Mistral-Large-2411) and v7-tekken (Mistral-Small-3).
    EXPECT_EQ(detected("{{- '[SYSTEM_PROMPT] ' + system_message + '[/SYSTEM_PROMPT]' }}"
                       "{{- '[INST] ' + message['content'] + '[/INST]' }}"),
              "mistral-v7");
    EXPECT_EQ(detected("{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}"
                       "{{- '[INST]' + message['content'] + '[/INST]' }}"),
              "mistral-v7-tekken");
}

TEST(ChatTemplateDetect, KnownNameIsAccepted) {
    EXPECT_EQ(detected("gemma"), "gemma");
    EXPECT_EQ(detected("mistral"), "mistral-v3");
}

TEST(ChatTemplateDetect, UnknownTemplateError) {
    // Vicuna-style template: none of kvrag's families.
    const std::string vicuna =
        "{% for message in messages %}{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + '\\n' }}"
        "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' + message['content'] + '</s>\\n' }}{% endif %}"
        "{% endfor %}";
    auto r = ChatTemplate::detect(vicuna);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::tokenizer_unsupported);
    const std::string expected_prefix =
        "unrecognised chat template (first 80 chars: \"" + vicuna.substr(0, 80) +
        "\"); use --chat-template NAME with one of: chatml, llama2, llama3, mistral, gemma, phi3, ";
    EXPECT_EQ(r.error().message.substr(0, expected_prefix.size()), expected_prefix) << r.error().message;
    EXPECT_EQ(r.error().what().substr(0, 6), "E2001 ");

    // Newlines are escaped so the message stays on one line; short sources are shown whole.
    auto nl = ChatTemplate::detect("{{ a }}\n{{ b }}");
    ASSERT_FALSE(nl.ok());
    EXPECT_NE(nl.error().message.find("\"{{ a }}\\n{{ b }}\""), std::string::npos) << nl.error().message;
    EXPECT_EQ(nl.error().message.find('\n'), std::string::npos);

    // phi4 and SmolVLM share <|im_start|> with chatml but are different formats.
    EXPECT_FALSE(ChatTemplate::detect("{{'<|im_start|>' + message['role'] + '<|im_sep|>'}}").ok());
    EXPECT_FALSE(ChatTemplate::detect("<|im_start|>{{ 'User:' }}<end_of_utterance>").ok());
    EXPECT_FALSE(ChatTemplate::detect("").ok());
}

// ---------------------------------------------------------------------------------------------
// for_model
// ---------------------------------------------------------------------------------------------

std::shared_ptr<gguf::GgufFile> tiny_gguf(const char* chat_template) {
    gguf::GgufWriter w;
    w.set_string("general.architecture", "llama");
    if (chat_template) w.set_string("tokenizer.chat_template", chat_template);
    return gguf::GgufFile::from_bytes(w.to_bytes()).value();
}

TEST(ChatTemplateForModel, DetectsFromMetadata) {
    auto f = tiny_gguf("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
                       "'<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}");
    auto t = ChatTemplate::for_model(*f);
    ASSERT_TRUE(t.ok()) << t.error().what();
    EXPECT_EQ(t->name(), "llama3");
    EXPECT_EQ(t->note(), "");
}

TEST(ChatTemplateForModel, FallsBackToChatml) {
    auto f = tiny_gguf(nullptr);
    auto t = ChatTemplate::for_model(*f);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->name(), "chatml");
    EXPECT_EQ(t->note(), "no tokenizer.chat_template in the model; using chatml");

    auto empty = ChatTemplate::for_model(*tiny_gguf(""));
    ASSERT_TRUE(empty.ok());
    EXPECT_EQ(empty->name(), "chatml");
    EXPECT_NE(empty->note().find("empty"), std::string::npos);
}

TEST(ChatTemplateForModel, ForcedWins) {
    auto f = tiny_gguf("{{ '<start_of_turn>' }}");
    EXPECT_EQ(ChatTemplate::for_model(*f)->name(), "gemma");
    EXPECT_EQ(ChatTemplate::for_model(*f, "phi3")->name(), "phi3");
    // A forced Jinja source is detected like the file's would be.
    EXPECT_EQ(ChatTemplate::for_model(*f, "{{ '<|im_start|>' }}")->name(), "chatml");
    auto bad = ChatTemplate::for_model(*f, "nope");
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().code, Errc::request_invalid);
}

TEST(ChatTemplateForModel, ErrorsOnUnknownOrMistypedTemplate) {
    auto unknown = ChatTemplate::for_model(*tiny_gguf("{{ 'USER: ' + m }}{{ 'ASSISTANT: ' }}"));
    ASSERT_FALSE(unknown.ok());
    EXPECT_EQ(unknown.error().code, Errc::tokenizer_unsupported);

    gguf::GgufWriter w;
    w.set_u32("tokenizer.chat_template", 7);
    auto f = gguf::GgufFile::from_bytes(w.to_bytes()).value();
    auto r = ChatTemplate::for_model(*f);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::gguf_wrong_key_type);
}

// The shared files: the models carry no template (fallback); the phi-3 vocabulary carries
// Phi-3-mini's template. Every file must give a usable template.
TEST(ChatTemplateSharedData, ModelsDetectOrFallBack) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    int n_checked = 0;
    for (const char* sub : {"models", "vocab"}) {
        const auto d = std::filesystem::path(dir) / sub;
        if (!std::filesystem::is_directory(d)) continue;
        for (const auto& entry : std::filesystem::directory_iterator(d)) {
            if (entry.path().extension() != ".gguf") continue;
            auto f = gguf::GgufFile::open(entry.path().string());
            ASSERT_TRUE(f.ok()) << f.error().what();
            auto t = ChatTemplate::for_model(**f);
            ASSERT_TRUE(t.ok()) << entry.path() << ": " << t.error().what();
            const bool has_template = (*f)->has("tokenizer.chat_template");
            if (has_template) {
                EXPECT_EQ(t->note(), "") << entry.path();
            } else {
                EXPECT_EQ(t->name(), "chatml") << entry.path();
                EXPECT_EQ(t->note(), "no tokenizer.chat_template in the model; using chatml");
            }
            if (entry.path().filename() == "ggml-vocab-phi-3.gguf") {
                EXPECT_EQ(t->name(), "phi3");
            }
            ++n_checked;
        }
    }
    EXPECT_GT(n_checked, 0);
}

// End to end with the real phi-3 vocabulary: the rendered text tokenizes to exactly one BOS
// (added by the tokenizer) and the turn markers become their control tokens.
TEST(ChatTemplateSharedData, Phi3TokenizesWithOneBos) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const auto path = std::filesystem::path(dir) / "vocab" / "ggml-vocab-phi-3.gguf";
    KVRAG_SKIP_UNLESS_SHARED(std::filesystem::exists(path)) << path << " not found";
    auto f = gguf::GgufFile::open(path.string()).value();
    auto tok = tokenizer::Tokenizer::from_gguf(*f);
    ASSERT_TRUE(tok.ok()) << tok.error().what();
    auto t = ChatTemplate::for_model(*f).value();
    ASSERT_EQ(t.name(), "phi3");
    const std::string text = t.render(kChat, true).value();
    const std::vector<int32_t> ids = (*tok)->encode(text, /*add_special=*/true, /*parse_special=*/true);
    ASSERT_TRUE((*tok)->add_bos());
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], (*tok)->bos_id());
    EXPECT_EQ(std::count(ids.begin(), ids.end(), (*tok)->bos_id()), 1);
    const auto end_id = (*tok)->find_token("<|end|>");
    const auto asst_id = (*tok)->find_token("<|assistant|>");
    ASSERT_TRUE(end_id && asst_id);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), *end_id), 6);
    EXPECT_EQ(ids.back() == *asst_id || ids[ids.size() - 2] == *asst_id, true);  // "<|assistant|>\n"
}

}  // namespace
}  // namespace kvrag::chat
