// The Store on PostgreSQL, so several kvrag replicas share one memory (issue 18; docs/scale.md).
// Opened by Store::open with a libpq URI (postgresql://user@host:port/db).
//
// What differs from SqliteStore, and why:
//   - Schema: created and migrated by kvrag at open, versioned in kvrag_schema_version; the
//     steps run in order in one transaction under an advisory lock, so replicas starting
//     together do not race (the second waits, then finds the schema current).
//   - Lexical search: a tsvector column (the 'simple' configuration: no stemming and no stop
//     words, like FTS5's unicode61) with a GIN index; each query term is a phrase
//     (phraseto_tsquery), and a chunk scores sum over matched terms of idf(term) *
//     ts_rank_cd(chunk, term), so rare terms weigh more as in BM25 (tests compare the two).
//   - Ingestion queue: shared by every replica. A job is claimed with SELECT ... FOR UPDATE
//     SKIP LOCKED and held under a lease (claimed_by, lease_until) that this store's watcher
//     thread renews; a job whose lease ran out (its claimer died) is claimable again, and the
//     old claimer's update_job / finish_job then find it is no longer theirs and write nothing,
//     so each job's document is written exactly once. Opening does NOT requeue other replicas'
//     running jobs (they may be alive); only expired ones. The watcher renews only the jobs
//     this store still works on: a job its worker gave up (fail_job that could not reach the
//     server) runs out of lease and is taken over, instead of being held forever.
//   - Server restarts: calls fail with memory_unavailable (E6007) while the server is away and
//     reconnect by themselves after; the watcher re-LISTENs and every cached vector set
//     reloads once (notifications sent meanwhile are lost). A job that failed only because the
//     server was away (fail_job with an E6007 error) goes back to the queue, not to 'failed'.
//   - Vectors: each replica keeps its in-memory matrix per index for the exact scan. Triggers
//     on chunks NOTIFY kvrag_chunks with the document row id on every insert and delete; the
//     watcher LISTENs and marks those documents stale, and vectors() re-reads only their
//     chunks. While the watcher's connection is down every vectors() call reloads in full.
//   - Concurrency: writes to one document take an advisory lock on its id, appends to one
//     conversation one on the conversation id.
// Thread safety: every method may be called from any thread: each call borrows a connection
// from a pool (PostgresOptions::n_connections) for its statements, so concurrent requests run
// side by side; the watcher has a connection of its own.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "memory/store.h"

namespace kvrag::memory {

namespace pg {
class Connection;
class Pool;
}

struct PostgresOptions {
    // How long a claimed job stays this store's without a renewal; the watcher renews every
    // third of it. A replica that dies holds its jobs at most this long.
    std::chrono::milliseconds lease{15000};
    // The name written to claimed_by; empty: "<host>:<pid>:<random>" (unique per open).
    std::string claimer;
    // Test hook: false stops the lease renewal, as if this process had hung or died.
    bool renew_leases = true;
    // Connections for the store's calls (the watcher's is extra). Searches run a few short
    // statements each; 4 lets a replica's concurrent requests overlap without holding many
    // server processes per replica (PostgreSQL's max_connections is 100 by default).
    int32_t n_connections = 4;
};

class PostgresStore final : public Store {
public:
    // uri: a libpq connection URI. Errors: memory_unavailable "cannot connect to URI: <libpq>;
    // is the server running?"; memory_not_found for OpenMode::existing and a database without a
    // kvrag schema; memory_store when the schema is newer than this kvrag reads. The URI may
    // carry kvrag_pool=N (1..64), which overrides options.n_connections (`kvrag serve --memory
    // 'postgresql://...?kvrag_pool=8'`); it is removed before libpq sees the URI.
    static Result<std::unique_ptr<Store>> open(const std::string& uri, OpenMode mode, const PostgresOptions& options = {});
    ~PostgresStore() override;

    const std::string& path() const override { return path_; }
    int64_t n_cleaned_at_open() const override { return n_cleaned_; }
    int64_t n_requeued_at_open() const override { return n_requeued_; }
    const std::string& claimer() const { return claimer_; }
    // The schema version this kvrag creates and reads.
    static int32_t schema_version();

    Result<void> ensure_index(const std::string& index, const EmbeddingModelInfo& model) override;
    Result<std::optional<IndexInfo>> find_index(const std::string& index) override;
    Result<std::vector<IndexInfo>> list_indexes() override;
    Result<int64_t> delete_index(const std::string& index) override;

    Result<bool> is_unchanged(const std::string& index, const std::string& doc_id, const std::string& content_hash, const Tags& tags,
                              const std::string& settings) override;
    Result<WriteOutcome> write_document(const DocumentInput& doc) override;
    Result<std::vector<DocumentInfo>> list_documents(const std::string& index = "") override;
    Result<std::optional<DocumentInfo>> get_document(const std::string& index, const std::string& doc_id) override;
    Result<int64_t> delete_document(const std::string& index, const std::string& doc_id) override;

