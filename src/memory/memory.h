// Kernel-Memory-style RAG over a Store: ingest (a durable queue of jobs, each extract ->
// partition -> gen_embeddings -> save_records in one transaction; ingest_worker.h runs them),
// search (exact vector scan fused with FTS5 BM25 by reciprocal rank fusion, rare exact terms
// first, then an optional rerank) and ask (retrieve -> prompt within the context -> generate ->
// answer with sources). memory.cpp holds ingest and ask, memory_search.cpp the search.
//
// The model is reached only through ModelHooks, so the CLI passes an Engine directly
// (engine_hooks) and the HTTP server passes its scheduler's submit function.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chat/chat_template.h"
#include "core/error.h"
#include "engine/embedder.h"
#include "engine/engine.h"
#include "memory/chunker.h"
#include "memory/store.h"
#include "tokenizer/tokenizer.h"

namespace kvrag::memory {

using EmbedFn = std::function<Result<std::vector<float>>(std::string_view text)>;
// Many texts in one call (an encoder packs them into few forward passes); one L2-normalised
// vector per text, in order. Optional: ingestion uses it when set, else EmbedFn per chunk.
using EmbedBatchFn = std::function<Result<std::vector<std::vector<float>>>(std::span<const std::string> texts)>;

// Chunks per EmbedBatchFn call during ingestion: enough to fill an encoder's 2048-token pass
// with chunk-sized texts several times over, small enough that a shutdown is noticed quickly.
constexpr size_t kEmbedBatchChunks = 32;
// How often a running job's progress is written to its row between steps (/upload-status
// reads it); also how soon a job deleted meanwhile is noticed.
constexpr std::chrono::milliseconds kProgressWriteInterval{200};
// One relevance score per document for the query, in the documents' order; higher is better
// (any scale: a cross-encoder's logits or probabilities). Must accept any text length (the
// hook truncates to its model's context) and be thread-safe like EmbedFn.
using RerankFn = std::function<Result<std::vector<float>>(std::string_view query, const std::vector<std::string_view>& documents)>;
using GenerateFn = std::function<Result<engine::GenerateResult>(std::vector<int32_t> prompt, const engine::GenerateOptions&)>;
// The same, calling on_piece with each piece of text as the model produces it (false cancels).
using StreamGenerateFn = std::function<Result<engine::GenerateResult>(std::vector<int32_t> prompt, const engine::GenerateOptions&,
                                                                      const engine::TextCallback& on_piece)>;

struct ModelHooks {
    std::shared_ptr<const tokenizer::Tokenizer> tokenizer;  // chunking and prompt tokens
    EmbedFn embed;                                         // thread-safe; L2-normalised vectors
    EmbedBatchFn embed_batch;                              // optional, thread-safe; ingestion batches through it
    EmbeddingModelInfo embed_model;                        // what the index records
    RerankFn rerank;                                       // null: search and ask do not rerank
    GenerateFn generate;                                   // null: ask is unavailable
    StreamGenerateFn generate_stream;                      // optional: ask streams through it when asked to
    std::optional<chat::ChatTemplate> chat_template;       // required by ask
    int32_t n_ctx = 0;                                     // positions one ask's sequence may use
};

// Name, size and a SHA-256 over sampled 64 KiB blocks of the file (its first 4 MiB, which
// hold the metadata and vocabulary, plus 16 blocks spread over the rest), so a different
// GGUF is recognised without hashing gigabytes. Error memory_store when unreadable.
Result<EmbeddingModelInfo> embedding_model_info(const std::string& gguf_path, std::string name, int32_t dim);

// Hooks over engines owned by the caller (they must outlive the Memory). embed_engine may be
// the generating engine; generation runs through Engine::generate_tokens (its own sequence,
// released when it finishes). Errors: reading the model file, detecting its chat template.
Result<ModelHooks> engine_hooks(engine::Engine& gen, engine::Engine& embed_engine, const std::string& chat_template = "");
// The same with the embeddings from an encoder embedding model (bert, nomic-bert; its default
// pooling, L2-normalised). A chunk longer than the model's context fails with E5002 naming
// the numbers: lower --chunk-tokens.
Result<ModelHooks> engine_hooks(engine::Engine& gen, engine::Embedder& embedder, const std::string& chat_template = "");

// A rerank stage over an encoder reranker (owned by the caller). A (query, chunk) pair past
// its context is cut at its end, as the RerankFn contract asks.
RerankFn embedder_rerank_hook(engine::Embedder& reranker);

struct SearchFilter {
    std::string doc_id;  // empty = any document
    Tags tags;           // a document must carry every one
};

enum class SearchMode { hybrid, vector, lexical };
Result<SearchMode> parse_search_mode(std::string_view s);

struct SearchOptions {
    std::string index = "default";
    SearchFilter filter;
    // Kernel Memory's list of filter objects: when set, a document must also pass at least one
    // of them (OR); an empty list lets nothing pass. nullopt = no such filter.
    std::optional<std::vector<SearchFilter>> any_of;
    double min_relevance = 0.0;  // cosine similarity in [0, 1] a chunk must reach
    int32_t limit = 5;
    SearchMode mode = SearchMode::hybrid;
    bool rerank = true;          // rerank with ModelHooks::rerank when it is set; false = never
};

// Reranking takes the first rerank_candidates(limit) chunks of the mode's ranking (after the
// filters and min_relevance), scores them with the RerankFn and keeps the best `limit`: four
// candidates per result give the reranker room to promote what fusion ranked 2nd-4th page,
// and at least 20 so a small limit (ask's top 1-5) still has a pool to choose from.
constexpr int32_t kRerankPerResult = 4;
constexpr int32_t kRerankMinCandidates = 20;
inline int32_t rerank_candidates(int32_t limit) {
    // in 64 bits: a limit from an HTTP body may be near INT32_MAX
    return static_cast<int32_t>(std::clamp<int64_t>(int64_t{limit} * kRerankPerResult, kRerankMinCandidates, INT32_MAX));
}

// Hybrid ranking's exact-term rule (docs/memory.md, "Fusion"): an exact query term (see
// lexical_query.h) that occurs in at most rare_term_max_chunks(n) of the index's n chunks is
// rare, and chunks holding more rare exact terms rank above chunks holding fewer.
constexpr int32_t kRareTermMinChunks = 3;     // small stores: a document may span a few chunks
constexpr int32_t kRareTermChunksPer = 100;   // large stores: at most 1% of the chunks
inline int32_t rare_term_max_chunks(size_t n_chunks) {
    return std::max<int32_t>(kRareTermMinChunks, static_cast<int32_t>((n_chunks + kRareTermChunksPer - 1) / kRareTermChunksPer));
}

struct SearchHit {
    ChunkRow chunk;
    double relevance = 0.0;     // cosine similarity of chunk and query, clamped to [0, 1]
    double score = 0.0;         // reciprocal-rank-fusion score (the order among equal n_exact)
    int32_t vector_rank = 0;    // 1-based; 0 = not among the vector candidates
    int32_t lexical_rank = 0;   // 1-based; 0 = not among the BM25 candidates
    int32_t n_exact = 0;        // rare exact query terms the chunk holds (hybrid mode; the first sort key)
    bool reranked = false;      // rerank_score is set (the hits were reranked: it is the order)
    double rerank_score = 0.0;  // the RerankFn's score, higher is better (NaN ranks last)
};

struct SearchResult {
    std::vector<SearchHit> hits;  // best first
    size_t n_scanned = 0;         // vectors compared
    double embed_ms = 0.0;
    double search_ms = 0.0;       // scan + BM25 + fusion, without the query embedding or reranking
    double rerank_ms = 0.0;       // the RerankFn call; 0 when not reranked
    int32_t n_reranked = 0;       // candidates the RerankFn scored
};

// One document: one file (name, mime, bytes) or several (files; Kernel Memory's AddFiles).
struct IngestRequest {
    std::string index = "default";
    std::string doc_id;     // empty: derived from name
    std::string name;       // file name (says Markdown or HTML; the bytes say the rest)
    std::string source;     // path or "upload"
    std::string mime;       // optional content type
    std::string bytes;
    std::vector<SourceFile> files;  // non-empty: the document's files, in order (name, mime and bytes above unused)
    Tags tags;
};

struct IngestResult {
    std::string index;
    std::string doc_id;
    WriteOutcome outcome = WriteOutcome::unchanged;
    int32_t n_chunks = 0;
    int64_t n_tokens = 0;
    std::vector<std::string> warnings;  // e.g. a file read as Windows-1252
};

struct EnqueueResult {
    std::string index;
    std::string doc_id;
    int64_t job_id = 0;      // 0: unchanged, nothing queued
    int32_t n_chunks = 0;    // of the unchanged document
    int64_t n_tokens = 0;
};

// A job's progress, reported after each step and each group of embedded chunks.
struct JobProgress {
    int64_t job_id = 0;
    std::string doc_id;
    int32_t n_steps_done = 0;
    int32_t n_chunks_total = 0;
    int32_t n_chunks_done = 0;
    int64_t n_tokens_done = 0;
};
using ProgressFn = std::function<void(const JobProgress&)>;

enum class JobEnd {
    done,         // the document is written (or was unchanged)
    failed,       // the error is recorded on the document
    cancelled,    // the job was deleted or replaced while it ran: nothing written
    interrupted,  // stopped (shutdown): the job is queued again, the next worker redoes it
};
const char* job_end_name(JobEnd e);

struct JobReport {
    IngestJob job;
    JobEnd end = JobEnd::done;
    IngestResult result;  // done
    Error error;          // failed (and the reason for cancelled / interrupted)
};

// The content hash of a document's files: SHA-256 of the bytes for one file (as older
// stores recorded it), else of each file's name, size and bytes in order.
std::string files_hash(const std::vector<SourceFile>& files);

// What happens to conversation turns that no longer fit the history budget.
enum class HistoryMode {
    drop,       // leave the oldest turns out
    summarize,  // replace them with a summary the model writes (one extra, bounded generation)
};
Result<HistoryMode> parse_history_mode(std::string_view name);

// Streaming an answer: on_sources gets the chunks of the prompt once, before generation;
// on_text each piece of the answer as it is generated (leading blanks left out, as the
// returned answer is trimmed). Either returning false cancels the ask (error request_cancelled).
struct AskStream {
    std::function<bool(const std::vector<SearchHit>& sources)> on_sources;
    std::function<bool(std::string_view piece)> on_text;
};

struct AskOptions {
    std::string index = "default";
    SearchFilter filter;
    std::optional<std::vector<SearchFilter>> any_of;  // as SearchOptions::any_of
    const AskStream* stream = nullptr;                // null: no streaming
    double min_relevance = 0.0;
    int32_t n_candidates = 20;      // chunks retrieved; as many as fit go into the prompt
    bool rerank = true;             // rerank the retrieval with ModelHooks::rerank when it is set
    std::string conversation_id;    // empty = no history
    int32_t max_tokens = 256;       // answer length (reserved in the context)
    float history_share = 0.25f;    // most of the prompt budget the history may take
    HistoryMode history_mode = HistoryMode::drop;
    int32_t summary_max_tokens = 96;  // length of a history summary (summarize mode)
    std::string instructions;       // empty = kDefaultInstructions
    sampling::SamplingParams sampling = greedy();
    static sampling::SamplingParams greedy() {
        sampling::SamplingParams p;
        p.temperature = 0.0f;  // answers from sources: deterministic by default
        return p;
    }
};

struct AskResult {
    std::string answer;
    bool found = false;                // some chunk passed min_relevance
    std::vector<SearchHit> sources;    // the chunks in the prompt, best first
    int32_t n_prompt_tokens = 0;
    int32_t n_ctx = 0;
    int32_t max_tokens = 0;
    int32_t n_history_used = 0;        // history messages in the prompt
    int32_t n_history_dropped = 0;     // older messages left out (summarised in summarize mode)
    bool history_summarized = false;   // the dropped messages went into the prompt as a summary
    std::string history_summary;
    bool question_truncated = false;
    std::string finish_reason;         // "" when the model was not called
    int32_t n_generated = 0;           // answer tokens the model produced
    int32_t n_reused = 0;              // prompt tokens the prefix cache supplied
};

extern const char* const kDefaultInstructions;
extern const char* const kNothingFound;
extern const char* const kSummaryInstructions;

class Memory {
public:
    Memory(std::shared_ptr<Store> store, ModelHooks hooks, ChunkOptions chunking = {});

