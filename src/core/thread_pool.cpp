#include "core/thread_pool.h"

#if defined(__linux__)
#include <sched.h>
#endif

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#include <utility>

namespace kvrag {

ThreadPool::ThreadPool(int n_threads, int n_cpus, Participation participation, BackOff back_off)
    : n_threads_(n_threads < 1 ? 1 : n_threads), spins_(n_threads_ <= n_cpus),
      adaptive_(participation == Participation::adaptive), times_(back_off),
      cap_(adaptive_ ? std::max(1, std::min(n_threads_, n_cpus)) : n_threads_), n_active_(cap_), back_off_(times_.min) {
    // Workers past cap_ would never run a job: not started.
    for (int i = 1; i < cap_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
        ++generation_;
    }
    spin_generation_.fetch_add(1, std::memory_order_release);
    cv_start_.notify_all();
    for (auto& t : workers_) t.join();
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
    if (n_threads_ == 1) {
        fn(0, 1);  // no other participant: an exception simply propagates
        return;
    }
    int nth = n_threads_;
    Clock::time_point start{};
    if (adaptive_) {
        start = Clock::now();
        if (n_active_ < cap_ && start >= grow_at_) {
            n_active_ = std::min(cap_, 2 * n_active_);  // the back-off is over: try more threads
            grow_at_ = start + back_off_;
        }
        nth = n_active_;
        if (nth < cap_) ++n_reduced_runs_;
        if (nth == 1) {
            fn(0, 1);
            return;
        }
    }
    {
        std::lock_guard<std::mutex> lock(mu_);
        job_ = &fn;
        job_nth_ = nth;
        pending_.store(nth - 1, std::memory_order_relaxed);
        error_ = nullptr;
        ++generation_;
    }
    // Spinning workers (spins_) watch this counter; sleeping ones wait for the notify.
    spin_generation_.fetch_add(1, std::memory_order_release);
    cv_start_.notify_all();
    // The caller's part may throw too; it must still wait below, because the workers hold a
    // pointer to fn, which dies when this frame unwinds.
    std::exception_ptr mine;
    try {
        fn(0, nth);
    } catch (...) {
        mine = std::current_exception();
    }
    const Clock::time_point own_done = adaptive_ ? Clock::now() : Clock::time_point{};
    // The caller usually finishes its part about when the workers do: sleeping on cv_done_ then
    // costs a futex wake-up and a reschedule per run (10-20 us; a decode step has ~80 runs), so
    // a spinning pool busy-waits for the count first, like its workers wait for work.
    if (spins_) {
        for (int spin = 0; spin < kSpinIterations && pending_.load(std::memory_order_acquire) != 0; ++spin) {
#if defined(__x86_64__)
            __builtin_ia32_pause();
#endif
        }
    }
    std::exception_ptr error;
    {
        std::unique_lock<std::mutex> lock(mu_);
        if (mine && !error_) error_ = std::move(mine);
        cv_done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
        job_ = nullptr;
        error = std::exchange(error_, nullptr);
    }
    if (adaptive_) note_run(nth, start, own_done, Clock::now());
    if (error) std::rethrow_exception(error);
}

void ThreadPool::note_run(int nth, Clock::time_point start, Clock::time_point own_done, Clock::time_point all_done) {
    using us = std::chrono::duration<double, std::micro>;
    const Clock::duration wait = all_done - own_done;
    const bool long_wait = wait > times_.overrun;
    own_avg_us_ += (us(own_done - start).count() - own_avg_us_) / 8.0;
    wait_avg_us_ += ((long_wait ? us(wait).count() : 0.0) - wait_avg_us_) / 8.0;
    if (long_wait && wait_avg_us_ > own_avg_us_ * (nth - 1)) {
        // Workers not running cost more than they give: fewer threads for a while (see the header).
        ++n_overruns_;
        n_active_ = std::max(1, nth / 2);
        grow_at_ = all_done + back_off_;
        back_off_ = std::min<Clock::duration>(2 * back_off_, times_.max);
        good_runs_ = 0;
        own_avg_us_ = wait_avg_us_ = 0.0;  // the next judgement is of the new thread count
    } else if (++good_runs_ >= kSettleRuns) {
        back_off_ = times_.min;
        good_runs_ = 0;
    }
}

void ThreadPool::worker(int ith) {
    uint64_t seen = 0;
    for (;;) {
        // Oversubscribed (!spins_): straight to the condition variable, see the header.
        const int n_spin = spins_ ? kSpinIterations : 0;
        for (int spin = 0; spin < n_spin; ++spin) {
            if (spin_generation_.load(std::memory_order_acquire) != seen) break;
#if defined(__x86_64__)
            __builtin_ia32_pause();
#endif
        }
        const std::function<void(int, int)>* job;
        int nth;
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_start_.wait(lock, [&] { return generation_ != seen || stop_; });
            if (stop_) return;
            seen = generation_;
            job = job_;
            nth = job_nth_;
        }
        if (ith >= nth) continue;  // a run handed to fewer threads (adaptive participation)
        // An exception must not escape the thread (std::terminate) nor skip the --pending_
        // below (run() would wait forever): keep it for run() to rethrow.
        std::exception_ptr error;
        try {
            (*job)(ith, nth);
        } catch (...) {
            error = std::current_exception();
        }
        if (error) {
            std::lock_guard<std::mutex> lock(mu_);
            if (!error_) error_ = std::move(error);
        }
        // The last one out wakes the caller in case it stopped spinning. Taking the mutex
        // between the decrement and the notify closes the gap where the caller has checked
        // the count under the mutex but not yet started waiting.
        if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            std::lock_guard<std::mutex> lock(mu_);
            cv_done_.notify_one();
        }
    }
}

int available_cpu_count() {
    const unsigned hw = std::thread::hardware_concurrency();  // 0 = unknown
    int n = static_cast<int>(hw);
#if defined(__linux__)
    // Fails (EINVAL) only where the kernel's mask is wider than cpu_set_t's 1024 CPUs; then
    // hardware_concurrency() alone has to do.
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        const int in_mask = CPU_COUNT(&set);
        if (in_mask > 0 && (n == 0 || in_mask < n)) n = in_mask;
    }
#endif
    return n < 1 ? 1 : n;
}

int physical_core_count() {
    // Count distinct (physical id, core id) pairs; fall back to the logical count.
    std::ifstream in("/proc/cpuinfo");
    std::set<std::pair<std::string, std::string>> cores;
    std::string line, phys = "0";
    while (std::getline(in, line)) {
        auto value = [&] { auto p = line.find(':'); return p == std::string::npos ? std::string() : line.substr(p + 2); };
        if (line.rfind("physical id", 0) == 0) phys = value();
        if (line.rfind("core id", 0) == 0) cores.insert({phys, value()});
    }
    if (!cores.empty()) return static_cast<int>(cores.size());
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace kvrag
