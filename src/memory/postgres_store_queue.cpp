// The PostgreSQL store's ingestion queue, shared by every replica on the database: jobs are
// claimed with FOR UPDATE SKIP LOCKED under a lease (claimed_by, lease_until); every later
// write of a job (progress, requeue, finish, fail) checks that this store still holds it.
#include "memory/pg_db.h"
#include "memory/postgres_store.h"
#include "memory/sqlite_db.h"  // now_seconds

namespace kvrag::memory {
namespace {

constexpr const char* kJobColumns =
    "id, idx, doc_id, name, source, content_hash, settings, tags, state, n_steps_done, n_chunks_total, n_chunks_done,"
    " n_tokens_done, created_at, updated_at";

IngestJob read_job(const pg::Rows& s, int r) {
    IngestJob j;
    j.job_id = s.i64(r, 0);
    j.index = s.text(r, 1);
    j.doc_id = s.text(r, 2);
    j.name = s.text(r, 3);
    j.source = s.text(r, 4);
    j.content_hash = s.text(r, 5);
    j.settings = s.text(r, 6);
    if (auto t = parse_tags(s.text(r, 7))) j.tags = std::move(*t);
    j.state = s.text(r, 8);
    j.n_steps_done = static_cast<int32_t>(s.i64(r, 9));
    j.n_chunks_total = static_cast<int32_t>(s.i64(r, 10));
    j.n_chunks_done = static_cast<int32_t>(s.i64(r, 11));
    j.n_tokens_done = s.i64(r, 12);
    j.created_at = s.i64(r, 13);
    j.updated_at = s.i64(r, 14);
    return j;
}

}  // namespace

Result<void> PostgresStore::delete_jobs_and_files(pg::Connection& db, const std::string& index, const std::string& doc_id) {
    for (const char* sql : {"DELETE FROM ingest_jobs WHERE doc_id = $1 AND ($2::text = '' OR idx = $2::text)",
                            "DELETE FROM source_files WHERE doc_id = $1 AND ($2::text = '' OR idx = $2::text)"}) {
        if (auto r = db.exec(sql, pg::Params::of(doc_id, index)); !r) return r.error();
    }
    return {};
}

Result<int64_t> PostgresStore::enqueue(const NewJob& job) {
    if (job.files.empty()) return Error{Errc::memory_bad_input, "document '" + job.doc_id + "' has no file to ingest"};
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    pg::Transaction tx(db);
    if (auto r = tx.begin(); !r) return r.error();
    if (auto r = lock_document(db, job.doc_id); !r) return r.error();
    if (auto r = delete_jobs_and_files(db, job.index, job.doc_id); !r) return r.error();
    for (size_t i = 0; i < job.files.size(); ++i) {
        const auto& file = job.files[i];
        pg::Params p = pg::Params::of(job.index, job.doc_id, static_cast<int64_t>(i), file.name, file.content_type);
        p.bytes(file.bytes.data(), file.bytes.size());
        auto r = db.exec("INSERT INTO source_files(idx, doc_id, position, name, content_type, bytes) VALUES ($1, $2, $3, $4, $5, $6)", p);
        if (!r) return r.error();
    }
    const int64_t now = now_seconds();
    auto ins = db.exec(
        "INSERT INTO ingest_jobs(idx, doc_id, name, source, content_hash, settings, tags, state, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8) RETURNING id",
        pg::Params::of(job.index, job.doc_id, job.name, job.source, job.content_hash, job.settings, format_tags(job.tags), now));
    if (!ins) return ins.error();
    const int64_t job_id = ins->i64(0, 0);
    // The document is listed from now on: a new one as 'ingesting', a failed one again.
    auto doc = db.exec(
        "INSERT INTO documents(idx, doc_id, name, source, state, updated_at) VALUES ($1, $2, $3, $4, 'ingesting', $5)"
        " ON CONFLICT (idx, doc_id) DO UPDATE SET state = 'ingesting', error = '', updated_at = excluded.updated_at"
        " WHERE documents.state = 'failed'",
        pg::Params::of(job.index, job.doc_id, job.name, job.source, now));
    if (!doc) return doc.error();
    if (auto r = tx.commit(); !r) return r.error();
    return job_id;
}

Result<std::optional<IngestJob>> PostgresStore::claim_job(int64_t job_id) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    // One statement: the inner SELECT locks the oldest claimable row, skipping rows another
    // replica is claiming right now; a running job whose lease ran out is claimable (its
    // claimer died or hung) and starts over.
    const std::string sql = std::string(
                                "UPDATE ingest_jobs SET state = 'running', claimed_by = $1,"
                                " lease_until = clock_timestamp() + $2::bigint * interval '1 millisecond',"
                                " n_steps_done = 0, n_chunks_total = 0, n_chunks_done = 0, n_tokens_done = 0, updated_at = $3"
                                " WHERE id = (SELECT id FROM ingest_jobs WHERE"
                                " (state = 'queued' OR (state = 'running' AND lease_until < clock_timestamp()))"
                                " AND ($4::bigint = 0 OR id = $4::bigint)"
                                " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING ") +
                            kJobColumns;
    auto s = db.exec(sql.c_str(), pg::Params::of(claimer_, static_cast<int64_t>(options_.lease.count()), now_seconds(), job_id));
    if (!s) return s.error();
    if (s->empty()) return std::optional<IngestJob>();
    IngestJob job = read_job(*s, 0);
    hold_job(job.job_id);
    return std::optional<IngestJob>(std::move(job));
}