    Store& store() { return *store_; }
    std::shared_ptr<Store> store_ptr() { return store_; }
    const ModelHooks& hooks() const { return hooks_; }
    const ChunkOptions& chunking() const { return chunking_; }

    // ---- ingestion ----
    // Checks the request (ids, tags, a model to embed with, no binary file) and stores its
    // files with a queued job in one committed transaction; the job runs on an IngestWorker
    // (or run_job). A document whose files, tags and chunking equal its ready version queues
    // nothing (job_id 0). Errors: memory_bad_input, memory_unsupported_type (binary), the
    // store's. By value: a caller that moves its request in (the /upload route) hands over
    // the files' bytes without a copy.
    Result<EnqueueResult> enqueue(IngestRequest req);
    // Runs a claimed job: extract each file, partition, embed in groups of kEmbedBatchChunks
    // (stop and the job's existence are checked between groups), save with finish_job.
    // `stop` may be null; progress may be empty.
    JobReport run_job(const IngestJob& job, const std::atomic<bool>* stop = nullptr, const ProgressFn& progress = nullptr);
    // enqueue, then run that job in this thread. Errors are per document and leave the store
    // as it was (plus a 'failed' row naming the error for a new document).
    Result<IngestResult> ingest(const IngestRequest& req);
    // Reads the file and ingests it; doc_id defaults to the sanitised path.
    Result<IngestResult> ingest_file(const std::string& path, const std::string& index, const Tags& tags,
                                     const std::string& doc_id = "");
    // An uploaded or ingested file's original bytes (GET /download); nullopt when the
    // document or the file does not exist (or the store fails).
    std::optional<SourceFile> read_source_file(const std::string& index, const std::string& document_id, const std::string& file_name);

    // Errors: memory_model_mismatch when the index was embedded by another model or the
    // reranker returns a score count other than the candidates'; the hooks' own errors.
    // An index that does not exist yet gives no hits.
    Result<SearchResult> search(const std::string& query, const SearchOptions& opt);

    // Errors: memory_bad_input (no generate hook, a context too small), the generate hook's.
    Result<AskResult> ask(const std::string& question, const AskOptions& opt);

private:
    Result<void> check_index_model(const std::string& index);

    std::shared_ptr<Store> store_;
    ModelHooks hooks_;
    ChunkOptions chunking_;
};

}  // namespace kvrag::memory
