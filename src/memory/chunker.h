// Cuts a document's text into chunks of at most max_tokens tokens of the model in use, with
// overlap, breaking at paragraph boundaries where one is near, else at sentence (or line)
// boundaries, and inside a sentence only when the sentence alone is too long.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace kvrag::memory {

struct ChunkOptions {
    int32_t max_tokens = 256;  // per chunk (the embedding adds BOS on top)
    int32_t overlap = 32;      // tokens repeated from the end of the previous chunk (whole sentences)
    std::string settings() const;  // "max=256,overlap=32", stored with each document
};

struct TextChunk {
    int32_t position = 0;  // 0-based in the document
    std::string text;
    int32_t n_tokens = 0;  // tokenizer.encode(text, add_special=false).size() <= max_tokens
};

// Error memory_bad_input when max_tokens < 8 or overlap is outside [0, max_tokens / 2].
Result<void> validate(const ChunkOptions& opt);

// Empty or whitespace-only text gives no chunks. Every chunk satisfies n_tokens <= max_tokens.
Result<std::vector<TextChunk>> chunk_text(std::string_view text, const tokenizer::Tokenizer& tok, const ChunkOptions& opt);

}  // namespace kvrag::memory
