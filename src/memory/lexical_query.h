// Free text -> the terms of an FTS5 query, and which of them are "exact terms" (identifiers,
// names, numbers, quoted phrases) that hybrid search anchors on. Pure functions, no SQLite, so
// the rules are unit-tested as tables (tests/memory/lexical_query_test.cpp).
//
// Why phrases: the chunks_fts table uses FTS5's unicode61 tokenizer, which splits
// "Rules-Requires-Root", "kv_cache.cpp" and "CVE-2024-3094" into common pieces ("root",
// "cpp", "2024"). OR-ing the pieces would match every chunk that mentions 2024; quoting the
// whole identifier makes FTS5 match the pieces as one adjacent sequence (a phrase), and
// BM25 then weighs that phrase by its own (high) inverse document frequency.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvrag::memory {

struct QueryTerm {
    std::string text;    // what FTS5 gets inside double quotes (never holds '"')
    bool exact = false;  // identifier-, number- or name-shaped, or quoted by the user
};

// At most kMaxQueryTerms terms, deduplicated case-insensitively, in query order:
//  - "a quoted phrase" in the query is one exact term (an unbalanced quote runs to the end);
//  - elsewhere a term is a run of letters, digits, bytes >= 0x80 and the connectors
//    - _ . / : @ + # with connectors trimmed from both ends; a connector left inside makes it
//    an identifier (one phrase, exact);
//  - a word is exact when it holds a digit ("E5002", "1998"), an upper-case ASCII letter after
//    its first character ("SQLite", "iPhone"), or starts upper-case without starting a sentence
//    (the query's first word, or a word after . ! ? :, is only capitalised by grammar).
// Terms without a letter or digit are dropped, so the result may be empty.
std::vector<QueryTerm> parse_query_terms(std::string_view query);
constexpr size_t kMaxQueryTerms = 64;

// One FTS5 MATCH expression: every term double-quoted, OR'd ("a" OR "b c"). Quoting makes
// user punctuation and the words AND/OR/NOT/NEAR plain text, so it is never a syntax error.
// Empty when there are no terms.
std::string fts_match_expression(const std::vector<QueryTerm>& terms);

// The expression for one term alone (a quoted phrase).
std::string fts_phrase(const QueryTerm& term);

}  // namespace kvrag::memory
