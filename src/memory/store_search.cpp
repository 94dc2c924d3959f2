// The Store's side of search: the vector matrix for the exact scan, document filters, FTS5
// lexical matches and the chunk rows that hits are reported with.
#include "memory/sqlite_store.h"

#include <cstring>

#include "memory/lexical_query.h"
#include "memory/sqlite_db.h"

namespace kvrag::memory {

Result<std::shared_ptr<const VectorSet>> SqliteStore::vectors(const std::string& index) {
    std::lock_guard lk(mu_);
    auto gen = generation();
    if (!gen) return gen.error();
    auto& cached = vector_cache_[index];
    if (cached.set && cached.generation == *gen) return cached.set;

    auto set = std::make_shared<VectorSet>();
    {
        Stmt d(db_, "SELECT embed_dim FROM indexes WHERE name = ?");
        if (!d.ok()) return d.error();
        d.bind(1, index);
        if (!d.step()) return Error{Errc::memory_not_found, "index '" + index + "' does not exist"};
        set->dim = static_cast<int32_t>(d.i64(0));
    }
    Stmt s(db_,
           "SELECT c.id, c.doc, c.embedding FROM chunks c JOIN documents d ON d.id = c.doc"
           " WHERE d.idx = ? AND d.state = 'ready' ORDER BY c.id");
    if (!s.ok()) return s.error();
    s.bind(1, index);
    const size_t row_bytes = static_cast<size_t>(set->dim) * sizeof(float);
    while (s.step()) {
        if (static_cast<size_t>(s.bytes(2)) != row_bytes) {
            return Error{Errc::memory_store, "chunk " + std::to_string(s.i64(0)) + " has a " + std::to_string(s.bytes(2)) +
                                                 "-byte embedding; index '" + index + "' expects " + std::to_string(row_bytes)};
        }
        set->row_of.emplace(s.i64(0), set->chunk_ids.size());
        set->chunk_ids.push_back(s.i64(0));
        set->doc_rowids.push_back(s.i64(1));
        const size_t off = set->data.size();
        set->data.resize(off + set->dim);
        std::memcpy(set->data.data() + off, s.blob(2), row_bytes);
    }
    if (s.failed()) return s.error();
    cached.generation = *gen;
    cached.set = std::move(set);
    return cached.set;
}

Result<std::optional<std::unordered_set<int64_t>>> SqliteStore::filter_documents(const std::string& index, const std::string& doc_id,
                                                                            const Tags& tags) {
    using Out = std::optional<std::unordered_set<int64_t>>;
    if (doc_id.empty() && tags.empty()) return Out();
    std::lock_guard lk(mu_);
    std::unordered_set<int64_t> allowed;
    {
        Stmt s(db_, doc_id.empty() ? "SELECT id FROM documents WHERE idx = ? AND state = 'ready'"
                                   : "SELECT id FROM documents WHERE idx = ? AND state = 'ready' AND doc_id = ?");
        if (!s.ok()) return s.error();
        s.bind(1, index);
        if (!doc_id.empty()) s.bind(2, doc_id);
        while (s.step()) allowed.insert(s.i64(0));
        if (s.failed()) return s.error();
    }
    for (const auto& [k, v] : tags) {
        std::unordered_set<int64_t> with;
        Stmt s(db_, "SELECT doc FROM tags WHERE key = ? AND value = ?");
        if (!s.ok()) return s.error();
        s.bind(1, k).bind(2, v);
        while (s.step()) {
            if (allowed.count(s.i64(0))) with.insert(s.i64(0));
        }
        if (s.failed()) return s.error();
        allowed = std::move(with);
    }
    return Out(std::move(allowed));
}


Result<std::vector<std::pair<int64_t, double>>> SqliteStore::lexical(const std::string& index, const std::string& query, int32_t n_max) {
    std::vector<std::pair<int64_t, double>> out;
    // Words OR'd and identifiers as phrases (lexical_query.h): any shared word is a match,
    // BM25 ranks the rest, and user punctuation is never FTS5 syntax.
    const std::string q = fts_match_expression(parse_query_terms(query));
    if (q.empty() || n_max <= 0) return out;
    std::lock_guard lk(mu_);
    Stmt s(db_,
           "SELECT c.id, bm25(chunks_fts) AS score FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid"
           " JOIN documents d ON d.id = c.doc"
           " WHERE chunks_fts MATCH ? AND d.idx = ? AND d.state = 'ready' ORDER BY score LIMIT ?");
    if (!s.ok()) return s.error();
    s.bind(1, q).bind(2, index).bind(3, static_cast<int64_t>(n_max));
    while (s.step()) out.emplace_back(s.i64(0), s.f64(1));
    if (s.failed()) return s.error();
    return out;
}

Result<std::vector<int64_t>> SqliteStore::term_chunks(const std::string& index, const std::string& phrase, int32_t n_max) {
    std::vector<int64_t> out;
    if (n_max <= 0) return out;
    std::lock_guard lk(mu_);
    // The LIMIT bounds the work: callers only need to know whether the term is rarer than
    // n_max chunks, so a common word costs n_max rows, not its whole posting list.
    Stmt s(db_,
           "SELECT c.id FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.id = c.doc"
           " WHERE chunks_fts MATCH ? AND d.idx = ? AND d.state = 'ready' LIMIT ?");
    if (!s.ok()) return s.error();
    s.bind(1, phrase).bind(2, index).bind(3, static_cast<int64_t>(n_max));
    while (s.step()) out.push_back(s.i64(0));
    if (s.failed()) return s.error();
    return out;
}

Result<std::vector<ChunkRow>> SqliteStore::chunks(const std::vector<int64_t>& chunk_ids) {
    std::lock_guard lk(mu_);
    Stmt s(db_,
           "SELECT c.id, c.doc, d.idx, d.doc_id, d.name, d.source, c.position, c.n_tokens, c.text, d.tags"
           " FROM chunks c JOIN documents d ON d.id = c.doc WHERE c.id = ?");
    if (!s.ok()) return s.error();
    std::vector<ChunkRow> out;
    for (int64_t id : chunk_ids) {
        s.bind(1, id);
        if (s.step()) {
            ChunkRow r;
            r.chunk_id = s.i64(0);
            r.doc_rowid = s.i64(1);
            r.index = s.text(2);
            r.doc_id = s.text(3);
            r.doc_name = s.text(4);
            r.source = s.text(5);
            r.position = static_cast<int32_t>(s.i64(6));
            r.n_tokens = static_cast<int32_t>(s.i64(7));
            r.text = s.text(8);
            if (auto t = parse_tags(s.text(9))) r.tags = std::move(*t);
            out.push_back(std::move(r));
        }
        if (s.failed()) return s.error();
        s.reset();
    }
    return out;
}

}  // namespace kvrag::memory
