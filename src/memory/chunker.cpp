#include "memory/chunker.h"

#include <algorithm>

namespace kvrag::memory {
namespace {

// A sentence or a line: the smallest piece the packer moves.
struct Unit {
    std::string text;
    int32_t n_tokens = 0;
    const char* sep = " ";    // joins it to the previous unit: " ", "\n" or "\n\n"
    bool para_start = false;  // first unit of a paragraph
};

int32_t count(const tokenizer::Tokenizer& tok, std::string_view s) {
    return static_cast<int32_t>(tok.encode(s, /*add_special=*/false, /*parse_special=*/false).size());
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

// Splits text into units: paragraphs at blank lines, lines at '\n', sentences after . ! ?
// (plus closing quotes/brackets) followed by whitespace.
std::vector<Unit> split_units(std::string_view text) {
    std::vector<Unit> units;
    bool next_para = true;
    bool next_line = false;
    size_t start = 0;
    auto emit = [&](size_t end) {
        std::string_view piece = trim(text.substr(start, end - start));
        if (!piece.empty()) {
            Unit u;
            u.text = std::string(piece);
            u.para_start = next_para;
            u.sep = next_para ? "\n\n" : next_line ? "\n" : " ";
            units.push_back(std::move(u));
            next_para = next_line = false;
        }
    };
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '\n') {
            emit(i);
            // a blank line (only whitespace up to the next '\n') starts a paragraph
            size_t j = i + 1;
            while (j < text.size() && (text[j] == ' ' || text[j] == '\t' || text[j] == '\r')) ++j;
            if (j < text.size() && text[j] == '\n') next_para = true;
            else if (!next_para) next_line = true;
            start = i + 1;
        } else if (c == '.' || c == '!' || c == '?') {
            size_t j = i + 1;
            while (j < text.size() && (text[j] == '"' || text[j] == '\'' || text[j] == ')' || text[j] == ']')) ++j;
            if (j < text.size() && (text[j] == ' ' || text[j] == '\t')) {
                emit(j);
                start = j;
                i = j - 1;
            }
        }
    }
    emit(text.size());
    return units;
}

// Cuts a text into pieces of at most max_tokens tokens by token ids (for a sentence that is
// too long on its own). The pieces are of equal size (within a token), so none is a stray
// tail: cutting every max_tokens left chunks such as a lone "|" at the end of a long table
// row, which then matched every other such tail. Decoding and re-encoding can shift a
// boundary by a token, so each piece is re-counted and the size lowered if needed (bounded).
void split_by_tokens(const tokenizer::Tokenizer& tok, const std::string& text, int32_t max_tokens, std::vector<std::string>& out) {
    const auto ids = tok.encode(text, false, false);
    int32_t limit = max_tokens;
    for (int attempt = 0; attempt < 8; ++attempt) {
        std::vector<std::string> pieces;
        bool fits = true;
        const size_t n_pieces = (ids.size() + static_cast<size_t>(limit) - 1) / static_cast<size_t>(limit);
        const size_t step = n_pieces == 0 ? 1 : (ids.size() + n_pieces - 1) / n_pieces;
        for (size_t a = 0; a < ids.size(); a += step) {
            const size_t b = std::min(ids.size(), a + step);
            std::string piece(trim(tok.decode(std::span<const int32_t>(ids.data() + a, b - a))));
            if (piece.empty()) continue;
            if (count(tok, piece) > max_tokens) fits = false;
            pieces.push_back(std::move(piece));
        }
        if (fits || limit <= 1) {
            for (auto& p : pieces) out.push_back(std::move(p));
            return;
        }
        limit = std::max(1, limit * 3 / 4);
    }
}

}  // namespace

std::string ChunkOptions::settings() const {
    return "max=" + std::to_string(max_tokens) + ",overlap=" + std::to_string(overlap);
}

