// The scheduler's policy as plain synchronous code: no threads, no sleeps, time passed in.
//
// One iteration is three calls (the shape of vLLM's schedule() / update_from_output()):
//   plan(now)      queue upkeep and admission: ends queued jobs whose client left, that passed
//                  their queue or request deadline, or that a shutdown refuses; admits queued
//                  jobs in FIFO order while a slot (max_running generations) and KV room exist;
//                  asks running requests to cancel (client gone, deadline, drain grace over).
//                  Returns the StepPlan: the requests to step and the embeddings to compute.
//   execute(plan)  the computation: one Engine::step over the planned requests (cancelled ones
//                  end and free their cells in it) and the planned embeddings. It touches only
//                  the engine and the plan, never the core's state, so a driver may run it
//                  without holding the lock that guards submit() and plan().
//   complete(plan, now)  consumes the results: progress (pieces, counts, first-token time),
//                  jobs that ended, embeddings that found the cache busy (back to the queue head).
// Ended jobs are handed out by take_ended(); the driver publishes the snapshot first and then
// calls Job::mark_done on each, so a client that has its answer sees its cells already free.
//
// Admission is head-of-line: when the job at the head fits its context but not the cache now
// (Engine::start -> kv_no_space), it keeps its place and nothing behind it is admitted, so a
// large request is not starved by small ones. A job that can never fit ends at once
// (request_too_long, with the engine's numbers).
//
// Embeddings go through the same queue and limits as generations; at most one runs per
// iteration, between forward steps (it is one forward pass over its own short-lived sequence).
// Encode jobs (encoder models: embeddings, rerank scores) hold no KV cells: when the queue
// head is one, it and the encode jobs right behind it for the same Encoder and options (up to
// kEncodeGroupTokens tokens) run as one Encoder call between forward steps.
//
// A scheduler without a chat engine (a server with only encoder models) runs encode jobs only;
// generate and embed jobs end at once with request_invalid.
//
// Not thread-safe: the driver (scheduler.h) serialises submit/plan/complete/snapshot.
#pragma once

#include <array>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/engine.h"
#include "engine/job.h"

namespace kvrag::engine {

struct SchedulerConfig {
    int32_t max_running = 4;          // generations decoding at once (--parallel)
    int32_t max_queued = 64;          // jobs waiting for admission; beyond it submit() refuses
    double queue_timeout_s = 30.0;    // longest wait for KV room before the job is refused
    double request_timeout_s = 0.0;   // whole-request limit (queue + run); 0 = none (--timeout)
};

// What /v1/kv and /metrics read.
struct SchedulerSnapshot {
    struct Entry {
        int64_t job_id = 0;
        std::string label;
        int64_t seq_id = 0;            // 0 while queued
        std::string state;             // queued, prefilling, decoding, embedding
        int32_t n_prompt = 0;
        int32_t n_generated = 0;
        int32_t n_cells = 0;           // cells the sequence references now
        double age_ms = 0.0;           // since submit
    };
    std::vector<Entry> entries;        // running first, then queued in order
    int32_t n_running = 0;
    int32_t n_queued = 0;
    uint64_t n_submitted = 0;
    uint64_t n_refused_full = 0;       // submit() refusals (queue full)
    std::array<uint64_t, kJobOutcomeNames.size()> ends{};  // by job_outcome()
};

// The work of one iteration (see the file comment).
struct StepPlan {
    std::vector<Request*> step;                 // for Engine::step
    std::shared_ptr<Job> embed;                 // an embedding to compute, or null
    Result<std::vector<float>> embed_result = std::vector<float>{};  // filled by execute()
    std::vector<std::shared_ptr<Job>> encode;   // encode jobs run as one Encoder call
    std::vector<Result<EmbedResult>> encode_results;  // one per encode job, filled by execute()
    bool empty() const { return step.empty() && !embed && encode.empty(); }
};

// Most input tokens one grouped Encoder call takes (a single larger job still runs alone).
inline constexpr int64_t kEncodeGroupTokens = 16384;

class SchedulerCore {
public:
    SchedulerCore(Engine& engine, SchedulerConfig config) : SchedulerCore(&engine, config) {}
    // engine may be null: only encode jobs can run then.
    SchedulerCore(Engine* engine, SchedulerConfig config);

    const SchedulerConfig& config() const { return config_; }

    // Queues a job (id and submitted are set here). Errors: request_queue_full when max_queued
    // jobs wait already (the message has the numbers), server_shutting_down after drain/stop.
    Result<void> submit(const std::shared_ptr<Job>& job, Clock::time_point now);

    StepPlan plan(Clock::time_point now);
    void execute(StepPlan& plan);
    void complete(StepPlan& plan, Clock::time_point now);
    // Jobs that ended since the last call, with their end decided but not yet published.
    std::vector<std::shared_ptr<Job>> take_ended();

    // From now on submit() refuses; queued jobs end with server_shutting_down at the next plan;
    // running ones may finish until `deadline`, then they are cancelled.
    void drain(Clock::time_point deadline);
    // Everything ends at the next plan: queued jobs at once, running ones in the next step.
    void stop();
    bool draining() const { return draining_; }
    bool stopping() const { return stopping_; }
    // Nothing queued, running or about to be handed out.
    bool idle() const { return queue_.empty() && running_.empty() && ended_.empty(); }
    bool has_running() const { return !running_.empty(); }
    // The head of the queue waits for KV room (so polling soon may admit it).
    bool head_blocked() const { return !queue_.empty() && !queue_.front()->busy_message_.empty(); }

    // After an exception it cannot attribute to one request: ends every running job with
    // engine_internal (their cells are freed as their requests are destroyed).
    void fail_running(const std::string& what);

    SchedulerSnapshot snapshot(Clock::time_point now) const;

private:
    struct Running {
        std::shared_ptr<Job> job;
        std::unique_ptr<Request> req;
        Errc forced = Errc::ok;           // why we asked it to cancel, if we did
    };

    void drop_from_queue(Clock::time_point now);
    void admit(StepPlan& plan);
    void ask_to_stop(Clock::time_point now);
    void end(const std::shared_ptr<Job>& job, Error err);
    Error forced_error(Errc why, int32_t n_generated) const;

    // Engine::start for a generate job (reserving its forks' cells), with its callbacks.
    Result<std::unique_ptr<Request>> start_job(Job& job);
    TextCallback text_callback(Job& job);
    LogprobCallback logprob_callback(Job& job);
    void mark_running(Job& job);
    void note_rejection(kvcache::RejectReason why);
    void take_encode_group(StepPlan& plan);

    Engine* engine_;                      // null: encode jobs only
    SchedulerConfig config_;
    Clock::duration queue_timeout_{};
    Clock::duration request_timeout_{};   // zero = none
    std::deque<std::shared_ptr<Job>> queue_;
    std::vector<Running> running_;
    std::shared_ptr<Job> embedding_;      // planned embedding, between plan() and complete()
    std::vector<std::shared_ptr<Job>> encoding_;  // planned encode jobs, likewise
    std::vector<std::shared_ptr<Job>> ended_;
    bool draining_ = false;
    Clock::time_point drain_deadline_{};
    bool stopping_ = false;
    int64_t next_job_id_ = 1;
    uint64_t n_submitted_ = 0, n_refused_full_ = 0;
    std::array<uint64_t, kJobOutcomeNames.size()> ends_{};
};

}  // namespace kvrag::engine
