// Unit tests of PrefixCache on a bare CellPool (no KvCache, no K/V memory): the seen-twice rule,
// least-recently-used eviction order, leaves before parents, and that the O(1) evictable count
// and the O(1) victim match brute-force recomputations after every step of random operations.
#include "kvcache/prefix_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kvcache/kv_cache_test_util.h"

namespace kvrag::kvcache {
namespace {

// Death tests re-run the binary for the one test ("threadsafe"), so threads other tests left
// behind cannot deadlock the forked child.
#define EXPECT_MISUSE(stmt, what)                                                                    \
    do {                                                                                             \
        GTEST_FLAG_SET(death_test_style, "threadsafe");                                             \
        EXPECT_DEATH(stmt, "kvrag: internal error: .*check failed: .*" what);                        \
    } while (0)

// A sequence as the KvCache keeps it: tokens and the cells holding them.
struct Seq {
    std::vector<int32_t> tokens;
    std::vector<int32_t> cells;
};

// The pool, the prefix cache and the wiring the KvCache facade does between them.
class Harness {
public:
    explicit Harness(int32_t n_cells) : pool_(n_cells), prefix_(pool_, kBlock) {}

    CellPool& pool() { return pool_; }
    PrefixCache& prefix() { return prefix_; }

    // Computes a prompt on fresh cells (evicting when none is free), like a prefill without reuse.
    std::optional<Seq> compute(const std::vector<int32_t>& tokens) {
        Seq s;
        for (int32_t t : tokens) {
            while (pool_.n_free() == 0) {
                if (!prefix_.evict_one()) {
                    release(s);
                    return std::nullopt;
                }
            }
            s.cells.push_back(pool_.take());
            s.tokens.push_back(t);
        }
        return s;
    }
    // Takes the cached prefix of a prompt, like admission with reuse.
    Seq reuse(const std::vector<int32_t>& prompt) {
        const PrefixMatch m = prefix_.match(prompt);
        for (int32_t c : m.cells) ref(c);
        prefix_.touch(m.blocks);
        return Seq{m.tokens, m.cells};
    }
    Seq fork(const Seq& s) {
        for (int32_t c : s.cells) ref(c);
        return s;
    }
    void publish(const Seq& s) { prefix_.publish(s.tokens, s.cells, s.cells.size() / kBlock); }
    void truncate(Seq& s, size_t n_keep) {
        while (s.cells.size() > n_keep) {
            unref(s.cells.back());
            s.cells.pop_back();
            s.tokens.pop_back();
        }
    }
    void release(Seq& s) { truncate(s, 0); }

