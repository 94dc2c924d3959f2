#include "chat/tool_call_parser.h"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

namespace kvrag::chat {

namespace {

bool call_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// The text of a complete JSON string token, or false when it does not decode.
bool decode_json_string(const std::string& raw, std::string& out) {
    const nlohmann::json j = nlohmann::json::parse(raw, nullptr, false);
    if (j.is_discarded() || !j.is_string()) return false;
    out = j.get<std::string>();
    return true;
}

constexpr std::string_view kHermesClose = "</tool_call>";

}  // namespace

ToolCallParser::ToolCallParser(ToolFormat format, std::span<const ToolFunction> tools, bool commit_at_name)
    : format_(format), commit_at_name_(commit_at_name) {
    for (const auto& t : tools) names_.push_back(t.name);
    args_key_ = format == ToolFormat::llama3 ? "parameters" : "arguments";
    switch (format) {
        case ToolFormat::hermes:
            tag_ = "<tool_call>";
            phase_ = Phase::text;
            break;
        case ToolFormat::llama3:
            tag_ = "<|python_tag|>";
            phase_ = Phase::start;
            break;
        case ToolFormat::mistral:
            tag_ = "[TOOL_CALLS]";
            phase_ = Phase::start;
            break;
    }
}

void ToolCallParser::feed(std::string_view piece, std::vector<ToolCallEvent>& out) {
    out_ = &out;
    for (char c : piece) byte(c);
    out_ = nullptr;
}

void ToolCallParser::finish(std::vector<ToolCallEvent>& out) {
    out_ = &out;
    // The answer may stop anywhere (max_tokens, or the model ends early). A call stands once its
    // name and its arguments are complete, even when what follows them (the object's "}",
    // "</tool_call>", the array's "]") was never written: nothing of the call is missing. A call
    // cut inside its name or arguments stays begun, cut short, in a stream (calls_complete()
    // says so) and is text, as the model wrote it, in a finished answer.
    std::string rest = std::move(held_);  // content, unless the calls take it
    held_.clear();
    switch (phase_) {
        case Phase::after_call:  // hermes: the object closed; whitespace or part of "</tool_call>" followed
            if (!cur_.begun) begin(cur_);
            rest.clear();
            break;
        case Phase::call:
            for (Call& k : whole_) begin(k);
            if (cur_.name_done && cur_.args_done) {
                if (!cur_.begun) begin(cur_);
                rest.clear();
            } else if (cur_.begun) {
                ++n_incomplete_;  // its bytes were sent as the call
                rest.clear();
            } else if (!whole_.empty()) {
                rest.erase(0, call_start_);  // the cut call's own text, after the whole ones
            }
            whole_.clear();
            break;
        case Phase::item:
        case Phase::between:
        case Phase::after_value:
            // Whole-answer formats between or after whole calls ("[{...}, " or "[{...}"): they stand.
            if (!whole_.empty() || n_begun_ > 0) {
                for (Call& k : whole_) begin(k);
                whole_.clear();
                rest.clear();
            }
            break;
        default: break;
    }
    content(rest);
    content_space_.clear();
    phase_ = format_ == ToolFormat::hermes ? Phase::text : Phase::passthrough;
    out_ = nullptr;
}

void ToolCallParser::byte(char c) {
    if (phase_ == Phase::text) return text_byte(c);
    if (phase_ == Phase::passthrough) return content(std::string_view(&c, 1));
    held_ += c;
    step(c);
}

void ToolCallParser::step(char c) {
    switch (phase_) {
        case Phase::start: return start_byte(c);
        case Phase::value: return value_byte(c);
        case Phase::item: return item_byte(c);
        case Phase::call: return call_byte(c);
        case Phase::after_call: return after_call_byte(c);
        case Phase::between: return between_byte(c);
        case Phase::after_value: return after_value_byte(c);
        case Phase::text:
        case Phase::passthrough: break;
    }
}

void ToolCallParser::text_byte(char c) {
    held_ += c;
    if (held_.size() <= tag_.size() && tag_.compare(0, held_.size(), held_) == 0) {
        if (held_.size() == tag_.size()) start_call();  // held_ keeps the tag: content if no call follows
        return;
    }
    // Send from the front until what is left could still begin the tag.
    size_t cut = 1;
    while (cut < held_.size() && tag_.compare(0, held_.size() - cut, held_, cut) != 0) ++cut;
    content(std::string_view(held_).substr(0, cut));
    held_.erase(0, cut);
}

void ToolCallParser::start_byte(char c) {
    if (tag_pos_ == 0 && call_space(c)) return;
    if (tag_pos_ < tag_.size() && c == tag_[tag_pos_]) {
        if (++tag_pos_ == tag_.size()) {
            tag_pos_ = 0;
            phase_ = Phase::value;
        }
        return;
    }
    // Not the tag: what matched of it (mistral's "[" may open the array) and c are JSON text.
    const std::string replay = tag_.substr(0, tag_pos_) + c;
    tag_pos_ = 0;
    phase_ = Phase::value;
    for (char r : replay) {
        step(r);
        if (phase_ == Phase::passthrough) break;
    }
}

void ToolCallParser::value_byte(char c) {
    if (call_space(c)) return;
    if (c == '{') {
        array_ = false;
        start_call();
        return call_byte(c);
    }
    if (c == '[') {
        array_ = true;
        phase_ = Phase::item;
        return;
    }
    fail(c, true);
}

void ToolCallParser::item_byte(char c) {
    // Once a call has begun, earlier text is sent: hold only the next call's own text.
    if (call_space(c)) {
        if (n_begun_ > 0) held_.clear();
        return;
    }
    if (c != '{') return fail(c, true);
    if (n_begun_ > 0) held_.assign(1, c);
    start_call();
    call_byte(c);
}

void ToolCallParser::between_byte(char c) {
    if (c == ',') {
        phase_ = Phase::item;
    } else if (c == ']') {
        phase_ = Phase::after_value;
    } else if (!call_space(c)) {
        return fail(c, true);
    }
    if (n_begun_ > 0) held_.clear();
}

void ToolCallParser::after_value_byte(char c) {
    if (!call_space(c)) fail(c, true);
}

void ToolCallParser::start_call() {
    cur_ = Call{};
    // The call's own text starts at its '{' (hermes: the whole held text, from the tag).
    call_start_ = format_ == ToolFormat::hermes || held_.empty() ? 0 : held_.size() - 1;
    phase_ = Phase::call;
}

void ToolCallParser::call_byte(char c) {
    switch (call_object_byte(c)) {
        case Step::bad: return fail(c, false);
        case Step::reject: return fail(c, true);
        case Step::ok: break;
    }
    if (cur_.begun) held_.clear();  // the bytes of a begun call are the call
    if (cur_.phase != CallPhase::closed) return;
    if (!cur_.have_name) return fail(c, true);  // an object, but not a call
    if (!cur_.have_args) add_args("{}");
    cur_.args_done = true;
    if (format_ == ToolFormat::hermes) {
        phase_ = Phase::after_call;
        tag_pos_ = 0;
        return;
    }
    if (!cur_.begun) whole_.push_back(std::move(cur_));
    cur_ = Call{};
    cur_.args_done = true;
    phase_ = array_ ? Phase::between : Phase::after_value;
}

void ToolCallParser::after_call_byte(char c) {
    if (tag_pos_ == 0 && call_space(c)) return;
    if (tag_pos_ < kHermesClose.size() && c == kHermesClose[tag_pos_]) {
        if (++tag_pos_ == kHermesClose.size()) {
            if (!cur_.begun) begin(cur_);
            cur_ = Call{};
            held_.clear();
            phase_ = Phase::text;
        }
        return;
    }
    // Not the closing tag: a begun call stands (its arguments are complete); one not yet
    // begun is content, as the model wrote it.
    fail(c, false);
}

ToolCallParser::Step ToolCallParser::call_object_byte(char c) {
    Call& k = cur_;
    switch (k.phase) {
        case CallPhase::open:
            if (call_space(c)) return Step::ok;
            if (c != '{') return Step::bad;
            k.phase = CallPhase::first_key;
            return Step::ok;
        case CallPhase::first_key:
        case CallPhase::key:
            if (call_space(c)) return Step::ok;
            if (c == '}' && k.phase == CallPhase::first_key) {
                k.phase = CallPhase::closed;
                return Step::ok;
            }
            if (c != '"') return Step::bad;
            k.key.assign(1, c);
            k.scan.reset();
            k.scan.feed(c);
            k.phase = CallPhase::key_text;
            return Step::ok;
        case CallPhase::key_text: {
            k.key += c;
            const JsonScanner::Byte b = k.scan.feed(c);
            if (b == JsonScanner::Byte::error) return Step::bad;
            if (b != JsonScanner::Byte::last) return Step::ok;
            std::string key;
            if (!decode_json_string(k.key, key)) return Step::bad;
            // The first "name", and the first arguments key, count; any other key is skipped.
            if (key == "name" && !k.have_name) {
                k.field = Field::name;
                k.have_name = true;
            } else if ((key == args_key_ || key == "arguments") && !k.have_args) {
                k.field = Field::args;
                k.have_args = true;
            } else {
                k.field = Field::other;
            }
            k.phase = CallPhase::colon;
            return Step::ok;
        }
        case CallPhase::colon:
            if (call_space(c)) return Step::ok;
            if (c != ':') return Step::bad;
            k.phase = CallPhase::value_start;
            return Step::ok;
        case CallPhase::value_start:
            if (call_space(c)) return Step::ok;
            k.scan.reset();
            k.raw.clear();
            k.args_string = c == '"';
            k.phase = CallPhase::value;
            if (k.field == Field::name && c != '"') return Step::bad;  // a name is a string
            [[fallthrough]];
        case CallPhase::value: {
            const JsonScanner::Byte b = k.scan.feed(c);
            if (b == JsonScanner::Byte::error) return Step::bad;
            if (b == JsonScanner::Byte::after) {
                // A number ended before c (only an arguments or skipped value can be one).
                if (k.field == Field::args) k.args_done = true;
                k.phase = CallPhase::after_value;
                return call_object_byte(c);
            }
            const bool last = b == JsonScanner::Byte::last;
            if (last) k.phase = CallPhase::after_value;
            return value_field_byte(c, b, last);
        }
        case CallPhase::after_value:
            if (call_space(c)) return Step::ok;
            if (c == ',') {
                k.phase = CallPhase::key;
                return Step::ok;
            }
            if (c == '}') {
                k.phase = CallPhase::closed;
                return Step::ok;
            }
            return Step::bad;
        case CallPhase::closed: break;
    }
    return Step::bad;
}

ToolCallParser::Step ToolCallParser::value_field_byte(char c, JsonScanner::Byte b, bool last) {
    Call& k = cur_;
    switch (k.field) {
        case Field::other: return Step::ok;
        case Field::name: {
            k.raw += c;
            if (!last) return Step::ok;
            if (!decode_json_string(k.raw, k.name)) return Step::bad;
            if (std::find(names_.begin(), names_.end(), k.name) == names_.end()) return Step::reject;  // not an offered tool
            k.name_done = true;
            if (commit_at_name_) begin(k);
            return Step::ok;
        }
        case Field::args:
            if (k.args_string) {
                // A string value is the arguments' text itself: sent decoded, once complete.
                k.raw += c;
                if (!last) return Step::ok;
                std::string text;
                if (!decode_json_string(k.raw, text)) return Step::bad;
                add_args(text);
            } else if (b != JsonScanner::Byte::space) {
                add_args(std::string_view(&c, 1));
            }
            if (last) k.args_done = true;
            return Step::ok;
    }
    return Step::ok;
}

void ToolCallParser::begin(Call& k) {
    k.begun = true;
    k.index = n_begun_++;
    push(ToolCallEvent::Kind::call_begin, k.index, k.name);
    if (!k.args.empty()) push(ToolCallEvent::Kind::call_arguments, k.index, k.args);
    k.args.clear();
    held_.clear();
}

void ToolCallParser::add_args(std::string_view text) {
    if (cur_.begun) {
        push(ToolCallEvent::Kind::call_arguments, cur_.index, text);
    } else {
        cur_.args += text;
    }
}

void ToolCallParser::fail(char c, bool include_c) {
    if (!include_c) held_.pop_back();  // c is the last byte held
    if (cur_.begun && !cur_.args_done) ++n_incomplete_;
    cur_ = Call{};
    whole_.clear();  // calls read but not begun were part of this text
    tag_pos_ = 0;
    const std::string text = std::move(held_);
    held_.clear();
    phase_ = format_ == ToolFormat::hermes ? Phase::text : Phase::passthrough;
    content(text);
    if (!include_c) byte(c);
}

void ToolCallParser::content(std::string_view text) {
    for (char c : text) {
        if (std::isspace(static_cast<unsigned char>(c))) {
            if (content_started_) content_space_ += c;
            continue;
        }
        if (!content_space_.empty()) {
            push(ToolCallEvent::Kind::content, 0, content_space_);
            content_space_.clear();
        }
        push(ToolCallEvent::Kind::content, 0, std::string_view(&c, 1));
        content_started_ = true;
    }
}

void ToolCallParser::push(ToolCallEvent::Kind kind, size_t index, std::string_view text) {
    if (kind != ToolCallEvent::Kind::call_begin && !out_->empty() && out_->back().kind == kind && out_->back().index == index) {
        out_->back().text += text;
        return;
    }
    out_->push_back(ToolCallEvent{kind, index, std::string(text)});
}

void collect_tool_call_events(std::span<const ToolCallEvent> events, ParsedToolCalls& out) {
    for (const auto& e : events) {
        switch (e.kind) {
            case ToolCallEvent::Kind::content: out.content += e.text; break;
            case ToolCallEvent::Kind::call_begin:
                if (out.calls.size() <= e.index) out.calls.resize(e.index + 1);
                out.calls[e.index].name = e.text;
                break;
            case ToolCallEvent::Kind::call_arguments:
                if (out.calls.size() <= e.index) out.calls.resize(e.index + 1);
                out.calls[e.index].arguments += e.text;
                break;
        }
    }
}

}  // namespace kvrag::chat
