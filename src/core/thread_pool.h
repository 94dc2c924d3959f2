// A fixed pool of worker threads for data-parallel kernels.
//
// run(fn) calls fn(ith, nth) once on each of the nth threads (the calling thread is ith 0) and
// returns when all are done. Work is split statically by the callers, and every output element
// is computed by exactly one thread with the same code whatever nth is, so results never depend
// on the thread count.
//
// Exceptions: fn may throw on any participant. run() still waits for every participant to
// finish its part (no worker is ever left running a job whose fn has gone out of scope), then
// rethrows the first exception recorded on the calling thread; the others are dropped. The
// pool is usable again as soon as run() returns or throws.
//
// Hand-off: when the pool fits the CPUs this process may use (size() <= available_cpu_count()),
// idle workers spin for a while before sleeping, because a decode step issues hundreds of small
// kernels and a condition-variable wake-up per kernel would dominate them. When it does not fit,
// a spinning worker only burns the time slice that the thread it waits for needs, and every
// barrier costs whole scheduler quanta; so such a pool never spins and its workers sleep at once.
// Either way results are the same: only the waiting differs.
//
// Participation (Participation::adaptive, the default): a barrier is only as fast as its slowest
// participant, and on a machine busy with other work a worker is often waiting for a CPU, so
// every run waits a scheduler quantum (milliseconds) for jobs of microseconds: a 2-thread server
// beside two CPU hogs ran 4x slower than a 1-thread one. Since results never depend on nth, run()
// may hand a job to fewer threads. It measures each run: how long the caller's own part took,
// and how long it then waited for the workers when that wait exceeded BackOff::overrun (a worker
// that was not running; shorter waits are the hand-off itself). Both are averaged over recent
// runs (weight 1/8). An overrun is a run that waited past BackOff::overrun while the averaged
// wait exceeds the averaged part times (nth - 1): the threads then cost more than they give
// (serial would take about nth parts). The next runs use half the threads (down to the caller
// alone) for a back-off time that doubles with each overrun (BackOff::min to ::max); after it,
// runs try twice the threads again, and kSettleRuns good runs in a row reset the back-off. A
// worker preempted now and then during long runs (a prompt's products) does not trigger it:
// session 8 first judged each run alone, and one preemption then cost a prompt up to 256 ms
// on half the threads (pp512 -19 % on a lightly loaded machine). On a quiet machine no run
// overruns and every run uses all threads. An adaptive
// pool never hands a run to more threads than n_cpus and starts only that many (a barrier
// waits for its slowest thread, and with more threads than CPUs one is always waiting for a
// core: `-t 64` on 2 CPUs decoded at 50 tok/s with 64 participants, at -t 2's speed with 2).
// Participation::all always uses every thread (tests of the hand-off itself).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace kvrag {

// CPUs this process may run on at once: std::thread::hardware_concurrency(), lowered to the
// size of the process's CPU affinity mask where sched_getaffinity exists (taskset, cgroups'
// cpusets, containers). At least 1. Reads the mask on every call (a syscall): not for hot loops.
int available_cpu_count();

enum class Participation { adaptive, all };

// Adaptive participation's times (see the header comment); tests shorten or lengthen them.
struct BackOff {
    // Longer than waking a sleeping worker takes on a quiet machine (tens of microseconds),
    // shorter than the scheduler's time slice a preempted worker waits for (milliseconds).
    std::chrono::microseconds overrun{500};
    std::chrono::microseconds min{2000};
    std::chrono::microseconds max{256000};
};

class ThreadPool {
public:
    // n_threads < 1 means 1. n_cpus is how many threads the machine can run at once; it only
    // decides spins() (tests pass it to be independent of the machine).
    explicit ThreadPool(int n_threads, int n_cpus = available_cpu_count(),
                        Participation participation = Participation::adaptive, BackOff back_off = {});
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }
    // Whether idle workers busy-wait before sleeping: true iff size() <= n_cpus.
    bool spins() const { return spins_; }
    // Threads the next run hands its job to (adaptive participation; when quiet, size() or
    // n_cpus, whichever is smaller).
    int participants() const { return n_active_; }
    // Overruns (runs that halved the participants, see above), and runs handed to fewer
    // threads than a quiet machine would get, since the pool was made.
    uint64_t overruns() const { return n_overruns_; }
    uint64_t reduced_runs() const { return n_reduced_runs_; }
    // Not reentrant: fn must not call run() on the same pool, and one run at a time.
    void run(const std::function<void(int ith, int nth)>& fn);

    // Splits [0, n) into nth near-equal contiguous ranges; returns thread ith's range. The
    // first n % nth threads get one element more; the ranges are in ith order and tile [0, n).
    static std::pair<int64_t, int64_t> split(int64_t n, int ith, int nth) {
        const int64_t per = n / nth, extra = n % nth;
        const int64_t begin = ith * per + (ith < extra ? ith : extra);
        return {begin, begin + per + (ith < extra ? 1 : 0)};
    }

private:
    // Busy-wait rounds (pause instructions, tens of microseconds) before a thread sleeps.
    static constexpr int kSpinIterations = 20000;
    using Clock = std::chrono::steady_clock;
    static constexpr int kSettleRuns = 64;

    // Adaptive participation's bookkeeping after a run with nth threads (caller-only state).
    void note_run(int nth, Clock::time_point start, Clock::time_point own_done, Clock::time_point all_done);

    void worker(int ith);

    int n_threads_;
    bool spins_;
    bool adaptive_;
    BackOff times_;
    int cap_;  // the most participants a run gets: n_threads_, or n_cpus when adaptive and fewer
    // Only the thread calling run() touches these (run() is not reentrant).
    int n_active_;
    Clock::time_point grow_at_{};
    Clock::duration back_off_;
    int good_runs_ = 0;
    double own_avg_us_ = 0.0, wait_avg_us_ = 0.0;  // recent runs' parts and long waits
    uint64_t n_overruns_ = 0, n_reduced_runs_ = 0;
    std::vector<std::thread> workers_;
    std::mutex mu_;
    std::condition_variable cv_start_;
    std::condition_variable cv_done_;
    const std::function<void(int, int)>* job_ = nullptr;
    int job_nth_ = 0;  // participants of the current run; workers with ith >= it skip it
    uint64_t generation_ = 0;
    // Workers still running this run's fn. Atomic, so the caller can spin on it; the mutex
    // still orders the last decrement's notify against a caller going to sleep.
    std::atomic<int> pending_{0};
    std::exception_ptr error_;  // the first exception thrown by a participant of this run
    bool stop_ = false;
    std::atomic<uint64_t> spin_generation_{0};
};

// Physical cores of this machine (hyper-threads counted once); at least 1. The default thread
// count. It ignores the affinity mask, so it may exceed available_cpu_count(): such a pool
// works, just without spinning.
int physical_core_count();

}  // namespace kvrag
