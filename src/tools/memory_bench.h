// The memory store's scale benchmark behind `kvrag memory-bench`: fills stores of several sizes
// with random unit vectors and Zipf-ish text, then times an exact vector scan, hybrid search
// and lexical search per query. No model is loaded: embeddings are random, so the numbers
// measure the store and the search, not the embedding.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"

namespace kvrag::tools {

struct MemoryBenchConfig {
    std::vector<int64_t> sizes{10000, 100000};  // chunks per store; each in [1, 2000000]
    int32_t dim = 384;                          // embedding dimension
    int32_t queries = 20;                       // queries timed per store size
    std::string dir;                            // keep the stores under dir/<size>; empty = temporary, removed
};

// Prints a header and one row per size to stdout as each finishes (flushed, so a long run
// shows progress). Fails with Errc::cli_usage on a size outside [1, 2000000] (after the rows
// of the sizes before it) and passes on the store's errors; rows already printed stay.
Result<void> run_memory_bench(const MemoryBenchConfig& config);

}  // namespace kvrag::tools
