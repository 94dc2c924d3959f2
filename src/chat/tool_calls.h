// Tool (function) calling in the chat formats: tool definitions and calls rendered the way
// each template family writes them, and the model's answer parsed back into calls.
//
// Formats (facts from the models' published chat templates; the wording of the instructions
// here is kvrag's own):
//   hermes  (chatml: Qwen 2.5 / 3, Hermes; also the fallback for gemma, phi3, llama2,
//           mistral v1): the tools as JSON lines inside <tools></tools> in the system
//           message; a call is "<tool_call>\n{"name": N, "arguments": {...}}\n</tool_call>";
//           results go back in a user turn as "<tool_response>\n...\n</tool_response>".
//   llama3  (Llama 3.1 / 3.2 / 3.3 JSON tool calling): the tools as JSON in the system
//           message; a call is the bare object {"name": N, "parameters": {...}}; results go
//           back in "ipython" turns.
//   mistral (v3, v3-tekken, v7, v7-tekken): "[AVAILABLE_TOOLS][...][/AVAILABLE_TOOLS]" before
//           the last user turn; a call is "[TOOL_CALLS][{"name": N, "arguments": {...}}]";
//           results are "[TOOL_RESULTS]{"content": ..., "call_id": ...}[/TOOL_RESULTS]".
#pragma once

#include <span>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "core/error.h"

namespace kvrag::chat {

struct ToolFunction {
    std::string name;
    std::string description;
    std::string parameters;  // JSON text of the parameters schema ("{}" when none was given)
};

enum class ToolFormat { hermes, llama3, mistral };
ToolFormat tool_format(const ChatTemplate& t);
const char* tool_format_name(ToolFormat f);

// The conversation (which may hold "tool" messages and assistant tool_calls) with `tools`
// offered, as prompt text. Errors (request_invalid): a "tool" message with no call before
// it, plus those of ChatTemplate::render.
Result<std::string> render_with_tools(const ChatTemplate& t, std::span<const Message> messages,
                                      std::span<const ToolFunction> tools, bool add_generation_prompt);

// How one call is written, for the grammar that forces a call: text before the JSON object
// of the call, after it, whether the objects sit in a JSON array (mistral), and the key of
// the arguments ("arguments", or "parameters" for llama3).
struct ToolCallSyntax {
    std::string prefix, suffix;
    bool array = false;
    std::string args_key;
};
ToolCallSyntax tool_call_syntax(ToolFormat f);

// The finished answer split into text and calls (chat/tool_call_parser.h, commit when closed:
// its rules). Calls whose JSON does not parse, that are cut off, or that name no offered tool
// are left in the text (the client sees what the model wrote). Arguments are the value's JSON
// text without the whitespace between tokens (the same text a stream sends).
struct ParsedToolCalls {
    std::string content;  // the text outside the calls, trimmed
    std::vector<ToolCall> calls;
};
ParsedToolCalls parse_tool_calls(ToolFormat f, std::string_view text, std::span<const ToolFunction> tools);

}  // namespace kvrag::chat
