// The memory store: one SQLite database (WAL mode) under a directory, holding indexes,
// documents, chunks with their embeddings, an FTS5 table over the chunk texts and
// conversation turns.
//
// Invariants (checked by check_consistency):
//   - a document in state 'ready' has exactly n_chunks chunks, positions [0, n_chunks);
//   - documents in any other state ('ingesting', 'failed') have no chunks;
//   - chunks_fts holds exactly one row per chunk (external content, kept by triggers).
// A document's chunks are written in ONE transaction (write_document), so a crash or kill
// leaves either the old version or the new one, never half of either. The only state that
// survives a crash is a placeholder row in state 'ingesting' (committed by mark_ingesting so
// status queries can see the work); open() deletes those.
//
// Thread safety: every method takes the store's mutex (one SQLite connection).
//
// The implementation is one file per part: store.cpp (opening, schema, indexes, consistency),
// store_documents.cpp, store_search.cpp, store_conversations.cpp; SQLite wrappers in
// sqlite_db.h, tags and ids in ids.h.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
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

class Store {
public:
    // dir: the store directory (created if absent; the database is DIR/memory.sqlite3), or
    // ":memory:" for a private in-memory database (unit tests). Cleans up documents left in
    // state 'ingesting' by a crashed process. Errors: memory_store with SQLite's message.
    static Result<std::unique_ptr<Store>> open(const std::string& dir);
    ~Store();
    Store(const Store&) = delete;
    Store& operator=(const Store&) = delete;

    const std::string& path() const { return path_; }
    int64_t n_cleaned_at_open() const { return n_cleaned_; }

    // ---- indexes ----
    // Creates the index recording `model`, or checks that it was made by `model`.
    // Error: memory_model_mismatch naming both models and dimensions.
    Result<void> ensure_index(const std::string& index, const EmbeddingModelInfo& model);
    Result<std::optional<IndexInfo>> find_index(const std::string& index);
    Result<std::vector<IndexInfo>> list_indexes();

    // ---- documents (ingestion) ----
    // True when (index, doc_id) is 'ready' with this hash, tags and settings: re-ingesting
    // it would change nothing.
    Result<bool> is_unchanged(const std::string& index, const std::string& doc_id, const std::string& content_hash,
                              const Tags& tags, const std::string& settings);
    // Commits a placeholder in state 'ingesting' when the document does not exist yet (an
    // existing version stays searchable until write_document replaces it).
    Result<void> mark_ingesting(const std::string& index, const std::string& doc_id, const std::string& name,
                                const std::string& source);
    // Records a failure: a placeholder or failed row becomes 'failed' with the message; a
    // ready version is left as it was.
    Result<void> mark_failed(const std::string& index, const std::string& doc_id, const std::string& error);
    // Inserts or replaces the document and all its chunks in one transaction.
    Result<WriteOutcome> write_document(const DocumentInput& doc);

    Result<std::vector<DocumentInfo>> list_documents(const std::string& index = "");
    Result<std::optional<DocumentInfo>> get_document(const std::string& index, const std::string& doc_id);
    // Deletes the document with that id (in `index`, or in every index when index is empty),
    // with its chunks. Returns how many documents went.
    Result<int64_t> delete_document(const std::string& index, const std::string& doc_id);
    Result<int64_t> delete_index(const std::string& index);

    // ---- search ----
    // The index's vectors; cached and reloaded only after a write (any connection).
    Result<std::shared_ptr<const VectorSet>> vectors(const std::string& index);
    // Ready documents of `index` passing the filters (doc_id empty = any; every tag must be
    // present on the document). nullopt = no filter given (all pass).
    Result<std::optional<std::unordered_set<int64_t>>> filter_documents(const std::string& index,
                                                                         const std::string& doc_id, const Tags& tags);
    // FTS5 BM25 over the chunk texts of `index`: (chunk id, bm25; lower is better), best first.
    Result<std::vector<std::pair<int64_t, double>>> lexical(const std::string& index, const std::string& query,
                                                            int32_t n_max);
    // Up to n_max ids of the ready chunks of `index` that match one FTS5 expression (from
    // fts_phrase in lexical_query.h), in no particular order.
    Result<std::vector<int64_t>> term_chunks(const std::string& index, const std::string& phrase, int32_t n_max);
    Result<std::vector<ChunkRow>> chunks(const std::vector<int64_t>& chunk_ids);

    // ---- conversations ----
    Result<std::vector<Turn>> conversation(const std::string& conversation_id);  // oldest first
    Result<void> append_turns(const std::string& conversation_id, const std::vector<Turn>& turns);
    Result<int64_t> delete_conversation(const std::string& conversation_id);

    // ---- checks ----
    // Empty when every invariant in the file comment holds; else what is wrong.
    Result<std::string> check_consistency();

    // Test hook: called inside write_document after chunk i is inserted; throwing from it
    // (or killing the process) exercises the rollback.
    std::function<void(int32_t i)> fault_hook;

private:
    Store() = default;
    Result<void> init_schema();
    // The helpers below expect mu_ held (and, for writes, a transaction open).
    Result<int64_t> generation();                 // bumped by every write transaction
    Result<void> bump_generation();               // invalidates every cached VectorSet
    Result<void> delete_doc_rows(int64_t rowid);  // the document row, its chunks and tags

    std::mutex mu_;
    sqlite3* db_ = nullptr;
    std::string path_;
    int64_t n_cleaned_ = 0;
    struct CachedVectors {
        int64_t generation = -1;
        std::shared_ptr<const VectorSet> set;
    };
    std::unordered_map<std::string, CachedVectors> vector_cache_;
};

}  // namespace kvrag::memory
