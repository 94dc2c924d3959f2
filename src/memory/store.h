// The memory store's interface: indexes, documents, chunks with their embeddings, full-text
// search over the chunk texts, conversation turns, and the durable ingestion queue with the
// files uploaded. Memory reaches storage only through this abstract class, implemented by
// SqliteStore (sqlite_store.h: one SQLite database in WAL mode under a directory; the
// embedded default) and PostgresStore (postgres_store.h: one PostgreSQL database that several
// kvrag replicas share). Store::open picks one from the path it is given.
//
// Invariants (checked by check_consistency):
//   - a document in state 'ready' has exactly n_chunks chunks, positions [0, n_chunks);
//   - documents in any other state ('ingesting', 'failed') have no chunks;
//   - a document in state 'ingesting' has a queued or running job;
//   - the full-text index holds exactly one row per chunk.
// A document's chunks are written in ONE transaction together with the end of its job
// (finish_job), so a crash or kill leaves either the old version and the job, or the new
// version and no job, never half of either; and a job that is gone (the document was deleted
// or uploaded again) writes nothing.
//
// Ingestion queue: enqueue stores the files and a job in one transaction (durable when it
// returns: that is when /upload answers 202); a worker claims the oldest queued job, reports
// progress, and ends it with finish_job or fail_job, or gives it back with requeue_job. Opening
// a store puts jobs left 'running' by a stopped or killed process back in the queue.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/error.h"
#include "memory/ids.h"

struct sqlite3;

namespace kvrag::memory {

// Which model made an index's embeddings. Two models are the same when all three match.
struct EmbeddingModelInfo {
    std::string name;         // general.name or the file name
    std::string fingerprint;  // "size:<bytes> sha256:<hex of sampled blocks>"
    int32_t dim = 0;          // embedding length
};

struct IndexInfo {
    std::string name;
    EmbeddingModelInfo model;
    int64_t n_documents = 0;
    int64_t n_chunks = 0;
};

struct ChunkInput {
    int32_t position = 0;          // 0-based, within the document
    std::string text;
    int32_t n_tokens = 0;          // tokens of the model in use
    std::vector<float> embedding;  // (dim) floats, L2-normalised
};

struct DocumentInput {
    std::string index;
    std::string doc_id;
    std::string name;           // display name (file name)
    std::string source;         // where it came from (path, "upload")
    std::string content_hash;   // sha256 of the raw bytes
    std::string settings;       // chunking settings it was cut with, e.g. "max=256,overlap=32"
    Tags tags;
    std::vector<ChunkInput> chunks;
};

struct DocumentInfo {
    std::string index;
    std::string doc_id;
    std::string name;
    std::string source;
    std::string content_hash;
    std::string settings;
    std::string state;  // "ingesting", "ready", "failed"
    std::string error;  // why it failed
    Tags tags;
    int32_t n_chunks = 0;
    int64_t n_tokens = 0;
    int64_t updated_at = 0;  // unix seconds
};

enum class WriteOutcome { inserted, replaced, unchanged };
const char* write_outcome_name(WriteOutcome w);

// A chunk as search returns it.
struct ChunkRow {
    int64_t chunk_id = 0;
    int64_t doc_rowid = 0;
    std::string index;
    std::string doc_id;
    std::string doc_name;
    std::string source;
    int32_t position = 0;
    int32_t n_tokens = 0;
    std::string text;
    Tags tags;
};

// Every chunk embedding of one index, in one contiguous matrix for the exact scan.
struct VectorSet {
    int32_t dim = 0;
    std::vector<int64_t> chunk_ids;  // (n)
    std::vector<int64_t> doc_rowids; // (n)
    std::vector<float> data;         // (n, dim), row-major
    std::unordered_map<int64_t, size_t> row_of;  // chunk id -> row
    size_t size() const { return chunk_ids.size(); }
};

struct Turn {
    std::string role;  // "user" / "assistant"
    std::string content;
    int32_t n_tokens = 0;
};

// One file of a document as it was uploaded or read (Kernel Memory keeps them for GET /download).
struct SourceFile { std::string name; std::string content_type; std::string bytes; };

// The ingestion steps, in order (Kernel Memory's names).
inline constexpr const char* kIngestSteps[] = {"extract", "partition", "gen_embeddings", "save_records"};
inline constexpr int32_t kNumIngestSteps = 4;

struct NewJob {
    std::string index;
    std::string doc_id;
    std::string name;          // display name (the first file's name)
    std::string source;        // path or "upload"
    std::string content_hash;  // of the files (Memory::files_hash)
    std::string settings;      // chunking settings the job will use
    Tags tags;
    std::vector<SourceFile> files;  // at least one
};

struct IngestJob {
    int64_t job_id = 0;           // never reused: a job that was replaced or cancelled is gone
    std::string index;
    std::string doc_id;
    std::string name;
    std::string source;
    std::string content_hash;
    std::string settings;
    Tags tags;
    std::string state;            // "queued" or "running"
    int32_t n_steps_done = 0;     // of kIngestSteps
    int32_t n_chunks_total = 0;   // known after partition
    int32_t n_chunks_done = 0;    // embedded so far
    int64_t n_tokens_done = 0;
    int64_t created_at = 0;       // unix seconds
    int64_t updated_at = 0;
};

// How Store::open treats a directory that holds no store yet.
enum class OpenMode {
    create,    // make the directory and the database (ingest, serve)
    existing,  // Error memory_not_found naming the path (search, ask, docs)
};

class Store {
public:
    // dir: the store directory (the database is DIR/memory.sqlite3), or ":memory:" for a
    // private in-memory database (unit tests): a SqliteStore; or a libpq URI
    // (postgresql://... or postgres://...): a PostgresStore (whose open differs: see there). Puts jobs left running by
    // a stopped or killed process back in the queue, and deletes 'ingesting' placeholders
    // without a job (left by older versions). Errors: memory_store with SQLite's message;
    // memory_not_found for OpenMode::existing and no store at dir.
    static Result<std::unique_ptr<Store>> open(const std::string& dir, OpenMode mode = OpenMode::create);
    virtual ~Store() = default;

