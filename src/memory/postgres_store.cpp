// The PostgreSQL store as a whole: connecting, the versioned schema and its migration, the
// watcher thread (LISTEN/NOTIFY and lease renewal), indexes and the consistency check.
// Documents, the queue, search and conversations have a file each (postgres_store_*.cpp).
#include "memory/postgres_store.h"

#include <postgresql/libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <span>

#include "memory/pg_db.h"
#include "memory/sqlite_db.h"  // now_seconds

namespace kvrag::memory {
namespace {

// Every migration step, in order: step i brings the schema to version i + 1. A step is
// never edited once released; a change is a new step at the end.
constexpr const char* kMigrations[] = {
    // 1: the tables of SqliteStore's version 2, with a tsvector column (GIN-indexed) for
    // lexical search, leases on jobs, and NOTIFY triggers on chunks.
    R"sql(
CREATE TABLE indexes(
  name text PRIMARY KEY,
  embed_model text NOT NULL,
  embed_fingerprint text NOT NULL,
  embed_dim integer NOT NULL,
  created_at bigint NOT NULL);
CREATE TABLE documents(
  id bigserial PRIMARY KEY,
  idx text NOT NULL REFERENCES indexes(name),
  doc_id text NOT NULL,
  name text NOT NULL DEFAULT '',
  source text NOT NULL DEFAULT '',
  content_hash text NOT NULL DEFAULT '',
  settings text NOT NULL DEFAULT '',
  tags text NOT NULL DEFAULT '',
  state text NOT NULL CHECK (state IN ('ingesting', 'ready', 'failed')),
  error text NOT NULL DEFAULT '',
  n_chunks integer NOT NULL DEFAULT 0,
  n_tokens bigint NOT NULL DEFAULT 0,
  updated_at bigint NOT NULL,
  UNIQUE(idx, doc_id));
CREATE TABLE tags(
  doc bigint NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
  key text NOT NULL,
  value text NOT NULL);
CREATE INDEX tags_kv ON tags(key, value);
CREATE INDEX tags_doc ON tags(doc);
CREATE TABLE chunks(
  id bigserial PRIMARY KEY,
  doc bigint NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
  position integer NOT NULL,
  text text NOT NULL,
  n_tokens integer NOT NULL,
  embedding bytea NOT NULL,
  tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED);
CREATE INDEX chunks_doc ON chunks(doc, position);
CREATE INDEX chunks_tsv ON chunks USING gin(tsv);
CREATE TABLE conversations(
  id text NOT NULL,
  turn integer NOT NULL,
  role text NOT NULL,
  content text NOT NULL,
  n_tokens integer NOT NULL,
  created_at bigint NOT NULL,
  PRIMARY KEY(id, turn));
CREATE TABLE ingest_jobs(
  id bigserial PRIMARY KEY,
  idx text NOT NULL,
  doc_id text NOT NULL,
  name text NOT NULL DEFAULT '',
  source text NOT NULL DEFAULT '',
  content_hash text NOT NULL DEFAULT '',
  settings text NOT NULL DEFAULT '',
  tags text NOT NULL DEFAULT '',
  state text NOT NULL CHECK (state IN ('queued', 'running')),
  claimed_by text,
  lease_until timestamptz,
  n_steps_done integer NOT NULL DEFAULT 0,
  n_chunks_total integer NOT NULL DEFAULT 0,
  n_chunks_done integer NOT NULL DEFAULT 0,
  n_tokens_done bigint NOT NULL DEFAULT 0,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL,
  UNIQUE(idx, doc_id));
CREATE INDEX ingest_jobs_state ON ingest_jobs(state, id);
CREATE TABLE source_files(
  idx text NOT NULL,
  doc_id text NOT NULL,
  position integer NOT NULL,
  name text NOT NULL,
  content_type text NOT NULL DEFAULT '',
  bytes bytea NOT NULL,
  PRIMARY KEY(idx, doc_id, position));
CREATE FUNCTION kvrag_notify_chunks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('kvrag_chunks', d::text) FROM (SELECT DISTINCT doc AS d FROM changed) s;
  RETURN NULL;
END $$;
CREATE TRIGGER chunks_notify_insert AFTER INSERT ON chunks REFERENCING NEW TABLE AS changed
  FOR EACH STATEMENT EXECUTE FUNCTION kvrag_notify_chunks();
CREATE TRIGGER chunks_notify_delete AFTER DELETE ON chunks REFERENCING OLD TABLE AS changed
  FOR EACH STATEMENT EXECUTE FUNCTION kvrag_notify_chunks();
)sql",
};
constexpr int32_t kNumMigrations = static_cast<int32_t>(sizeof(kMigrations) / sizeof(kMigrations[0]));

// pg_advisory_xact_lock key for the migration: any constant unlikely to clash with an
// application's own ("kvrag-sc" in ASCII).
constexpr const char* kMigrationLock = "7742186338839720803";

std::string make_claimer() {
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "host");
    std::random_device rd;
    char tail[32];
    std::snprintf(tail, sizeof tail, "%08x", rd());
    return std::string(host) + ":" + std::to_string(getpid()) + ":" + tail;
}

}  // namespace

