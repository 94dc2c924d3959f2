// The measuring half of `kvrag bench`: prefill (pp) and decode (tg) throughput of a loaded
// model at chosen context depths, and what a decode step costs in bytes read, set against
// this machine's measured read bandwidth. cli/cmd_bench.cpp parses the arguments and prints.
//
// A test at depth d runs on top of d tokens already in the context: those are written once per
// depth, untimed, and every timed run then writes cells [d, d + n) again, which no earlier
// cell can see, so repetitions measure the same work. pp and tg tests are independent: tg64
// at depth 1024 decodes 64 tokens after exactly 1024, not after a prompt as well.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ggml_type.h"
#include "core/thread_pool.h"
#include "model/model.h"

namespace kvrag::tools {

enum class BenchKind { prefill, decode };

struct BenchTest {
    BenchKind kind = BenchKind::prefill;
    int32_t n_tokens = 0;  // prompt length (pp) or tokens decoded one by one (tg)
    int32_t depth = 0;     // tokens already in the context when the timing starts

    int32_t n_cells() const { return depth + n_tokens; }  // context the test needs
    // "pp512", "tg64", "tg64_depth2048": the key of the summary line.
    std::string name() const;
};

struct BenchPlan {
    std::vector<BenchTest> tests;    // in run order: by depth as given, pp lengths then tg lengths
    std::vector<BenchTest> skipped;  // the points with depth + n_tokens > n_ctx, same order
    int32_t n_cells = 0;             // KV cells the tests need: the largest n_cells() run
};

// Every (depth, pp length) and (depth, tg length) pair; those that cannot fit n_ctx go to
// `skipped`. Pure: lists are taken as given (the caller rejects bad values).
BenchPlan plan_bench(const std::vector<int32_t>& n_prompt, const std::vector<int32_t>& n_gen,
                     const std::vector<int32_t>& depths, int32_t n_ctx);

struct BenchResult {
    BenchTest test;
    std::vector<double> tok_s;   // one per repetition, ascending
    double bytes_per_token = 0;  // decode only: weights one step reads + the KV cells it reads

    double min() const { return tok_s.front(); }
    double median() const;
    double max() const { return tok_s.back(); }
};

// Weight bytes one decode step reads: every matrix once (the output head included, tied or
// not), one row of the embedding table (unless tied, when the head has read it all), the norms.
double decode_weight_bytes(const model::ModelWeights& w, const model::ModelHParams& hp);

// Best of three timed passes, in GB/s, of every pool thread summing its share of a 1 GiB
// buffer (past the caches, even a 300 MiB L3), read as the decode kernels read weights:
// 64-byte lines as vectors, prefetched 2 KiB ahead. So this is what streaming weights from
// memory can reach; a scalar loop without prefetches read 20-25 % less on a Xeon host, which
// let decode show "1.2 of the bandwidth".
double measure_read_bandwidth(ThreadPool& pool);

// Runs the plan's tests, `reps` times each, calling on_result after each test (so a long run
// shows its rows as they come). Fails with kvcache::make_geometry's error when kv_type does not
// suit the model, or with the forward pass's; results already reported stay reported.
Result<void> run_bench(const model::Model& m, const BenchPlan& plan, int32_t reps, GgmlType kv_type, ThreadPool& pool,
                       const std::function<void(const BenchResult&)>& on_result);

}  // namespace kvrag::tools
