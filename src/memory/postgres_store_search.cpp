// The PostgreSQL store's side of search: the in-memory vector matrix kept in step through
// LISTEN/NOTIFY, document filters, tsvector lexical matches and the chunk rows of hits.
#include <algorithm>
#include <cstring>
#include <tuple>

#include "memory/lexical_query.h"
#include "memory/pg_db.h"
#include "memory/postgres_store.h"

namespace kvrag::memory {

// only_docs: just the chunks of those document rows (still ready in index).
Result<std::shared_ptr<VectorSet>> PostgresStore::load_vectors(pg::Connection& db, const std::string& index,
                                                               const std::vector<int64_t>* only_docs) {
    auto set = std::make_shared<VectorSet>();
    auto d = db.exec("SELECT embed_dim FROM indexes WHERE name = $1", pg::Params::of(index));
    if (!d) return d.error();
    if (d->empty()) return Error{Errc::memory_not_found, "index '" + index + "' does not exist"};
    set->dim = static_cast<int32_t>(d->i64(0, 0));
    auto s = db.exec(
        "SELECT c.id, c.doc, c.embedding FROM chunks c JOIN documents d ON d.id = c.doc"
        " WHERE d.idx = $1 AND d.state = 'ready' AND ($2::bigint[] IS NULL OR c.doc = ANY($2::bigint[])) ORDER BY c.id",
        only_docs ? pg::Params::of(index, pg::int_array(*only_docs)) : pg::Params::of(index).null(), /*binary_results=*/true);
    if (!s) return s.error();
    const size_t row_bytes = static_cast<size_t>(set->dim) * sizeof(float);
    set->chunk_ids.reserve(static_cast<size_t>(s->size()));
    set->doc_rowids.reserve(static_cast<size_t>(s->size()));
    set->data.resize(static_cast<size_t>(s->size()) * static_cast<size_t>(set->dim));
    for (int r = 0; r < s->size(); ++r) {
        const int64_t id = s->binary_i64(r, 0);
        if (static_cast<size_t>(s->length(r, 2)) != row_bytes) {
            return Error{Errc::memory_store, "chunk " + std::to_string(id) + " has a " + std::to_string(s->length(r, 2)) +
                                                 "-byte embedding; index '" + index + "' expects " + std::to_string(row_bytes)};
        }
        set->row_of.emplace(id, set->chunk_ids.size());
        set->chunk_ids.push_back(id);
        set->doc_rowids.push_back(s->binary_i64(r, 1));
        std::memcpy(set->data.data() + static_cast<size_t>(r) * static_cast<size_t>(set->dim), s->data(r, 2), row_bytes);
    }
    return set;
}

Result<std::shared_ptr<const VectorSet>> PostgresStore::vectors(const std::string& index) {
    // One reload at a time: a search arriving during another's reload waits for it and then
    // finds the set current, instead of reading the same rows again.
    std::lock_guard vk(vectors_mu_);
    std::shared_ptr<const VectorSet> old;
    bool full = true;
    std::unordered_set<int64_t> stale;
    {
        std::lock_guard ck(cache_mu_);
        auto& c = vector_cache_[index];
        old = c.set;
        // Without the watcher's connection no change is heard of: read everything each time.
        full = c.full_reload || !old || !listening_;
        stale.swap(c.stale_docs);
        c.full_reload = false;
    }
    if (!full && stale.empty()) return old;  // current: no statement, no connection
    auto restore = [&] {  // a failed load leaves the cache as stale as it was
        std::lock_guard ck(cache_mu_);
        auto& c = vector_cache_[index];
        c.full_reload = c.full_reload || full;
        c.stale_docs.insert(stale.begin(), stale.end());
    };

    auto lease = pool_->acquire();
    if (!lease) {
        restore();
        return lease.error();
    }
    pg::Connection& db = **lease;
    std::shared_ptr<VectorSet> next;
    if (!full) {
        const std::vector<int64_t> docs(stale.begin(), stale.end());
        auto fresh = load_vectors(db, index, &docs);
        if (!fresh) {
            restore();
            return fresh.error();
        }
        if ((*fresh)->dim != old->dim) {
            full = true;  // the index was deleted and made again by another model
        } else {
            // The old rows of unchanged documents plus the changed documents' current rows,
            // in chunk id order (as a full load gives them).
            struct Row {
                int64_t chunk, doc;
                const float* v;
            };
            std::vector<Row> rows;
            rows.reserve(old->size() + (*fresh)->size());
            const size_t dim = static_cast<size_t>(old->dim);
            for (size_t r = 0; r < old->size(); ++r) {
                if (!stale.count(old->doc_rowids[r])) rows.push_back({old->chunk_ids[r], old->doc_rowids[r], old->data.data() + r * dim});
            }
            for (size_t r = 0; r < (*fresh)->size(); ++r) {
                rows.push_back({(*fresh)->chunk_ids[r], (*fresh)->doc_rowids[r], (*fresh)->data.data() + r * dim});
            }
            std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.chunk < b.chunk; });
            next = std::make_shared<VectorSet>();
            next->dim = old->dim;
            next->data.resize(rows.size() * dim);
            for (size_t r = 0; r < rows.size(); ++r) {
                next->row_of.emplace(rows[r].chunk, r);
                next->chunk_ids.push_back(rows[r].chunk);
                next->doc_rowids.push_back(rows[r].doc);
                std::memcpy(next->data.data() + r * dim, rows[r].v, dim * sizeof(float));
            }
        }
    }
    if (full) {
        auto all = load_vectors(db, index, nullptr);
        if (!all) {
            restore();
            return all.error();
        }
        next = std::move(*all);
    }
    std::lock_guard ck(cache_mu_);
    auto& c = vector_cache_[index];
    c.set = std::move(next);
    return c.set;
}