Result<bool> PostgresStore::update_job(int64_t job_id, int32_t n_steps_done, int32_t n_chunks_total, int32_t n_chunks_done,
                                       int64_t n_tokens_done) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    auto r = db.exec(
        "UPDATE ingest_jobs SET n_steps_done = $2, n_chunks_total = $3, n_chunks_done = $4, n_tokens_done = $5, updated_at = $6,"
        " lease_until = clock_timestamp() + $8::bigint * interval '1 millisecond'"
        " WHERE id = $1 AND claimed_by = $7 AND state = 'running'",
        pg::Params::of(job_id, n_steps_done, n_chunks_total, n_chunks_done, n_tokens_done, now_seconds(), claimer_,
                       static_cast<int64_t>(options_.lease.count())));
    if (!r) return r.error();
    if (r->affected() == 0) release_job(job_id);  // deleted, or taken over: not ours to renew
    return r->affected() > 0;
}

Result<void> PostgresStore::requeue_job(int64_t job_id) {
    // Given up here whether or not the write below reaches the server: if it does not, the
    // lease runs out and any replica takes the job over.
    release_job(job_id);
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    auto r = db.exec(
        "UPDATE ingest_jobs SET state = 'queued', claimed_by = NULL, lease_until = NULL, n_steps_done = 0, n_chunks_done = 0,"
        " n_tokens_done = 0, updated_at = $2 WHERE id = $1 AND claimed_by = $3",
        pg::Params::of(job_id, now_seconds(), claimer_));
    if (!r) return r.error();
    return {};
}

Result<std::optional<WriteOutcome>> PostgresStore::finish_job(int64_t job_id, const DocumentInput& doc) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    pg::Transaction tx(db);
    if (auto r = tx.begin(); !r) return r.error();
    if (auto r = lock_document(db, doc.doc_id); !r) return r.error();
    // Still ours? A job taken over after our lease ran out is another store's now; its
    // result will be written by that store, so ours is dropped (exactly once).
    auto gone = db.exec("DELETE FROM ingest_jobs WHERE id = $1 AND claimed_by = $2", pg::Params::of(job_id, claimer_));
    if (!gone) return gone.error();
    if (gone->affected() == 0) {
        release_job(job_id);
        return std::optional<WriteOutcome>();
    }
    std::vector<int64_t> touched;
    auto w = write_document_rows(db, doc, touched);
    if (!w) return w.error();
    if (auto r = tx.commit(); !r) return r.error();
    mark_docs_stale(touched);
    release_job(job_id);
    return std::optional<WriteOutcome>(*w);
}

Result<void> PostgresStore::fail_job(int64_t job_id, const std::string& error) {
    // A job that failed because the server could not be reached (its error is an E6007, from
    // this store) is not the document's fault: it goes back to the queue and runs again
    // once the server is back, instead of leaving the document 'failed'.
    static const std::string kUnavailable = Error{Errc::memory_unavailable, ""}.what();  // "E6007 "
    if (error.rfind(kUnavailable, 0) == 0) return requeue_job(job_id);
    release_job(job_id);
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    pg::Transaction tx(db);
    if (auto r = tx.begin(); !r) return r;
    auto j = db.exec("DELETE FROM ingest_jobs WHERE id = $1 AND claimed_by = $2 RETURNING idx, doc_id", pg::Params::of(job_id, claimer_));
    if (!j) return j.error();
    if (j->empty()) return {};
    auto r = db.exec(
        "UPDATE documents SET state = 'failed', error = $1, updated_at = $2 WHERE idx = $3 AND doc_id = $4 AND state != 'ready'",
        pg::Params::of(error, now_seconds(), j->text(0, 0), j->text(0, 1)));
    if (!r) return r.error();
    return tx.commit();
}

Result<std::optional<IngestJob>> PostgresStore::find_job(const std::string& index, const std::string& doc_id) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    const std::string sql = std::string("SELECT ") + kJobColumns + " FROM ingest_jobs WHERE idx = $1 AND doc_id = $2";
    auto s = db.exec(sql.c_str(), pg::Params::of(index, doc_id));
    if (!s) return s.error();
    if (s->empty()) return std::optional<IngestJob>();
    return std::optional<IngestJob>(read_job(*s, 0));
}

Result<std::vector<IngestJob>> PostgresStore::list_jobs() {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    const std::string sql = std::string("SELECT ") + kJobColumns + " FROM ingest_jobs ORDER BY id";
    auto s = db.exec(sql.c_str());
    if (!s) return s.error();
    std::vector<IngestJob> out;
    for (int r = 0; r < s->size(); ++r) out.push_back(read_job(*s, r));
    return out;
}

Result<std::vector<SourceFile>> PostgresStore::source_files(const std::string& index, const std::string& doc_id) {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg::Connection& db = **lease;
    auto s = db.exec("SELECT name, content_type, bytes FROM source_files WHERE idx = $1 AND doc_id = $2 ORDER BY position",
                       pg::Params::of(index, doc_id));
    if (!s) return s.error();
    std::vector<SourceFile> out;
    for (int r = 0; r < s->size(); ++r) out.push_back(SourceFile{s->text(r, 0), s->text(r, 1), s->bytes(r, 2)});
    return out;
}

}  // namespace kvrag::memory
