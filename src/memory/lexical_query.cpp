#include "memory/lexical_query.h"

#include "core/ascii.h"

#include <cctype>

namespace kvrag::memory {
namespace {

bool is_word_byte(unsigned char c) { return std::isalnum(c) || c >= 0x80; }
bool is_connector(unsigned char c) {
    return c == '-' || c == '_' || c == '.' || c == '/' || c == ':' || c == '@' || c == '+' || c == '#';
}
bool ends_sentence(unsigned char c) { return c == '.' || c == '!' || c == '?' || c == ':'; }


bool has_alnum(std::string_view s) {
    for (unsigned char c : s) {
        if (is_word_byte(c)) return true;
    }
    return false;
}

// The shape rules of the header comment, for a token with its connectors already trimmed.
bool exact_shaped(std::string_view tok, bool sentence_start) {
    for (size_t i = 0; i < tok.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(tok[i]);
        if (is_connector(c)) return true;               // an identifier
        if (std::isdigit(c)) return true;               // a number, a code
        if (i > 0 && std::isupper(c)) return true;      // SQLite, iPhone, NASA
    }
    return !sentence_start && std::isupper(static_cast<unsigned char>(tok[0]));  // a name mid-sentence
}

}  // namespace

std::vector<QueryTerm> parse_query_terms(std::string_view q) {
    std::vector<QueryTerm> out;
    std::vector<std::string> seen;  // lower-cased texts already added
    auto add = [&](std::string text, bool exact) {
        if (out.size() >= kMaxQueryTerms || !has_alnum(text)) return;
        // The scan below never lets a '"' into a term; replacing any with a space (which the
        // tokenizer treats alike) keeps fts_phrase() unable to emit a syntax error should
        // those rules change.
        for (auto& c : text) {
            if (c == '"') c = ' ';
        }
        const std::string key = ascii_lower(text);
        for (const auto& s : seen) {
            if (s == key) return;
        }
        seen.push_back(key);
        out.push_back(QueryTerm{std::move(text), exact});
    };

    bool sentence_start = true;
    size_t i = 0;
    while (i < q.size()) {
        const unsigned char c = static_cast<unsigned char>(q[i]);
        if (c == '"') {
            const size_t end = q.find('"', i + 1);
            const size_t stop = end == std::string_view::npos ? q.size() : end;
            add(std::string(q.substr(i + 1, stop - i - 1)), true);
            i = stop == q.size() ? stop : stop + 1;
            sentence_start = false;
            continue;
        }
        if (!is_word_byte(c) && !is_connector(c)) {
            if (ends_sentence(c)) sentence_start = true;
            ++i;
            continue;
        }
        size_t j = i;
        while (j < q.size() && (is_word_byte(static_cast<unsigned char>(q[j])) || is_connector(static_cast<unsigned char>(q[j])))) ++j;
        std::string_view tok = q.substr(i, j - i);
        // Trailing connectors: "end." or "C++"; a trimmed trailing '.' or ':' ("end.", "...")
        // still ends a sentence.
        size_t b = 0, e = tok.size();
        while (b < e && is_connector(static_cast<unsigned char>(tok[b]))) ++b;
        while (e > b && is_connector(static_cast<unsigned char>(tok[e - 1]))) --e;
        const bool ends = (e < tok.size() || e == b) && ends_sentence(static_cast<unsigned char>(tok.back()));
        if (e > b) {
            const std::string_view core = tok.substr(b, e - b);
            add(std::string(core), exact_shaped(core, sentence_start));
            sentence_start = false;
        }
        if (ends) sentence_start = true;
        i = j;
    }
    return out;
}

std::string fts_phrase(const QueryTerm& term) { return "\"" + term.text + "\""; }

std::string fts_match_expression(const std::vector<QueryTerm>& terms) {
    std::string out;
    for (const auto& t : terms) {
        if (!out.empty()) out += " OR ";
        out += fts_phrase(t);
    }
    return out;
}

}  // namespace kvrag::memory
