// ThreadPool: every participant runs fn exactly once per run, split() tiles [0, n), and a job
// that throws (on a worker or on the caller) reaches the caller after every participant has
// finished, leaving the pool usable. A pool larger than the machine's CPUs does not spin, and
// still computes the same results. Tests of the hand-off itself use Participation::all; the
// adaptive pool's own tests are at the end.
#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace kvrag {
namespace {

// Calls per ith and the nth each call saw, for one run.
struct Calls {
    explicit Calls(int n) : count(n), bad_nth(0) {}
    std::vector<std::atomic<int>> count;
    std::atomic<int> bad_nth;
};

TEST(ThreadPool, CallsFnOncePerThreadWithTheRightNth) {
    for (int n_threads : {1, 2, 3, 4, 8}) {
        ThreadPool pool(n_threads, available_cpu_count(), Participation::all);
        ASSERT_EQ(pool.size(), n_threads);
        for (int rep = 0; rep < 3; ++rep) {
            Calls calls(n_threads);
            pool.run([&](int ith, int nth) {
                if (nth != n_threads) ++calls.bad_nth;
                if (ith >= 0 && ith < n_threads) ++calls.count[ith];
            });
            EXPECT_EQ(calls.bad_nth.load(), 0);
            for (int i = 0; i < n_threads; ++i) EXPECT_EQ(calls.count[i].load(), 1) << "ith " << i << " of " << n_threads;
        }
    }
}

TEST(ThreadPool, CallerIsThreadZero) {
    ThreadPool pool(3, available_cpu_count(), Participation::all);
    const auto caller = std::this_thread::get_id();
    std::vector<std::thread::id> ids(3);
    pool.run([&](int ith, int) { ids[ith] = std::this_thread::get_id(); });
    EXPECT_EQ(ids[0], caller);
    EXPECT_NE(ids[1], caller);
    EXPECT_NE(ids[2], caller);
    EXPECT_NE(ids[1], ids[2]);
}

TEST(ThreadPool, FewerThanOneThreadMeansOne) {
    EXPECT_EQ(ThreadPool(0).size(), 1);
    EXPECT_EQ(ThreadPool(-3).size(), 1);
}

TEST(ThreadPool, SplitKnownAnswers) {
    using R = std::pair<int64_t, int64_t>;
    struct Case {
        int64_t n;
        int nth;
        std::vector<R> ranges;  // one per ith
    };
    const Case cases[] = {
        {0, 1, {{0, 0}}},
        {0, 3, {{0, 0}, {0, 0}, {0, 0}}},
        {1, 1, {{0, 1}}},
        {7, 1, {{0, 7}}},
        {8, 4, {{0, 2}, {2, 4}, {4, 6}, {6, 8}}},
        {10, 3, {{0, 4}, {4, 7}, {7, 10}}},  // the first n % nth ranges are one longer
        {11, 4, {{0, 3}, {3, 6}, {6, 9}, {9, 11}}},
        {3, 5, {{0, 1}, {1, 2}, {2, 3}, {3, 3}, {3, 3}}},  // more threads than work
        {4096, 3, {{0, 1366}, {1366, 2731}, {2731, 4096}}},
    };
    for (const auto& c : cases) {
        for (int ith = 0; ith < c.nth; ++ith) {
            EXPECT_EQ(ThreadPool::split(c.n, ith, c.nth), c.ranges[ith]) << "n=" << c.n << " ith=" << ith << " nth=" << c.nth;
        }
    }
}

TEST(ThreadPool, SplitTilesEveryRangeEvenly) {
    for (int64_t n = 0; n <= 70; ++n) {
        for (int nth = 1; nth <= 9; ++nth) {
            int64_t expect_begin = 0;
            for (int ith = 0; ith < nth; ++ith) {
                const auto [b, e] = ThreadPool::split(n, ith, nth);
                EXPECT_EQ(b, expect_begin) << "n=" << n << " ith=" << ith << " nth=" << nth;  // contiguous, in order
                const int64_t len = e - b;
                EXPECT_TRUE(len == n / nth || len == n / nth + 1) << "n=" << n << " ith=" << ith << " nth=" << nth;
                EXPECT_EQ(len, n / nth + (ith < n % nth ? 1 : 0));
                expect_begin = e;
            }
            EXPECT_EQ(expect_begin, n) << "n=" << n << " nth=" << nth;  // covers [0, n) exactly
        }
    }
    // Sizes beyond 32 bits.
    const int64_t big = int64_t{3} << 40;
    EXPECT_EQ(ThreadPool::split(big, 2, 3), (std::pair<int64_t, int64_t>{2 * (big / 3), big}));
}

TEST(ThreadPool, WorkerExceptionReachesTheCallerAfterEveryoneFinished) {
    ThreadPool pool(4, available_cpu_count(), Participation::all);
    Calls calls(4);
    std::atomic<int> finished{0};
    try {
        pool.run([&](int ith, int) {
            ++calls.count[ith];
            if (ith == 2) throw std::runtime_error("worker 2 failed");
            // The others take a while, so run() could only return early by not waiting.
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            ++finished;
        });
        FAIL() << "run() did not throw";
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "worker 2 failed");
    }
    EXPECT_EQ(finished.load(), 3);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(calls.count[i].load(), 1);

