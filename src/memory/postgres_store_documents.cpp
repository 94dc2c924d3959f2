// The PostgreSQL store's documents (the one-transaction write, listing, deletion) and
// conversations.
#include <exception>

#include "memory/pg_db.h"
#include "memory/postgres_store.h"
#include "memory/sqlite_db.h"  // now_seconds

namespace kvrag::memory {

Result<bool> PostgresStore::is_unchanged(const std::string& index, const std::string& doc_id, const std::string& content_hash,
                                         const Tags& tags, const std::string& settings) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    auto s = db.exec("SELECT content_hash, tags, settings, state FROM documents WHERE idx = $1 AND doc_id = $2",
                       pg::Params::of(index, doc_id));
    if (!s) return s.error();
    if (s->empty()) return false;
    return s->text(0, 3) == "ready" && s->text(0, 0) == content_hash && s->text(0, 1) == format_tags(tags) && s->text(0, 2) == settings;
}

Result<WriteOutcome> PostgresStore::write_document(const DocumentInput& doc) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    pg::Transaction tx(db);
    if (auto r = tx.begin(); !r) return r.error();
    if (auto r = lock_document(db, doc.doc_id); !r) return r.error();
    std::vector<int64_t> touched;
    auto w = write_document_rows(db, doc, touched);
    if (!w) return w.error();
    if (auto r = tx.commit(); !r) return r.error();
    mark_docs_stale(touched);
    return *w;
}

Result<WriteOutcome> PostgresStore::write_document_rows(pg::Connection& db, const DocumentInput& doc, std::vector<int64_t>& touched) {
    auto d = db.exec("SELECT embed_dim FROM indexes WHERE name = $1", pg::Params::of(doc.index));
    if (!d) return d.error();
    if (d->empty()) return Error{Errc::memory_not_found, "index '" + doc.index + "' does not exist (call ensure_index first)"};
    const int64_t dim = d->i64(0, 0);
    for (const auto& c : doc.chunks) {
        if (static_cast<int64_t>(c.embedding.size()) != dim) {
            return Error{Errc::memory_model_mismatch, "chunk " + std::to_string(c.position) + " of '" + doc.doc_id + "' has " +
                                                          std::to_string(c.embedding.size()) + " floats; index '" + doc.index +
                                                          "' holds dim " + std::to_string(dim)};
        }
    }

    // The old version (ready, failed or a placeholder) goes in the same transaction.
    WriteOutcome outcome = WriteOutcome::inserted;
    auto old = db.exec("SELECT id, state FROM documents WHERE idx = $1 AND doc_id = $2", pg::Params::of(doc.index, doc.doc_id));
    if (!old) return old.error();
    if (!old->empty()) {
        if (old->text(0, 1) == "ready") outcome = WriteOutcome::replaced;
        if (auto r = delete_doc_rows(db, old->i64(0, 0)); !r) return r.error();
        touched.push_back(old->i64(0, 0));
    }

    int64_t n_tokens = 0;
    for (const auto& c : doc.chunks) n_tokens += c.n_tokens;
    const Tags tags = sorted_tags(doc.tags);
    auto ins = db.exec(
        "INSERT INTO documents(idx, doc_id, name, source, content_hash, settings, tags, state, n_chunks, n_tokens, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, 'ready', $8, $9, $10) RETURNING id",
        pg::Params::of(doc.index, doc.doc_id, doc.name, doc.source, doc.content_hash, doc.settings, format_tags(tags),
                       static_cast<int64_t>(doc.chunks.size()), n_tokens, now_seconds()));
    if (!ins) return ins.error();
    const int64_t rowid = ins->i64(0, 0);
    touched.push_back(rowid);
    for (const auto& [k, v] : tags) {
        if (auto r = db.exec("INSERT INTO tags(doc, key, value) VALUES ($1, $2, $3)", pg::Params::of(rowid, k, v)); !r) return r.error();
    }
    for (size_t i = 0; i < doc.chunks.size(); ++i) {
        const auto& ch = doc.chunks[i];
        pg::Params p = pg::Params::of(rowid, ch.position, ch.text, ch.n_tokens);
        // The floats as bytes, in this machine's order (as SqliteStore's blob): replicas
        // sharing a database share a byte order (x86-64 and aarch64 are both little-endian).
        p.bytes(ch.embedding.data(), ch.embedding.size() * sizeof(float));
        if (auto r = db.exec("INSERT INTO chunks(doc, position, text, n_tokens, embedding) VALUES ($1, $2, $3, $4, $5)", p); !r) {
            return r.error();
        }
        if (fault_hook) {
            try {
                fault_hook(static_cast<int32_t>(i));
            } catch (const std::exception& e) {
                return Error{Errc::memory_store, std::string("injected failure: ") + e.what()};
            }
        }
    }
    return outcome;
}

