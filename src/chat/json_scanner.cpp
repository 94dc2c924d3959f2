#include "chat/json_scanner.h"

namespace kvrag::chat {

namespace {

bool json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool json_digit(char c) { return c >= '0' && c <= '9'; }
bool json_hex(char c) { return json_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

}  // namespace

JsonScanner::Byte JsonScanner::fail() {
    state_ = State::error;
    return Byte::error;
}

JsonScanner::Byte JsonScanner::end_value() {
    if (stack_.empty()) {
        state_ = State::done;
        return Byte::last;
    }
    state_ = State::after_value;
    return Byte::token;
}

JsonScanner::Byte JsonScanner::start_value(char c) {
    switch (c) {
        case '{':
            stack_ += '{';
            state_ = State::object_first;
            return Byte::token;
        case '[':
            stack_ += '[';
            state_ = State::array_first;
            return Byte::token;
        case '"':
            string_is_key_ = false;
            state_ = State::string;
            return Byte::token;
        case 't': literal_ = "rue"; break;
        case 'f': literal_ = "alse"; break;
        case 'n': literal_ = "ull"; break;
        default:
            if (c == '-' || json_digit(c)) {
                num_ = c == '-' ? Num::minus : c == '0' ? Num::zero : Num::integer;
                state_ = State::number;
                return Byte::token;
            }
            return fail();
    }
    state_ = State::literal;
    return Byte::token;
}

JsonScanner::Byte JsonScanner::after_value(char c) {
    if (json_space(c)) return Byte::space;
    const char open = stack_.back();
    if (c == ',') {
        state_ = open == '{' ? State::object_key : State::value;
        return Byte::token;
    }
    if ((c == '}' && open == '{') || (c == ']' && open == '[')) {
        stack_.pop_back();
        return end_value();
    }
    return fail();
}

JsonScanner::Byte JsonScanner::feed(char c) {
    const auto u = static_cast<unsigned char>(c);
    switch (state_) {
        case State::error: return Byte::error;
        case State::done: return Byte::after;
        case State::value:
            if (json_space(c)) return Byte::space;
            return start_value(c);
        case State::array_first:
            if (json_space(c)) return Byte::space;
            if (c == ']') {
                stack_.pop_back();
                return end_value();
            }
            return start_value(c);
        case State::object_first:
        case State::object_key:
            if (json_space(c)) return Byte::space;
            if (c == '}' && state_ == State::object_first) {
                stack_.pop_back();
                return end_value();
            }
            if (c != '"') return fail();
            string_is_key_ = true;
            state_ = State::string;
            return Byte::token;
        case State::colon:
            if (json_space(c)) return Byte::space;
            if (c != ':') return fail();
            state_ = State::value;
            return Byte::token;
        case State::after_value: return after_value(c);
        case State::string:
            if (utf8_left_ > 0) {
                if ((u & 0xC0) != 0x80) return fail();
                --utf8_left_;
                return Byte::token;
            }
            if (c == '"') {
                if (string_is_key_) {
                    state_ = State::colon;
                    return Byte::token;
                }
                return end_value();
            }
            if (c == '\\') {
                state_ = State::string_escape;
                return Byte::token;
            }
            if (u < 0x20) return fail();  // control characters must be escaped
            if (u >= 0x80) {
                // A UTF-8 lead byte: C2..DF, E0..EF, F0..F4 start 2-, 3- and 4-byte characters.
                if (u >= 0xC2 && u <= 0xDF) utf8_left_ = 1;
                else if (u >= 0xE0 && u <= 0xEF) utf8_left_ = 2;
                else if (u >= 0xF0 && u <= 0xF4) utf8_left_ = 3;
                else return fail();
            }
            return Byte::token;
        case State::string_escape:
            if (c == 'u') {
                hex_left_ = 4;
                state_ = State::string_hex;
                return Byte::token;
            }
            if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
                state_ = State::string;
                return Byte::token;
            }
            return fail();
        case State::string_hex:
            if (!json_hex(c)) return fail();
            if (--hex_left_ == 0) state_ = State::string;
            return Byte::token;
        case State::literal:
            if (c != *literal_) return fail();
            if (*++literal_ == '\0') return end_value();
            return Byte::token;
        case State::number: {
            const bool digit = json_digit(c);
            switch (num_) {
                case Num::minus:
                    if (!digit) return fail();
                    num_ = c == '0' ? Num::zero : Num::integer;
                    return Byte::token;
                case Num::zero:
                case Num::integer:
                    if (digit && num_ == Num::integer) return Byte::token;
                    if (digit) return fail();  // no leading zeros
                    if (c == '.') {
                        num_ = Num::dot;
                        return Byte::token;
                    }
                    if (c == 'e' || c == 'E') {
                        num_ = Num::exp_mark;
                        return Byte::token;
                    }
                    break;
                case Num::dot:
                    if (!digit) return fail();
                    num_ = Num::fraction;
                    return Byte::token;
                case Num::fraction:
                    if (digit) return Byte::token;
                    if (c == 'e' || c == 'E') {
                        num_ = Num::exp_mark;
                        return Byte::token;
                    }
                    break;
                case Num::exp_mark:
                    if (c == '+' || c == '-') {
                        num_ = Num::exp_sign;
                        return Byte::token;
                    }
                    [[fallthrough]];
                case Num::exp_sign:
                    if (!digit) return fail();
                    num_ = Num::exponent;
                    return Byte::token;
                case Num::exponent:
                    if (digit) return Byte::token;
                    break;
            }
            // The number is complete; this byte comes after it.
            if (stack_.empty()) {
                state_ = State::done;
                return Byte::after;
            }
            state_ = State::after_value;
            return after_value(c);
        }
    }
    return fail();
}

bool JsonScanner::complete() const {
    if (state_ == State::done) return true;
    return state_ == State::number && stack_.empty() &&
           (num_ == Num::zero || num_ == Num::integer || num_ == Num::fraction || num_ == Num::exponent);
}

}  // namespace kvrag::chat
