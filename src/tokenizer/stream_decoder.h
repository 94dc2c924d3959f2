// Incremental detokeniser for streaming generated text.
//
// Feed ids one at a time; each call returns only complete UTF-8 text. A character whose
// bytes arrive in several byte tokens (SPM <0xF0><0x9F>... or BPE byte-level pieces) is held
// back until its last byte arrives. Ill-formed bytes become U+FFFD as soon as they are seen
// to be ill-formed, so every returned string is valid UTF-8.
//
// Generated text continues a prompt, so by default every piece is kept as it is, the first
// one's leading space included: after "The capital of France is" the token "▁Paris" reads
// " Paris", as llama.cpp's server and OpenAI give it (llama.cpp streams token_to_piece with
// lstrip 0). With starts_text (a decoder whose ids begin a text, as Tokenizer::decode
// assumes) the space the SPM prefix added to the first token is dropped, as decode does, and
// the output matches Tokenizer::decode(all ids) except that decode's " ," / " 's" clean-up
// (gpt2-family vocabularies only) is not applied, since it would need to look ahead.
#pragma once

#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"

namespace kvrag::tokenizer {

class StreamDecoder {
public:
    // tok must outlive the decoder. special: also render control tokens (see token_to_piece).
    // starts_text: the ids begin a text (strip the SPM space prefix from the first piece, as
    // decode does); false: they continue one (a completion after its prompt).
    explicit StreamDecoder(const Tokenizer& tok, bool special = false, bool starts_text = false);

    // Text completed by this token (possibly empty).
    std::string feed(int32_t id);
    // Whatever is still held back, with an unfinished trailing character replaced by U+FFFD;
    // the decoder is then ready for a new sequence.
    std::string flush();

private:
    const Tokenizer& tok_;
    bool special_;
    bool starts_text_;
    bool first_;           // starts_text_ and no piece seen yet: strip the SPM space prefix
    std::string pending_;  // bytes of an unfinished character
};

}  // namespace kvrag::tokenizer