    // The pool is usable afterwards, and the exception does not come back.
    Calls next(4);
    pool.run([&](int ith, int) { ++next.count[ith]; });
    for (int i = 0; i < 4; ++i) EXPECT_EQ(next.count[i].load(), 1);
}

TEST(ThreadPool, CallerExceptionWaitsForTheWorkers) {
    ThreadPool pool(3, available_cpu_count(), Participation::all);
    std::atomic<int> finished{0};
    EXPECT_THROW(pool.run([&](int ith, int) {
                     if (ith == 0) throw std::logic_error("caller failed");
                     std::this_thread::sleep_for(std::chrono::milliseconds(20));
                     ++finished;
                 }),
                 std::logic_error);
    // Had run() unwound at once, the workers would still be inside a destroyed lambda.
    EXPECT_EQ(finished.load(), 2);
    std::atomic<int> sum{0};
    pool.run([&](int ith, int) { sum += ith + 1; });
    EXPECT_EQ(sum.load(), 1 + 2 + 3);
}

TEST(ThreadPool, EveryParticipantThrowingGivesOneException) {
    ThreadPool pool(4);
    try {
        pool.run([](int ith, int) { throw std::runtime_error("thread " + std::to_string(ith)); });
        FAIL() << "run() did not throw";
    } catch (const std::runtime_error& e) {
        const std::string what = e.what();
        EXPECT_EQ(what.rfind("thread ", 0), 0u) << what;  // whichever came first; one of the four
    }
    EXPECT_NO_THROW(pool.run([](int, int) {}));
}

TEST(ThreadPool, AnyExceptionTypePropagates) {
    ThreadPool pool(2, available_cpu_count(), Participation::all);
    try {
        pool.run([](int ith, int) {
            if (ith == 1) throw 42;
        });
        FAIL() << "run() did not throw";
    } catch (int v) {
        EXPECT_EQ(v, 42);
    }
}

TEST(ThreadPool, PoolOfOneRunsOnTheCaller) {
    ThreadPool pool(1);
    ASSERT_EQ(pool.size(), 1);
    int calls = 0;
    const auto caller = std::this_thread::get_id();
    pool.run([&](int ith, int nth) {
        EXPECT_EQ(ith, 0);
        EXPECT_EQ(nth, 1);
        EXPECT_EQ(std::this_thread::get_id(), caller);
        ++calls;
    });
    EXPECT_EQ(calls, 1);
    EXPECT_THROW(pool.run([](int, int) { throw std::runtime_error("alone"); }), std::runtime_error);
    pool.run([&](int, int) { ++calls; });
    EXPECT_EQ(calls, 2);
}

TEST(ThreadPool, ThousandsOfRunsInARow) {
    // Neither hand-off, spin-then-sleep nor sleep at once, may lose or repeat a run, including
    // the runs right after one that threw. The CPU count is given so that both are tried on any
    // machine. (Three threads and 3000 runs: enough to interleave every way, still quick on a
    // busy two-core machine, where spinning workers compete with the caller.)
    for (bool spins : {true, false}) {
        ThreadPool pool(3, spins ? 3 : 2, Participation::all);
        ASSERT_EQ(pool.spins(), spins);
        constexpr int kRuns = 3000;
        std::atomic<int64_t> sum{0};
        int n_thrown = 0;
        for (int r = 0; r < kRuns; ++r) {
            try {
                pool.run([&](int ith, int nth) {
                    sum += ith + 1;
                    if (r % 97 == 0 && ith == r % nth) throw std::runtime_error("planned");
                });
            } catch (const std::runtime_error&) {
                ++n_thrown;
            }
        }
        EXPECT_EQ(sum.load(), int64_t{kRuns} * (1 + 2 + 3)) << "spins " << spins;
        EXPECT_EQ(n_thrown, (kRuns + 96) / 97) << "spins " << spins;
    }
}

TEST(ThreadPool, AvailableCpusArePositiveAndWithinTheHardware) {
    const int n = available_cpu_count();
    EXPECT_GE(n, 1);
    const unsigned hw = std::thread::hardware_concurrency();
    if (hw > 0) {
        EXPECT_LE(n, static_cast<int>(hw));
    }
}

