#include "memory/store.h"

#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>

namespace kvrag::memory {
namespace {

// ---------------------------------------------------------------------------------------------
// SQLite helpers: a prepared statement that finalises itself, and errors with SQLite's text.

Error db_error(sqlite3* db, const std::string& what) {
    return Error{Errc::memory_store, what + ": " + (db ? sqlite3_errmsg(db) : "no database") + " (sqlite " +
                                         std::to_string(db ? sqlite3_extended_errcode(db) : 0) + ")"};
}

class Stmt {
public:
    Stmt(sqlite3* db, const char* sql) : db_(db) {
        if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK) {
            err_ = db_error(db, std::string("prepare '") + sql + "'");
            s_ = nullptr;
        }
    }
    ~Stmt() { sqlite3_finalize(s_); }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    bool ok() const { return s_ != nullptr; }
    const Error& error() const { return err_; }
    Stmt& bind(int i, const std::string& v) {
        sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
        return *this;
    }
    Stmt& bind(int i, int64_t v) {
        sqlite3_bind_int64(s_, i, v);
        return *this;
    }
    Stmt& bind_blob(int i, const void* p, size_t n) {
        sqlite3_bind_blob(s_, i, p, static_cast<int>(n), SQLITE_TRANSIENT);
        return *this;
    }
    // SQLITE_ROW -> true, SQLITE_DONE -> false; anything else sets error().
    bool step() {
        const int rc = sqlite3_step(s_);
        if (rc == SQLITE_ROW) return true;
        if (rc != SQLITE_DONE) failed_ = true, err_ = db_error(db_, "step");
        return false;
    }
    bool failed() const { return failed_; }
    void reset() {
        sqlite3_reset(s_);
        sqlite3_clear_bindings(s_);
    }
    int64_t i64(int c) const { return sqlite3_column_int64(s_, c); }
    double f64(int c) const { return sqlite3_column_double(s_, c); }
    std::string text(int c) const {
        const auto* p = sqlite3_column_text(s_, c);
        return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s_, c)) : std::string();
    }
    const void* blob(int c) const { return sqlite3_column_blob(s_, c); }
    int bytes(int c) const { return sqlite3_column_bytes(s_, c); }

private:
    sqlite3* db_;
    sqlite3_stmt* s_ = nullptr;
    Error err_;
    bool failed_ = false;
};

Result<void> exec(sqlite3* db, const char* sql) {
    char* msg = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
        Error e{Errc::memory_store, std::string("exec '") + std::string(sql).substr(0, 60) + "': " + (msg ? msg : "?")};
        sqlite3_free(msg);
        return e;
    }
    return {};
}

// Runs one statement to completion; for INSERT/UPDATE/DELETE.
template <class... A>
Result<int64_t> run(sqlite3* db, const char* sql, const A&... args) {
    Stmt s(db, sql);
    if (!s.ok()) return s.error();
    int i = 1;
    (s.bind(i++, args), ...);
    s.step();
    if (s.failed()) return s.error();
    return static_cast<int64_t>(sqlite3_changes(db));
}

// Rolls back unless commit() was called: every early return inside a transaction is safe.
class Transaction {
public:
    explicit Transaction(sqlite3* db) : db_(db) {}
    Result<void> begin() {
        auto r = exec(db_, "BEGIN IMMEDIATE");
        if (r) open_ = true;
        return r;
    }
    Result<void> commit() {
        auto r = exec(db_, "COMMIT");
        if (r) open_ = false;
        return r;
    }
    ~Transaction() {
        if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }

private:
    sqlite3* db_;
    bool open_ = false;
};