Result<std::optional<std::unordered_set<int64_t>>> PostgresStore::filter_documents(const std::string& index, const std::string& doc_id,
                                                                                   const Tags& tags) {
    using Out = std::optional<std::unordered_set<int64_t>>;
    if (doc_id.empty() && tags.empty()) return Out();
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    std::unordered_set<int64_t> allowed;
    auto s = db.exec("SELECT id FROM documents WHERE idx = $1 AND state = 'ready' AND ($2::text = '' OR doc_id = $2::text)",
                       pg::Params::of(index, doc_id));
    if (!s) return s.error();
    for (int r = 0; r < s->size(); ++r) allowed.insert(s->i64(r, 0));
    for (const auto& [k, v] : tags) {
        std::unordered_set<int64_t> with;
        auto t = db.exec("SELECT doc FROM tags WHERE key = $1 AND value = $2", pg::Params::of(k, v));
        if (!t) return t.error();
        for (int r = 0; r < t->size(); ++r) {
            if (allowed.count(t->i64(r, 0))) with.insert(t->i64(r, 0));
        }
        allowed = std::move(with);
    }
    return Out(std::move(allowed));
}

Result<std::vector<std::pair<int64_t, double>>> PostgresStore::lexical(const std::string& index, const std::string& query,
                                                                        int32_t n_max) {
    std::vector<std::pair<int64_t, double>> out;
    // The same terms as the SQLite store's FTS5 query (lexical_query.h), each a phrase; a
    // chunk matching any term is a match. BM25's idea carried over: each matched term adds
    // idf(term) * ts_rank_cd(chunk, term), ts_rank_cd normalised by log(chunk length), so a
    // rare term outweighs a common one. The document frequencies are counted over every
    // chunk, as FTS5's are over its whole table. MATERIALIZED: each CTE runs once; inlined,
    // the planner (misled by row estimates of 1 before ANALYZE) recounted the idf and the
    // chunk total for every matching chunk: 800 ms instead of milliseconds for two common
    // words over 600 chunks (EXPLAIN ANALYZE, docs/scale.md).
    std::vector<std::string> terms;
    for (const auto& t : parse_query_terms(query)) terms.push_back(t.text);
    if (terms.empty() || n_max <= 0) return out;
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    auto s = db.exec(
        "WITH terms AS (SELECT phraseto_tsquery('simple', t) AS q FROM unnest($2::text[]) AS t),"
        " n AS MATERIALIZED (SELECT greatest(coalesce(sum(n_chunks), 0), 1)::float8 AS total FROM documents WHERE state = 'ready'),"
        " weighted AS MATERIALIZED (SELECT terms.q, ln(1 + (n.total - x.df + 0.5) / (x.df + 0.5)) AS idf FROM terms CROSS JOIN n,"
        "   LATERAL (SELECT count(*)::float8 AS df FROM chunks c WHERE c.tsv @@ terms.q) x WHERE numnode(terms.q) > 0)"
        " SELECT c.id, -sum(w.idf * ts_rank_cd(c.tsv, w.q, 1)) AS score"
        " FROM weighted w JOIN chunks c ON c.tsv @@ w.q JOIN documents d ON d.id = c.doc"
        " WHERE d.idx = $1 AND d.state = 'ready' GROUP BY c.id ORDER BY score, c.id LIMIT $3",
        pg::Params::of(index, pg::text_array(terms), n_max));
    if (!s) return s.error();
    for (int r = 0; r < s->size(); ++r) out.emplace_back(s->i64(r, 0), s->f64(r, 1));
    return out;
}

