// Background workers that drain a store's ingestion queue: each claims the oldest queued job,
// runs it (Memory::run_job) and claims the next; with nothing queued it sleeps until notify()
// or a poll (jobs queued by another process on the same store are found within a second).
//
// stop() is the shutdown path: the flag is seen by run_job between embedding groups (and by
// the server's embedding hook, which cancels the request in flight), the running jobs go back
// to the queue, and the threads are joined -- within about a second. The next worker on the
// store (the next `kvrag serve` or `kvrag ingest`) redoes them.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "memory/memory.h"

namespace kvrag::memory {

class IngestWorker {
public:
    using ReportFn = std::function<void(const JobReport&)>;  // after each job, from a worker thread

    // mem must outlive the worker. Nothing runs before start().
    IngestWorker(Memory& mem, int32_t n_threads = 1, ReportFn on_report = nullptr, ProgressFn on_progress = nullptr);
    ~IngestWorker();  // stop()
    IngestWorker(const IngestWorker&) = delete;
    IngestWorker& operator=(const IngestWorker&) = delete;

    void start();
    // A job was queued: wake a sleeping worker now rather than at its next poll.
    void notify();
    // Sets the stop flag (returns at once): running jobs go back to the queue at their next check.
    void request_stop();
    // request_stop(), then joins the threads. Idempotent.
    void stop();
    // True from stop() on; hooks that can cancel (the server's embedding request) poll it.
    const std::atomic<bool>& stopping() const { return stop_; }
    // True when nothing is queued and no job runs here; false when `timeout` passed first or
    // the worker is stopping.
    bool wait_idle(std::chrono::milliseconds timeout);

private:
    void loop();

    Memory& mem_;
    int32_t n_threads_;
    ReportFn on_report_;
    ProgressFn on_progress_;
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::condition_variable wake_cv_;  // notify() and stop()
    std::condition_variable idle_cv_;  // a worker found the queue empty
    int32_t n_busy_ = 0;               // threads claiming or running a job
    bool drained_ = false;             // the last claim found nothing, and nothing was queued since
    uint64_t n_notified_ = 0;          // notify() calls
    bool started_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace kvrag::memory