int64_t now_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '1'), ('generation', '0');
CREATE TABLE IF NOT EXISTS indexes(
  name TEXT PRIMARY KEY,
  embed_model TEXT NOT NULL,
  embed_fingerprint TEXT NOT NULL,
  embed_dim INTEGER NOT NULL,
  created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS documents(
  id INTEGER PRIMARY KEY,
  idx TEXT NOT NULL REFERENCES indexes(name),
  doc_id TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '',
  source TEXT NOT NULL DEFAULT '',
  content_hash TEXT NOT NULL DEFAULT '',
  settings TEXT NOT NULL DEFAULT '',
  tags TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL CHECK (state IN ('ingesting', 'ready', 'failed')),
  error TEXT NOT NULL DEFAULT '',
  n_chunks INTEGER NOT NULL DEFAULT 0,
  n_tokens INTEGER NOT NULL DEFAULT 0,
  updated_at INTEGER NOT NULL,
  UNIQUE(idx, doc_id));
CREATE TABLE IF NOT EXISTS tags(
  doc INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tags_kv ON tags(key, value);
CREATE INDEX IF NOT EXISTS tags_doc ON tags(doc);
CREATE TABLE IF NOT EXISTS chunks(
  id INTEGER PRIMARY KEY,
  doc INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  text TEXT NOT NULL,
  n_tokens INTEGER NOT NULL,
  embedding BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc, position);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, content='chunks', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
  INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
  INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TABLE IF NOT EXISTS conversations(
  id TEXT NOT NULL,
  turn INTEGER NOT NULL,
  role TEXT NOT NULL,
  content TEXT NOT NULL,
  n_tokens INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY(id, turn));
)sql";

constexpr const char* kBumpGeneration = "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'";

Tags sorted(Tags t) {
    std::sort(t.begin(), t.end());
    t.erase(std::unique(t.begin(), t.end()), t.end());
    return t;
}

// Deletes a document row and its chunks (the trigger keeps chunks_fts in step) and tags.
Result<void> delete_doc_rows(sqlite3* db, int64_t rowid) {
    if (auto r = run(db, "DELETE FROM chunks WHERE doc = ?", rowid); !r) return r.error();
    if (auto r = run(db, "DELETE FROM tags WHERE doc = ?", rowid); !r) return r.error();
    if (auto r = run(db, "DELETE FROM documents WHERE id = ?", rowid); !r) return r.error();
    return {};
}

}  // namespace

const char* write_outcome_name(WriteOutcome w) {
    switch (w) {
        case WriteOutcome::inserted: return "inserted";
        case WriteOutcome::replaced: return "replaced";
        case WriteOutcome::unchanged: return "unchanged";
    }
    return "?";
}

// ---------------------------------------------------------------------------------------------
// Opening

Result<std::unique_ptr<Store>> Store::open(const std::string& dir) {
    std::unique_ptr<Store> st(new Store());
    if (dir == ":memory:") {
        st->path_ = ":memory:";
    } else {
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) return Error{Errc::memory_store, "cannot create store directory '" + dir + "': " + ec.message()};
        st->path_ = (std::filesystem::path(dir) / "memory.sqlite3").string();
    }
    if (sqlite3_open_v2(st->path_.c_str(), &st->db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        nullptr) != SQLITE_OK) {
        return db_error(st->db_, "cannot open '" + st->path_ + "'");
    }
    sqlite3_busy_timeout(st->db_, 10000);
    if (st->path_ != ":memory:") {
        Stmt wal(st->db_, "PRAGMA journal_mode=WAL");
        if (!wal.ok()) return wal.error();
        if (!wal.step() || wal.text(0) != "wal") return Error{Errc::memory_store, "cannot switch '" + st->path_ + "' to WAL mode"};
    }
    for (const char* p : {"PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON"}) {
        if (auto r = exec(st->db_, p); !r) return r.error();
    }
    if (auto r = st->init_schema(); !r) return r.error();
    return st;
}

Result<void> Store::init_schema() {
    Transaction tx(db_);
    if (auto r = tx.begin(); !r) return r;
    if (auto r = exec(db_, kSchema); !r) return r;
    Stmt v(db_, "SELECT value FROM meta WHERE key = 'schema_version'");
    if (!v.ok()) return v.error();
    if (v.step() && v.text(0) != "1") {
        return Error{Errc::memory_store, "store '" + path_ + "' has schema version " + v.text(0) + "; this kvrag reads version 1"};
    }
    // A crashed ingestion leaves at most a placeholder (its chunks were never committed);
    // delete them so nothing half-made is ever listed.
    std::vector<int64_t> stale;
    {
        Stmt s(db_, "SELECT id FROM documents WHERE state = 'ingesting'");
        if (!s.ok()) return s.error();
        while (s.step()) stale.push_back(s.i64(0));
        if (s.failed()) return s.error();
    }
    for (int64_t id : stale) {
        if (auto r = delete_doc_rows(db_, id); !r) return r;
    }
    if (!stale.empty()) {
        if (auto r = run(db_, kBumpGeneration); !r) return r.error();
    }
    n_cleaned_ = static_cast<int64_t>(stale.size());
    return tx.commit();
}

Store::~Store() {
    if (db_) sqlite3_close_v2(db_);
}