Result<std::vector<int64_t>> PostgresStore::term_chunks(const std::string& index, const std::string& phrase, int32_t n_max) {
    std::vector<int64_t> out;
    if (n_max <= 0) return out;
    // fts_phrase's quotes are FTS5 syntax; the text inside is the phrase.
    std::string text = phrase;
    if (text.size() >= 2 && text.front() == '"' && text.back() == '"') text = text.substr(1, text.size() - 2);
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    // The LIMIT bounds the work, as in SqliteStore::term_chunks.
    auto s = db.exec(
        "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc"
        " WHERE c.tsv @@ phraseto_tsquery('simple', $2) AND d.idx = $1 AND d.state = 'ready' LIMIT $3",
        pg::Params::of(index, text, n_max));
    if (!s) return s.error();
    for (int r = 0; r < s->size(); ++r) out.push_back(s->i64(r, 0));
    return out;
}

Result<std::vector<ChunkRow>> PostgresStore::chunks(const std::vector<int64_t>& chunk_ids) {
    std::vector<ChunkRow> out;
    if (chunk_ids.empty()) return out;
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    auto s = db.exec(
        "SELECT c.id, c.doc, d.idx, d.doc_id, d.name, d.source, c.position, c.n_tokens, c.text, d.tags"
        " FROM chunks c JOIN documents d ON d.id = c.doc WHERE c.id = ANY($1::bigint[])",
        pg::Params::of(pg::int_array(chunk_ids)));
    if (!s) return s.error();
    std::unordered_map<int64_t, int> row_of;
    for (int r = 0; r < s->size(); ++r) row_of[s->i64(r, 0)] = r;
    // In the order asked for, as SqliteStore returns them; ids that are gone are left out.
    for (int64_t id : chunk_ids) {
        auto it = row_of.find(id);
        if (it == row_of.end()) continue;
        const int r = it->second;
        ChunkRow c;
        c.chunk_id = id;
        c.doc_rowid = s->i64(r, 1);
        c.index = s->text(r, 2);
        c.doc_id = s->text(r, 3);
        c.doc_name = s->text(r, 4);
        c.source = s->text(r, 5);
        c.position = static_cast<int32_t>(s->i64(r, 6));
        c.n_tokens = static_cast<int32_t>(s->i64(r, 7));
        c.text = s->text(r, 8);
        if (auto t = parse_tags(s->text(r, 9))) c.tags = std::move(*t);
        out.push_back(std::move(c));
    }
    return out;
}

}  // namespace kvrag::memory