int32_t PostgresStore::schema_version() { return kNumMigrations; }

// ---------------------------------------------------------------------------------------------
// Opening

Result<std::unique_ptr<Store>> PostgresStore::open(const std::string& uri_in, OpenMode mode, const PostgresOptions& options_in) {
    std::unique_ptr<PostgresStore> st(new PostgresStore());
    std::string uri = uri_in;
    PostgresOptions options = options_in;
    // kvrag's own URI option: the pool's size (libpq would refuse the unknown parameter).
    if (auto pool = pg::take_uri_option(uri, "kvrag_pool")) {
        char* end = nullptr;
        const long n = std::strtol(pool->c_str(), &end, 10);
        if (pool->empty() || *end != '\0' || n < 1 || n > 64) {
            return Error{Errc::memory_bad_input, "PostgreSQL store " + pg::mask_password(uri_in) + ": kvrag_pool='" + *pool +
                                                     "' is not a number of connections in 1..64"};
        }
        options.n_connections = static_cast<int32_t>(n);
    }
    st->uri_ = uri;
    st->path_ = pg::mask_password(uri_in);
    st->options_ = options;
    if (st->options_.lease < std::chrono::milliseconds(100)) {
        return Error{Errc::memory_bad_input, "PostgreSQL store: a job lease of " + std::to_string(options.lease.count()) +
                                                 " ms is too short (at least 100 ms)"};
    }
    if (options.n_connections < 1 || options.n_connections > 64) {
        return Error{Errc::memory_bad_input, "PostgreSQL store: a pool of " + std::to_string(options.n_connections) +
                                                 " connections is out of range (1..64)"};
    }
    st->claimer_ = options.claimer.empty() ? make_claimer() : options.claimer;
    auto pool = pg::Pool::open(uri, options.n_connections);
    if (!pool) return pool.error();
    st->pool_ = std::move(*pool);
    if (auto r = st->migrate(mode); !r) return r.error();
    if (auto r = st->clean_at_open(); !r) return r.error();
    if (auto r = st->start_watcher(); !r) return r.error();
    return std::unique_ptr<Store>(std::move(st));
}

