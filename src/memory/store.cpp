// The SQLite store as a whole: opening the database, its schema, the generation counter,
// indexes and the consistency check. Documents, the queue, search and conversations have a
// file each.
#include "memory/sqlite_store.h"

#include <sqlite3.h>

#include <filesystem>
#include <span>

#include "memory/pg_db.h"
#include "memory/postgres_store.h"
#include "memory/sqlite_db.h"

namespace kvrag::memory {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '2'), ('generation', '0');
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
CREATE TABLE IF NOT EXISTS ingest_jobs(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  idx TEXT NOT NULL,
  doc_id TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '',
  source TEXT NOT NULL DEFAULT '',
  content_hash TEXT NOT NULL DEFAULT '',
  settings TEXT NOT NULL DEFAULT '',
  tags TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL CHECK (state IN ('queued', 'running')),
  n_steps_done INTEGER NOT NULL DEFAULT 0,
  n_chunks_total INTEGER NOT NULL DEFAULT 0,
  n_chunks_done INTEGER NOT NULL DEFAULT 0,
  n_tokens_done INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE(idx, doc_id));
CREATE TABLE IF NOT EXISTS source_files(
  idx TEXT NOT NULL,
  doc_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  name TEXT NOT NULL,
  content_type TEXT NOT NULL DEFAULT '',
  bytes BLOB NOT NULL,
  PRIMARY KEY(idx, doc_id, position));
)sql";

}  // namespace

// ---------------------------------------------------------------------------------------------
// Opening

// The one place that picks the backend: a libpq URI is PostgreSQL, anything else a directory.
Result<std::unique_ptr<Store>> Store::open(const std::string& dir, OpenMode mode) {
    if (pg::is_postgres_uri(dir)) return PostgresStore::open(dir, mode);
    return SqliteStore::open(dir, mode);
}