Result<void> validate(const ChunkOptions& opt) {
    if (opt.max_tokens < 8) return Error{Errc::memory_bad_input, "chunk size " + std::to_string(opt.max_tokens) + " tokens is below the minimum 8"};
    if (opt.overlap < 0 || opt.overlap > opt.max_tokens / 2) {
        return Error{Errc::memory_bad_input, "chunk overlap " + std::to_string(opt.overlap) + " is outside [0, " +
                                                 std::to_string(opt.max_tokens / 2) + "] for chunks of " + std::to_string(opt.max_tokens)};
    }
    return {};
}

Result<std::vector<TextChunk>> chunk_text(std::string_view text, const tokenizer::Tokenizer& tok, const ChunkOptions& opt) {
    if (auto v = validate(opt); !v) return v.error();
    const int32_t max = opt.max_tokens;

    // 1. units, each at most max tokens
    std::vector<Unit> units;
    for (Unit& u : split_units(text)) {
        u.n_tokens = count(tok, u.text);
        if (u.n_tokens <= max) {
            units.push_back(std::move(u));
            continue;
        }
        std::vector<std::string> pieces;
        split_by_tokens(tok, u.text, max, pieces);
        for (size_t k = 0; k < pieces.size(); ++k) {
            Unit p;
            p.text = std::move(pieces[k]);
            p.n_tokens = count(tok, p.text);
            p.sep = k == 0 ? u.sep : " ";
            p.para_start = k == 0 && u.para_start;
            units.push_back(std::move(p));
        }
    }

    // 2. greedy packing. A chunk is a range of units; +1 token per join is the estimate
    // (the exact count is taken at the end).
    std::vector<std::pair<size_t, size_t>> ranges;  // [u0, u1) per chunk
    std::vector<int64_t> prefix(units.size() + 1, 0);  // prefix[k] = sum over [0, k) of (n_tokens + 1)
    for (size_t k = 0; k < units.size(); ++k) prefix[k + 1] = prefix[k] + units[k].n_tokens + 1;
    auto cost = [&](size_t a, size_t b) -> int64_t { return b > a ? prefix[b] - prefix[a] - 1 : 0; };
    size_t begin = 0;
    size_t i = 0;
    while (i < units.size()) {
        if (i > begin && cost(begin, i + 1) > max) {
            // Full: break at a paragraph start in the last quarter if there is one.
            size_t cut = i;
            for (size_t k = i; k > begin + 1; --k) {
                if (units[k - 1].para_start && cost(begin, k - 1) >= max * 3 / 4) {
                    cut = k - 1;
                    break;
                }
                if (cost(begin, k - 1) < max * 3 / 4) break;
            }
            ranges.emplace_back(begin, cut);
            // Overlap: whole trailing units of that chunk within opt.overlap tokens.
            size_t next = cut;
            while (next > begin + 1 && cost(next - 1, cut) <= opt.overlap) --next;
            if (next < cut && cost(next, i + 1) > max) next = cut;  // keep progress
            begin = next;  // units [cut, i) move to the next chunk; i is checked again
            continue;
        }
        ++i;
    }
    if (begin < units.size()) ranges.emplace_back(begin, units.size());

    // 3. texts with exact counts; a joined text over max (rare: joins merge tokens
    // differently) is cut by tokens.
    std::vector<TextChunk> out;
    for (const auto& [a, b] : ranges) {
        std::string t;
        for (size_t k = a; k < b; ++k) {
            if (k > a) t += units[k].sep;
            t += units[k].text;
        }
        int32_t n = count(tok, t);
        if (n <= max) {
            out.push_back(TextChunk{static_cast<int32_t>(out.size()), std::move(t), n});
            continue;
        }
        std::vector<std::string> pieces;
        split_by_tokens(tok, t, max, pieces);
        for (auto& p : pieces) {
            const int32_t np = count(tok, p);
            out.push_back(TextChunk{static_cast<int32_t>(out.size()), std::move(p), np});
        }
    }
    return out;
}

}  // namespace kvrag::memory