    Result<int64_t> enqueue(const NewJob& job) override;
    // Claims a queued job, or a running one whose lease expired (taken over, progress reset).
    Result<std::optional<IngestJob>> claim_job(int64_t job_id = 0) override;
    // Also renews the lease; false when the job is gone or another store took it over.
    Result<bool> update_job(int64_t job_id, int32_t n_steps_done, int32_t n_chunks_total, int32_t n_chunks_done,
                            int64_t n_tokens_done) override;
    Result<void> requeue_job(int64_t job_id) override;
    // Writes nothing (nullopt) unless this store still holds the job's claim.
    Result<std::optional<WriteOutcome>> finish_job(int64_t job_id, const DocumentInput& doc) override;
    Result<void> fail_job(int64_t job_id, const std::string& error) override;
    Result<std::optional<IngestJob>> find_job(const std::string& index, const std::string& doc_id) override;
    Result<std::vector<IngestJob>> list_jobs() override;
    Result<std::vector<SourceFile>> source_files(const std::string& index, const std::string& doc_id) override;

    Result<std::shared_ptr<const VectorSet>> vectors(const std::string& index) override;
    Result<std::optional<std::unordered_set<int64_t>>> filter_documents(const std::string& index, const std::string& doc_id,
                                                                         const Tags& tags) override;
    // (chunk id, -score): lower is better, as SqliteStore's BM25.
    Result<std::vector<std::pair<int64_t, double>>> lexical(const std::string& index, const std::string& query, int32_t n_max) override;
    // phrase: fts_phrase's output ("text"); matched as a tsquery phrase.
    Result<std::vector<int64_t>> term_chunks(const std::string& index, const std::string& phrase, int32_t n_max) override;
    Result<std::vector<ChunkRow>> chunks(const std::vector<int64_t>& chunk_ids) override;

    Result<std::vector<Turn>> conversation(const std::string& conversation_id) override;
    Result<void> append_turns(const std::string& conversation_id, const std::vector<Turn>& turns) override;
    Result<int64_t> delete_conversation(const std::string& conversation_id) override;

    Result<std::string> check_consistency() override;

    // Test hooks: notifications the watcher has handled, whether it is listening now, the
    // pool's open connections, and the jobs whose lease the watcher renews.
    uint64_t n_notifications() const { return n_notifications_.load(); }
    bool listening() const { return listening_.load(); }
    int32_t n_connections_open() const;
    std::vector<int64_t> held_jobs() const;

private:
    PostgresStore() = default;
    Result<void> migrate(OpenMode mode);
    Result<void> clean_at_open();
    // The helpers below run on the caller's connection (for writes, in its open transaction).
    static Result<void> lock_document(pg::Connection& db, const std::string& doc_id);  // transaction-scoped advisory lock
    static Result<void> delete_doc_rows(pg::Connection& db, int64_t rowid);
    // Appends the document row ids whose chunks it changed (the old version's, the new one's)
    // to `touched`, for mark_docs_stale once the transaction commits.
    Result<WriteOutcome> write_document_rows(pg::Connection& db, const DocumentInput& doc, std::vector<int64_t>& touched);
    // This store's own committed writes: their documents are re-read by the next vectors()
    // call at once, not only when the watcher hears the NOTIFY (a search right after a delete
    // must not find the deleted chunks, nor miss a document just written).
    void mark_docs_stale(const std::vector<int64_t>& doc_rowids);
    static Result<void> delete_jobs_and_files(pg::Connection& db, const std::string& index, const std::string& doc_id);
    static Result<std::shared_ptr<VectorSet>> load_vectors(pg::Connection& db, const std::string& index,
                                                           const std::vector<int64_t>* only_docs);
    // The jobs this store works on (claimed and not yet finished, failed or requeued).
    void hold_job(int64_t job_id);
    void release_job(int64_t job_id);

    // The watcher thread: LISTEN kvrag_chunks, lease renewal, reconnection.
    Result<void> start_watcher();
    void watch_loop();
    void mark_all_stale();

    std::unique_ptr<pg::Pool> pool_;
    std::string uri_;
    std::string path_;  // the URI without its password
    PostgresOptions options_;
    std::string claimer_;
    int64_t n_cleaned_ = 0;
    int64_t n_requeued_ = 0;

    struct CachedVectors {
        std::shared_ptr<const VectorSet> set;
        bool full_reload = true;                // nothing loaded yet, or notifications may be lost
        std::unordered_set<int64_t> stale_docs;  // document row ids whose chunks changed
    };
    std::mutex vectors_mu_;  // one vectors() reload at a time (others wait and reuse its set)
    std::mutex cache_mu_;    // vector_cache_'s flags (the watcher writes them); taken after vectors_mu_
    std::unordered_map<std::string, CachedVectors> vector_cache_;

    mutable std::mutex held_mu_;
    std::unordered_set<int64_t> held_jobs_;

    std::unique_ptr<pg::Connection> watch_db_;
    std::thread watcher_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> listening_{false};
    std::atomic<uint64_t> n_notifications_{0};
};

}  // namespace kvrag::memory
