// Constrained decoding: a GBNF-compatible grammar, a matcher over Unicode code points, and the
// token mask that keeps a model's output inside the grammar.
//
// Format (llama.cpp's GBNF, read as a specification; this parser is written here):
//   rule      ::= name "::=" alternatives          names: [a-zA-Z0-9_-]+; "root" is the start
//   alts      ::= seq ("|" seq)*                   a rule may continue on following lines
//   seq       ::= item*                            an empty seq matches ""
//   item      ::= atom ("*" | "+" | "?" | "{m}" | "{m,}" | "{m,n}")?
//   atom      ::= "literal" | [class] | [^class] | . | name | "(" alts ")"
//   escapes   ::= \n \r \t \\ \" \] \[ \- \xHH \uHHHH \UHHHHHHHH (in literals and classes)
//   comments  ::= "#" to end of line
// `.` is any code point (as in GBNF, newline included).
//
// Matcher design (a pushdown automaton with a set of stacks, as llama.cpp's, written anew):
// every rule is flattened into alternatives, each a run of elements (a code-point set or a
// rule reference) ending in an end marker; `*`, `+`, `?`, `{m,n}` and groups become generated
// rules. A stack holds positions (indexes into that flat element array): the top is the next
// element to match, the entries below are where to resume in the callers. Stacks are kept
// "expanded": every top is a code-point set, references having been replaced by their
// alternatives. The state is the deduplicated set of such stacks; an empty stack means the
// grammar has been matched completely. Advancing by a code point keeps the stacks whose top
// set holds it, steps past it and re-expands. Left recursion (also through rules that can
// match "") would make expansion loop, so the parser rejects it, naming the rule.
//
// Bounds: a grammar has at most kMaxElements elements after expansion; `{m,n}` counts at most
// kMaxRepeat; nesting of groups at most kMaxNesting. A state holds at most kMaxStacks stacks,
// each at most kMaxDepth deep: a step that would exceed either rejects the input (the token is
// masked) rather than spending unbounded time, so a pathological grammar constrains more, never
// hangs. UTF-8 split across tokens is kept as a partial character; the code points it can
// still become (a range) are checked against the stack tops so a token ending mid-character
// is only allowed when some completion is.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace kvrag::sampling {

inline constexpr size_t kMaxGrammarBytes = 1 << 20;
inline constexpr size_t kMaxElements = 1 << 18;
inline constexpr int kMaxRepeat = 1000;
inline constexpr int kMaxNesting = 64;
inline constexpr size_t kMaxStacks = 1024;
inline constexpr size_t kMaxDepth = 512;

// An inclusive code-point range [lo, hi].
struct CpRange {
    uint32_t lo, hi;
};

class Grammar {
public:
    // Parses GBNF text; the start rule is `root` (or `start_rule`). Errors: request_invalid
    // with "grammar line L col C: expected X, got Y", undefined rules, left recursion
    // ("rule 'expr' is left-recursive: expr -> term -> expr"), and size limits with numbers.
    static Result<std::shared_ptr<const Grammar>> parse(std::string_view text, std::string_view start_rule = "root");

    // Internal representation, public for the matcher and tests.
    enum class Kind : uint8_t { chars, ref, end };
    struct Elem {
        Kind kind;
        uint32_t arg;  // chars: index into sets_; ref: rule index; end: rule index it ends
    };
    std::span<const Elem> elems() const { return elems_; }
    const std::vector<CpRange>& set(uint32_t i) const { return sets_[i]; }
    const std::vector<uint32_t>& alternatives(uint32_t rule) const { return rule_alts_[rule]; }
    uint32_t root() const { return root_; }
    size_t n_rules() const { return rule_alts_.size(); }
    const std::string& rule_name(uint32_t r) const { return rule_names_[r]; }

private:
    friend class GrammarBuilder;
    std::vector<Elem> elems_;
    std::vector<std::vector<CpRange>> sets_;     // sorted, disjoint, positive ranges
    std::vector<std::vector<uint32_t>> rule_alts_;  // (n_rules) start positions in elems_
    std::vector<std::string> rule_names_;
    uint32_t root_ = 0;
};

// The matcher's state: which stacks are live and any incomplete UTF-8 character. Copyable;
// the token mask copies one per trie node it visits.
class GrammarMatcher {
public:
    explicit GrammarMatcher(std::shared_ptr<const Grammar> g);

