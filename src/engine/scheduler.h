// The thread driver around SchedulerCore (scheduler_core.h holds the policy): one thread owns
// the engine's step loop; other threads submit jobs and wait on them.
//
// Each iteration: plan under the lock, execute (the forward step, an embedding) without it so
// that submissions never wait for a forward pass, complete under the lock, publish the snapshot
// that /v1/kv and /metrics read, then wake the waiters of the jobs that ended. When nothing runs
// it sleeps until a submission (or 5 ms while the queue head waits for KV room, 50 ms otherwise,
// so queue deadlines are noticed).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "core/error.h"
#include "engine/engine.h"
#include "engine/job.h"
#include "engine/scheduler_core.h"

namespace kvrag::engine {

class Scheduler {
public:
    Scheduler(Engine& engine, SchedulerConfig config) : Scheduler(&engine, config) {}
    // engine may be null (a server with only encoder models): only encode() works then.
    Scheduler(Engine* engine, SchedulerConfig config);
    ~Scheduler();
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    const SchedulerConfig& config() const { return core_.config(); }

    // Queues a job. Errors: request_queue_full (answer 429), server_shutting_down (503).
    Result<void> submit(const std::shared_ptr<Job>& job);

    // Submit and wait for the end; `alive` is polled about every 50 ms and false cancels the job
    // (its cells are freed at the next step). For callers that need no streaming.
    Result<GenerateResult> run(std::vector<int32_t> prompt, const GenerateOptions& options,
                               const std::function<bool()>& alive = nullptr);
    // An embedding through the same queue: waits for KV room up to the queue timeout.
    Result<std::vector<float>> embed(std::span<const int32_t> tokens, Pooling pooling,
                                     const std::function<bool()>& alive = nullptr);

    // Encoder work (embeddings or rerank scores of an encoder model) through the same queue,
    // grouped with the encode jobs queued right behind it. One row per input, in input order.
    Result<std::vector<std::vector<float>>> encode(Encoder& encoder, std::vector<std::vector<int32_t>> inputs,
                                                   const EmbedOptions& options, const std::string& label,
                                                   const std::function<bool()>& alive = nullptr);

    // Graceful stop: from now on submit() refuses; queued jobs end with server_shutting_down;
    // running ones may finish for `grace`, then they are cancelled. Returns when nothing runs.
    void drain(std::chrono::milliseconds grace);
    // Ends the loop thread (after drain, or at once: then everything ends with shutting_down).
    void stop();

    SchedulerSnapshot snapshot() const;
    // True when the loop caught an exception it could not attribute to one request.
    bool unhealthy() const { return unhealthy_.load(); }

private:
    void loop();
    // Waits for `job` to end, cancelling it when `alive` says the client left.
    void wait(Job& job, const std::function<bool()>& alive);

    mutable std::mutex mu_;              // guards core_ (except execute) and snapshot_
    std::condition_variable cv_;         // submissions, drain, stop, snapshots
    SchedulerCore core_;
    SchedulerSnapshot snapshot_;
    bool stop_requested_ = false;
    bool loop_done_ = false;
    std::atomic<bool> unhealthy_{false};
    std::thread thread_;
};

}  // namespace kvrag::engine