Result<int64_t> Store::generation() {
    Stmt s(db_, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'");
    if (!s.ok()) return s.error();
    if (!s.step()) return s.failed() ? Result<int64_t>(s.error()) : Result<int64_t>(int64_t{0});
    return s.i64(0);
}

// ---------------------------------------------------------------------------------------------
// Indexes

Result<void> Store::ensure_index(const std::string& index, const EmbeddingModelInfo& model) {
    std::lock_guard lk(mu_);
    Stmt s(db_, "SELECT embed_model, embed_fingerprint, embed_dim FROM indexes WHERE name = ?");
    if (!s.ok()) return s.error();
    s.bind(1, index);
    if (s.step()) {
        const std::string name = s.text(0), fp = s.text(1);
        const int64_t dim = s.i64(2);
        if (fp != model.fingerprint || dim != model.dim) {
            return Error{Errc::memory_model_mismatch,
                         "index '" + index + "' was embedded by model '" + name + "' (" + fp + ", dim " + std::to_string(dim) +
                             "); the model in use is '" + model.name + "' (" + model.fingerprint + ", dim " +
                             std::to_string(model.dim) + "). Use the same model (or --embed-model), or another --index"};
        }
        return {};
    }
    if (s.failed()) return s.error();
    auto r = run(db_, "INSERT INTO indexes(name, embed_model, embed_fingerprint, embed_dim, created_at) VALUES (?, ?, ?, ?, ?)",
                 index, model.name, model.fingerprint, static_cast<int64_t>(model.dim), now_seconds());
    if (!r) return r.error();
    return {};
}

Result<std::vector<IndexInfo>> Store::list_indexes() {
    std::lock_guard lk(mu_);
    Stmt s(db_,
           "SELECT i.name, i.embed_model, i.embed_fingerprint, i.embed_dim,"
           " (SELECT count(*) FROM documents d WHERE d.idx = i.name AND d.state = 'ready'),"
           " (SELECT coalesce(sum(d.n_chunks), 0) FROM documents d WHERE d.idx = i.name AND d.state = 'ready')"
           " FROM indexes i ORDER BY i.name");
    if (!s.ok()) return s.error();
    std::vector<IndexInfo> out;
    while (s.step()) {
        IndexInfo i;
        i.name = s.text(0);
        i.model = {s.text(1), s.text(2), static_cast<int32_t>(s.i64(3))};
        i.n_documents = s.i64(4);
        i.n_chunks = s.i64(5);
        out.push_back(std::move(i));
    }
    if (s.failed()) return s.error();
    return out;
}

Result<std::optional<IndexInfo>> Store::find_index(const std::string& index) {
    auto all = list_indexes();
    if (!all) return all.error();
    for (auto& i : *all) {
        if (i.name == index) return std::optional<IndexInfo>(std::move(i));
    }
    return std::optional<IndexInfo>();
}

Result<int64_t> Store::delete_index(const std::string& index) {
    std::lock_guard lk(mu_);
    Transaction tx(db_);
    if (auto r = tx.begin(); !r) return r.error();
    std::vector<int64_t> ids;
    {
        Stmt s(db_, "SELECT id FROM documents WHERE idx = ?");
        if (!s.ok()) return s.error();
        s.bind(1, index);
        while (s.step()) ids.push_back(s.i64(0));
        if (s.failed()) return s.error();
    }
    for (int64_t id : ids) {
        if (auto r = delete_doc_rows(db_, id); !r) return r.error();
    }
    auto n = run(db_, "DELETE FROM indexes WHERE name = ?", index);
    if (!n) return n.error();
    if (auto r = run(db_, kBumpGeneration); !r) return r.error();
    if (auto r = tx.commit(); !r) return r.error();
    return *n;
}

// ---------------------------------------------------------------------------------------------
// Documents

Result<bool> Store::is_unchanged(const std::string& index, const std::string& doc_id, const std::string& content_hash,
                                 const Tags& tags, const std::string& settings) {
    std::lock_guard lk(mu_);
    Stmt s(db_, "SELECT content_hash, tags, settings, state FROM documents WHERE idx = ? AND doc_id = ?");
    if (!s.ok()) return s.error();
    s.bind(1, index).bind(2, doc_id);
    if (!s.step()) return s.failed() ? Result<bool>(s.error()) : Result<bool>(false);
    return s.text(3) == "ready" && s.text(0) == content_hash && s.text(1) == format_tags(tags) && s.text(2) == settings;
}

Result<void> Store::mark_ingesting(const std::string& index, const std::string& doc_id, const std::string& name,
                                   const std::string& source) {
    std::lock_guard lk(mu_);
    auto r = run(db_,
                 "INSERT INTO documents(idx, doc_id, name, source, state, updated_at) VALUES (?, ?, ?, ?, 'ingesting', ?)"
                 " ON CONFLICT(idx, doc_id) DO UPDATE SET state = 'ingesting', error = '' WHERE state = 'failed'",
                 index, doc_id, name, source, now_seconds());
    if (!r) return r.error();
    return {};
}

Result<void> Store::mark_failed(const std::string& index, const std::string& doc_id, const std::string& error) {
    std::lock_guard lk(mu_);
    auto r = run(db_, "UPDATE documents SET state = 'failed', error = ?, updated_at = ? WHERE idx = ? AND doc_id = ? AND state != 'ready'",
                 error, now_seconds(), index, doc_id);
    if (!r) return r.error();
    return {};
}

Result<WriteOutcome> Store::write_document(const DocumentInput& doc) {
    std::lock_guard lk(mu_);
    Transaction tx(db_);
    if (auto r = tx.begin(); !r) return r.error();

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
            if (auto r = delete_doc_rows(db_, s.i64(0)); !r) return r.error();
        } else if (s.failed()) {
            return s.error();
        }
    }

    int64_t n_tokens = 0;
    for (const auto& c : doc.chunks) n_tokens += c.n_tokens;
    const Tags tags = sorted(doc.tags);
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
    if (auto r = run(db_, kBumpGeneration); !r) return r.error();
    if (auto r = tx.commit(); !r) return r.error();
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

