// The lexical query rules (lexical_query.h) as tables: identifiers stay one phrase, exact terms
// are recognised by shape, and no user text is ever FTS5 syntax.
#include "memory/lexical_query.h"

#include <gtest/gtest.h>

#include "memory/store.h"

namespace kvrag::memory {
namespace {

std::string describe(const std::vector<QueryTerm>& terms) {
    std::string out;
    for (const auto& t : terms) out += (out.empty() ? "" : " ") + std::string(t.exact ? "!" : "") + "[" + t.text + "]";
    return out;
}

TEST(MemoryLexicalQuery, TermsAndExactShapes) {
    struct Case { const char* query; const char* terms; };
    const Case cases[] = {
        {"Rules-Requires-Root", "![Rules-Requires-Root]"},
        {"what does Rules-Requires-Root do?", "[what] [does] ![Rules-Requires-Root] [do]"},
        {"E5002", "![E5002]"},
        {"Where is kv_cache.cpp defined.", "[Where] [is] ![kv_cache.cpp] [defined]"},
        {"patch for CVE-2024-3094, please", "[patch] [for] ![CVE-2024-3094] [please]"},
        {"in 1998", "[in] ![1998]"},
        // capitalised mid-sentence = a name; the first word and words after . ! ? : are not
        {"Who met Ada Lovelace? Bread rises.", "[Who] [met] ![Ada] ![Lovelace] [Bread] [rises]"},
        {"Really... Who cares? NASA does", "[Really] [Who] [cares] ![NASA] [does]"},
        {"Describe SQLite and iPhone", "[Describe] ![SQLite] [and] ![iPhone]"},
        // connectors at the ends are trimmed; apostrophes split
        {"C++ --flag-name end.", "[C] ![flag-name] [end]"},
        {"don't stop", "[don] [t] [stop]"},
        // user-quoted phrases are exact; an unbalanced quote runs to the end
        {"find \"rye bread\" now", "[find] ![rye bread] [now]"},
        {"open \"quote", "[open] ![quote]"},
        // duplicates (any case) once; punctuation-only pieces dropped
        {"the The THE", "[the]"},
        {"*** ??? \"\" -- ", ""},
        {"", ""},
    };
    for (const auto& c : cases) EXPECT_EQ(describe(parse_query_terms(c.query)), c.terms) << c.query;
}

TEST(MemoryLexicalQuery, MatchExpressionQuotesEveryTerm) {
    EXPECT_EQ(fts_match_expression(parse_query_terms("a NEAR(b) AND c-d")), "\"a\" OR \"NEAR\" OR \"b\" OR \"AND\" OR \"c-d\"");
    EXPECT_EQ(fts_match_expression({}), "");
    std::string many;
    for (int i = 0; i < 100; ++i) many += "w" + std::to_string(i) + "x ";
    EXPECT_EQ(parse_query_terms(many).size(), kMaxQueryTerms);
}

// Through SQLite: hostile queries are plain text (never "fts5: syntax error"), and an
// identifier matches only the chunk that holds it, not every chunk sharing one of its pieces.
TEST(MemoryLexicalQuery, IdentifiersMatchAsPhrasesInFts5) {
    auto st = std::move(*Store::open(":memory:"));
    ASSERT_TRUE(st->ensure_index("default", {"m", "fp", 2}).ok());
    const char* texts[] = {
        "In 2024 the release moved to a new cache layout written in cpp.",
        "CVE-2024-3094 is the xz backdoor found in March 2024.",
        "The file kv_cache.cpp holds the block pool.",
        "Error E5002 means max_tokens exceeds the context.",
        "Set Rules-Requires-Root: no in debian/control.",
        "House rules: the root cellar requires a key.",
    };
    DocumentInput d;
    d.index = "default";
    d.doc_id = "d";
    d.content_hash = "h";
    for (int i = 0; i < 6; ++i) d.chunks.push_back(ChunkInput{i, texts[i], 8, {1.0f, 0.0f}});
    ASSERT_TRUE(st->write_document(d).ok());
    auto rows = [&](const std::string& q) {
        auto r = st->lexical("default", q, 10);
        EXPECT_TRUE(r.ok()) << q << ": " << r.error().what();
        return r.ok() ? r->size() : size_t{99};
    };
    EXPECT_EQ(rows("CVE-2024-3094"), 1u);
    EXPECT_EQ(rows("kv_cache.cpp"), 1u);
    EXPECT_EQ(rows("E5002"), 1u);
    EXPECT_EQ(rows("Rules-Requires-Root"), 1u);
    EXPECT_EQ(rows("debian/control"), 1u);
    EXPECT_EQ(rows("2024"), 2u);
    for (const char* q : {"\"unbalanced", "NEAR(a b)", "a AND OR NOT", "***", "-", "text:root", "^start", "x*", "(", "{a b}:c", "'"}) {
        (void)rows(q);
    }
    auto ids = st->term_chunks("default", fts_phrase(QueryTerm{"2024", true}), 10);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(ids->size(), 2u);
    EXPECT_EQ(st->term_chunks("default", fts_phrase(QueryTerm{"2024", true}), 1)->size(), 1u);  // bounded
}

}  // namespace
}  // namespace kvrag::memory
