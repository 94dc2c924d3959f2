// The job kvrag exists for, as one command (`kvrag demo`): ingest a folder of documents into a
// fresh memory store, run many RAG asks and a long chat on a small context, and show that every
// request's KV cells come back. The seed failure of this project (llama_decode 'NoKvSlot' after 3
// to 6 RAG questions, or in a long chat on a 1024-token context) is what the report rules out:
// failures stay 0 and the cells in use return to the baseline after every request.
//
// Everything runs in this process on models it writes itself (random weights, built-in
// vocabularies): nothing is downloaded, and the answers are not language.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"

namespace kvrag::tools {

struct RagDemoConfig {
    std::filesystem::path dir;   // models and the memory store are written here (the store is recreated)
    std::filesystem::path docs;  // the corpus: every regular file under it (text by extension, as ingest takes them)
    int32_t n_asks = 300;        // RAG questions, each its own request with retrieved chunks
    int32_t n_turns = 50;        // chat turns in one conversation kept inside the context by history dropping
    int32_t n_ctx = 1024;        // the context the seeds failed on; also the KV cache's cells
    int32_t max_tokens = 32;     // answer length of asks and chat turns
    int32_t n_threads = 0;       // 0 = physical cores
    uint64_t seed = 7;           // picks the questions
};

enum class RagDemoPhase { models, ingest, ask, chat, done };

// What the live line shows. used/peak/baseline are KV cells held by live sequences (the cells
// only the prefix cache holds are reclaimable and counted apart, as KvStats does).
struct RagDemoProgress {
    RagDemoPhase phase = RagDemoPhase::models;
    int32_t files_done = 0, files_total = 0;
    int32_t chunks = 0;
    int32_t asks_done = 0, asks_total = 0;
    int32_t turns_done = 0, turns_total = 0;
    int32_t failures = 0;
    int32_t used_cells = 0;      // now
    int32_t peak_cells = 0;      // most at once so far
    int32_t baseline_cells = 0;  // before the first request
    int32_t total_cells = 0;
    int32_t cached_cells = 0;    // held by the prefix cache only
};

struct RagDemoReport {
    // corpus
    int32_t files = 0;
    int32_t files_failed = 0;
    std::vector<std::string> skipped;  // "PATH: why" for each file that was not ingested
    int32_t chunks = 0;
    int64_t doc_tokens = 0;
    double ingest_seconds = 0.0;
    // requests
    int32_t asks = 0;
    int32_t turns = 0;
    int32_t failures = 0;           // asks and turns that returned an error
    std::string first_error;
    int32_t turns_dropping = 0;     // chat turns whose prompt left the oldest messages out
    int32_t max_dropped = 0;        // most messages left out of one turn's prompt
    int32_t max_chat_prompt = 0;    // longest chat prompt in tokens (it stays within the context)
    // KV cells
    int32_t total_cells = 0;
    int32_t baseline_cells = 0;
    int32_t requests_at_baseline = 0;  // requests after which the used cells were back at baseline
    int32_t max_cells_between = 0;     // most used cells seen between two requests
    int32_t peak_cells = 0;            // most used cells during any request
    // speed (in process: time to first token is the prompt's prefill)
    double ttft_ms_median = 0.0;
    double ttft_ms_p95 = 0.0;
    double decode_tokens_per_s = 0.0;  // tokens after each request's first, over decode time
    int64_t prompt_tokens = 0;
    int64_t reused_tokens = 0;         // prompt tokens the prefix cache supplied
    int64_t generated_tokens = 0;
    double seconds = 0.0;              // asks and chat, wall time

    int32_t requests() const { return asks + turns; }
    // "demo asks=N turns=N failures=N requests_at_baseline=N/N baseline_cells=N ..."
    std::string summary() const;
};

// Runs the demo. progress (optional) is called often (at most ~20 times a second while a
// request runs, and after every file and request). Errors: writing the models or the store,
// an empty corpus; a failing request is counted in the report, not an error.
Result<RagDemoReport> run_rag_demo(const RagDemoConfig& config, const std::function<void(const RagDemoProgress&)>& progress = nullptr);

}  // namespace kvrag::tools