    virtual const std::string& path() const = 0;
    // Placeholders deleted and jobs requeued when the store was opened.
    virtual int64_t n_cleaned_at_open() const = 0;
    virtual int64_t n_requeued_at_open() const = 0;

    // ---- indexes ----
    // Creates the index recording `model`, or checks that it was made by `model`.
    // Error: memory_model_mismatch naming both models and dimensions.
    virtual Result<void> ensure_index(const std::string& index, const EmbeddingModelInfo& model) = 0;
    virtual Result<std::optional<IndexInfo>> find_index(const std::string& index) = 0;
    virtual Result<std::vector<IndexInfo>> list_indexes() = 0;
    // Deletes the index, its documents, jobs and files. Returns 1, or 0 when there was none.
    virtual Result<int64_t> delete_index(const std::string& index) = 0;

    // ---- documents ----
    // True when (index, doc_id) is 'ready' with this hash, tags and settings: re-ingesting
    // it would change nothing.
    virtual Result<bool> is_unchanged(const std::string& index, const std::string& doc_id, const std::string& content_hash,
                                      const Tags& tags, const std::string& settings) = 0;
    // Inserts or replaces the document and all its chunks in one transaction (no job involved:
    // tests and tools; ingestion uses finish_job).
    virtual Result<WriteOutcome> write_document(const DocumentInput& doc) = 0;
    virtual Result<std::vector<DocumentInfo>> list_documents(const std::string& index = "") = 0;
    virtual Result<std::optional<DocumentInfo>> get_document(const std::string& index, const std::string& doc_id) = 0;
    // Deletes the document with that id (in `index`, or in every index when index is empty),
    // with its chunks, files and any queued or running job (whose results are then dropped).
    // Returns how many documents went (a queued new document counts).
    virtual Result<int64_t> delete_document(const std::string& index, const std::string& doc_id) = 0;

    // ---- ingestion queue ----
    // Stores the files (replacing the document's earlier ones) and a queued job, replacing any
    // job of the same document, in one committed transaction. A new document is listed in
    // state 'ingesting' (a failed one goes back to it); a ready one stays searchable until its
    // job finishes. Returns the job id.
    virtual Result<int64_t> enqueue(const NewJob& job) = 0;
    // The oldest queued job (or the job `job_id` when > 0, if queued), now 'running'; nullopt
    // when none is queued.
    virtual Result<std::optional<IngestJob>> claim_job(int64_t job_id = 0) = 0;
    // Records progress; false when the job is gone (deleted or replaced): stop working on it.
    virtual Result<bool> update_job(int64_t job_id, int32_t n_steps_done, int32_t n_chunks_total, int32_t n_chunks_done,
                                    int64_t n_tokens_done) = 0;
    // Back to 'queued' with no progress (the worker was stopped).
    virtual Result<void> requeue_job(int64_t job_id) = 0;
    // Writes the document (as write_document) and removes the job, in one transaction, if the
    // job still exists; nullopt (nothing written) when it is gone.
    virtual Result<std::optional<WriteOutcome>> finish_job(int64_t job_id, const DocumentInput& doc) = 0;
    // Removes the job; its document becomes 'failed' with the error unless a ready version
    // exists (which stays). No-op when the job is gone.
    virtual Result<void> fail_job(int64_t job_id, const std::string& error) = 0;
    virtual Result<std::optional<IngestJob>> find_job(const std::string& index, const std::string& doc_id) = 0;
    virtual Result<std::vector<IngestJob>> list_jobs() = 0;  // oldest first
    // The document's files in upload order (empty when it has none).
    virtual Result<std::vector<SourceFile>> source_files(const std::string& index, const std::string& doc_id) = 0;

