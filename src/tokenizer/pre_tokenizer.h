// Regex pre-tokenizer for byte-level BPE vocabularies (tokenizer.ggml.pre).
//
// llama.cpp splits text with a list of regexes applied in turn: the first splits the whole
// text into pieces (matches and the gaps between them both become pieces), each later regex
// splits every piece again, and a regex never sees past the piece it works on (so `(?!\S)`
// at a piece's end succeeds). PCRE2 in UTF + UCP mode stands in for llama.cpp's mix of
// hand-written matchers and std::regex over "collapsed" text; both implement the same
// Unicode-class semantics (\p{L}, \p{N}, \p{P}, White_Space for \s).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace kvrag::tokenizer::detail {

// What a tokenizer.ggml.pre value selects, besides its regexes.
struct PreTokenizerSpec {
    std::string_view canonical;           // llama.cpp's pre-type family, e.g. "llama3"
    std::vector<std::string_view> regexes;
    bool clean_spaces = true;             // decode() tidies " ," / " 's" etc.
    bool ignore_merges = false;           // a piece that is already a token skips BPE merges
    bool force_add_bos = false;           // llama.cpp defaults add_bos to true for this family
};

// nullptr when name is unknown. An empty name means "default" (llama.cpp warns and uses it).
const PreTokenizerSpec* find_pre_tokenizer(std::string_view name);
// Comma-separated list of accepted tokenizer.ggml.pre values, for error messages.
std::string supported_pre_tokenizers();

class PreTokenizer {
public:
    // Compiles the regexes (E2001 when one does not compile).
    static Result<std::unique_ptr<PreTokenizer>> create(const std::vector<std::string_view>& regexes);
    ~PreTokenizer();

    // Splits `subject` (valid UTF-8) into pieces; returns the end offset of every piece, in
    // order, the last being subject.size(). Empty input gives no pieces.
    std::vector<size_t> split(std::string_view subject) const;

private:
    PreTokenizer() = default;
    struct Regex;
    std::vector<std::unique_ptr<Regex>> regexes_;
};

}  // namespace kvrag::tokenizer::detail
