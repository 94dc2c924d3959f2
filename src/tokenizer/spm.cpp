// SentencePiece-style BPE (tokenizer.ggml.model "llama").
//
// Start from single UTF-8 characters and repeatedly merge the adjacent pair whose
// concatenation is the vocabulary token with the highest score (ties: leftmost pair), the
// same greedy order llama.cpp's llm_tokenizer_spm uses. A heap holds candidate pairs; pairs
// made stale by an earlier merge are recognised by their recorded sizes and skipped, so the
// whole fragment costs O(n log n).
#include <queue>

#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace kvrag::tokenizer::detail {

namespace {

using Symbol = MergeSymbol;

struct SpmBigram {
    float score = 0.0f;
    int32_t left = 0;
    int32_t right = 0;
    uint32_t size = 0;  // left.n + right.n when queued: a changed sum means the pair is stale
};

struct SpmBigramLess {
    bool operator()(const SpmBigram& a, const SpmBigram& b) const {
        return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
};

std::optional<int32_t> byte_token(const Vocab& vocab, uint8_t byte) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    const char name[6] = {'<', '0', 'x', kHex[byte >> 4], kHex[byte & 15], '>'};
    if (auto id = vocab.find(std::string_view(name, 6))) return id;
    // Some SPM vocabularies carry the raw byte as the token text instead of <0xXX>.
    const char raw = static_cast<char>(byte);
    if (auto id = vocab.find(std::string_view(&raw, 1))) return id;
    // llama.cpp aborts here; an unknown token keeps the output usable.
    if (vocab.valid(vocab.unk)) return vocab.unk;
    return std::nullopt;
}

}  // namespace

void spm_tokenize(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out) {
    if (text.empty()) return;

    std::vector<Symbol> symbols = split_into_symbols(text);

    std::priority_queue<SpmBigram, std::vector<SpmBigram>, SpmBigramLess> queue;
    auto try_add = [&](int32_t left, int32_t right) {
        if (left < 0 || right < 0) return;
        const uint32_t size = symbols[left].n + symbols[right].n;
        auto id = vocab.find(text.substr(symbols[left].start, size));
        if (!id) return;
        queue.push(SpmBigram{vocab.tokens[*id].score, left, right, size});
    };

    for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);

    while (!queue.empty()) {
        const SpmBigram b = queue.top();
        queue.pop();
        Symbol& l = symbols[b.left];
        Symbol& r = symbols[b.right];
        if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;
        l.n += r.n;
        r.n = 0;
        l.next = r.next;
        if (r.next >= 0) symbols[r.next].prev = b.left;
        try_add(l.prev, b.left);
        try_add(b.left, l.next);
    }

    for (int32_t i = 0; i != -1; i = symbols[i].next) {
        const Symbol& sym = symbols[i];
        const std::string_view piece = text.substr(sym.start, sym.n);
        if (auto id = vocab.find(piece)) {
            out.push_back(*id);
            continue;
        }
        // A merged symbol is always a token, so only single characters missing from the
        // vocabulary get here: emit their bytes.
        for (char c : piece) {
            if (auto id = byte_token(vocab, static_cast<uint8_t>(c))) out.push_back(*id);
        }
    }
}

}  // namespace kvrag::tokenizer::detail
