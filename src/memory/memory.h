// Kernel-Memory-style RAG over a Store: ingest (extract -> chunk -> embed -> one transaction),
// search (exact vector scan fused with FTS5 BM25 by reciprocal rank fusion) and ask
// (retrieve -> prompt within the context -> generate -> answer with sources).
//
// The model is reached only through ModelHooks, so the CLI passes an Engine directly
// (engine_hooks) and the HTTP server passes its scheduler's submit function.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/chat_template.h"
#include "core/error.h"
#include "engine/engine.h"
#include "memory/chunker.h"
#include "memory/store.h"
#include "tokenizer/tokenizer.h"

namespace kvrag::memory {

using EmbedFn = std::function<Result<std::vector<float>>(std::string_view text)>;
using GenerateFn = std::function<Result<engine::GenerateResult>(std::vector<int32_t> prompt, const engine::GenerateOptions&)>;

struct ModelHooks {
    std::shared_ptr<const tokenizer::Tokenizer> tokenizer;  // chunking and prompt tokens
    EmbedFn embed;                                         // thread-safe; L2-normalised vectors
    EmbeddingModelInfo embed_model;                        // what the index records
    GenerateFn generate;                                   // null: ask is unavailable
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

struct SearchFilter {
    std::string doc_id;  // empty = any document
    Tags tags;           // a document must carry every one
};

enum class SearchMode { hybrid, vector, lexical };
Result<SearchMode> parse_search_mode(std::string_view s);

struct SearchOptions {
    std::string index = "default";
    SearchFilter filter;
    double min_relevance = 0.0;  // cosine similarity in [0, 1] a chunk must reach
    int32_t limit = 5;
    SearchMode mode = SearchMode::hybrid;
};

struct SearchHit {
    ChunkRow chunk;
    double relevance = 0.0;    // cosine similarity of chunk and query, clamped to [0, 1]
    double score = 0.0;        // reciprocal-rank-fusion score (the order)
    int32_t vector_rank = 0;   // 1-based; 0 = not among the vector candidates
    int32_t lexical_rank = 0;  // 1-based; 0 = no BM25 match
};

struct SearchResult {
    std::vector<SearchHit> hits;  // best first
    size_t n_scanned = 0;         // vectors compared
    double embed_ms = 0.0;
    double search_ms = 0.0;       // scan + BM25 + fusion, without the query embedding
};

struct IngestRequest {
    std::string index = "default";
    std::string doc_id;     // empty: derived from name
    std::string name;       // file name (its extension picks the extractor unless mime is set)
    std::string source;     // path or "upload"
    std::string mime;       // optional content type
    std::string bytes;
    Tags tags;
};

struct IngestResult {
    std::string index;
    std::string doc_id;
    WriteOutcome outcome = WriteOutcome::unchanged;
    int32_t n_chunks = 0;
    int64_t n_tokens = 0;
};

// What happens to conversation turns that no longer fit the history budget.
enum class HistoryMode {
    drop,       // leave the oldest turns out
    summarize,  // replace them with a summary the model writes (one extra, bounded generation)
};
Result<HistoryMode> parse_history_mode(std::string_view name);

struct AskOptions {
    std::string index = "default";
    SearchFilter filter;
    double min_relevance = 0.0;
    int32_t n_candidates = 20;      // chunks retrieved; as many as fit go into the prompt
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

    // Extract, chunk, embed, then write in one transaction. Errors are per document and
    // leave the store as it was (plus a 'failed' row naming the error for a new document).
    Result<IngestResult> ingest(const IngestRequest& req);
    // Reads the file and ingests it; doc_id defaults to the sanitised path.
    Result<IngestResult> ingest_file(const std::string& path, const std::string& index, const Tags& tags,
                                     const std::string& doc_id = "");

    // Errors: memory_model_mismatch when the index was embedded by another model.
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
