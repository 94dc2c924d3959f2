// KvCache::fork_reserved on a sliding-window cache (no model): a fork gets local cells of its
// own holding a copy of the window its next token sees, its reservations move out of the
// parent's (admitted with a ForkPlan), and every cell is back in the pools once all end.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>
#include <vector>

#include "kvcache/kv_cache.h"
#include "kvcache/kv_cache_test_util.h"

namespace kvrag::kvcache {
namespace {

// Writes a recognisable K/V row (the position, per layer) into a local cell's local layers.
void write_local(KvCache& cache, int32_t lc, int32_t pos) {
    for (int il = 0; il < cache.geometry().n_layer; ++il) {
        if (!cache.geometry().is_local(il)) continue;
        const model::KvLayerRef l = cache.view().layer(il);
        std::vector<float> row(l.row_bytes / sizeof(float), static_cast<float>(pos * 10 + il));
        std::memcpy(l.k + static_cast<size_t>(lc) * l.row_bytes, row.data(), l.row_bytes);
        std::memcpy(l.v + static_cast<size_t>(lc) * l.row_bytes, row.data(), l.row_bytes);
    }
}

float read_local(KvCache& cache, int32_t lc, int il, bool v) {
    const model::KvLayerRef l = cache.view().layer(il);
    float x = 0;
    std::memcpy(&x, (v ? l.v : l.k) + static_cast<size_t>(lc) * l.row_bytes, sizeof(float));
    return x;
}

TEST(KvCacheSwaFork, AForkCopiesItsWindowAndTakesItsReservationFromTheParent) {
    auto cache = make_swa_cache(256, 3 * kSwaLocalCap);
    std::vector<int32_t> prompt(30);
    std::iota(prompt.begin(), prompt.end(), 100);
    // Three choices of up to 50 positions: 50 + 2 x (50 - 29) global cells, 3 windows of 14.
    const int32_t worst = 50, fork_reserve = worst - 29;
    std::optional<Sequence> parent = cache->admit(prompt, worst + 2 * fork_reserve, true, ForkPlan{2, worst});
    ASSERT_TRUE(parent.has_value());
    EXPECT_EQ(cache->stats().local_reserved, 3 * kSwaLocalCap);
    // Too many windows for the pool: never admitted.
    EXPECT_FALSE(cache->admit(prompt, worst, true, ForkPlan{3, worst}).has_value());
    for (size_t at = 0; at < prompt.size(); at += kSwaAppend) {
        const size_t n = std::min<size_t>(kSwaAppend, prompt.size() - at);
        ASSERT_TRUE(cache->append(*parent, std::span<const int32_t>(prompt.data() + at, n)));
        for (int32_t p = static_cast<int32_t>(at); p < static_cast<int32_t>(at + n); ++p) {
            write_local(*cache, parent->local_cells()[static_cast<size_t>(p - parent->local_begin())], p);
        }
        ASSERT_EQ(cache->check_invariants(), "");
    }
    ASSERT_EQ(parent->local_begin(), 20);  // the last chunk (28, 29) reaches back to 21: block 20

    std::vector<Sequence> forks;
    for (int i = 0; i < 2; ++i) {
        forks.push_back(cache->fork_reserved(*parent, 29, fork_reserve));
        Sequence& f = forks.back();
        ASSERT_EQ(cache->check_invariants(), "");
        EXPECT_EQ(f.n_tokens(), 29);
        EXPECT_EQ(f.reserved(), fork_reserve);
        // Position 29's window reaches back to 22 (block 20): positions 20..28, copied.
        EXPECT_EQ(f.local_begin(), 20);
        ASSERT_EQ(f.local_cells().size(), size_t{9});
        for (size_t k = 0; k < f.local_cells().size(); ++k) {
            const int32_t lc = f.local_cells()[k];
            EXPECT_EQ(std::count(parent->local_cells().begin(), parent->local_cells().end(), lc), 0) << "a copy, not the parent's cell";
            for (int il = 0; il < 3; ++il) {
                EXPECT_EQ(read_local(*cache, lc, il, false), static_cast<float>((20 + static_cast<int32_t>(k)) * 10 + il));
                EXPECT_EQ(read_local(*cache, lc, il, true), static_cast<float>((20 + static_cast<int32_t>(k)) * 10 + il));
            }
        }
        for (size_t k = 0; k < 29; ++k) EXPECT_EQ(f.cells()[k], parent->cells()[k]);  // global cells shared
    }
    // The parent kept its own window's budget: 14 less the 10 it holds.
    const KvStats st = cache->stats();
    EXPECT_EQ(st.local_used, 10 + 9 + 9);
    EXPECT_EQ(st.local_reserved, (kSwaLocalCap - 10) + 2 * (kSwaLocalCap - 9));
    EXPECT_EQ(st.reserved, (worst - 30) + 2 * fork_reserve);  // the parent's own and the forks'

    // Each grows to its worst case on its own reservation, never over its window bound.
    for (int32_t step = 0; step < fork_reserve; ++step) {
        const int32_t t[1] = {7};
        for (auto& f : forks) ASSERT_TRUE(cache->append(f, t));
        if (parent->n_tokens() < worst) {
            ASSERT_TRUE(cache->append(*parent, t));
        }
        ASSERT_EQ(cache->check_invariants(), "");
        for (auto& f : forks) ASSERT_LE(static_cast<int32_t>(f.local_cells().size()), kSwaLocalCap);
    }
    EXPECT_EQ(forks[0].n_tokens(), worst);
    forks.clear();
    parent.reset();
    const KvStats end = cache->stats();
    EXPECT_EQ(end.local_used, 0);
    EXPECT_EQ(end.local_reserved, 0);
    EXPECT_EQ(end.used, 0);
    EXPECT_EQ(end.reserved, 0);
    EXPECT_EQ(end.local_free + end.local_cached, end.local_total);
    EXPECT_EQ(cache->check_invariants(), "");
}

// A parent that reused a cached prefix holds local cells from wherever the cached window
// began (position 9 here), after the block boundary its fork's window would start from (8):
// the fork copies from the parent's first local cell (this aborted the server: gemma3, n = 2
// on a prompt whose prefix an earlier request had computed).
TEST(KvCacheSwaFork, AForkOfAParentOnAReusedPrefixStartsWhereTheParentsLocalCellsDo) {
    auto cache = make_swa_cache(128, 4 * kSwaLocalCap);
    const std::vector<int32_t> p = toks(16);
    for (int i = 0; i < 2; ++i) {  // published twice, so its blocks are kept
        std::optional<Sequence> s = cache->admit(p, 20, /*reuse_prefix=*/false);
        ASSERT_TRUE(s.has_value());
        for (size_t at = 0; at < p.size(); at += kSwaAppend) {
            ASSERT_TRUE(cache->append(*s, std::span<const int32_t>(p.data() + at, kSwaAppend)));
        }
        cache->publish_prefix(*s, 16);
    }
    std::vector<int32_t> longer = p;
    longer.push_back(1);
    const int32_t worst = 24, fork_reserve = worst - 17;
    std::optional<Sequence> parent = cache->admit(longer, worst + fork_reserve, true, ForkPlan{1, worst});
    ASSERT_TRUE(parent.has_value());
    ASSERT_EQ(parent->n_reused(), 16);
    ASSERT_EQ(parent->local_begin(), 9);  // the cached window of position 16: 9..15
    ASSERT_TRUE(cache->append(*parent, std::span<const int32_t>(&longer.back(), 1)));
    for (int32_t pos = 9; pos < 17; ++pos) write_local(*cache, parent->local_cells()[static_cast<size_t>(pos - 9)], pos);
    ASSERT_EQ(cache->check_invariants(), "");

    // Position 17's window reaches back to 10 (block 8); the parent holds 9 onwards.
    Sequence fork = cache->fork_reserved(*parent, 17, fork_reserve);
    ASSERT_EQ(cache->check_invariants(), "");
    EXPECT_EQ(fork.local_begin(), 9);
    ASSERT_EQ(fork.local_cells().size(), size_t{8});
    for (size_t k = 0; k < fork.local_cells().size(); ++k) {
        EXPECT_EQ(read_local(*cache, fork.local_cells()[k], 0, false), static_cast<float>((9 + static_cast<int32_t>(k)) * 10));
    }
    for (int32_t step = 0; step < fork_reserve; ++step) {
        const int32_t t[1] = {7};
        ASSERT_TRUE(cache->append(fork, t));
        ASSERT_TRUE(cache->append(*parent, t));
        ASSERT_EQ(cache->check_invariants(), "");
    }
    fork.release();
    parent.reset();
    const KvStats end = cache->stats();
    EXPECT_EQ(end.local_used, 0);
    EXPECT_EQ(end.local_reserved, 0);
    EXPECT_EQ(end.reserved, 0);
    EXPECT_EQ(cache->check_invariants(), "");
}

}  // namespace
}  // namespace kvrag::kvcache