    // ---- search ----
    // The index's vectors; cached and reloaded only after a write (any connection).
    virtual Result<std::shared_ptr<const VectorSet>> vectors(const std::string& index) = 0;
    // Ready documents of `index` passing the filters (doc_id empty = any; every tag must be
    // present on the document). nullopt = no filter given (all pass).
    virtual Result<std::optional<std::unordered_set<int64_t>>> filter_documents(const std::string& index, const std::string& doc_id,
                                                                                 const Tags& tags) = 0;
    // Full-text BM25 over the chunk texts of `index`: (chunk id, bm25; lower is better), best first.
    virtual Result<std::vector<std::pair<int64_t, double>>> lexical(const std::string& index, const std::string& query, int32_t n_max) = 0;
    // Up to n_max ids of the ready chunks of `index` that match one FTS5 expression (from
    // fts_phrase in lexical_query.h), in no particular order.
    virtual Result<std::vector<int64_t>> term_chunks(const std::string& index, const std::string& phrase, int32_t n_max) = 0;
    virtual Result<std::vector<ChunkRow>> chunks(const std::vector<int64_t>& chunk_ids) = 0;

    // ---- conversations ----
    virtual Result<std::vector<Turn>> conversation(const std::string& conversation_id) = 0;  // oldest first
    virtual Result<void> append_turns(const std::string& conversation_id, const std::vector<Turn>& turns) = 0;
    virtual Result<int64_t> delete_conversation(const std::string& conversation_id) = 0;

    // ---- checks ----
    // Empty when every invariant in the file comment holds; else what is wrong.
    virtual Result<std::string> check_consistency() = 0;

    // Test hook: called inside the document write after chunk i is inserted; throwing from it
    // (or killing the process) exercises the rollback.
    std::function<void(int32_t i)> fault_hook;
};

// One invariant check_consistency() looks for violations of: what a violation is, and a query
// counting them (0 when the invariant holds).
struct ConsistencyCheck {
    const char* what;
    const char* sql;
};

// The checks on the tables both backends share, in SQL that SQLite and PostgreSQL both run.
// Each backend adds the ones its own schema needs (its full-text index, leases, ...).
inline constexpr ConsistencyCheck kSharedConsistencyChecks[] = {
    {"ready documents whose chunk count differs from n_chunks",
     "SELECT count(*) FROM documents d WHERE d.state = 'ready' AND d.n_chunks != (SELECT count(*) FROM chunks c WHERE c.doc = d.id)"},
    {"ready documents whose positions are not [0, n_chunks)",
     "SELECT count(*) FROM documents d WHERE d.state = 'ready' AND d.n_chunks > 0 AND"
     " ((SELECT min(position) FROM chunks c WHERE c.doc = d.id) != 0 OR"
     "  (SELECT max(position) FROM chunks c WHERE c.doc = d.id) != d.n_chunks - 1 OR"
     "  (SELECT count(DISTINCT position) FROM chunks c WHERE c.doc = d.id) != d.n_chunks)"},
    {"documents not ready that hold chunks",
     "SELECT count(*) FROM documents d WHERE d.state != 'ready' AND EXISTS (SELECT 1 FROM chunks c WHERE c.doc = d.id)"},
    {"documents in state 'ingesting' without a job",
     "SELECT count(*) FROM documents d WHERE d.state = 'ingesting' AND NOT EXISTS"
     " (SELECT 1 FROM ingest_jobs j WHERE j.idx = d.idx AND j.doc_id = d.doc_id)"},
    {"jobs without a document row",
     "SELECT count(*) FROM ingest_jobs j WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.idx = j.idx AND d.doc_id = j.doc_id)"},
    {"jobs without files",
     "SELECT count(*) FROM ingest_jobs j WHERE NOT EXISTS (SELECT 1 FROM source_files f WHERE f.idx = j.idx AND f.doc_id = j.doc_id)"},
};

}  // namespace kvrag::memory
