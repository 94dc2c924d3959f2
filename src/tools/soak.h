// The seed failure as a workload: many sequential RAG-shaped requests (one shared system
// prompt, a document chunk that varies, a question) against one engine, recording how many KV
// cells are in use between requests. In a runtime that leaks its cache, the used cells climb
// until decoding fails after a few requests; in kvrag they return to the shared prefix.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "engine/engine.h"

namespace kvrag::tools {

struct SoakConfig {
    int32_t n_requests = 1000;
    int32_t max_tokens = 16;
    int32_t warmup = 2;          // requests before the baseline is taken (the prefix gets cached)
    uint64_t seed = 1;
    engine::ContextPolicy policy = engine::ContextPolicy::error;
    // Chunk length range in tokens; 0 = derived from the context (1/8 to 1/2 of what is left
    // after the system prompt and max_tokens).
    int32_t min_chunk_tokens = 0;
    int32_t max_chunk_tokens = 0;
};

struct SoakReport {
    int32_t requests = 0;
    int32_t failures = 0;
    // "Used" cells are those live sequences hold. Cells only the prefix cache holds (the shared
    // system prompt after warm-up) are reported apart as cached: they are reclaimable at once.
    int32_t baseline_cells = 0;      // used cells after warm-up
    int32_t max_cells_between = 0;   // most used cells seen between two requests (after warm-up)
    int32_t final_cells = 0;         // used cells at the end
    int32_t peak_cells = 0;          // most used cells during any request
    int32_t cached_cells = 0;        // cells the prefix cache holds at the end
    uint64_t prompt_tokens = 0;
    uint64_t reused_tokens = 0;
    uint64_t generated_tokens = 0;
    std::string first_error;

    // "requests=N failures=N baseline_cells=N max_cells_between=N final_cells=N ..."
    std::string summary() const;
};

// progress(i) is called after request i; returning false stops early.
SoakReport run_soak(engine::Engine& engine, const SoakConfig& config,
                    const std::function<bool(int32_t done)>& progress = nullptr);

}  // namespace kvrag::tools
