// A fixed pool of worker threads for data-parallel kernels.
//
// run(fn) calls fn(ith, nth) once on each of the nth threads (the calling thread is ith 0) and
// returns when all are done. Work is split statically by the callers, and every output element
// is computed by exactly one thread with the same code whatever nth is, so results never depend
// on the thread count.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvrag {

class ThreadPool {
public:
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }
    void run(const std::function<void(int ith, int nth)>& fn);

    // Splits [0, n) into nth near-equal contiguous ranges; returns thread ith's range.
    static std::pair<int64_t, int64_t> split(int64_t n, int ith, int nth) {
        const int64_t per = n / nth, extra = n % nth;
        const int64_t begin = ith * per + (ith < extra ? ith : extra);
        return {begin, begin + per + (ith < extra ? 1 : 0)};
    }

private:
    void worker(int ith);

    int n_threads_;
    std::vector<std::thread> workers_;
    std::mutex mu_;
    std::condition_variable cv_start_;
    std::condition_variable cv_done_;
    const std::function<void(int, int)>* job_ = nullptr;
    uint64_t generation_ = 0;
    int pending_ = 0;
    bool stop_ = false;
    std::atomic<uint64_t> spin_generation_{0};
};

// Physical cores of this machine (hyper-threads counted once); at least 1.
int physical_core_count();

}  // namespace kvrag
