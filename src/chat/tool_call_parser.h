// The model's answer, fed as it is generated, split into content text and tool calls in one of
// the tool formats (chat/tool_calls.h): hermes <tool_call>{json}</tool_call> anywhere in the
// text; llama3 (an optional <|python_tag|>, then one call object or an array of them as the
// whole answer); mistral (an optional [TOOL_CALLS], then an array of call objects or one).
//
// It says as early as it safely can what each byte is: text that cannot start a call goes out
// as content at once; only an ambiguous stretch is held (a prefix of "<tool_call>", or the
// opening of a JSON answer in the whole-answer formats). A call object is
// {"name": N, ARGS_KEY: value, ...} with ARGS_KEY "arguments" (llama3 also "parameters"; the
// first of the two to appear is the arguments; other keys are skipped). Its arguments text is
// the value's JSON with the whitespace between tokens removed (a string value: its decoded
// text), streamed as it grows; with no arguments key it is "{}".
//
// Two modes:
//   commit at name (streaming): a call begins (call_begin) as soon as its name is complete and
//     names an offered tool, and its arguments then stream. A call cut short (the answer ends,
//     or the JSON breaks) stays begun: calls_complete() says whether every call's arguments
//     closed. Text after a begun call in the whole-answer formats goes out as content.
//   commit when closed (a finished answer): a call counts only once it is whole (hermes: the
//     object closed and "</tool_call>" or the end of the answer follows; whole-answer formats:
//     every call in the answer valid and nothing but whitespace after it); otherwise its text is
//     content, as the model wrote it.
// An answer that stops early (max_tokens): a call whose name and arguments are complete stands
// in both modes, even when the rest of it (the object's "}", "</tool_call>", the array's "]") is
// missing. A call cut inside its name or arguments: in a stream, begun if its name was complete
// (its arguments as far as they went; calls_complete() false), else content; in a finished
// answer, content, as the model wrote it.
// Both modes agree on every answer whose calls are whole: the events' content concatenated, and
// each call's name and arguments, are the same however the answer is split into pieces; and on
// every prefix of such an answer, except for the one call cut inside its arguments.
// A call whose name is not an offered tool, or whose JSON breaks before it begins, is content.
// Content is trimmed: whitespace at its start is dropped and whitespace at its end is held until
// more content follows (so it is dropped at the end).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chat/json_scanner.h"
#include "chat/tool_calls.h"

namespace kvrag::chat {

struct ToolCallEvent {
    enum class Kind { content, call_begin, call_arguments };
    Kind kind = Kind::content;
    size_t index = 0;  // call_begin / call_arguments: the call's index (0, 1, ... in order)
    std::string text;  // content: text; call_begin: the function name; call_arguments: a fragment
};

class ToolCallParser {
public:
    ToolCallParser(ToolFormat format, std::span<const ToolFunction> tools, bool commit_at_name);

    // The next piece of the answer. Appends its events to `out`, merged into out's last event
    // when of the same kind (and call).
    void feed(std::string_view piece, std::vector<ToolCallEvent>& out);
    // The answer is complete: appends the events of whatever was held.
    void finish(std::vector<ToolCallEvent>& out);

    size_t n_calls() const { return n_begun_; }
    // True when every begun call's arguments value closed.
    bool calls_complete() const { return n_incomplete_ == 0; }

private:
    enum class Phase : uint8_t {
        text,         // hermes: content, watching for "<tool_call>" (held_: a prefix of it)
        call,         // inside a call object (held_: its text unless the call has begun)
        after_call,   // hermes: after the object, expecting whitespace and "</tool_call>"
        start,        // whole-answer formats: whitespace and the optional prefix tag
        value,        // whole-answer formats: expecting '{' or '['
        item,         // in the array: expecting '{' (a call)
        between,      // in the array after a call: ',' or ']'
        after_value,  // whole-answer formats: after the calls, only whitespace may follow
        passthrough,  // whole-answer formats: the answer is content from here on
    };
    enum class Field : uint8_t { name, args, other };
    // What one byte of a call object does to it: fits; breaks it (the byte is read again as
    // content); or makes it no call (its text, with the byte, is content).
    enum class Step : uint8_t { ok, bad, reject };
    enum class CallPhase : uint8_t { open, first_key, key, key_text, colon, value_start, value, after_value, closed };

    struct Call {
        CallPhase phase = CallPhase::open;
        std::string key;        // raw JSON text of the key being read
        Field field = Field::other;
        JsonScanner scan;       // the key, then the value being read
        std::string raw;        // raw text of the name value or of a string arguments value
        bool args_string = false;
        bool have_name = false, have_args = false, args_done = false;
        bool name_done = false;  // the name value is complete and names an offered tool
        bool begun = false;
        size_t index = 0;       // once begun
        std::string name;
        std::string args;       // arguments not yet sent (the call has not begun)
    };

    void byte(char c);
    void step(char c);  // c, already held, in phases start .. after_value
    void text_byte(char c);
    void start_byte(char c);
    void value_byte(char c);
    void item_byte(char c);
    void between_byte(char c);
    void after_value_byte(char c);
    void call_byte(char c);
    void after_call_byte(char c);
    Step call_object_byte(char c);
    Step value_field_byte(char c, JsonScanner::Byte b, bool last);
    void start_call();
    void begin(Call& call);
    void add_args(std::string_view text);
    // The held text is content after all (with or without c, which is then read again).
    void fail(char c, bool include_c);
    void content(std::string_view text);
    void push(ToolCallEvent::Kind kind, size_t index, std::string_view text);

    ToolFormat format_;
    std::vector<std::string> names_;
    std::string args_key_;  // "arguments", or "parameters" for llama3
    std::string tag_;       // whole-answer formats: the optional prefix; hermes: "<tool_call>"
    bool commit_at_name_;
    Phase phase_ = Phase::text;
    std::string held_;      // bytes not yet known to be content or a call
    size_t tag_pos_ = 0;    // bytes of a tag matched so far (start / after_call)
    size_t call_start_ = 0; // where the current call's text begins in held_
    bool array_ = false;
    Call cur_;
    std::vector<Call> whole_;  // commit when closed, whole-answer formats: the calls read
    size_t n_begun_ = 0;
    size_t n_incomplete_ = 0;
    bool content_started_ = false;
    std::string content_space_;  // trailing whitespace of the content, held
    std::vector<ToolCallEvent>* out_ = nullptr;
};

// Folds events into a ParsedToolCalls (calls get no id).
void collect_tool_call_events(std::span<const ToolCallEvent> events, ParsedToolCalls& out);

}  // namespace kvrag::chat