    void ref(int32_t c) {
        if (pool_.ref_seq(c) && pool_.cached(c)) prefix_.seq_holds(c);
    }
    void unref(int32_t c) {
        if (pool_.unref_seq(c) && pool_.cached(c)) prefix_.seq_released(c);
    }

private:
    CellPool pool_;
    PrefixCache prefix_;
};

// Independent brute force over the blocks' picture: a block is reclaimable when no block in
// its subtree has a cell a sequence holds.
int32_t brute_evictable(const PrefixCache& prefix, const CellPool& pool) {
    const std::vector<PrefixBlockInfo> blocks = prefix.blocks();
    std::map<uint64_t, const PrefixBlockInfo*> by_hash;
    for (const auto& b : blocks) by_hash[b.hash] = &b;
    std::set<uint64_t> pinned;
    for (const auto& b : blocks) {
        const bool used = std::any_of(b.cells.begin(), b.cells.end(), [&](int32_t c) { return pool.seq_refs(c) > 0; });
        for (uint64_t h = used ? b.hash : 0; h != 0; h = by_hash.at(h)->parent) pinned.insert(h);
    }
    int32_t n = 0;
    for (const auto& b : blocks) n += pinned.count(b.hash) ? 0 : static_cast<int32_t>(b.cells.size());
    return n;
}

// Independent brute force of the victim: the least recently used leaf no sequence holds.
std::optional<uint64_t> brute_victim(const PrefixCache& prefix, const CellPool& pool) {
    const std::vector<PrefixBlockInfo> blocks = prefix.blocks();
    std::set<uint64_t> parents;
    for (const auto& b : blocks) parents.insert(b.parent);
    std::optional<uint64_t> victim;
    uint64_t oldest = UINT64_MAX;
    for (const auto& b : blocks) {
        if (parents.count(b.hash)) continue;
        if (std::any_of(b.cells.begin(), b.cells.end(), [&](int32_t c) { return pool.seq_refs(c) > 0; })) continue;
        if (b.last_used < oldest) {
            oldest = b.last_used;
            victim = b.hash;
        }
    }
    return victim;
}

// Runs a prompt twice through compute + publish + release, so its full blocks get cached.
void cache_prompt(Harness& h, const std::vector<int32_t>& prompt) {
    for (int i = 0; i < 2; ++i) {
        std::optional<Seq> s = h.compute(prompt);
        ASSERT_TRUE(s.has_value());
        h.publish(*s);
        h.release(*s);
    }
}

uint64_t hash_of(const std::vector<int32_t>& prompt, size_t n_blocks) {
    uint64_t h = 0;
    for (size_t i = 0; i < n_blocks; ++i) h = PrefixCache::block_hash(h, std::span<const int32_t>(prompt).subspan(i * kBlock, kBlock));
    return h;
}

TEST(PrefixCacheTest, KeepsABlockOnlyOnceSeenTwice) {
    Harness h(32);
    const std::vector<int32_t> p = toks(9, 100);
    std::optional<Seq> s = h.compute(p);
    h.publish(*s);
    EXPECT_EQ(h.prefix().n_blocks(), 0);
    h.release(*s);
    s = h.compute(p);
    h.publish(*s);
    EXPECT_EQ(h.prefix().n_blocks(), 2);
    EXPECT_EQ(h.prefix().n_cached_cells(), 8);
    EXPECT_EQ(h.prefix().n_evictable_cells(), 0);  // s holds them
    h.release(*s);
    EXPECT_EQ(h.prefix().n_evictable_cells(), 8);
    EXPECT_EQ(h.pool().n_free(), 32 - 8);
    EXPECT_EQ(h.prefix().peek(p), 8);
    EXPECT_EQ(h.prefix().check_invariants(), "");
}

TEST(PrefixCacheTest, EvictsLeastRecentlyUsedFirst) {
    Harness h(64);
    const std::vector<int32_t> a = toks(5, 100), b = toks(5, 200), c = toks(5, 300);
    cache_prompt(h, a);
    cache_prompt(h, b);
    cache_prompt(h, c);
    ASSERT_EQ(h.prefix().n_blocks(), 3);
    Seq t = h.reuse(b);  // b is now the most recent
    ASSERT_EQ(t.cells.size(), 4u);
    h.release(t);
    std::vector<uint64_t> order;
    while (std::optional<uint64_t> v = h.prefix().next_victim()) {
        EXPECT_EQ(v, brute_victim(h.prefix(), h.pool()));
        order.push_back(*v);
        ASSERT_TRUE(h.prefix().evict_one());
        EXPECT_EQ(h.prefix().check_invariants(), "");
    }
    EXPECT_FALSE(h.prefix().evict_one());
    EXPECT_EQ(order, (std::vector<uint64_t>{hash_of(a, 1), hash_of(c, 1), hash_of(b, 1)}));
    EXPECT_EQ(h.prefix().n_evictions(), 3u);
    EXPECT_EQ(h.pool().n_free(), 64);
}

TEST(PrefixCacheTest, EvictsLeavesBeforeParentsAndParentsInAgeOrder) {
    Harness h(64);
    const std::vector<int32_t> p = toks(9, 100);  // chain of two blocks, stamped together
    const std::vector<int32_t> q = toks(5, 500);  // one block, more recent
    cache_prompt(h, p);
    cache_prompt(h, q);
    // The leaf of p goes first; its parent then becomes a leaf as old as it was, so it goes
    // before q although it joined the list later.
    EXPECT_EQ(h.prefix().next_victim(), hash_of(p, 2));
    ASSERT_TRUE(h.prefix().evict_one());
    EXPECT_EQ(h.prefix().next_victim(), hash_of(p, 1));
    EXPECT_EQ(h.prefix().check_invariants(), "");
    ASSERT_TRUE(h.prefix().evict_one());
    EXPECT_EQ(h.prefix().next_victim(), hash_of(q, 1));
}

TEST(PrefixCacheTest, ReleasedOldBlockGoesBeforeNewerOnes) {
    Harness h(64);
    const std::vector<int32_t> a = toks(5, 100), b = toks(5, 200), c = toks(5, 300);
    cache_prompt(h, a);
    Seq hold = h.reuse(a);  // a stays in use while b and c are cached after it
    cache_prompt(h, b);
    cache_prompt(h, c);
    EXPECT_EQ(h.prefix().n_evictable_cells(), 8);
    EXPECT_EQ(h.prefix().next_victim(), hash_of(b, 1));
    h.release(hold);  // a's stamp is older than b's and c's: it goes to the head
    EXPECT_EQ(h.prefix().n_evictable_cells(), 12);
    EXPECT_EQ(h.prefix().next_victim(), hash_of(a, 1));
    EXPECT_EQ(h.prefix().check_invariants(), "");
}

TEST(PrefixCacheTest, HeldChildPinsItsParent) {
    Harness h(64);
    const std::vector<int32_t> p = toks(9, 100);
    cache_prompt(h, p);
    Seq s = h.reuse(p);
    ASSERT_EQ(s.cells.size(), 8u);
    h.truncate(s, 5);  // s keeps block 0 and one cell of block 1
    EXPECT_EQ(h.prefix().n_evictable_cells(), 0);
    EXPECT_FALSE(h.prefix().next_victim().has_value());
    EXPECT_FALSE(h.prefix().evict_one());
    h.truncate(s, 4);  // block 1 is free of sequences; block 0 is still held
    EXPECT_EQ(h.prefix().n_evictable_cells(), 4);
    EXPECT_EQ(h.prefix().next_victim(), hash_of(p, 2));
    EXPECT_EQ(h.prefix().check_invariants(), "");
    h.prefix().clear();
    EXPECT_EQ(h.prefix().n_blocks(), 1);  // block 0 stays while s holds it
    h.release(s);
    EXPECT_EQ(h.prefix().n_evictable_cells(), 4);
    h.prefix().clear();
    EXPECT_EQ(h.prefix().n_blocks(), 0);
    EXPECT_EQ(h.pool().n_free(), 64);
    EXPECT_EQ(h.prefix().check_invariants(), "");
}

// Random compute / reuse / fork / truncate / publish / release / evict / clear on a small pool.
// After every step: the structures pass check_invariants (which compares against its own brute
// force), and the O(1) count and victim equal this test's independent brute force. Every
// eviction takes exactly the predicted victim; clear() frees exactly the counted cells.
TEST(PrefixCacheTest, RandomOperationsMatchBruteForce) {
    for (uint32_t seed : {1u, 7u, 99u, 2024u}) {
        Harness h(48);
        std::mt19937 rng(seed);
        auto rnd = [&rng](int32_t lo, int32_t hi) { return std::uniform_int_distribution<int32_t>(lo, hi)(rng); };
        std::vector<std::vector<int32_t>> families;
        for (int f = 0; f < 3; ++f) families.push_back(toks(16, 1000 * (f + 1)));
        std::vector<Seq> live;
        uint64_t n_evicted = 0, n_reused = 0;
        for (int step = 0; step < 3000; ++step) {
            const int32_t op = rnd(0, 99);
            std::string what;
            if (live.empty() || op < 25) {
                if (live.size() < 6) {
                    std::vector<int32_t> prompt = families[static_cast<size_t>(rnd(0, 2))];
                    prompt.resize(static_cast<size_t>(rnd(1, 16)));
                    for (int i = rnd(0, 3); i > 0; --i) prompt.push_back(rnd(0, 3));
                    Seq s = h.reuse(prompt);
                    n_reused += s.cells.size();
                    const std::vector<int32_t> rest(prompt.begin() + static_cast<std::ptrdiff_t>(s.cells.size()), prompt.end());
                    if (std::optional<Seq> t = h.compute(rest)) {
                        s.cells.insert(s.cells.end(), t->cells.begin(), t->cells.end());
                        s.tokens.insert(s.tokens.end(), t->tokens.begin(), t->tokens.end());
                        live.push_back(std::move(s));
                    } else {
                        h.release(s);
                    }
                }
                what = "admit";
            } else {
                const size_t i = static_cast<size_t>(rnd(0, static_cast<int32_t>(live.size()) - 1));
                if (op < 35 && live.size() < 6) {
                    live.push_back(h.fork(live[i]));
                    what = "fork";
                } else if (op < 50) {
                    h.truncate(live[i], static_cast<size_t>(rnd(0, static_cast<int32_t>(live[i].cells.size()))));
                    what = "truncate";
                } else if (op < 70) {
                    h.publish(live[i]);
                    what = "publish";
                } else if (op < 85) {
                    h.release(live[i]);
                    live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
                    what = "release";
                } else if (op < 97) {
                    const std::optional<uint64_t> want = brute_victim(h.prefix(), h.pool());
                    const int32_t free_before = h.pool().n_free();
                    ASSERT_EQ(h.prefix().evict_one(), want.has_value()) << "seed " << seed << " step " << step;
                    if (want) {
                        ++n_evicted;
                        const auto left = h.prefix().blocks();
                        ASSERT_TRUE(std::none_of(left.begin(), left.end(), [&](const PrefixBlockInfo& b) { return b.hash == *want; }))
                            << "seed " << seed << " step " << step << ": eviction did not take the least recently used leaf";
                        ASSERT_EQ(h.pool().n_free(), free_before + kBlock);
                    }
                    what = "evict";
                } else {
                    const int32_t free_before = h.pool().n_free(), counted = h.prefix().n_evictable_cells();
                    h.prefix().clear();
                    ASSERT_EQ(h.pool().n_free(), free_before + counted) << "seed " << seed << " step " << step << ": clear freed a different count";
                    ASSERT_EQ(h.prefix().n_evictable_cells(), 0);
                    what = "clear";
                }
            }
            const std::string where = "seed " + std::to_string(seed) + " step " + std::to_string(step) + " after " + what;
            ASSERT_EQ(h.prefix().check_invariants(), "") << where;
            ASSERT_EQ(h.pool().check_invariants(), "") << where;
            ASSERT_EQ(h.prefix().n_evictable_cells(), brute_evictable(h.prefix(), h.pool())) << where;
            ASSERT_EQ(h.prefix().next_victim(), brute_victim(h.prefix(), h.pool())) << where;
        }
        EXPECT_GT(n_evicted, 0u) << "seed " << seed;
        EXPECT_GT(n_reused, 0u) << "seed " << seed;
        for (Seq& s : live) h.release(s);
        h.prefix().clear();
        EXPECT_EQ(h.pool().n_free(), 48) << "seed " << seed;
    }
}

TEST(PrefixCacheTest, MisuseStopsTheProcess) {
    Harness h(32);
    const std::vector<int32_t> p = toks(9, 100);
    cache_prompt(h, p);
    std::optional<Seq> s = h.compute(toks(4, 900));
    ASSERT_TRUE(s.has_value());
    EXPECT_MISUSE(h.prefix().seq_holds(s->cells[0]), "does not hold");            // a cell no block holds
    EXPECT_MISUSE(h.prefix().seq_released(s->cells[0]), "does not hold");
    EXPECT_MISUSE(h.prefix().seq_released(h.prefix().blocks()[0].cells[0]), "no sequence holds");
    EXPECT_MISUSE(h.prefix().publish(s->tokens, s->cells, 2), "more blocks than the sequence holds");
    const uint64_t second = hash_of(p, 2);
    EXPECT_MISUSE(h.prefix().touch(std::vector<uint64_t>{second}), "not a root-first chain");
    EXPECT_MISUSE(h.prefix().touch(std::vector<uint64_t>{12345}), "not cached");
    EXPECT_MISUSE(PrefixCache(h.pool(), 0), "at least one token");
    EXPECT_EQ(h.prefix().check_invariants(), "");
}

// File-local macros: the unity build compiles several test files as one.
#undef EXPECT_MISUSE

}  // namespace
}  // namespace kvrag::kvcache
