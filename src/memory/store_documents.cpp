// The SQLite store's documents: the one-transaction write, listing and deletion.
#include "memory/sqlite_store.h"

#include <sqlite3.h>

#include <exception>

#include "memory/sqlite_db.h"

namespace kvrag::memory {

const char* write_outcome_name(WriteOutcome w) {
    switch (w) {
        case WriteOutcome::inserted: return "inserted";
        case WriteOutcome::replaced: return "replaced";
        case WriteOutcome::unchanged: return "unchanged";
    }
    return "?";
}

Result<bool> SqliteStore::is_unchanged(const std::string& index, const std::string& doc_id, const std::string& content_hash,
                                 const Tags& tags, const std::string& settings) {
    std::lock_guard lk(mu_);
    Stmt s(db_, "SELECT content_hash, tags, settings, state FROM documents WHERE idx = ? AND doc_id = ?");
    if (!s.ok()) return s.error();
    s.bind(1, index).bind(2, doc_id);
    if (!s.step()) return s.failed() ? Result<bool>(s.error()) : Result<bool>(false);
    return s.text(3) == "ready" && s.text(0) == content_hash && s.text(1) == format_tags(tags) && s.text(2) == settings;
}

Result<WriteOutcome> SqliteStore::write_document(const DocumentInput& doc) {
    std::lock_guard lk(mu_);
    Transaction tx(db_);
    if (auto r = tx.begin(); !r) return r.error();
    auto w = write_document_rows(doc);
    if (!w) return w.error();
    if (auto r = tx.commit(); !r) return r.error();
    return *w;
}

Result<WriteOutcome> SqliteStore::write_document_rows(const DocumentInput& doc) {
    int32_t dim = 0;
    {
        Stmt s(db_, "SELECT embed_dim FROM indexes WHERE name = ?");
        if (!s.ok()) return s.error();
        s.bind(1, doc.index);
        if (!s.step()) return Error{Errc::memory_not_found, "index '" + doc.index + "' does not exist (call ensure_index first)"};
        dim = static_cast<int32_t>(s.i64(0));
    }
    for (const auto& c : doc.chunks) {
        if (static_cast<int32_t>(c.embedding.size()) != dim) {
            return Error{Errc::memory_model_mismatch, "chunk " + std::to_string(c.position) + " of '" + doc.doc_id + "' has " +
                                                          std::to_string(c.embedding.size()) + " floats; index '" + doc.index +
                                                          "' holds dim " + std::to_string(dim)};
        }
    }

    // The old version (ready, failed or a placeholder) goes in the same transaction.
    WriteOutcome outcome = WriteOutcome::inserted;
    {
        Stmt s(db_, "SELECT id, state FROM documents WHERE idx = ? AND doc_id = ?");
        if (!s.ok()) return s.error();
        s.bind(1, doc.index).bind(2, doc.doc_id);
        if (s.step()) {
            if (s.text(1) == "ready") outcome = WriteOutcome::replaced;
            if (auto r = delete_doc_rows(s.i64(0)); !r) return r.error();
        } else if (s.failed()) {
            return s.error();
        }
    }

    int64_t n_tokens = 0;
    for (const auto& c : doc.chunks) n_tokens += c.n_tokens;
    const Tags tags = sorted_tags(doc.tags);
    auto ins = run(db_,
                   "INSERT INTO documents(idx, doc_id, name, source, content_hash, settings, tags, state, n_chunks, n_tokens, updated_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, 'ready', ?, ?, ?)",
                   doc.index, doc.doc_id, doc.name, doc.source, doc.content_hash, doc.settings, format_tags(tags),
                   static_cast<int64_t>(doc.chunks.size()), n_tokens, now_seconds());
    if (!ins) return ins.error();
    const int64_t rowid = sqlite3_last_insert_rowid(db_);

    {
        Stmt t(db_, "INSERT INTO tags(doc, key, value) VALUES (?, ?, ?)");
        if (!t.ok()) return t.error();
        for (const auto& [k, v] : tags) {
            t.bind(1, rowid).bind(2, k).bind(3, v);
            t.step();
            if (t.failed()) return t.error();
            t.reset();
        }
    }
    {
        Stmt c(db_, "INSERT INTO chunks(doc, position, text, n_tokens, embedding) VALUES (?, ?, ?, ?, ?)");
        if (!c.ok()) return c.error();
        for (size_t i = 0; i < doc.chunks.size(); ++i) {
            const auto& ch = doc.chunks[i];
            c.bind(1, rowid).bind(2, static_cast<int64_t>(ch.position)).bind(3, ch.text).bind(4, static_cast<int64_t>(ch.n_tokens));
            c.bind_blob(5, ch.embedding.data(), ch.embedding.size() * sizeof(float));
            c.step();
            if (c.failed()) return c.error();
            c.reset();
            if (fault_hook) {
                try {
                    fault_hook(static_cast<int32_t>(i));
                } catch (const std::exception& e) {
                    return Error{Errc::memory_store, std::string("injected failure: ") + e.what()};
                }
            }
        }
    }
    if (auto r = bump_generation(); !r) return r.error();
    return outcome;
}

namespace {

constexpr const char* kDocColumns =
    "idx, doc_id, name, source, content_hash, settings, state, error, tags, n_chunks, n_tokens, updated_at";

DocumentInfo read_doc(const Stmt& s) {
    DocumentInfo d;
    d.index = s.text(0);
    d.doc_id = s.text(1);
    d.name = s.text(2);
    d.source = s.text(3);
    d.content_hash = s.text(4);
    d.settings = s.text(5);
    d.state = s.text(6);
    d.error = s.text(7);
    auto t = parse_tags(s.text(8));
    if (t) d.tags = std::move(*t);
    d.n_chunks = static_cast<int32_t>(s.i64(9));
    d.n_tokens = s.i64(10);
    d.updated_at = s.i64(11);
    return d;
}

}  // namespace

Result<std::vector<DocumentInfo>> SqliteStore::list_documents(const std::string& index) {
    std::lock_guard lk(mu_);
    const std::string sql = std::string("SELECT ") + kDocColumns + " FROM documents" +
                            (index.empty() ? "" : " WHERE idx = ?") + " ORDER BY idx, doc_id";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return s.error();
    if (!index.empty()) s.bind(1, index);
    std::vector<DocumentInfo> out;
    while (s.step()) out.push_back(read_doc(s));
    if (s.failed()) return s.error();
    return out;
}

Result<std::optional<DocumentInfo>> SqliteStore::get_document(const std::string& index, const std::string& doc_id) {
    std::lock_guard lk(mu_);
    const std::string sql = std::string("SELECT ") + kDocColumns + " FROM documents WHERE idx = ? AND doc_id = ?";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return s.error();
    s.bind(1, index).bind(2, doc_id);
    if (s.step()) return std::optional<DocumentInfo>(read_doc(s));
    if (s.failed()) return s.error();
    return std::optional<DocumentInfo>();
}

Result<int64_t> SqliteStore::delete_document(const std::string& index, const std::string& doc_id) {
    std::lock_guard lk(mu_);
    Transaction tx(db_);
    if (auto r = tx.begin(); !r) return r.error();
    std::vector<int64_t> ids;
    {
        Stmt s(db_, index.empty() ? "SELECT id FROM documents WHERE doc_id = ?" : "SELECT id FROM documents WHERE doc_id = ? AND idx = ?");
        if (!s.ok()) return s.error();
        s.bind(1, doc_id);
        if (!index.empty()) s.bind(2, index);
        while (s.step()) ids.push_back(s.i64(0));
        if (s.failed()) return s.error();
    }
    for (int64_t id : ids) {
        if (auto r = delete_doc_rows(id); !r) return r.error();
    }
    // A queued or running job goes too: a running worker finds its job gone and writes nothing.
    if (auto r = delete_jobs_and_files(index, doc_id); !r) return r.error();
    if (auto r = bump_generation(); !r) return r.error();
    if (auto r = tx.commit(); !r) return r.error();
    return static_cast<int64_t>(ids.size());
}

}  // namespace kvrag::memory