namespace {

constexpr const char* kDocColumns =
    "idx, doc_id, name, source, content_hash, settings, state, error, tags, n_chunks, n_tokens, updated_at";

DocumentInfo read_doc(const pg::Rows& s, int r) {
    DocumentInfo d;
    d.index = s.text(r, 0);
    d.doc_id = s.text(r, 1);
    d.name = s.text(r, 2);
    d.source = s.text(r, 3);
    d.content_hash = s.text(r, 4);
    d.settings = s.text(r, 5);
    d.state = s.text(r, 6);
    d.error = s.text(r, 7);
    if (auto t = parse_tags(s.text(r, 8))) d.tags = std::move(*t);
    d.n_chunks = static_cast<int32_t>(s.i64(r, 9));
    d.n_tokens = s.i64(r, 10);
    d.updated_at = s.i64(r, 11);
    return d;
}

}  // namespace

Result<std::vector<DocumentInfo>> PostgresStore::list_documents(const std::string& index) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    // An empty index lists every index ($1 = '').
    const std::string sql = std::string("SELECT ") + kDocColumns + " FROM documents WHERE ($1::text = '' OR idx = $1::text) ORDER BY idx, doc_id";
    auto s = db.exec(sql.c_str(), pg::Params::of(index));
    if (!s) return s.error();
    std::vector<DocumentInfo> out;
    for (int r = 0; r < s->size(); ++r) out.push_back(read_doc(*s, r));
    return out;
}

Result<std::optional<DocumentInfo>> PostgresStore::get_document(const std::string& index, const std::string& doc_id) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    const std::string sql = std::string("SELECT ") + kDocColumns + " FROM documents WHERE idx = $1 AND doc_id = $2";
    auto s = db.exec(sql.c_str(), pg::Params::of(index, doc_id));
    if (!s) return s.error();
    if (s->empty()) return std::optional<DocumentInfo>();
    return std::optional<DocumentInfo>(read_doc(*s, 0));
}

Result<int64_t> PostgresStore::delete_document(const std::string& index, const std::string& doc_id) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    pg::Transaction tx(db);
    if (auto r = tx.begin(); !r) return r.error();
    if (auto r = lock_document(db, doc_id); !r) return r.error();
    auto ids = db.exec("SELECT id FROM documents WHERE doc_id = $1 AND ($2::text = '' OR idx = $2::text)", pg::Params::of(doc_id, index));
    if (!ids) return ids.error();
    for (int r = 0; r < ids->size(); ++r) {
        if (auto d = delete_doc_rows(db, ids->i64(r, 0)); !d) return d.error();
    }
    // A queued or running job goes too: its worker (on any replica) finds it gone and writes nothing.
    if (auto r = delete_jobs_and_files(db, index, doc_id); !r) return r.error();
    if (auto r = tx.commit(); !r) return r.error();
    std::vector<int64_t> touched;
    for (int r = 0; r < ids->size(); ++r) touched.push_back(ids->i64(r, 0));
    mark_docs_stale(touched);
    return static_cast<int64_t>(ids->size());
}

// ---------------------------------------------------------------------------------------------
// Conversations

Result<std::vector<Turn>> PostgresStore::conversation(const std::string& conversation_id) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    auto s = db.exec("SELECT role, content, n_tokens FROM conversations WHERE id = $1 ORDER BY turn", pg::Params::of(conversation_id));
    if (!s) return s.error();
    std::vector<Turn> out;
    for (int r = 0; r < s->size(); ++r) out.push_back(Turn{s->text(r, 0), s->text(r, 1), static_cast<int32_t>(s->i64(r, 2))});
    return out;
}

Result<void> PostgresStore::append_turns(const std::string& conversation_id, const std::vector<Turn>& turns) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    pg::Transaction tx(db);
    if (auto r = tx.begin(); !r) return r;
    // Two replicas appending to one conversation take turns numbers one after the other.
    if (auto r = db.exec("SELECT pg_advisory_xact_lock(hashtextextended($1, 12))", pg::Params::of(conversation_id)); !r) return r.error();
    auto s = db.exec("SELECT coalesce(max(turn) + 1, 0) FROM conversations WHERE id = $1", pg::Params::of(conversation_id));
    if (!s) return s.error();
    int64_t next = s->i64(0, 0);
    for (const auto& t : turns) {
        auto r = db.exec("INSERT INTO conversations(id, turn, role, content, n_tokens, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                           pg::Params::of(conversation_id, next++, t.role, t.content, t.n_tokens, now_seconds()));
        if (!r) return r.error();
    }
    return tx.commit();
}

Result<int64_t> PostgresStore::delete_conversation(const std::string& conversation_id) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    auto r = db.exec("DELETE FROM conversations WHERE id = $1", pg::Params::of(conversation_id));
    if (!r) return r.error();
    return r->affected();
}

}  // namespace kvrag::memory
