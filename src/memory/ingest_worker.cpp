#include "memory/ingest_worker.h"

#include <cstdio>

namespace kvrag::memory {

namespace {
// How often an idle worker looks at the queue without a notify() (jobs from other processes).
constexpr auto kPoll = std::chrono::milliseconds(1000);
}  // namespace

IngestWorker::IngestWorker(Memory& mem, int32_t n_threads, ReportFn on_report, ProgressFn on_progress)
    : mem_(mem), n_threads_(std::max(1, n_threads)), on_report_(std::move(on_report)), on_progress_(std::move(on_progress)) {}

IngestWorker::~IngestWorker() { stop(); }

void IngestWorker::start() {
    std::lock_guard lk(mu_);
    if (started_ || stop_) return;
    started_ = true;
    for (int32_t i = 0; i < n_threads_; ++i) threads_.emplace_back([this] { loop(); });
}

void IngestWorker::notify() {
    {
        std::lock_guard lk(mu_);
        drained_ = false;
        ++n_notified_;
    }
    wake_cv_.notify_all();
}

void IngestWorker::request_stop() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    wake_cv_.notify_all();
    idle_cv_.notify_all();
}

void IngestWorker::stop() {
    request_stop();
    for (auto& t : threads_) {
        if (t.joinable()) t.join();
    }
    threads_.clear();
}

bool IngestWorker::wait_idle(std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    return idle_cv_.wait_for(lk, timeout, [this] { return stop_ || (drained_ && n_busy_ == 0); }) && !stop_;
}

void IngestWorker::loop() {
    while (!stop_) {
        uint64_t seen = 0;
        {
            std::lock_guard lk(mu_);
            ++n_busy_;
            seen = n_notified_;
        }
        auto job = mem_.store().claim_job();
        if (job && *job) {
            JobReport rep = mem_.run_job(**job, &stop_, on_progress_);
            if (on_report_) on_report_(rep);
        } else if (!job) {
            std::fprintf(stderr, "kvrag: ingestion queue: %s (retrying)\n", job.error().what().c_str());
        }
        std::unique_lock lk(mu_);
        --n_busy_;
        if (job && *job) continue;  // look for the next one at once
        // A notify() since the claim means a job may have been queued after it looked.
        if (n_notified_ != seen) continue;
        drained_ = true;
        idle_cv_.notify_all();
        wake_cv_.wait_for(lk, kPoll, [&] { return stop_ || n_notified_ != seen; });
    }
}

}  // namespace kvrag::memory