Result<std::unique_ptr<Store>> SqliteStore::open(const std::string& dir, OpenMode mode) {
    std::unique_ptr<SqliteStore> st(new SqliteStore());
    if (dir == ":memory:") {
        st->path_ = ":memory:";
    } else if (mode == OpenMode::existing) {
        std::error_code ec;
        const auto db = std::filesystem::path(dir) / "memory.sqlite3";
        if (!std::filesystem::is_regular_file(db, ec)) {
            return Error{Errc::memory_not_found, "no memory store at '" + dir + "' (" + db.string() +
                                                     " does not exist); check the path, or create the store with `kvrag ingest --memory " +
                                                     dir + " FILES` or `kvrag serve --memory " + dir + "`"};
        }
        st->path_ = db.string();
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
    for (const char* p : {"PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON"}) {
        if (auto r = exec(st->db_, p); !r) return r.error();
    }
    if (auto r = st->init_schema(); !r) return r.error();
    return std::unique_ptr<Store>(std::move(st));
}

Result<void> SqliteStore::init_schema() {
    Transaction tx(db_);
    if (auto r = tx.begin(); !r) return r;
    if (auto r = exec(db_, kSchema); !r) return r;
    Stmt v(db_, "SELECT value FROM meta WHERE key = 'schema_version'");
    if (!v.ok()) return v.error();
    if (v.step() && v.text(0) != "2") {
        if (v.text(0) != "1") {
            return Error{Errc::memory_store, "store '" + path_ + "' has schema version " + v.text(0) + "; this kvrag reads versions 1 and 2"};
        }
        // Version 2 only adds the queue tables (created above): an old store upgrades in place.
        if (auto r = run(db_, "UPDATE meta SET value = '2' WHERE key = 'schema_version'"); !r) return r.error();
    }
    // Jobs a stopped or killed process was running go back to the queue (their results were
    // never committed: finish_job writes the document and ends the job in one transaction).
    auto requeued = run(db_, "UPDATE ingest_jobs SET state = 'queued', n_steps_done = 0, n_chunks_done = 0, n_tokens_done = 0"
                             " WHERE state = 'running'");
    if (!requeued) return requeued.error();
    n_requeued_ = *requeued;
    // Placeholders without a job (older versions made one per ingestion) are deleted so
    // nothing half-made is ever listed.
    std::vector<int64_t> stale;
    {
        Stmt s(db_, "SELECT id FROM documents d WHERE state = 'ingesting' AND NOT EXISTS"
                    " (SELECT 1 FROM ingest_jobs j WHERE j.idx = d.idx AND j.doc_id = d.doc_id)");
        if (!s.ok()) return s.error();
        while (s.step()) stale.push_back(s.i64(0));
        if (s.failed()) return s.error();
    }
    for (int64_t id : stale) {
        if (auto r = delete_doc_rows(id); !r) return r;
    }
    if (!stale.empty()) {
        if (auto r = bump_generation(); !r) return r.error();
    }
    n_cleaned_ = static_cast<int64_t>(stale.size());
    return tx.commit();
}

SqliteStore::~SqliteStore() {
    if (db_) sqlite3_close_v2(db_);
}

Result<int64_t> SqliteStore::generation() {
    Stmt s(db_, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'");
    if (!s.ok()) return s.error();
    if (!s.step()) return s.failed() ? Result<int64_t>(s.error()) : Result<int64_t>(int64_t{0});
    return s.i64(0);
}

// ---------------------------------------------------------------------------------------------
// Private helpers shared by the write paths (store.cpp, store_documents.cpp)

Result<void> SqliteStore::bump_generation() {
    auto r = run(db_, "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'");
    if (!r) return r.error();
    return {};
}

// Deletes a document row and its chunks (the trigger keeps chunks_fts in step) and tags.
Result<void> SqliteStore::delete_doc_rows(int64_t rowid) {
    if (auto r = run(db_, "DELETE FROM chunks WHERE doc = ?", rowid); !r) return r.error();
    if (auto r = run(db_, "DELETE FROM tags WHERE doc = ?", rowid); !r) return r.error();
    if (auto r = run(db_, "DELETE FROM documents WHERE id = ?", rowid); !r) return r.error();
    return {};
}

// ---------------------------------------------------------------------------------------------
// Indexes

Result<void> SqliteStore::ensure_index(const std::string& index, const EmbeddingModelInfo& model) {
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

Result<std::vector<IndexInfo>> SqliteStore::list_indexes() {
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

Result<std::optional<IndexInfo>> SqliteStore::find_index(const std::string& index) {
    auto all = list_indexes();
    if (!all) return all.error();
    for (auto& i : *all) {
        if (i.name == index) return std::optional<IndexInfo>(std::move(i));
    }
    return std::optional<IndexInfo>();
}

Result<int64_t> SqliteStore::delete_index(const std::string& index) {
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
        if (auto r = delete_doc_rows(id); !r) return r.error();
    }
    if (auto r = run(db_, "DELETE FROM ingest_jobs WHERE idx = ?", index); !r) return r.error();
    if (auto r = run(db_, "DELETE FROM source_files WHERE idx = ?", index); !r) return r.error();
    auto n = run(db_, "DELETE FROM indexes WHERE name = ?", index);
    if (!n) return n.error();
    if (auto r = bump_generation(); !r) return r.error();
    if (auto r = tx.commit(); !r) return r.error();
    return *n;
}

// ---------------------------------------------------------------------------------------------
// Consistency

Result<std::string> SqliteStore::check_consistency() {
    std::lock_guard lk(mu_);
    std::string problems;
    auto count = [&](const char* sql) -> Result<int64_t> {
        Stmt s(db_, sql);
        if (!s.ok()) return s.error();
        if (!s.step()) return s.failed() ? Result<int64_t>(s.error()) : Result<int64_t>(int64_t{0});
        return s.i64(0);
    };
    // SQLite enforces foreign keys only on connections that turn them on (another program on
    // the file may not), so a chunk can outlive its document row here.
    const ConsistencyCheck own[] = {
        {"chunks without a document", "SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = c.doc)"},
    };
    for (const auto& checks : {std::span<const ConsistencyCheck>(kSharedConsistencyChecks), std::span<const ConsistencyCheck>(own)}) {
        for (const auto& c : checks) {
            auto n = count(c.sql);
            if (!n) return n.error();
            if (*n != 0) problems += std::to_string(*n) + " " + c.what + "; ";
        }
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

}  // namespace kvrag::memory
