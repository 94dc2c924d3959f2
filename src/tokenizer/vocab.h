// Internal vocabulary representation and the per-model tokenisation algorithms.
// Not part of the public API: include tokenizer/tokenizer.h instead.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace kvrag::tokenizer::detail {

enum class VocabKind { spm, bpe, wpm };

// A symbol of the merge algorithms (SPM bigram scores, BPE merge ranks): a byte range of the
// text being merged, linked to its neighbours; n is 0 once merged into its left neighbour.
struct MergeSymbol {
    uint32_t start = 0;
    uint32_t n = 0;
    int32_t prev = -1;
    int32_t next = -1;
};

// One symbol per UTF-8 character of text, linked in order (a truncated trailing character
// becomes a shorter symbol).
inline std::vector<MergeSymbol> split_into_symbols(std::string_view text) {
    std::vector<MergeSymbol> symbols;
    symbols.reserve(text.size());
    for (size_t offs = 0; offs < text.size();) {
        MergeSymbol sym;
        sym.start = static_cast<uint32_t>(offs);
        sym.n = static_cast<uint32_t>(std::min(utf8_len(static_cast<uint8_t>(text[offs])), text.size() - offs));
        offs += sym.n;
        sym.prev = static_cast<int32_t>(symbols.size()) - 1;
        sym.next = offs == text.size() ? -1 : static_cast<int32_t>(symbols.size()) + 1;
        symbols.push_back(sym);
    }
    return symbols;
}

struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

struct TokenData {
    std::string text;
    float score = 0.0f;
    TokenType type = TokenType::normal;
    bool lstrip = false;  // a special token that swallows whitespace on its left (parse_special)
    bool rstrip = false;  // ... and on its right
};

// Byte trie over the special-token texts: finds which of them occur in a text in one pass,
// so the (quadratic-looking) split below only runs for tokens that are actually present.
class SpecialMatcher {
public:
    void add(std::string_view text, int32_t id);
    // Calls found(id) for every token whose text occurs somewhere in text (ids may repeat).
    template <class F>
    void scan(std::string_view text, F&& found) const {
        for (size_t i = 0; i < text.size(); ++i) {
            int32_t node = root_[static_cast<uint8_t>(text[i])];
            for (size_t j = i + 1; node >= 0; ++j) {
                for (int32_t id : ends_[node]) found(id);
                if (j >= text.size()) break;
                node = child(node, static_cast<uint8_t>(text[j]));
            }
        }
    }

private:
    static std::array<int32_t, 256> make_root() {
        std::array<int32_t, 256> r;
        r.fill(-1);
        return r;
    }
    int32_t child(int32_t node, uint8_t b) const {
        auto it = edges_.find((static_cast<uint64_t>(node) << 8) | b);
        return it == edges_.end() ? -1 : it->second;
    }
    std::array<int32_t, 256> root_ = make_root();  // first byte -> node (-1: none)
    std::unordered_map<uint64_t, int32_t> edges_;   // (node << 8 | byte) -> child node
    std::vector<std::vector<int32_t>> ends_;        // (n_nodes) token ids whose text ends here
};

struct Vocab {
    VocabKind kind = VocabKind::spm;
    std::string model_name;
    std::string pre_name;

    std::vector<TokenData> tokens;  // (n_vocab)
    StringMap<int32_t> token_to_id;  // later duplicates win, as in llama.cpp
    StringMap<int32_t> merge_rank;   // "left right" merge string -> rank (first wins)
    std::vector<std::string> pieces;  // token_to_piece(id, special=true) for every id
    size_t max_token_len = 0;

    int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, sep = -1, pad = -1, mask = -1;
    bool add_bos = false;
    bool add_eos = false;
    bool add_space_prefix = false;
    bool clean_spaces = false;
    bool ignore_merges = false;
    std::set<int32_t> eog;

    // Control / user-defined / unknown tokens, longest text first: the order llama.cpp splits
    // them out of raw text in.
    std::vector<int32_t> special_tokens;
    SpecialMatcher special_matcher;  // over all of special_tokens

    std::optional<int32_t> find(std::string_view text) const {
        auto it = token_to_id.find(text);
        if (it == token_to_id.end()) return std::nullopt;
        return it->second;
    }
    bool valid(int32_t id) const { return id >= 0 && static_cast<size_t>(id) < tokens.size(); }
};

// SentencePiece BPE over one raw-text fragment whose spaces are already "▁"; byte fallback
// for characters that never formed a token.
void spm_tokenize(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out);

// Byte-level BPE merges over one byte-encoded pre-tokenizer piece.
void bpe_tokenize_word(const Vocab& vocab, std::string_view word, std::vector<int32_t>& out);

// WordPiece over one raw-text fragment (normalisation, splitting and greedy longest match).
void wpm_tokenize(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out);

}  // namespace kvrag::tokenizer::detail
