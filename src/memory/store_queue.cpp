// The SQLite store's ingestion queue: jobs (one per document, replaced by a newer upload) and
// the files they read, which stay after the job for GET /download.
#include <sqlite3.h>

#include "memory/sqlite_db.h"
#include "memory/sqlite_store.h"

namespace kvrag::memory {
namespace {

constexpr const char* kJobColumns =
    "id, idx, doc_id, name, source, content_hash, settings, tags, state, n_steps_done, n_chunks_total, n_chunks_done,"
    " n_tokens_done, created_at, updated_at";

IngestJob read_job(const Stmt& s) {
    IngestJob j;
    j.job_id = s.i64(0);
    j.index = s.text(1);
    j.doc_id = s.text(2);
    j.name = s.text(3);
    j.source = s.text(4);
    j.content_hash = s.text(5);
    j.settings = s.text(6);
    if (auto t = parse_tags(s.text(7))) j.tags = std::move(*t);
    j.state = s.text(8);
    j.n_steps_done = static_cast<int32_t>(s.i64(9));
    j.n_chunks_total = static_cast<int32_t>(s.i64(10));
    j.n_chunks_done = static_cast<int32_t>(s.i64(11));
    j.n_tokens_done = s.i64(12);
    j.created_at = s.i64(13);
    j.updated_at = s.i64(14);
    return j;
}

}  // namespace

Result<void> SqliteStore::delete_jobs_and_files(const std::string& index, const std::string& doc_id) {
    const char* jobs = index.empty() ? "DELETE FROM ingest_jobs WHERE doc_id = ?" : "DELETE FROM ingest_jobs WHERE doc_id = ? AND idx = ?";
    const char* files = index.empty() ? "DELETE FROM source_files WHERE doc_id = ?" : "DELETE FROM source_files WHERE doc_id = ? AND idx = ?";
    for (const char* sql : {jobs, files}) {
        auto r = index.empty() ? run(db_, sql, doc_id) : run(db_, sql, doc_id, index);
        if (!r) return r.error();
    }
    return {};
}

Result<int64_t> SqliteStore::enqueue(const NewJob& job) {
    if (job.files.empty()) return Error{Errc::memory_bad_input, "document '" + job.doc_id + "' has no file to ingest"};
    std::lock_guard lk(mu_);
    Transaction tx(db_);
    if (auto r = tx.begin(); !r) return r.error();
    if (auto r = delete_jobs_and_files(job.index, job.doc_id); !r) return r.error();
    {
        Stmt f(db_, "INSERT INTO source_files(idx, doc_id, position, name, content_type, bytes) VALUES (?, ?, ?, ?, ?, ?)");
        if (!f.ok()) return f.error();
        for (size_t i = 0; i < job.files.size(); ++i) {
            const auto& file = job.files[i];
            f.bind(1, job.index).bind(2, job.doc_id).bind(3, static_cast<int64_t>(i)).bind(4, file.name).bind(5, file.content_type);
            f.bind_blob_static(6, file.bytes.data(), file.bytes.size());  // `job` outlives the step and reset
            f.step();
            if (f.failed()) return f.error();
            f.reset();
        }
    }
    const int64_t now = now_seconds();
    auto ins = run(db_,
                   "INSERT INTO ingest_jobs(idx, doc_id, name, source, content_hash, settings, tags, state, created_at, updated_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                   job.index, job.doc_id, job.name, job.source, job.content_hash, job.settings, format_tags(job.tags), now, now);
    if (!ins) return ins.error();
    const int64_t job_id = sqlite3_last_insert_rowid(db_);
    // The document is listed from now on: a new one as 'ingesting', a failed one again.
    auto doc = run(db_,
                   "INSERT INTO documents(idx, doc_id, name, source, state, updated_at) VALUES (?, ?, ?, ?, 'ingesting', ?)"
                   " ON CONFLICT(idx, doc_id) DO UPDATE SET state = 'ingesting', error = '', updated_at = excluded.updated_at"
                   " WHERE state = 'failed'",
                   job.index, job.doc_id, job.name, job.source, now);
    if (!doc) return doc.error();
    if (auto r = tx.commit(); !r) return r.error();
    return job_id;
}

Result<std::optional<IngestJob>> SqliteStore::claim_job(int64_t job_id) {
    std::lock_guard lk(mu_);
    Transaction tx(db_);
    if (auto r = tx.begin(); !r) return r.error();
    std::optional<IngestJob> job;
    {
        const std::string sql = std::string("SELECT ") + kJobColumns + " FROM ingest_jobs WHERE state = 'queued'" +
                                (job_id > 0 ? " AND id = ?" : "") + " ORDER BY id LIMIT 1";
        Stmt s(db_, sql.c_str());
        if (!s.ok()) return s.error();
        if (job_id > 0) s.bind(1, job_id);
        if (s.step()) job = read_job(s);
        if (s.failed()) return s.error();
    }
    if (!job) return job;
    if (auto r = run(db_, "UPDATE ingest_jobs SET state = 'running', updated_at = ? WHERE id = ?", now_seconds(), job->job_id); !r) {
        return r.error();
    }
    if (auto r = tx.commit(); !r) return r.error();
    job->state = "running";
    return job;
}

Result<bool> SqliteStore::update_job(int64_t job_id, int32_t n_steps_done, int32_t n_chunks_total, int32_t n_chunks_done,
                                     int64_t n_tokens_done) {
    std::lock_guard lk(mu_);
    auto r = run(db_,
                 "UPDATE ingest_jobs SET n_steps_done = ?, n_chunks_total = ?, n_chunks_done = ?, n_tokens_done = ?, updated_at = ?"
                 " WHERE id = ?",
                 static_cast<int64_t>(n_steps_done), static_cast<int64_t>(n_chunks_total), static_cast<int64_t>(n_chunks_done),
                 n_tokens_done, now_seconds(), job_id);
    if (!r) return r.error();
    return *r > 0;
}

Result<void> SqliteStore::requeue_job(int64_t job_id) {
    std::lock_guard lk(mu_);
    auto r = run(db_,
                 "UPDATE ingest_jobs SET state = 'queued', n_steps_done = 0, n_chunks_done = 0, n_tokens_done = 0, updated_at = ?"
                 " WHERE id = ?",
                 now_seconds(), job_id);
    if (!r) return r.error();
    return {};
}

Result<std::optional<WriteOutcome>> SqliteStore::finish_job(int64_t job_id, const DocumentInput& doc) {
    std::lock_guard lk(mu_);
    Transaction tx(db_);
    if (auto r = tx.begin(); !r) return r.error();
    auto gone = run(db_, "DELETE FROM ingest_jobs WHERE id = ?", job_id);
    if (!gone) return gone.error();
    if (*gone == 0) return std::optional<WriteOutcome>();  // deleted or replaced meanwhile: drop the result
    auto w = write_document_rows(doc);
    if (!w) return w.error();
    if (auto r = tx.commit(); !r) return r.error();
    return std::optional<WriteOutcome>(*w);
}

Result<void> SqliteStore::fail_job(int64_t job_id, const std::string& error) {
    std::lock_guard lk(mu_);
    Transaction tx(db_);
    if (auto r = tx.begin(); !r) return r.error();
    std::string index, doc_id;
    {
        Stmt s(db_, "SELECT idx, doc_id FROM ingest_jobs WHERE id = ?");
        if (!s.ok()) return s.error();
        s.bind(1, job_id);
        if (!s.step()) return s.failed() ? Result<void>(s.error()) : Result<void>();
        index = s.text(0);
        doc_id = s.text(1);
    }
    if (auto r = run(db_, "DELETE FROM ingest_jobs WHERE id = ?", job_id); !r) return r.error();
    auto r = run(db_, "UPDATE documents SET state = 'failed', error = ?, updated_at = ? WHERE idx = ? AND doc_id = ? AND state != 'ready'",
                 error, now_seconds(), index, doc_id);
    if (!r) return r.error();
    return tx.commit();
}

Result<std::optional<IngestJob>> SqliteStore::find_job(const std::string& index, const std::string& doc_id) {
    std::lock_guard lk(mu_);
    const std::string sql = std::string("SELECT ") + kJobColumns + " FROM ingest_jobs WHERE idx = ? AND doc_id = ?";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return s.error();
    s.bind(1, index).bind(2, doc_id);
    if (s.step()) return std::optional<IngestJob>(read_job(s));
    if (s.failed()) return s.error();
    return std::optional<IngestJob>();
}

Result<std::vector<IngestJob>> SqliteStore::list_jobs() {
    std::lock_guard lk(mu_);
    const std::string sql = std::string("SELECT ") + kJobColumns + " FROM ingest_jobs ORDER BY id";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return s.error();
    std::vector<IngestJob> out;
    while (s.step()) out.push_back(read_job(s));
    if (s.failed()) return s.error();
    return out;
}

Result<std::vector<SourceFile>> SqliteStore::source_files(const std::string& index, const std::string& doc_id) {
    std::lock_guard lk(mu_);
    Stmt s(db_, "SELECT name, content_type, bytes FROM source_files WHERE idx = ? AND doc_id = ? ORDER BY position");
    if (!s.ok()) return s.error();
    s.bind(1, index).bind(2, doc_id);
    std::vector<SourceFile> out;
    while (s.step()) {
        SourceFile f{s.text(0), s.text(1), std::string()};
        if (const void* p = s.blob(2)) f.bytes.assign(static_cast<const char*>(p), static_cast<size_t>(s.bytes(2)));
        out.push_back(std::move(f));
    }
    if (s.failed()) return s.error();
    return out;
}

}  // namespace kvrag::memory
