#include "chat/tool_calls.h"

#include "chat/tool_call_parser.h"

#include <nlohmann/json.hpp>

namespace kvrag::chat {
namespace {

using ojson = nlohmann::ordered_json;
using Kind = ChatTemplate::Kind;

// Schema text -> JSON (an unparsable one, which the server never passes, becomes {}).
ojson schema_json(const std::string& text) {
    ojson j = ojson::parse(text, nullptr, false);
    return j.is_discarded() ? ojson::object() : j;
}

// {"type": "function", "function": {"name", "description", "parameters"}}: how all three
// families list a tool.
ojson tool_json(const ToolFunction& t) {
    ojson f = {{"name", t.name}};
    if (!t.description.empty()) f["description"] = t.description;
    f["parameters"] = schema_json(t.parameters);
    return ojson{{"type", "function"}, {"function", f}};
}

// Arguments JSON text -> JSON value (invalid text, kept from a client, stays a string).
ojson args_json(const std::string& text) {
    ojson j = ojson::parse(text, nullptr, false);
    return j.is_discarded() ? ojson(text) : j;
}

Result<void> check_tool_messages(std::span<const Message> msgs) {
    bool call_seen = false;
    for (size_t i = 0; i < msgs.size(); ++i) {
        if (!msgs[i].tool_calls.empty()) call_seen = true;
        if (msgs[i].role == "tool" && !call_seen) {
            return Error{Errc::request_invalid, "messages[" + std::to_string(i) +
                                                    "] has role 'tool' but no assistant message with tool_calls comes before it"};
        }
    }
    return {};
}

// ---- hermes: everything becomes system / user / assistant text, rendered by the template.
// The tools block joins the leading system message (consumed from msgs), or becomes one.
void push_tools_system(std::vector<Message>& out, std::span<const Message>& msgs, const std::string& block) {
    if (!msgs.empty() && msgs[0].role == "system") {
        out.push_back(Message{"system", msgs[0].content + "\n\n" + block, {}, {}});
        msgs = msgs.subspan(1);
    } else {
        out.push_back(Message{"system", block, {}, {}});
    }
}

Result<std::string> render_hermes(const ChatTemplate& t, std::span<const Message> msgs, std::span<const ToolFunction> tools, bool add_gen) {
    std::vector<Message> out;
    if (!tools.empty()) {
        std::string block = "# Tools\n\nYou can call these functions to help with the user's request. Their signatures, one JSON object a line, are in <tools></tools>:\n<tools>";
        for (const auto& tool : tools) block += "\n" + tool_json(tool).dump();
        block += "\n</tools>\n\nTo call a function, answer with one JSON object per call, each inside <tool_call></tool_call> tags:\n"
                 "<tool_call>\n{\"name\": <function-name>, \"arguments\": <arguments-json-object>}\n</tool_call>";
        push_tools_system(out, msgs, block);
    }
    for (const auto& m : msgs) {
        if (m.role == "tool") {
            const std::string piece = "<tool_response>\n" + m.content + "\n</tool_response>";
            // Consecutive results share one user turn, as the Qwen template writes them.
            if (!out.empty() && out.back().role == "user" && out.back().content.rfind("<tool_response>", 0) == 0) {
                out.back().content += "\n" + piece;
            } else {
                out.push_back(Message{"user", piece, {}, {}});
            }
            continue;
        }
        Message copy{m.role, m.content, {}, {}};
        for (const auto& c : m.tool_calls) {
            if (!copy.content.empty()) copy.content += "\n";
            copy.content += "<tool_call>\n" + ojson{{"name", c.name}, {"arguments", args_json(c.arguments)}}.dump() + "\n</tool_call>";
        }
        out.push_back(std::move(copy));
    }
    return t.render(out, add_gen);
}

// ---- llama3: tools in the system turn, calls as bare JSON, results in ipython turns.
Result<std::string> render_llama3_tools(const ChatTemplate& t, std::span<const Message> msgs, std::span<const ToolFunction> tools, bool add_gen) {
    std::vector<Message> out;
    if (!tools.empty()) {
        std::string block = "You have access to the following functions. To call one, answer with only a JSON object of the form "
                            "{\"name\": function name, \"parameters\": object of argument names and values}. Do not use variables.\n";
        for (const auto& tool : tools) block += "\n" + tool_json(tool).dump(4) + "\n";
        push_tools_system(out, msgs, block);
    }
    for (const auto& m : msgs) {
        if (m.role == "tool") {
            out.push_back(Message{"ipython", m.content, {}, {}});
            continue;
        }
        Message copy{m.role, m.content, {}, {}};
        for (const auto& c : m.tool_calls) {
            if (!copy.content.empty()) copy.content += "\n";
            copy.content += ojson{{"name", c.name}, {"parameters", args_json(c.arguments)}}.dump();
        }
        out.push_back(std::move(copy));
    }
    return t.render(out, add_gen);
}

// ---- mistral v3 / v7: written here, since tool blocks sit between the template's turns.
Result<std::string> render_mistral_tools(const ChatTemplate& t, std::span<const Message> msgs, std::span<const ToolFunction> tools) {
    const bool v7 = t.kind() == Kind::mistral_v7 || t.kind() == Kind::mistral_v7_tekken;
    const std::string sp = t.kind() == Kind::mistral_v3 || t.kind() == Kind::mistral_v7 ? " " : "";
    size_t last_user = msgs.size();
    std::string system;
    for (size_t i = 0; i < msgs.size(); ++i) {
        if (msgs[i].role == "user") last_user = i;
        if (msgs[i].role == "system") system += (system.empty() ? "" : "\n\n") + msgs[i].content;
    }
    std::string out;
    if (v7 && !system.empty()) out += "[SYSTEM_PROMPT]" + sp + system + "[/SYSTEM_PROMPT]";
    for (size_t i = 0; i < msgs.size(); ++i) {
        const Message& m = msgs[i];
        if (m.role == "system") continue;
        if (m.role == "user") {
            if (i == last_user && !tools.empty()) {
                ojson list = ojson::array();
                for (const auto& tool : tools) list.push_back(tool_json(tool));
                out += "[AVAILABLE_TOOLS]" + sp + list.dump() + "[/AVAILABLE_TOOLS]";
            }
            out += "[INST]" + sp;
            // v3 puts the system text in front of the last user message.
            if (!v7 && i == last_user && !system.empty()) out += system + "\n\n";
            out += m.content + "[/INST]";
        } else if (m.role == "assistant") {
            if (!m.tool_calls.empty()) {
                ojson calls = ojson::array();
                for (const auto& c : m.tool_calls) calls.push_back(ojson{{"name", c.name}, {"arguments", args_json(c.arguments)}, {"id", c.id}});
                out += "[TOOL_CALLS]" + sp + calls.dump() + "</s>";
            } else {
                out += sp + m.content + "</s>";
            }
        } else if (m.role == "tool") {
            out += "[TOOL_RESULTS]" + sp + ojson{{"content", m.content}, {"call_id", m.tool_call_id}}.dump() + "[/TOOL_RESULTS]";
        } else {
            return Error{Errc::request_invalid, "messages[" + std::to_string(i) + "] has role '" + m.role +
                                                    "'; with tools the roles are system, user, assistant, tool"};
        }
    }
    return out;
}

}  // namespace

ToolFormat tool_format(const ChatTemplate& t) {
    switch (t.kind()) {
        case Kind::llama3: return ToolFormat::llama3;
        case Kind::mistral_v3:
        case Kind::mistral_v3_tekken:
        case Kind::mistral_v7:
        case Kind::mistral_v7_tekken: return ToolFormat::mistral;
        default: return ToolFormat::hermes;
    }
}

const char* tool_format_name(ToolFormat f) {
    switch (f) {
        case ToolFormat::hermes: return "hermes";
        case ToolFormat::llama3: return "llama3";
        case ToolFormat::mistral: return "mistral";
    }
    return "hermes";
}

Result<std::string> render_with_tools(const ChatTemplate& t, std::span<const Message> messages, std::span<const ToolFunction> tools,
                                      bool add_generation_prompt) {
    if (auto ok = check_tool_messages(messages); !ok) return ok.error();
    switch (tool_format(t)) {
        case ToolFormat::llama3: return render_llama3_tools(t, messages, tools, add_generation_prompt);
        case ToolFormat::mistral: return render_mistral_tools(t, messages, tools);
        case ToolFormat::hermes: break;
    }
    return render_hermes(t, messages, tools, add_generation_prompt);
}

ToolCallSyntax tool_call_syntax(ToolFormat f) {
    switch (f) {
        case ToolFormat::llama3: return {"", "", false, "parameters"};
        // [TOOL_CALLS] is a control token: its text is not generated, the array follows it.
        case ToolFormat::mistral: return {"", "", true, "arguments"};
        case ToolFormat::hermes: break;
    }
    return {"<tool_call>\n", "\n</tool_call>", false, "arguments"};
}

ParsedToolCalls parse_tool_calls(ToolFormat f, std::string_view text, std::span<const ToolFunction> tools) {
    // The streaming parser in its finished-answer mode: calls count only once whole.
    ToolCallParser parser(f, tools, /*commit_at_name=*/false);
    std::vector<ToolCallEvent> events;
    parser.feed(text, events);
    parser.finish(events);
    ParsedToolCalls out;
    collect_tool_call_events(events, out);
    return out;
}

}  // namespace kvrag::chat