TEST(ThreadPool, SpinsOnlyWhenItFitsTheCpus) {
    // The CPU count given explicitly: the rule itself, whatever this machine is.
    struct Case {
        int n_threads, n_cpus;
        bool spins;
    };
    const Case cases[] = {
        {1, 1, true}, {2, 2, true}, {1, 2, true}, {4, 8, true},
        {3, 2, false}, {16, 2, false}, {64, 2, false}, {2, 1, false},
        {0, 1, true},  // fewer than one thread means one
    };
    for (const auto& c : cases) {
        EXPECT_EQ(ThreadPool(c.n_threads, c.n_cpus).spins(), c.spins) << c.n_threads << " threads on " << c.n_cpus << " CPUs";
    }
    // And by default against this machine's CPUs (2 on the shared builder).
    const int n_cpus = available_cpu_count();
    EXPECT_TRUE(ThreadPool(n_cpus).spins());
    EXPECT_FALSE(ThreadPool(n_cpus + 1).spins());
    EXPECT_FALSE(ThreadPool(16 > n_cpus ? 16 : n_cpus + 1).spins());
}

// Many tiny runs on a pool that does not spin: every run is complete, none lost or repeated, and
// the sums match those of a pool of one (results do not depend on the thread count). No timing
// is asserted; on a 2-core machine the spinning pool of old took minutes here.
TEST(ThreadPool, OversubscribedPoolsGiveTheSameResults) {
    constexpr int kRuns = 2000;
    constexpr int64_t kN = 1000;  // elements per run, split across the threads
    auto total = [&](ThreadPool& pool) {
        int64_t sum = 0;
        std::vector<int64_t> part(pool.size());
        for (int r = 0; r < kRuns; ++r) {
            // An adaptive pool may hand a run to fewer threads: the parts of those left out are 0.
            std::fill(part.begin(), part.end(), 0);
            pool.run([&](int ith, int nth) {
                auto [b, e] = ThreadPool::split(kN, ith, nth);
                int64_t s = 0;
                for (int64_t i = b; i < e; ++i) s += (i * 31 + r) % 97;
                part[ith] = s;
            });
            for (int64_t s : part) sum += s;
        }
        return sum;
    };
    ThreadPool one(1);
    const int64_t expect = total(one);
    for (int n_threads : {16, 64}) {
        // Told it has 2 CPUs, as on the shared builder, so that it never spins on any machine.
        ThreadPool pool(n_threads, 2);
        ASSERT_FALSE(pool.spins());
        EXPECT_EQ(total(pool), expect) << n_threads << " threads";
    }
}

TEST(ThreadPool, OversubscribedPoolKeepsItsExceptionSafety) {
    ThreadPool pool(16, 2, Participation::all);
    ASSERT_FALSE(pool.spins());
    std::atomic<int> finished{0};
    try {
        pool.run([&](int ith, int) {
            if (ith == 9) throw std::runtime_error("worker 9 failed");
            ++finished;
        });
        FAIL() << "run() did not throw";
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "worker 9 failed");
    }
    EXPECT_EQ(finished.load(), 15);
    EXPECT_THROW(pool.run([](int ith, int) {
                     if (ith == 0) throw std::logic_error("caller failed");
                 }),
                 std::logic_error);
    Calls next(16);
    pool.run([&](int ith, int) { ++next.count[ith]; });
    for (int i = 0; i < 16; ++i) EXPECT_EQ(next.count[i].load(), 1);
}

// Adaptive participation. A worker that is "not running" is simulated by worker 1, whose part
// sleeps while the caller's part is empty: the caller then waits far longer than the overrun
// bound and longer than its own part, so the next runs go to fewer threads.
TEST(ThreadPool, AnOverrunHalvesTheParticipantsUntilTheBackOffIsOver) {
    // A back-off of a minute: nothing grows back during this test, however slow the machine.
    const BackOff minute{std::chrono::microseconds(500), std::chrono::seconds(60), std::chrono::seconds(60)};
    ThreadPool pool(4, 4, Participation::adaptive, minute);  // told 4 CPUs: all four may run
    ASSERT_EQ(pool.participants(), 4);
    std::atomic<int> max_nth{0};
    auto slow_worker = [&](int ith, int nth) {
        max_nth = std::max(max_nth.load(), nth);
        if (ith == 1) std::this_thread::sleep_for(std::chrono::milliseconds(30));
    };
    pool.run(slow_worker);
    EXPECT_EQ(max_nth.load(), 4);
    EXPECT_EQ(pool.overruns(), 1u);
    EXPECT_EQ(pool.participants(), 2);
    max_nth = 0;
    pool.run(slow_worker);  // two threads, overrunning again: the caller alone from now on
    EXPECT_EQ(max_nth.load(), 2);
    EXPECT_EQ(pool.overruns(), 2u);
    EXPECT_EQ(pool.participants(), 1);
    Calls calls(4);
    pool.run([&](int ith, int nth) {
        if (nth != 1) ++calls.bad_nth;
        ++calls.count[ith];
    });
    EXPECT_EQ(calls.bad_nth.load(), 0);
    EXPECT_EQ(calls.count[0].load(), 1);
    EXPECT_EQ(pool.reduced_runs(), 2u);  // the 2-thread run and the caller-alone one
}

