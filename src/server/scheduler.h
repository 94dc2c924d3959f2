// The server's scheduler: one thread owns the engine's step loop; HTTP threads hand it jobs.
//
// Life of a job. submit() puts it in a bounded FIFO queue (full -> refused at once, the caller
// answers 429). Each loop iteration then
//   1. drops queued jobs whose client left, and ends queued jobs past their queue deadline
//      (the caller answers 503) or past their request deadline;
//   2. admits queued jobs in order through Engine::start while fewer than max_running run and
//      start succeeds. kv_no_space means "fits, but not now": the job stays at the head of the
//      queue (head-of-line, so a large request is not starved by small ones behind it). Any
//      other error ends the job (request_too_long -> 400 with the engine's numbers);
//   3. asks running requests to cancel when their client left, their deadline passed or the
//      drain grace ran out (Request::cancel: the engine ends them, and frees their cells, at
//      the very next step);
//   4. runs Engine::step over every running request: one forward pass that batches the decode
//      token of each decoding request with prefill chunks of new ones. Requests that finish in
//      the step release their cells inside it;
//   5. publishes progress (text pieces, token counts) to each job and wakes its waiter, ends the
//      finished jobs, and refreshes the snapshot that /v1/kv and /metrics read.
//
// Threads: the loop thread is the only one that calls Engine::start/step and touches
// engine::Request objects. Other threads see a job only through its mutex-guarded fields.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "engine/engine.h"

namespace kvrag::server {

using Clock = std::chrono::steady_clock;

struct SchedulerConfig {
    int32_t max_running = 4;          // requests decoding at once (--parallel)
    int32_t max_queued = 64;          // jobs waiting for admission; beyond it submit() refuses
    double queue_timeout_s = 30.0;    // longest wait for KV room before the job is refused
    double request_timeout_s = 0.0;   // whole-request limit (queue + run); 0 = none (--timeout)
};

enum class JobState { queued, running, done };

// How a job ended, for the HTTP layer to map to a status.
enum class JobEnd {
    none,
    finished,       // stop or length: result() is complete (200)
    invalid,        // Engine::start refused the parameters (400)
    too_long,       // can never fit: the error names the numbers (400)
    queue_timeout,  // fit, but no room came within the queue timeout (503 + Retry-After)
    timed_out,      // past --timeout, queued or running; cells freed (504)
    cancelled,      // its client left; cells freed
    shutdown,       // the server is stopping (503)
    failed,         // engine error while running (500)
};
const char* job_end_name(JobEnd e);

// One generation request, shared between the thread that submitted it and the loop.
class Job {
public:
    // ---- set before submit, read-only afterwards ----
    int64_t id = 0;                         // scheduler-wide, for /v1/kv
    std::string label;                      // the API's id (e.g. "chatcmpl-..."), for /v1/kv
    std::vector<int32_t> prompt;
    engine::GenerateOptions options;
    bool keep_pieces = false;               // buffer text pieces for take() (streaming)
    Clock::time_point submitted;

    // ---- for the submitting thread ----
    // Asks the loop to stop this job (client gone). Thread-safe, idempotent.
    void cancel() { cancel_.store(true, std::memory_order_relaxed); cv_.notify_all(); }
    bool cancel_requested() const { return cancel_.load(std::memory_order_relaxed); }
    // Waits until the job left the queue (admitted or ended) or `wait` passed; returns the state.
    JobState wait_admitted(std::chrono::milliseconds wait);
    // Waits until the job ended or `wait` passed; true when ended.
    bool wait_done(std::chrono::milliseconds wait);
    // Text pieces produced since the last call (keep_pieces only). Waits up to `wait` when there
    // are none yet and the job runs. `done` tells whether the job has ended (no more pieces).
    struct Update {
        std::vector<std::string> pieces;
        bool done = false;
    };
    Update take(std::chrono::milliseconds wait);

    // Valid once ended (state() == done).
    JobState state() const;
    JobEnd end() const;
    const Error& error() const { return error_; }             // for ends other than finished
    const engine::GenerateResult& result() const { return result_; }  // tokens and text so far
    int32_t n_generated() const;
    // Time to first generated token, ms; negative when none yet.
    double ttft_ms() const;

private:
    friend class Scheduler;
    std::atomic<bool> cancel_{false};
    mutable std::mutex mu_;
    std::condition_variable cv_;
    JobState state_ = JobState::queued;
    JobEnd end_ = JobEnd::none;
    Error error_;
    engine::GenerateResult result_;
    std::vector<std::string> pieces_;
    int32_t n_generated_ = 0;
    double ttft_ms_ = -1.0;
    std::string busy_message_;   // loop thread only: why the last admission attempt waited
};

// What /v1/kv and /metrics read: published by the loop after every iteration.
struct SchedulerSnapshot {
    struct Entry {
        int64_t job_id = 0;
        std::string label;
        int64_t seq_id = 0;            // 0 while queued
        std::string state;             // queued, prefilling, decoding
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
    uint64_t ends[9] = {};             // by JobEnd
};

class Scheduler {
public:
    Scheduler(engine::Engine& engine, SchedulerConfig config);
    ~Scheduler();
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    const SchedulerConfig& config() const { return config_; }

    // Queues a job (fields above the "for the submitting thread" line filled in by the caller;
    // id and submitted are set here). Errors: kv_no_space when the queue is full (answer 429),
    // request_invalid when the scheduler is draining or stopped (answer 503).
    Result<void> submit(const std::shared_ptr<Job>& job);

    // Submit and wait for the end. `alive` is polled about every 50 ms; returning false cancels
    // the job. For callers that need no streaming (the memory module, tests).
    Result<engine::GenerateResult> run(std::vector<int32_t> prompt, const engine::GenerateOptions& options,
                                       const std::function<bool()>& alive = nullptr);

    // Graceful stop: from now on submit() refuses; queued jobs end with `shutdown`; running
    // ones may finish for `grace`, then they are cancelled. Returns when nothing runs.
    void drain(std::chrono::milliseconds grace);
    // Ends the loop thread (after drain, or at once: then running jobs end with `shutdown`).
    void stop();

    SchedulerSnapshot snapshot() const;
    // True when the loop caught an exception it could not attribute to one request.
    bool unhealthy() const { return unhealthy_.load(); }

private:
    struct Running {
        std::shared_ptr<Job> job;
        std::unique_ptr<engine::Request> req;
        JobEnd forced = JobEnd::none;  // why we cancelled it, if we did
    };

    struct Ending {
        std::shared_ptr<Job> job;
        JobEnd end;
        Error error;
    };

    void loop();
    // Counts the end now; the job learns it in notify_ended(), after the next publish().
    void end_job(std::shared_ptr<Job> job, JobEnd end, Error err);
    void notify_ended();
    void admit(std::vector<Running>& running, Clock::time_point now);
    void publish(const std::vector<Running>& running, Clock::time_point now);

    engine::Engine& engine_;
    SchedulerConfig config_;

    mutable std::mutex mu_;              // guards the fields below
    std::condition_variable cv_;         // submissions, drain, stop
    std::deque<std::shared_ptr<Job>> queue_;
    bool draining_ = false;
    Clock::time_point drain_deadline_{};
    bool stop_ = false;
    int64_t next_job_id_ = 1;
    SchedulerSnapshot snapshot_;
    uint64_t n_submitted_ = 0, n_refused_full_ = 0;
    uint64_t ends_[9] = {};

    std::vector<Ending> ending_;         // loop thread only
    std::atomic<bool> unhealthy_{false};
    std::thread thread_;
};

}  // namespace kvrag::server