Result<void> PostgresStore::migrate(OpenMode mode) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    pg::Transaction tx(db);
    if (auto r = tx.begin(); !r) return r;
    // Replicas starting together queue here; the second finds the schema current.
    if (auto r = db.exec(("SELECT pg_advisory_xact_lock(" + std::string(kMigrationLock) + ")").c_str()); !r) return r.error();
    auto exists = db.exec("SELECT to_regclass('kvrag_schema_version') IS NOT NULL");
    if (!exists) return exists.error();
    if (exists->text(0, 0) != "t") {
        if (mode == OpenMode::existing) {
            return Error{Errc::memory_not_found, "no memory store in " + path_ +
                                                     " (the database has no kvrag schema); check the URI, or create the store with "
                                                     "`kvrag ingest --memory URI FILES` or `kvrag serve --memory URI`"};
        }
        auto r = db.exec("CREATE TABLE kvrag_schema_version(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
        if (!r) return r.error();
    }
    auto v = db.exec("SELECT coalesce(max(version), 0) FROM kvrag_schema_version");
    if (!v) return v.error();
    const int64_t have = v->i64(0, 0);
    if (have > kNumMigrations) {
        return Error{Errc::memory_store, "the store in " + path_ + " has schema version " + std::to_string(have) + "; this kvrag reads up to " +
                                             std::to_string(kNumMigrations) + ". Use a newer kvrag"};
    }
    for (int64_t step = have; step < kNumMigrations; ++step) {
        if (auto r = db.exec_script(kMigrations[step]); !r) {
            return Error{Errc::memory_store, "migrating " + path_ + " to schema version " + std::to_string(step + 1) + ": " + r.error().message};
        }
        if (auto r = db.exec("INSERT INTO kvrag_schema_version(version) VALUES ($1)", pg::Params::of(step + 1)); !r) return r.error();
    }
    return tx.commit();
}

Result<void> PostgresStore::clean_at_open() {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    pg::Transaction tx(db);
    if (auto r = tx.begin(); !r) return r;
    // Only jobs whose lease ran out: a running job of another live replica is left alone.
    auto requeued = db.exec(
        "UPDATE ingest_jobs SET state = 'queued', claimed_by = NULL, lease_until = NULL, n_steps_done = 0, n_chunks_done = 0,"
        " n_tokens_done = 0 WHERE state = 'running' AND lease_until < clock_timestamp()");
    if (!requeued) return requeued.error();
    n_requeued_ = requeued->affected();
    auto cleaned = db.exec(
        "DELETE FROM documents d WHERE state = 'ingesting' AND NOT EXISTS"
        " (SELECT 1 FROM ingest_jobs j WHERE j.idx = d.idx AND j.doc_id = d.doc_id)");
    if (!cleaned) return cleaned.error();
    n_cleaned_ = cleaned->affected();
    return tx.commit();
}

PostgresStore::~PostgresStore() {
    stop_ = true;
    if (watcher_.joinable()) watcher_.join();
}

// ---------------------------------------------------------------------------------------------
// The watcher

Result<void> PostgresStore::start_watcher() {
    auto c = pg::Connection::open(uri_);
    if (!c) return c.error();
    watch_db_ = std::move(*c);
    // LISTEN before anything is loaded: a change committed after a load is always notified.
    if (auto r = watch_db_->exec_script("LISTEN kvrag_chunks"); !r) return r;
    listening_ = true;
    watcher_ = std::thread([this] { watch_loop(); });
    return {};
}

void PostgresStore::mark_docs_stale(const std::vector<int64_t>& doc_rowids) {
    if (doc_rowids.empty()) return;
    std::lock_guard lk(cache_mu_);
    for (auto& [name, cached] : vector_cache_) cached.stale_docs.insert(doc_rowids.begin(), doc_rowids.end());
}

void PostgresStore::mark_all_stale() {
    std::lock_guard lk(cache_mu_);
    for (auto& [name, c] : vector_cache_) c.full_reload = true;
}

