// An incremental JSON scanner: fed one byte at a time, it says what each byte is to one JSON
// value (RFC 8259) without building it. The tool-call parser uses it to find where a call's
// arguments begin and end while they are still being generated, and to stream them without the
// whitespace between tokens.
#pragma once

#include <cstdint>
#include <string>

namespace kvrag::chat {

class JsonScanner {
public:
    enum class Byte : uint8_t {
        token,  // part of the value (a token, inside a string, or structural)
        space,  // whitespace between tokens (before the value or inside a container)
        last,   // part of the value, and the value is complete with it
        after,  // not part of the value: it was complete before this byte (a number ends here)
        error,  // the value cannot be valid JSON with this byte; the scanner stays in error
    };

    // The next byte of the value's text.
    Byte feed(char c);
    // True when the text so far is one complete value (a number at the end of the input
    // counts: nothing more can follow it).
    bool complete() const;
    bool failed() const { return state_ == State::error; }
    void reset() { *this = JsonScanner(); }

private:
    enum class State : uint8_t {
        value,             // expecting a value
        array_first,       // after '[': a value or ']'
        object_first,      // after '{': a key or '}'
        object_key,        // after ',' in an object: a key
        colon,             // after a key
        after_value,       // after a value inside a container: ',' or the closer
        string,
        string_escape,     // after '\'
        string_hex,        // inside \uXXXX (hex_left_ digits to go)
        number,
        literal,           // true / false / null (literal_ is the rest to match)
        done,
        error,
    };
    // The parts of a number (-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?) seen last.
    enum class Num : uint8_t { minus, zero, integer, dot, fraction, exp_mark, exp_sign, exponent };

    Byte start_value(char c);
    Byte end_value();         // a value just ended (its last byte was consumed)
    Byte after_value(char c); // a byte after a complete value inside a container
    Byte fail();

    State state_ = State::value;
    Num num_ = Num::minus;
    bool string_is_key_ = false;
    int8_t hex_left_ = 0;
    int8_t utf8_left_ = 0;      // continuation bytes the current UTF-8 character still needs
    const char* literal_ = nullptr;
    std::string stack_;         // the open containers, '{' or '['
};

}  // namespace kvrag::chat
