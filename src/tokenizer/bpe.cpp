// Byte-level BPE merges (tokenizer.ggml.model "gpt2") over one pre-tokenizer piece.
//
// Same greedy order as llama.cpp's llm_tokenizer_bpe_session: repeatedly merge the adjacent
// pair with the lowest merge rank (ties: leftmost). Stale heap entries are detected by the
// symbol sizes recorded when they were queued (sizes only grow, so equal sizes mean the pair
// is unchanged), which keeps a piece at O(n log n).
#include <queue>

#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace kvrag::tokenizer::detail {

namespace {

using Symbol = MergeSymbol;

struct BpeBigram {
    int32_t rank = 0;
    int32_t left = 0;
    int32_t right = 0;
    uint32_t left_n = 0;
    uint32_t right_n = 0;
};

struct BpeBigramGreater {  // min-heap on (rank, left)
    bool operator()(const BpeBigram& a, const BpeBigram& b) const {
        return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    }
};

}  // namespace

void bpe_tokenize_word(const Vocab& vocab, std::string_view word, std::vector<int32_t>& out) {
    if (word.empty()) return;
    if (vocab.ignore_merges) {
        // llama3-style vocabularies: a piece that is a token as a whole is taken as is.
        if (auto id = vocab.find(word)) {
            out.push_back(*id);
            return;
        }
    }

    std::vector<Symbol> symbols = split_into_symbols(word);

    std::priority_queue<BpeBigram, std::vector<BpeBigram>, BpeBigramGreater> queue;
    std::string key;
    auto try_add = [&](int32_t left, int32_t right) {
        if (left < 0 || right < 0) return;
        const std::string_view l = word.substr(symbols[left].start, symbols[left].n);
        const std::string_view r = word.substr(symbols[right].start, symbols[right].n);
        // Merges are stored as "left right" split at the first space after position 0, so a
        // left part with a later space can never be a merge.
        if (l.find(' ', 1) != std::string_view::npos) return;
        key.assign(l);
        key += ' ';
        key += r;
        auto it = vocab.merge_rank.find(key);
        if (it == vocab.merge_rank.end()) return;
        queue.push(BpeBigram{it->second, left, right, symbols[left].n, symbols[right].n});
    };

    for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);

    while (!queue.empty()) {
        const BpeBigram b = queue.top();
        queue.pop();
        Symbol& l = symbols[b.left];
        Symbol& r = symbols[b.right];
        if (l.n != b.left_n || r.n != b.right_n || l.n == 0 || r.n == 0) continue;
        l.n += r.n;
        r.n = 0;
        l.next = r.next;
        if (r.next >= 0) symbols[r.next].prev = b.left;
        try_add(l.prev, b.left);
        try_add(b.left, l.next);
    }

    for (int32_t i = 0; i != -1; i = symbols[i].next) {
        const std::string_view piece = word.substr(symbols[i].start, symbols[i].n);
        if (auto id = vocab.find(piece)) {
            out.push_back(*id);
            continue;
        }
        // No token: llama.cpp tries each byte as a one-byte token and silently drops the rest.
        for (char c : piece) {
            if (auto id = vocab.find(std::string_view(&c, 1))) out.push_back(*id);
        }
    }
}

}  // namespace kvrag::tokenizer::detail