void PostgresStore::watch_loop() {
    const auto renew_every = options_.lease / 3;
    auto last_renew = std::chrono::steady_clock::now();
    auto last_reconnect = std::chrono::steady_clock::time_point{};
    const std::string lease_ms = std::to_string(options_.lease.count());
    // The connection's reconnect count when LISTEN was issued: a reconnect by exec (the lease
    // renewal below) drops the LISTEN with the old session, so it must be issued again.
    uint64_t listened_at = watch_db_->n_resets();
    while (!stop_) {
        PGconn* c = watch_db_->raw();
        if (!listening_) {
            // Lost: try again every 250 ms (a refused connection costs nothing); notifications
            // sent meanwhile are gone, so every cached set reloads in full once listening again.
            const auto now = std::chrono::steady_clock::now();
            if (now - last_reconnect >= std::chrono::milliseconds(250)) {
                last_reconnect = now;
                if (watch_db_->ensure_open() && watch_db_->exec_script("LISTEN kvrag_chunks")) {
                    listened_at = watch_db_->n_resets();
                    listening_ = true;
                    mark_all_stale();
                }
            }
            if (!listening_) {
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
                continue;
            }
        }
        // Short waits so stop_ is seen quickly.
        pollfd pfd{PQsocket(c), POLLIN, 0};
        const int rc = pfd.fd >= 0 ? poll(&pfd, 1, 100) : -1;
        if (rc < 0 || (rc > 0 && !PQconsumeInput(c)) || PQstatus(c) != CONNECTION_OK) {
            listening_ = false;
            mark_all_stale();
            continue;
        }
        std::vector<int64_t> docs;
        while (PGnotify* n = PQnotifies(c)) {
            docs.push_back(std::strtoll(n->extra, nullptr, 10));
            PQfreemem(n);
        }
        if (!docs.empty()) {
            std::lock_guard lk(cache_mu_);
            for (auto& [name, cached] : vector_cache_) cached.stale_docs.insert(docs.begin(), docs.end());
            n_notifications_ += docs.size();
        }
        const auto now = std::chrono::steady_clock::now();
        if (options_.renew_leases && now - last_renew >= renew_every) {
            last_renew = now;
            // Only the jobs a worker here still runs: one given up while the server was away
            // is left to expire and be taken over.
            const std::vector<int64_t> held = held_jobs();
            if (held.empty()) continue;
            auto r = watch_db_->exec(
                "UPDATE ingest_jobs SET lease_until = clock_timestamp() + $2::bigint * interval '1 millisecond'"
                " WHERE claimed_by = $1 AND state = 'running' AND id = ANY($3::bigint[])",
                pg::Params::of(claimer_, lease_ms, pg::int_array(held)));
            if (!r || watch_db_->n_resets() != listened_at) {
                listening_ = false;
                mark_all_stale();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Private helpers shared by the write paths

void PostgresStore::hold_job(int64_t job_id) {
    std::lock_guard lk(held_mu_);
    held_jobs_.insert(job_id);
}

void PostgresStore::release_job(int64_t job_id) {
    std::lock_guard lk(held_mu_);
    held_jobs_.erase(job_id);
}

std::vector<int64_t> PostgresStore::held_jobs() const {
    std::lock_guard lk(held_mu_);
    std::vector<int64_t> out(held_jobs_.begin(), held_jobs_.end());
    std::sort(out.begin(), out.end());
    return out;
}

int32_t PostgresStore::n_connections_open() const { return pool_->n_open(); }

Result<void> PostgresStore::lock_document(pg::Connection& db, const std::string& doc_id) {
    auto r = db.exec("SELECT pg_advisory_xact_lock(hashtextextended($1, 18))", pg::Params::of(doc_id));
    if (!r) return r.error();
    return {};
}

Result<void> PostgresStore::delete_doc_rows(pg::Connection& db, int64_t rowid) {
    for (const char* sql : {"DELETE FROM chunks WHERE doc = $1", "DELETE FROM tags WHERE doc = $1", "DELETE FROM documents WHERE id = $1"}) {
        if (auto r = db.exec(sql, pg::Params::of(rowid)); !r) return r.error();
    }
    return {};
}

// ---------------------------------------------------------------------------------------------
// Indexes

Result<void> PostgresStore::ensure_index(const std::string& index, const EmbeddingModelInfo& model) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    // Insert-if-absent first, so two replicas creating the index at once agree on one row.
    auto ins = db.exec(
        "INSERT INTO indexes(name, embed_model, embed_fingerprint, embed_dim, created_at) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (name) DO NOTHING",
        pg::Params::of(index, model.name, model.fingerprint, model.dim, now_seconds()));
    if (!ins) return ins.error();
    auto s = db.exec("SELECT embed_model, embed_fingerprint, embed_dim FROM indexes WHERE name = $1", pg::Params::of(index));
    if (!s) return s.error();
    if (s->empty()) return Error{Errc::memory_store, "index '" + index + "' was deleted while it was being created; try again"};
    const std::string name = s->text(0, 0), fp = s->text(0, 1);
    const int64_t dim = s->i64(0, 2);
    if (fp != model.fingerprint || dim != model.dim) {
        return Error{Errc::memory_model_mismatch,
                     "index '" + index + "' was embedded by model '" + name + "' (" + fp + ", dim " + std::to_string(dim) +
                         "); the model in use is '" + model.name + "' (" + model.fingerprint + ", dim " + std::to_string(model.dim) +
                         "). Use the same model (or --embed-model), or another --index"};
    }
    return {};
}

namespace {

// Every index, or only `only` when it is not null, with its counts of ready documents and chunks.
Result<std::vector<IndexInfo>> select_indexes(pg::Connection& db, const std::string* only) {
    auto s = db.exec(
        "SELECT i.name, i.embed_model, i.embed_fingerprint, i.embed_dim,"
        " (SELECT count(*) FROM documents d WHERE d.idx = i.name AND d.state = 'ready'),"
        " (SELECT coalesce(sum(d.n_chunks), 0) FROM documents d WHERE d.idx = i.name AND d.state = 'ready')"
        " FROM indexes i WHERE ($1::text IS NULL OR i.name = $1::text) ORDER BY i.name",
        only ? pg::Params::of(*only) : pg::Params().null());
    if (!s) return s.error();
    std::vector<IndexInfo> out;
    for (int r = 0; r < s->size(); ++r) {
        IndexInfo i;
        i.name = s->text(r, 0);
        i.model = {s->text(r, 1), s->text(r, 2), static_cast<int32_t>(s->i64(r, 3))};
        i.n_documents = s->i64(r, 4);
        i.n_chunks = s->i64(r, 5);
        out.push_back(std::move(i));
    }
    return out;
}

}  // namespace

Result<std::vector<IndexInfo>> PostgresStore::list_indexes() {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    return select_indexes(**lease, nullptr);
}

// Every search asks (twice): only the one index's counts are computed.
Result<std::optional<IndexInfo>> PostgresStore::find_index(const std::string& index) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    auto found = select_indexes(**lease, &index);
    if (!found) return found.error();
    if (found->empty()) return std::optional<IndexInfo>();
    return std::optional<IndexInfo>(std::move(found->front()));
}

Result<int64_t> PostgresStore::delete_index(const std::string& index) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    pg::Transaction tx(db);
    if (auto r = tx.begin(); !r) return r.error();
    const auto p = pg::Params::of(index);
    for (const char* sql : {"DELETE FROM chunks c USING documents d WHERE d.id = c.doc AND d.idx = $1",
                            "DELETE FROM tags t USING documents d WHERE d.id = t.doc AND d.idx = $1", "DELETE FROM documents WHERE idx = $1",
                            "DELETE FROM ingest_jobs WHERE idx = $1", "DELETE FROM source_files WHERE idx = $1"}) {
        if (auto r = db.exec(sql, p); !r) return r.error();
    }
    auto n = db.exec("DELETE FROM indexes WHERE name = $1", p);
    if (!n) return n.error();
    if (auto r = tx.commit(); !r) return r.error();
    return n->affected();
}

// ---------------------------------------------------------------------------------------------
// Consistency

Result<std::string> PostgresStore::check_consistency() {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    std::string problems;
    const ConsistencyCheck own[] = {
        {"running jobs without a claim", "SELECT count(*) FROM ingest_jobs WHERE state = 'running' AND (claimed_by IS NULL OR lease_until IS NULL)"},
        {"chunks whose embedding length differs from their index's dimension",
         "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.doc JOIN indexes i ON i.name = d.idx"
         " WHERE length(c.embedding) != 4 * i.embed_dim"},
    };
    for (const auto& checks : {std::span<const ConsistencyCheck>(kSharedConsistencyChecks), std::span<const ConsistencyCheck>(own)}) {
        for (const auto& c : checks) {
            auto n = db.exec(c.sql);
            if (!n) return n.error();
            if (n->i64(0, 0) != 0) problems += std::to_string(n->i64(0, 0)) + " " + c.what + "; ";
        }
    }
    return problems;
}

}  // namespace kvrag::memory
