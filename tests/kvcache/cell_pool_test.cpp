// Unit tests of CellPool: holders, the free list, reservations, and that misuse stops the
// process instead of looking like "no room".
#include "kvcache/cell_pool.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace kvrag::kvcache {
namespace {

#define EXPECT_POOL_OK(pool) EXPECT_EQ((pool).check_invariants(), "")

// Death tests re-run the binary for the one test ("threadsafe"), so threads other tests left
// behind cannot deadlock the forked child.
#define EXPECT_MISUSE(stmt, what)                                                        \
    do {                                                                                 \
        GTEST_FLAG_SET(death_test_style, "threadsafe");                                 \
        EXPECT_DEATH(stmt, "kvrag: internal error: .*cell_pool.cpp:[0-9]+: check failed: .*" what); \
    } while (0)

TEST(CellPoolTest, FreshPoolHandsOutAscendingCells) {
    CellPool pool(8);
    EXPECT_EQ(pool.n_cells(), 8);
    EXPECT_EQ(pool.n_free(), 8);
    EXPECT_EQ(pool.n_held(), 0);
    EXPECT_EQ(pool.n_used(), 0);
    for (int32_t c = 0; c < 8; ++c) EXPECT_EQ(pool.take(), c);
    EXPECT_EQ(pool.n_free(), 0);
    EXPECT_EQ(pool.n_used(), 8);
    EXPECT_EQ(pool.take(), -1);  // no room is an empty return
    EXPECT_EQ(pool.take(), -1);
    EXPECT_POOL_OK(pool);
}

TEST(CellPoolTest, FreeListIsAStack) {
    CellPool pool(6);
    std::vector<int32_t> got;
    for (int i = 0; i < 6; ++i) got.push_back(pool.take());
    EXPECT_TRUE(pool.unref_seq(2));
    EXPECT_TRUE(pool.unref_seq(4));
    EXPECT_EQ(pool.n_free(), 2);
    EXPECT_EQ(pool.take(), 4);  // last returned, first taken
    EXPECT_EQ(pool.take(), 2);
    EXPECT_POOL_OK(pool);
}

TEST(CellPoolTest, SequenceReferencesCountHolders) {
    CellPool pool(4);
    const int32_t c = pool.take();
    EXPECT_EQ(pool.seq_refs(c), 1);
    EXPECT_FALSE(pool.ref_seq(c));  // second holder, not the first
    EXPECT_FALSE(pool.ref_seq(c));
    EXPECT_EQ(pool.seq_refs(c), 3);
    EXPECT_EQ(pool.refs(c), 3);
    EXPECT_EQ(pool.n_used(), 1);
    EXPECT_FALSE(pool.unref_seq(c));
    EXPECT_FALSE(pool.unref_seq(c));
    EXPECT_EQ(pool.n_free(), 3);
    EXPECT_TRUE(pool.unref_seq(c));  // last holder
    EXPECT_EQ(pool.n_free(), 4);
    EXPECT_EQ(pool.n_used(), 0);
    EXPECT_POOL_OK(pool);
}

TEST(CellPoolTest, CachedCellOutlivesItsSequences) {
    CellPool pool(4);
    const int32_t c = pool.take();
    pool.ref_cache(c);
    EXPECT_TRUE(pool.cached(c));
    EXPECT_EQ(pool.refs(c), 2);
    EXPECT_TRUE(pool.unref_seq(c));  // the last sequence goes; the cache still holds it
    EXPECT_EQ(pool.n_used(), 0);
    EXPECT_EQ(pool.n_held(), 1);
    EXPECT_EQ(pool.n_free(), 3);
    EXPECT_POOL_OK(pool);
    EXPECT_TRUE(pool.ref_seq(c));  // a reuser: first sequence holder of a cached cell
    EXPECT_EQ(pool.n_used(), 1);
    EXPECT_TRUE(pool.unref_seq(c));
    pool.unref_cache(c);
    EXPECT_FALSE(pool.cached(c));
    EXPECT_EQ(pool.n_free(), 4);
    EXPECT_POOL_OK(pool);
}

TEST(CellPoolTest, UncachingAHeldCellKeepsItHeld) {
    CellPool pool(4);
    const int32_t c = pool.take();
    pool.ref_cache(c);
    pool.unref_cache(c);  // evicted while a sequence still holds it: not free
    EXPECT_EQ(pool.n_free(), 3);
    EXPECT_EQ(pool.seq_refs(c), 1);
    EXPECT_TRUE(pool.unref_seq(c));
    EXPECT_EQ(pool.n_free(), 4);
    EXPECT_POOL_OK(pool);
}

TEST(CellPoolTest, ReservationsAreATotal) {
    CellPool pool(8);
    pool.reserve(3);
    pool.reserve(0);
    pool.reserve(2);
    EXPECT_EQ(pool.n_reserved(), 5);
    pool.unreserve(5);
    EXPECT_EQ(pool.n_reserved(), 0);
    EXPECT_POOL_OK(pool);
}

TEST(CellPoolTest, RandomOperationsKeepInvariants) {
    CellPool pool(32);
    std::vector<int32_t> held_by_seq;  // one entry per sequence reference
    uint32_t x = 12345;
    auto next = [&x](uint32_t n) {
        x = x * 1664525u + 1013904223u;
        return (x >> 8) % n;
    };
    for (int step = 0; step < 5000; ++step) {
        const uint32_t op = next(4);
        if (op == 0) {
            const int32_t c = pool.take();
            if (c >= 0) held_by_seq.push_back(c);
            else EXPECT_EQ(pool.n_free(), 0);
        } else if (op == 1 && !held_by_seq.empty()) {
            const int32_t c = held_by_seq[next(static_cast<uint32_t>(held_by_seq.size()))];
            pool.ref_seq(c);
            held_by_seq.push_back(c);
        } else if (op == 2 && !held_by_seq.empty()) {
            const size_t i = next(static_cast<uint32_t>(held_by_seq.size()));
            pool.unref_seq(held_by_seq[i]);
            held_by_seq.erase(held_by_seq.begin() + static_cast<std::ptrdiff_t>(i));
        } else if (op == 3 && !held_by_seq.empty()) {
            const int32_t c = held_by_seq[next(static_cast<uint32_t>(held_by_seq.size()))];
            if (pool.cached(c)) pool.unref_cache(c);
            else pool.ref_cache(c);
        }
        ASSERT_EQ(pool.check_invariants(), "") << "step " << step;
        const std::set<int32_t> distinct(held_by_seq.begin(), held_by_seq.end());
        ASSERT_EQ(pool.n_used(), static_cast<int32_t>(distinct.size())) << "step " << step;
    }
}

TEST(CellPoolTest, MisuseStopsTheProcess) {
    CellPool pool(4);
    const int32_t c = pool.take();
    EXPECT_MISUSE(CellPool(0), "at least one cell");
    EXPECT_MISUSE(pool.unref_seq(3), "unref of a cell no sequence holds");       // a free cell
    EXPECT_MISUSE(pool.ref_seq(3), "only share a cell someone holds");           // sharing a free cell
    EXPECT_MISUSE(pool.ref_seq(4), "outside the pool");
    EXPECT_MISUSE(pool.unref_seq(-1), "outside the pool");
    EXPECT_MISUSE(pool.seq_refs(99), "outside the pool");
    EXPECT_MISUSE(pool.ref_cache(3), "only take a cell a sequence computed");
    EXPECT_MISUSE(pool.unref_cache(c), "does not hold");
    pool.ref_cache(c);
    EXPECT_MISUSE(pool.ref_cache(c), "already cached");
    EXPECT_MISUSE(pool.reserve(-1), "negative reservation");
    pool.reserve(2);
    EXPECT_MISUSE(pool.unreserve(3), "more reserved cells than are reserved");
    EXPECT_MISUSE(pool.unreserve(-1), "more reserved cells than are reserved");
    // None of the above changed this process's pool.
    EXPECT_EQ(pool.n_reserved(), 2);
    EXPECT_EQ(pool.refs(c), 2);
    EXPECT_POOL_OK(pool);
}

// File-local macros: the unity build compiles several test files as one.
#undef EXPECT_POOL_OK
#undef EXPECT_MISUSE

}  // namespace
}  // namespace kvrag::kvcache