TEST(ThreadPool, AfterTheBackOffTheParticipantsGrowBackToAll) {
    // A 1 ms back-off: sleeping 20 ms between runs always outlasts it. Each run after a
    // back-off doubles the participants: 1 -> 2 -> 4. Overruns count only waits over 20 ms
    // here, so that the empty probes below overrun only when a worker waits for a core that
    // long (a loaded 2-core machine: several time slices); the runs repeat (bounded) until
    // all four take part.
    const BackOff short_one{std::chrono::milliseconds(20), std::chrono::milliseconds(1), std::chrono::milliseconds(1)};
    ThreadPool pool(4, 4, Participation::adaptive, short_one);
    for (int r = 0; r < 2; ++r) {
        pool.run([](int ith, int) {
            if (ith == 1) std::this_thread::sleep_for(std::chrono::milliseconds(80));
        });
    }
    ASSERT_GE(pool.overruns(), 1u);
    ASSERT_LT(pool.participants(), 4);
    for (int attempt = 0; attempt < 200 && pool.participants() < 4; ++attempt) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        pool.run([](int, int) {});
    }
    ASSERT_EQ(pool.participants(), 4);
    Calls all(4);
    pool.run([&](int ith, int nth) {
        if (nth != 4) ++all.bad_nth;
        ++all.count[ith];
    });
    EXPECT_EQ(all.bad_nth.load(), 0);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(all.count[i].load(), 1) << "ith " << i;
}

// More threads than CPUs: an adaptive pool hands runs to at most the CPUs' count (told 2 here,
// on any machine), with every element still computed once; Participation::all uses them all.
TEST(ThreadPool, AnAdaptivePoolUsesAtMostTheCpus) {
    ThreadPool pool(16, 2, Participation::adaptive);
    EXPECT_EQ(pool.size(), 16);
    EXPECT_EQ(pool.participants(), 2);
    Calls calls(16);
    pool.run([&](int ith, int nth) {
        if (nth != 2) ++calls.bad_nth;
        ++calls.count[ith];
    });
    EXPECT_EQ(calls.bad_nth.load(), 0);
    EXPECT_EQ(calls.count[0].load() + calls.count[1].load(), 2);
    for (int i = 2; i < 16; ++i) EXPECT_EQ(calls.count[i].load(), 0) << "ith " << i;
    EXPECT_EQ(ThreadPool(16, 2, Participation::all).participants(), 16);
    EXPECT_EQ(ThreadPool(3, 1, Participation::adaptive).participants(), 1);
}

// Whatever the participants, every element is computed once and the results equal those of a
// pool of one; with a worker that keeps oversleeping, the pool ends up on the caller alone, and
// an exception thrown there still reaches run()'s caller.
TEST(ThreadPool, AdaptiveRunsGiveTheSameResultsWhateverTheParticipants) {
    constexpr int64_t kN = 1000;
    auto sum_of = [&](ThreadPool& pool, bool slow) {
        std::vector<int64_t> part(pool.size(), 0);
        pool.run([&](int ith, int nth) {
            auto [b, e] = ThreadPool::split(kN, ith, nth);
            int64_t s = 0;
            for (int64_t i = b; i < e; ++i) s += (i * 31) % 97;
            part[ith] = s;
            if (slow && ith == 1) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        });
        int64_t sum = 0;
        for (int64_t s : part) sum += s;
        return sum;
    };
    ThreadPool one(1);
    const int64_t expect = sum_of(one, false);
    const BackOff minute{std::chrono::microseconds(500), std::chrono::seconds(60), std::chrono::seconds(60)};
    ThreadPool pool(3, 3, Participation::adaptive, minute);
    for (int r = 0; r < 20; ++r) EXPECT_EQ(sum_of(pool, true), expect) << "run " << r;
    EXPECT_GE(pool.overruns(), 1u);
    EXPECT_EQ(pool.participants(), 1);
    EXPECT_THROW(pool.run([](int, int) { throw std::runtime_error("caller alone"); }), std::runtime_error);
    EXPECT_EQ(sum_of(pool, false), expect);
}

}  // namespace
}  // namespace kvrag