    // Advances by bytes (UTF-8, possibly ending or starting mid-character). Returns false and
    // leaves the state unspecified-but-valid (dead) when the bytes cannot continue the grammar;
    // callers that need to try without committing copy first (see accepts()).
    bool advance(std::string_view bytes);
    bool advance_byte(uint8_t b);
    // Would `bytes` be a valid continuation? Does not change the state.
    bool accepts(std::string_view bytes) const;
    // The input so far is a complete sentence (the generation may stop here).
    bool accepting() const;
    // Complete and nothing more can follow: the only live stack is the empty one.
    bool finished() const;
    bool dead() const { return stacks_.empty(); }
    // Cheap pre-check before copying the state: false only when advance_byte(b) would surely
    // fail (an ASCII byte at a character boundary that no stack top holds).
    bool may_take_byte(uint8_t b) const;
    size_t n_stacks() const { return stacks_.size(); }
    // Same grammar and same state: every continuation is accepted by both or by neither.
    bool same_state(const GrammarMatcher& o) const;
    size_t state_hash() const;

private:
    using Stack = std::vector<uint32_t>;
    bool advance_cp(uint32_t cp);
    bool partial_possible() const;
    // Pushes the expansion of `s` (whose top may be a ref or end) into out; false on bounds.
    bool expand(Stack s, std::vector<Stack>& out) const;
    void dedup();

    std::shared_ptr<const Grammar> g_;
    std::vector<Stack> stacks_;
    uint32_t cp_ = 0;      // partial code point bits so far
    int need_ = 0;         // continuation bytes still expected (0: at a character boundary)
    int len_ = 1;          // byte length of the current character
    uint8_t lo2_ = 0x80, hi2_ = 0xBF;  // allowed range of the next continuation byte
};

// Token pieces in a byte trie, built once per vocabulary; walking it together with a matcher
// checks each shared prefix once.
class TokenMask {
public:
    // pieces: (n_vocab) bytes of each token (Tokenizer::token_to_piece); eog: (n_vocab) true
    // for end-of-generation tokens. Tokens with an empty piece that are not eog are never
    // allowed under a grammar (they would make no progress).
    TokenMask(const std::vector<std::string>& pieces, const std::vector<bool>& eog);

    // Sets logits of tokens that cannot continue `m` to -inf; eog tokens stay only when
    // m.accepting(). logits: (n_vocab). Returns the number of tokens left allowed.
    // Thread-safe. The allowed set is cached per matcher state (see the cache below), so a
    // state met again (inside a JSON string, where every character leads back to the same
    // state; the same schema in another request) costs one pass over the logits.
    size_t apply(const GrammarMatcher& m, float* logits) const;
    // apply() without the cache: always walks the trie. For the bench and tests.
    size_t apply_uncached(const GrammarMatcher& m, float* logits) const;
    // Entries the cache holds at most: kMaskCacheBytes of allowed flags, 2..64 entries.
    size_t cache_capacity() const { return cache_capacity_; }
    void clear_cache() const;
    static constexpr size_t kMaskCacheBytes = size_t{16} << 20;
    int32_t n_vocab() const { return static_cast<int32_t>(eog_.size()); }
    bool is_eog(int32_t id) const { return id >= 0 && id < n_vocab() && eog_[static_cast<size_t>(id)]; }
    // The bytes of token id ("" outside the vocabulary): what the matcher advances by.
    std::string_view piece(int32_t id) const { return id >= 0 && id < n_vocab() ? std::string_view(pieces_[static_cast<size_t>(id)]) : std::string_view(); }

private:
    struct Node {
        uint32_t first_child = 0, n_children = 0;  // children in nodes_[first, first + n)
        uint8_t byte = 0;
        std::vector<int32_t> tokens;  // tokens whose piece ends here
    };
    void walk(uint32_t node, const GrammarMatcher& m, std::vector<uint8_t>& allowed) const;
    // (n_vocab) 1 for each token allowed after m (the walk plus the eog rule).
    std::vector<uint8_t> allowed_after(const GrammarMatcher& m) const;
    size_t apply_allowed(const std::vector<uint8_t>& allowed, float* logits) const;

    // Most recently used first. An entry keeps its matcher (and so its grammar) alive, so a
    // grammar's address cannot be reused by another while its states are cached.
    struct CacheEntry {
        size_t hash;
        GrammarMatcher state;
        std::vector<uint8_t> allowed;
    };
    size_t cache_capacity_ = 2;
    mutable std::mutex cache_mu_;
    mutable std::list<CacheEntry> cache_;
    std::vector<Node> nodes_;  // nodes_[0] is the root (the empty prefix)
    std::vector<std::string> pieces_;  // (n_vocab)
    std::vector<bool> eog_;            // (n_vocab)
    std::vector<int32_t> eog_ids_;
};

}  // namespace kvrag::sampling
