// UTF-8 and GPT-2 byte-level helpers shared by the tokenizer algorithms.
//
// Decoding is deliberately lenient in the same way llama.cpp's is (no overlong or surrogate
// checks), because the golden vectors were produced by it: a byte that cannot start or finish
// a sequence becomes U+FFFD, everything else decodes by its lead byte.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvrag::tokenizer::detail {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Sequence length announced by a lead byte (1 for ASCII and for stray continuation bytes).
inline size_t utf8_len(uint8_t lead) {
    static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return kLen[lead >> 4];
}

// Decodes one code point at text[*pos] and advances *pos; invalid input yields U+FFFD and
// consumes exactly one byte.
uint32_t decode_lenient(std::string_view text, size_t* pos);

// Appends cpt as UTF-8. Surrogates are encoded as their 3 raw bytes (as llama.cpp does);
// values past U+10FFFF become U+FFFD.
void append_utf8(std::string& out, uint32_t cpt);

// Number of leading bytes of text that form complete, well-formed UTF-8 characters, stopping
// before an incomplete trailing sequence. *invalid_at is set to the offset of the first
// ill-formed byte, or npos when the prefix ends only because the input ends mid-character.
size_t valid_utf8_prefix(std::string_view text, size_t* invalid_at);

// Input prepared for regex matching: `subject` is valid UTF-8 (what PCRE2 sees) and `text`
// is what the tokens are made of (llama.cpp's re-encoding of the decoded code points). Both
// have the same length and the same character boundaries, so match offsets apply to either.
struct Sanitized {
    std::string subject;
    std::string text;
};
Sanitized sanitize_utf8(std::string_view raw);

// GPT-2 byte-to-unicode mapping: the printable bytes map to themselves, the other 68 to
// U+0100 + n in byte order, so every byte has a visible, whitespace-free stand-in.
const std::string& byte_to_unicode(uint8_t b);
// Inverse mapping; -1 when cpt is not the image of a byte.
int unicode_to_byte(uint32_t cpt);

// Maps every byte of text to its byte-level stand-in.
std::string byte_encode(std::string_view text);

}  // namespace kvrag::tokenizer::detail