Result<std::vector<DocumentInfo>> Store::list_documents(const std::string& index) {
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

Result<std::optional<DocumentInfo>> Store::get_document(const std::string& index, const std::string& doc_id) {
    std::lock_guard lk(mu_);
    const std::string sql = std::string("SELECT ") + kDocColumns + " FROM documents WHERE idx = ? AND doc_id = ?";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return s.error();
    s.bind(1, index).bind(2, doc_id);
    if (s.step()) return std::optional<DocumentInfo>(read_doc(s));
    if (s.failed()) return s.error();
    return std::optional<DocumentInfo>();
}

Result<int64_t> Store::delete_document(const std::string& index, const std::string& doc_id) {
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
        if (auto r = delete_doc_rows(db_, id); !r) return r.error();
    }
    if (auto r = run(db_, kBumpGeneration); !r) return r.error();
    if (auto r = tx.commit(); !r) return r.error();
    return static_cast<int64_t>(ids.size());
}

// ---------------------------------------------------------------------------------------------
// Search support

Result<std::shared_ptr<const VectorSet>> Store::vectors(const std::string& index) {
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

Result<std::optional<std::unordered_set<int64_t>>> Store::filter_documents(const std::string& index, const std::string& doc_id,
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

namespace {

// Free text -> an FTS5 query: every word as a quoted term, OR'd, so user punctuation can
// never be a syntax error and any shared word is a match (BM25 ranks the rest).
std::string fts_query(const std::string& text) {
    std::string out, word;
    int n_terms = 0;
    auto flush = [&] {
        if (!word.empty() && n_terms < 64) {
            if (!out.empty()) out += " OR ";
            out += "\"" + word + "\"";
            ++n_terms;
        }
        word.clear();
    };
    for (unsigned char c : text) {
        if (std::isalnum(c) || c >= 0x80) {
            word += static_cast<char>(c);
        } else {
            flush();
        }
    }
    flush();
    return out;
}

}  // namespace

Result<std::vector<std::pair<int64_t, double>>> Store::lexical(const std::string& index, const std::string& query, int32_t n_max) {
    std::vector<std::pair<int64_t, double>> out;
    const std::string q = fts_query(query);
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

Result<std::vector<ChunkRow>> Store::chunks(const std::vector<int64_t>& chunk_ids) {
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

// ---------------------------------------------------------------------------------------------
// Conversations

Result<std::vector<Turn>> Store::conversation(const std::string& conversation_id) {
    std::lock_guard lk(mu_);
    Stmt s(db_, "SELECT role, content, n_tokens FROM conversations WHERE id = ? ORDER BY turn");
    if (!s.ok()) return s.error();
    s.bind(1, conversation_id);
    std::vector<Turn> out;
    while (s.step()) out.push_back(Turn{s.text(0), s.text(1), static_cast<int32_t>(s.i64(2))});
    if (s.failed()) return s.error();
    return out;
}

Result<void> Store::append_turns(const std::string& conversation_id, const std::vector<Turn>& turns) {
    std::lock_guard lk(mu_);
    Transaction tx(db_);
    if (auto r = tx.begin(); !r) return r;
    int64_t next = 0;
    {
        Stmt s(db_, "SELECT coalesce(max(turn) + 1, 0) FROM conversations WHERE id = ?");
        if (!s.ok()) return s.error();
        s.bind(1, conversation_id);
        if (s.step()) next = s.i64(0);
        if (s.failed()) return s.error();
    }
    for (const auto& t : turns) {
        auto r = run(db_, "INSERT INTO conversations(id, turn, role, content, n_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                     conversation_id, next++, t.role, t.content, static_cast<int64_t>(t.n_tokens), now_seconds());
        if (!r) return r.error();
    }
    return tx.commit();
}

Result<int64_t> Store::delete_conversation(const std::string& conversation_id) {
    std::lock_guard lk(mu_);
    return run(db_, "DELETE FROM conversations WHERE id = ?", conversation_id);
}

// ---------------------------------------------------------------------------------------------
// Consistency

Result<std::string> Store::check_consistency() {
    std::lock_guard lk(mu_);
    std::string problems;
    auto count = [&](const char* sql) -> Result<int64_t> {
        Stmt s(db_, sql);
        if (!s.ok()) return s.error();
        if (!s.step()) return s.failed() ? Result<int64_t>(s.error()) : Result<int64_t>(int64_t{0});
        return s.i64(0);
    };
    struct Check {
        const char* what;
        const char* sql;
    };
    const Check checks[] = {
        {"ready documents whose chunk count differs from n_chunks",
         "SELECT count(*) FROM documents d WHERE d.state = 'ready' AND d.n_chunks != (SELECT count(*) FROM chunks c WHERE c.doc = d.id)"},
        {"ready documents whose positions are not [0, n_chunks)",
         "SELECT count(*) FROM documents d WHERE d.state = 'ready' AND d.n_chunks > 0 AND"
         " ((SELECT min(position) FROM chunks c WHERE c.doc = d.id) != 0 OR"
         "  (SELECT max(position) FROM chunks c WHERE c.doc = d.id) != d.n_chunks - 1 OR"
         "  (SELECT count(DISTINCT position) FROM chunks c WHERE c.doc = d.id) != d.n_chunks)"},
        {"documents not ready that hold chunks",
         "SELECT count(*) FROM documents d WHERE d.state != 'ready' AND EXISTS (SELECT 1 FROM chunks c WHERE c.doc = d.id)"},
        {"chunks without a document", "SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = c.doc)"},
        {"documents in state 'ingesting'", "SELECT count(*) FROM documents WHERE state = 'ingesting'"},
    };
    for (const auto& c : checks) {
        auto n = count(c.sql);
        if (!n) return n.error();
        if (*n != 0) problems += std::to_string(*n) + " " + c.what + "; ";
    }
    if (auto r = exec(db_, "INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)"); !r) {
        problems += "fts: " + r.error().message + "; ";
    }
    {
        Stmt s(db_, "PRAGMA integrity_check");
        if (!s.ok()) return s.error();
        if (s.step() && s.text(0) != "ok") problems += "sqlite: " + s.text(0) + "; ";
    }
    return problems;
}

// ---------------------------------------------------------------------------------------------
// Tags and ids

Result<Tags> parse_tags(const std::string& s) {
    Tags out;
    size_t i = 0;
    while (i < s.size()) {
        size_t j = s.find(',', i);
        if (j == std::string::npos) j = s.size();
        const std::string item = s.substr(i, j - i);
        i = j + 1;
        if (item.empty()) continue;
        const size_t eq = item.find('=');
        if (eq == std::string::npos || eq == 0) {
            return Error{Errc::memory_bad_input, "tag '" + item + "' is not key=value"};
        }
        out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    }
    return out;
}

std::string format_tags(const Tags& tags) {
    std::string out;
    for (const auto& [k, v] : sorted(tags)) {
        if (!out.empty()) out += ',';
        out += k + "=" + v;
    }
    return out;
}

bool valid_id(const std::string& id) {
    if (id.empty() || id.size() > 128) return false;
    return std::all_of(id.begin(), id.end(), [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '_' || c == '-'; });
}

std::string sanitize_id(const std::string& text) {
    std::string out;
    for (unsigned char c : text) out += (std::isalnum(c) || c == '.' || c == '_' || c == '-') ? static_cast<char>(c) : '_';
    while (out.size() > 1 && (out[0] == '_' || out[0] == '.')) out.erase(0, 1);
    if (out.size() > 128) out = out.substr(out.size() - 128);
    if (out.empty()) out = "doc";
    return out;
}

}  // namespace kvrag::memory
