// The Store on SQLite: one database (WAL mode) under a directory, with an FTS5 table over the
// chunk texts. One connection, serialised by a mutex; other processes may open the same file
// (SQLite's locks order the writes, a generation counter tells every connection when its
// cached vectors are stale).
//
// The implementation is one file per part: store.cpp (opening, schema, indexes, consistency),
// store_documents.cpp, store_queue.cpp (ingestion jobs and source files), store_search.cpp,
// store_conversations.cpp; SQLite wrappers in sqlite_db.h.
#pragma once

#include <mutex>

#include "memory/store.h"

namespace kvrag::memory {

class SqliteStore final : public Store {
public:
    static Result<std::unique_ptr<Store>> open(const std::string& dir, OpenMode mode);
    ~SqliteStore() override;

    const std::string& path() const override { return path_; }
    int64_t n_cleaned_at_open() const override { return n_cleaned_; }
    int64_t n_requeued_at_open() const override { return n_requeued_; }

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
    Result<std::optional<IngestJob>> claim_job(int64_t job_id = 0) override;
    Result<bool> update_job(int64_t job_id, int32_t n_steps_done, int32_t n_chunks_total, int32_t n_chunks_done,
                            int64_t n_tokens_done) override;
    Result<void> requeue_job(int64_t job_id) override;
    Result<std::optional<WriteOutcome>> finish_job(int64_t job_id, const DocumentInput& doc) override;
    Result<void> fail_job(int64_t job_id, const std::string& error) override;
    Result<std::optional<IngestJob>> find_job(const std::string& index, const std::string& doc_id) override;
    Result<std::vector<IngestJob>> list_jobs() override;
    Result<std::vector<SourceFile>> source_files(const std::string& index, const std::string& doc_id) override;

    Result<std::shared_ptr<const VectorSet>> vectors(const std::string& index) override;
    Result<std::optional<std::unordered_set<int64_t>>> filter_documents(const std::string& index, const std::string& doc_id,
                                                                         const Tags& tags) override;
    Result<std::vector<std::pair<int64_t, double>>> lexical(const std::string& index, const std::string& query, int32_t n_max) override;
    Result<std::vector<int64_t>> term_chunks(const std::string& index, const std::string& phrase, int32_t n_max) override;
    Result<std::vector<ChunkRow>> chunks(const std::vector<int64_t>& chunk_ids) override;

    Result<std::vector<Turn>> conversation(const std::string& conversation_id) override;
    Result<void> append_turns(const std::string& conversation_id, const std::vector<Turn>& turns) override;
    Result<int64_t> delete_conversation(const std::string& conversation_id) override;

    Result<std::string> check_consistency() override;

private:
    SqliteStore() = default;
    Result<void> init_schema();
    // The helpers below expect mu_ held (and, for writes, a transaction open).
    Result<int64_t> generation();                 // bumped by every write transaction
    Result<void> bump_generation();               // invalidates every cached VectorSet
    Result<void> delete_doc_rows(int64_t rowid);  // the document row, its chunks and tags
    // Deletes the old version of doc.doc_id and writes doc with its chunks (transaction open).
    Result<WriteOutcome> write_document_rows(const DocumentInput& doc);
    // Jobs and files of (index, doc_id); index empty = every index.
    Result<void> delete_jobs_and_files(const std::string& index, const std::string& doc_id);

    std::mutex mu_;
    sqlite3* db_ = nullptr;
    std::string path_;
    int64_t n_cleaned_ = 0;
    int64_t n_requeued_ = 0;
    struct CachedVectors {
        int64_t generation = -1;
        std::shared_ptr<const VectorSet> set;
    };
    std::unordered_map<std::string, CachedVectors> vector_cache_;
};

}  // namespace kvrag::memory
