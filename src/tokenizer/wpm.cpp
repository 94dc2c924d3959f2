// WordPiece (tokenizer.ggml.model "bert"), following llama.cpp's llm_tokenizer_wpm.
//
// Normalisation: every code point is replaced by the first code point of its canonical
// decomposition (which drops accents of precomposed letters), lower-cased; control
// characters vanish; whitespace separates words; punctuation, ASCII symbols and CJK
// ideographs become one-character words. Each word, with a "▁" prefix marking its start
// (llama.cpp's converter rewrites "##" continuations that way), is then cut greedily into
// the longest vocabulary tokens; a word with any uncovered part becomes [UNK].
#include <utf8proc.h>

#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace kvrag::tokenizer::detail {

namespace {

// Unicode White_Space, the set llama.cpp's tables use for "whitespace".
bool is_whitespace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_chinese_char(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

uint32_t nfd_first(uint32_t c) {
    if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return c;
    utf8proc_int32_t buf[8];
    int boundclass = 0;
    const utf8proc_ssize_t n =
        utf8proc_decompose_char(static_cast<utf8proc_int32_t>(c), buf, 8, UTF8PROC_DECOMPOSE, &boundclass);
    return n >= 1 ? static_cast<uint32_t>(buf[0]) : c;
}

utf8proc_category_t category(uint32_t c) {
    if (c > 0x10FFFF) return UTF8PROC_CATEGORY_CN;
    return utf8proc_category(static_cast<utf8proc_int32_t>(c));
}

}  // namespace

void wpm_tokenize(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out) {
    std::vector<std::string> words(1);
    for (size_t pos = 0; pos < text.size();) {
        const uint32_t cpt = nfd_first(decode_lenient(text, &pos));
        if (is_whitespace(cpt)) {
            if (!words.back().empty()) words.emplace_back();
            continue;
        }
        const utf8proc_category_t cat = category(cpt);
        const bool control = cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
                             cat == UTF8PROC_CATEGORY_CO || cat == UTF8PROC_CATEGORY_CS;
        if (cpt == 0 || cpt == kReplacementChar || control) continue;

        const bool punct = cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
        const bool symbol = cat >= UTF8PROC_CATEGORY_SM && cat <= UTF8PROC_CATEGORY_SO;
        std::string s;
        append_utf8(s, cpt <= 0x10FFFF ? static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cpt))) : cpt);
        if (punct || (cpt < 0x7F && symbol) || is_chinese_char(cpt)) {
            if (!words.back().empty()) words.emplace_back();
            words.back() = std::move(s);
            words.emplace_back();
        } else {
            words.back() += s;
        }
    }
    if (words.back().empty()) words.pop_back();

    for (const std::string& w : words) {
        if (w.empty()) continue;
        const std::string word = "\xE2\x96\x81" + w;
        const size_t n = word.size();
        const size_t first = out.size();
        for (size_t i = 0; i < n; ++i) {
            bool matched = false;
            for (size_t j = std::min(n, i + vocab.max_token_len + 1); j > i; --j) {
                if (auto id = vocab.find(std::string_view(word).substr(i, j - i))) {
                    out.push_back(*id);
                    matched = true;
                    i = j - 1;
                    break;
                }
            }
            if (!matched) {  // one uncovered piece discards the whole word
                out.resize(first);
                break;
            }
        }
        if (out.size() == first && vocab.unk >= 0) out.push_back(vocab.unk);
    }
}

}  // namespace kvrag::tokenizer::detail
