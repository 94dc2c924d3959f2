// Unit tests of the KV cache manager with no model: hand-made hyperparameters, an F32 cache so
// K/V contents are exact, and checks of the reference counts through stats() and
// check_invariants() after each step.
#include "kvcache/kv_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

#include "kvcache/kv_cache_test_util.h"

namespace kvrag::kvcache {
namespace {

constexpr int32_t kCells = 64;

model::ModelHParams tiny_hparams(int32_t n_rot = 8, bool neox = false) {
    model::ModelHParams hp = tiny_kv_hparams();
    hp.n_rot = n_rot;
    hp.rope_neox = neox;
    return hp;
}

std::shared_ptr<KvCache> make_cache(int32_t n_cells = kCells, const model::ModelHParams& hp = tiny_hparams(),
                                    GgmlType type = GgmlType::F32, bool prefix_reuse = true) {
    KvCacheConfig cfg;
    cfg.n_cells = n_cells;
    cfg.type = type;
    cfg.block_tokens = kBlock;
    cfg.prefix_reuse = prefix_reuse;
    auto r = KvCache::create(hp, cfg, model::KeyRotation(hp));
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : nullptr;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

Sequence admit_ok(KvCache& cache, const std::vector<int32_t>& prompt, int32_t max_tokens) {
    std::optional<Sequence> s = cache.admit(prompt, max_tokens);
    EXPECT_TRUE(s.has_value()) << "admit of " << prompt.size() << " tokens, max " << max_tokens << " refused: " << cache.stats().summary();
    return s ? std::move(*s) : Sequence();
}

// Admits `prompt` and appends the part not taken from the prefix cache, like the engine's prefill.
Sequence prefill(KvCache& cache, const std::vector<int32_t>& prompt, int32_t max_tokens) {
    Sequence s = admit_ok(cache, prompt, max_tokens);
    if (!s.valid()) return s;
    const std::vector<int32_t> rest(prompt.begin() + s.n_reused(), prompt.end());
    EXPECT_TRUE(cache.append(s, rest));
    EXPECT_EQ(s.tokens(), prompt);
    return s;
}

// Runs one request to completion: prefill, publish its prompt, release.
void run_request(KvCache& cache, const std::vector<int32_t>& prompt) {
    Sequence s = prefill(cache, prompt, static_cast<int32_t>(prompt.size()) + 2);
    cache.publish_prefix(s, static_cast<int32_t>(prompt.size()));
}

#define EXPECT_INVARIANTS(cache) EXPECT_EQ((cache).check_invariants(), "")

// Misuse stops the process (KVRAG_CHECK). Death tests re-run the binary for the one test
// ("threadsafe"), so threads other tests left behind cannot deadlock the forked child.
#define EXPECT_MISUSE(stmt, what) \
    do { \
        GTEST_FLAG_SET(death_test_style, "threadsafe"); \
        EXPECT_DEATH(stmt, "kvrag: internal error: .*check failed: .*" what); \
    } while (0)

// ---- K/V rows through the view (F32 cache) ----

float* k_row(KvCache& cache, int il, int32_t cell) {
    const model::KvLayerRef l = cache.view().layer(il);
    return reinterpret_cast<float*>(l.k + static_cast<size_t>(cell) * l.row_bytes);
}
float* v_row(KvCache& cache, int il, int32_t cell) {
    const model::KvLayerRef l = cache.view().layer(il);
    return reinterpret_cast<float*>(l.v + static_cast<size_t>(cell) * l.row_bytes);
}

// A distinct, non-trivial value for (layer, cell tag, K/V, element).
float pattern(int il, int32_t tag, int kv, int j) {
    return std::sin(0.37f * static_cast<float>(j + 1) + 1.3f * static_cast<float>(tag) + 0.7f * static_cast<float>(il) + 2.1f * static_cast<float>(kv)) +
           0.01f * static_cast<float>(j);
}

void write_rows(KvCache& cache, int32_t cell, int32_t tag) {
    const int32_t w = cache.geometry().n_embd_kv;
    for (int il = 0; il < cache.geometry().n_layer; ++il) {
        for (int j = 0; j < w; ++j) {
            k_row(cache, il, cell)[j] = pattern(il, tag, 0, j);
            v_row(cache, il, cell)[j] = pattern(il, tag, 1, j);
        }
    }
}

// Independent RoPE reference: rotates each head's pairs by delta * freq_scale * base^(-2i/n_rot),
// in double. Pairs are (2i, 2i+1), or (i, i + n_rot/2) for neox.
std::vector<float> ref_rotate(std::vector<float> row, int32_t head_dim, int32_t n_rot, double base, double delta,
                              bool neox, double freq_scale = 1.0) {
    const int32_t half = n_rot / 2;
    for (size_t h = 0; h < row.size() / static_cast<size_t>(head_dim); ++h) {
        float* x = row.data() + h * static_cast<size_t>(head_dim);
        for (int32_t i = 0; i < half; ++i) {
            const double theta = freq_scale * delta * std::pow(base, -2.0 * i / n_rot);
            const int32_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            const double x0 = x[a], x1 = x[b];
            x[a] = static_cast<float>(x0 * std::cos(theta) - x1 * std::sin(theta));
            x[b] = static_cast<float>(x0 * std::sin(theta) + x1 * std::cos(theta));
        }
    }
    return row;
}

std::vector<float> pattern_row(const KvCache& cache, int il, int32_t tag, int kv) {
    std::vector<float> r(static_cast<size_t>(cache.geometry().n_embd_kv));
    for (size_t j = 0; j < r.size(); ++j) r[j] = pattern(il, tag, kv, static_cast<int>(j));
    return r;
}

void expect_row_near(const float* got, const std::vector<float>& want, float tol, const std::string& what) {
    for (size_t j = 0; j < want.size(); ++j) {
        EXPECT_NEAR(got[j], want[j], tol) << what << " element " << j;
    }
}

// ================================================================ lifecycle

TEST(KvCacheTest, CreateRejectsBadConfig) {
    KvCacheConfig cfg;
    cfg.n_cells = 0;
    EXPECT_FALSE(KvCache::create(tiny_hparams(), cfg, model::KeyRotation(tiny_hparams())).ok());
    cfg.n_cells = 16;
    cfg.block_tokens = 0;
    EXPECT_FALSE(KvCache::create(tiny_hparams(), cfg, model::KeyRotation(tiny_hparams())).ok());
    cfg.block_tokens = 4;
    cfg.type = GgmlType::Q8_0;  // head_dim 8 is not a multiple of 32
    EXPECT_FALSE(KvCache::create(tiny_hparams(), cfg, model::KeyRotation(tiny_hparams())).ok());
}

TEST(KvCacheTest, FreshCacheIsEmptyAndSizedExactly) {
    auto cache = make_cache();
    const KvStats st = cache->stats();
    EXPECT_EQ(st.total, kCells);
    EXPECT_EQ(st.used, 0);
    EXPECT_EQ(st.free, kCells);
    EXPECT_EQ(st.reserved, 0);
    EXPECT_EQ(st.bytes_per_cell, size_t{2 * 2 * 16 * sizeof(float)});  // K+V, 2 layers, 16 floats
    EXPECT_EQ(st.bytes, st.bytes_per_cell * kCells);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, AdmitAppendReleaseReturnsToZero) {
    auto cache = make_cache();
    {
        Sequence s = admit_ok(*cache, toks(5), 12);
        EXPECT_EQ(s.n_tokens(), 0);
        EXPECT_EQ(s.reserved(), 12);
        EXPECT_EQ(cache->stats().reserved, 12);
        EXPECT_EQ(cache->stats().used, 0);
        ASSERT_TRUE(cache->append(s, toks(5)));
        EXPECT_EQ(s.n_tokens(), 5);
        EXPECT_EQ(s.reserved(), 7);
        EXPECT_EQ(s.tokens(), toks(5));
        std::set<int32_t> distinct(s.cells().begin(), s.cells().end());
        EXPECT_EQ(distinct.size(), 5u);
        EXPECT_EQ(cache->stats().used, 5);
        EXPECT_EQ(cache->stats().reserved, 7);
        ASSERT_TRUE(cache->append(s, toks(2, 7)));
        EXPECT_EQ(cache->stats().used, 7);
        EXPECT_INVARIANTS(*cache);
        s.release();
        EXPECT_FALSE(s.valid());
        EXPECT_EQ(s.n_tokens(), 0);
        s.release();  // a second release is a no-op
        EXPECT_EQ(cache->stats().used, 0);
        EXPECT_EQ(cache->stats().reserved, 0);
        EXPECT_EQ(cache->stats().n_sequences, 0);
    }
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, HandleFreesOnScopeExit) {
    auto cache = make_cache();
    {
        Sequence a = prefill(*cache, toks(10), 20);
        Sequence b = prefill(*cache, toks(3, 500), 3);
        EXPECT_EQ(cache->stats().used, 13);
        EXPECT_EQ(cache->stats().n_sequences, 2);
    }
    EXPECT_EQ(cache->stats().used, 0);
    EXPECT_EQ(cache->stats().reserved, 0);
    EXPECT_EQ(cache->stats().n_sequences, 0);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, HandleFreesOnMoveAssignment) {
    auto cache = make_cache();
    Sequence a = prefill(*cache, toks(10), 20);
    Sequence b = prefill(*cache, toks(6, 500), 8);
    const std::vector<int32_t> b_cells = b.cells();
    EXPECT_EQ(cache->stats().used, 16);
    a = std::move(b);  // a's 10 cells and 10 reserved go back; a now holds b's
    EXPECT_FALSE(b.valid());
    EXPECT_EQ(a.cells(), b_cells);
    EXPECT_EQ(cache->stats().used, 6);
    EXPECT_EQ(cache->stats().reserved, 2);
    EXPECT_EQ(cache->stats().n_sequences, 1);
    EXPECT_INVARIANTS(*cache);

    Sequence c(std::move(a));  // move construction transfers without freeing
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(cache->stats().used, 6);
    Sequence& self = c;
    c = std::move(self);  // self-move keeps the handle
    EXPECT_TRUE(c.valid());
    EXPECT_EQ(cache->stats().used, 6);
    c = Sequence();  // assigning an empty handle frees
    EXPECT_EQ(cache->stats().used, 0);
    EXPECT_EQ(cache->stats().reserved, 0);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, HandleFreesWhenExceptionUnwinds) {
    auto cache = make_cache();
    EXPECT_THROW(
        {
            Sequence s = prefill(*cache, toks(9), 30);
            std::optional<Sequence> f = cache->fork(s, 4);
            EXPECT_TRUE(f.has_value());
            EXPECT_EQ(cache->stats().used, 9);
            throw std::runtime_error("request cancelled");
        },
        std::runtime_error);
    EXPECT_EQ(cache->stats().used, 0);
    EXPECT_EQ(cache->stats().reserved, 0);
    EXPECT_EQ(cache->stats().n_sequences, 0);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, HandleKeepsCacheAlive) {
    auto cache = make_cache();
    Sequence s = prefill(*cache, toks(4), 4);
    std::weak_ptr<KvCache> weak = cache;
    cache.reset();
    EXPECT_FALSE(weak.expired());
    s.release();
    EXPECT_TRUE(weak.expired());
}

// ================================================================ reservations

TEST(KvCacheTest, ReservationProtectsAdmittedSequence) {
    auto cache = make_cache();
    Sequence a = admit_ok(*cache, toks(4), 40);
    // 24 cells are left for everyone else.
    Sequence b = admit_ok(*cache, toks(2, 300), 4);
    ASSERT_TRUE(cache->append(b, toks(4, 300)));  // b's own reservation
    ASSERT_TRUE(cache->append(b, toks(20, 400))); // beyond it: 20 of the 24 unreserved cells
    EXPECT_FALSE(cache->append(b, toks(1, 900)));  // the rest belongs to a
    EXPECT_EQ(b.n_tokens(), 24);
    EXPECT_EQ(cache->stats().free, 40);
    EXPECT_EQ(cache->stats().reserved, 40);
    // a can still grow to its whole worst case, in pieces.
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(cache->append(a, toks(4, 10 * i))) << "piece " << i;
    EXPECT_EQ(a.n_tokens(), 40);
    EXPECT_EQ(a.reserved(), 0);
    EXPECT_EQ(cache->stats().free, 0);
    EXPECT_EQ(cache->stats().reserved, 0);
    EXPECT_FALSE(cache->append(a, toks(1)));
    EXPECT_EQ(a.n_tokens(), 40);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, AdmitThatDoesNotFitLeavesNoState) {
    auto cache = make_cache();
    Sequence a = prefill(*cache, toks(10), 50);  // 10 used, 40 reserved, 14 available
    const KvStats before = cache->stats();
    EXPECT_FALSE(cache->admit(toks(3, 500), 15).has_value());
    EXPECT_FALSE(cache->admit(toks(3, 500), kCells + 1).has_value());  // can never fit
    const KvStats after = cache->stats();
    EXPECT_EQ(after.used, before.used);
    EXPECT_EQ(after.reserved, before.reserved);
    EXPECT_EQ(after.n_sequences, before.n_sequences);
    EXPECT_EQ(after.admissions, before.admissions);
    EXPECT_EQ(after.shared, 0);
    EXPECT_INVARIANTS(*cache);
    Sequence b = admit_ok(*cache, toks(3, 500), 14);  // exactly what is left
    EXPECT_TRUE(cache->append(b, toks(14, 500)));
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, RefusedAdmitWithReusedPrefixLeavesNoState) {
    auto cache = make_cache();
    const std::vector<int32_t> prompt = toks(9);
    run_request(*cache, prompt);
    run_request(*cache, prompt);  // caches 2 blocks
    ASSERT_EQ(cache->stats().cached, 8);
    Sequence hog = admit_ok(*cache, toks(1, 900), kCells - 8 - 4);  // 4 available + 8 evictable
    const KvStats before = cache->stats();
    // Reusing 8 cells, it needs 60 - 8 = 52 more, but the reused blocks stop being evictable.
    EXPECT_FALSE(cache->admit(prompt, 60).has_value());
    const KvStats after = cache->stats();
    EXPECT_EQ(after.used, before.used);
    EXPECT_EQ(after.shared, 0);
    EXPECT_EQ(after.reserved, before.reserved);
    EXPECT_EQ(after.prefix_hit_tokens, before.prefix_hit_tokens);
    EXPECT_EQ(after.prefix_blocks, 2);
    EXPECT_INVARIANTS(*cache);
    // Reusing 8 cells and needing 4 more fits.
    Sequence s = admit_ok(*cache, prompt, 12);
    EXPECT_EQ(s.n_reused(), 8);
    EXPECT_TRUE(cache->append(s, toks(4, 8)));
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, AppendBeyondReservationNeedsFreeCells) {
    auto cache = make_cache(16);
    Sequence a = admit_ok(*cache, toks(2), 2);
    Sequence b = admit_ok(*cache, toks(2, 50), 6);
    ASSERT_TRUE(cache->append(a, toks(2)));
    ASSERT_TRUE(cache->append(a, toks(8, 10)));  // 8 unreserved cells left
    const std::vector<int32_t> cells = a.cells();
    EXPECT_FALSE(cache->append(a, toks(1, 40)));  // the 6 free cells are b's
    EXPECT_FALSE(cache->append(a, toks(3, 40)));
    EXPECT_EQ(a.cells(), cells);  // unchanged on failure
    EXPECT_EQ(a.n_tokens(), 10);
    b.release();
    EXPECT_TRUE(cache->append(a, toks(6, 40)));
    EXPECT_FALSE(cache->append(a, toks(1, 60)));
    EXPECT_EQ(cache->stats().free, 0);
    EXPECT_EQ(cache->stats().peak_used, 16);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, FragmentationNeverBlocksAllocation) {
    auto cache = make_cache();
    std::vector<Sequence> seqs;
    for (int i = 0; i < 16; ++i) seqs.push_back(prefill(*cache, toks(4, 1000 + 10 * i), 4));
    EXPECT_EQ(cache->stats().free, 0);
    std::set<int32_t> freed;
    for (int i = 0; i < 16; i += 2) {
        freed.insert(seqs[static_cast<size_t>(i)].cells().begin(), seqs[static_cast<size_t>(i)].cells().end());
        seqs[static_cast<size_t>(i)].release();
    }
    EXPECT_EQ(cache->stats().free, 32);
    // One sequence needing all 32 scattered free cells.
    Sequence big = prefill(*cache, toks(32, 5000), 32);
    ASSERT_EQ(big.n_tokens(), 32);
    EXPECT_EQ(std::set<int32_t>(big.cells().begin(), big.cells().end()), freed);
    EXPECT_EQ(cache->stats().free, 0);
    EXPECT_INVARIANTS(*cache);
    seqs.clear();
    big.release();
    EXPECT_EQ(cache->stats().used, 0);
}

// ================================================================ fork and truncate

TEST(KvCacheTest, ForkSharesCellsAndReleasesIndependently) {
    auto cache = make_cache();
    Sequence parent = prefill(*cache, toks(10), 12);
    std::optional<Sequence> fork = cache->fork(parent, 5);
    ASSERT_TRUE(fork.has_value());
    EXPECT_NE(fork->id(), parent.id());
    EXPECT_EQ(fork->cells(), parent.cells());
    EXPECT_EQ(fork->tokens(), parent.tokens());
    EXPECT_EQ(fork->reserved(), 5);
    KvStats st = cache->stats();
    EXPECT_EQ(st.used, 10);
    EXPECT_EQ(st.shared, 10);
    EXPECT_EQ(st.reserved, 2 + 5);
    EXPECT_INVARIANTS(*cache);

    // Both grow on their own cells.
    ASSERT_TRUE(cache->append(parent, toks(2, 50)));
    ASSERT_TRUE(cache->append(*fork, toks(3, 60)));
    EXPECT_EQ(cache->stats().used, 15);
    EXPECT_EQ(cache->stats().shared, 10);
    for (int32_t p = 10; p < 12; ++p) {
        EXPECT_EQ(std::count(fork->cells().begin(), fork->cells().end(), parent.cells()[static_cast<size_t>(p)]), 0);
    }

    const std::vector<int32_t> fork_cells = fork->cells();
    parent.release();
    st = cache->stats();
    EXPECT_EQ(st.used, 13);
    EXPECT_EQ(st.shared, 0);
    EXPECT_EQ(fork->cells(), fork_cells);
    EXPECT_INVARIANTS(*cache);
    fork.reset();
    EXPECT_EQ(cache->stats().used, 0);
    EXPECT_EQ(cache->stats().reserved, 0);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, ForkRefusedWhenReservationUnavailable) {
    auto cache = make_cache(16);
    Sequence parent = prefill(*cache, toks(10), 12);  // 10 used, 2 reserved, 4 available
    EXPECT_FALSE(cache->fork(parent, 5).has_value());
    EXPECT_MISUSE(cache->fork(Sequence(), 0), "sequence is empty");
    EXPECT_EQ(cache->stats().shared, 0);
    EXPECT_EQ(cache->stats().n_sequences, 1);
    std::optional<Sequence> f = cache->fork(parent, 4);
    ASSERT_TRUE(f.has_value());
    EXPECT_TRUE(cache->append(*f, toks(4, 70)));
    EXPECT_TRUE(cache->append(parent, toks(2, 80)));
    EXPECT_EQ(cache->stats().free, 0);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, TruncateDropsTailAndKeepsWorstCase) {
    auto cache = make_cache(16);
    Sequence s = prefill(*cache, toks(10), 12);
    const std::vector<int32_t> cells = s.cells();
    cache->truncate(s, 6);
    EXPECT_EQ(s.n_tokens(), 6);
    EXPECT_EQ(s.tokens(), toks(6));
    EXPECT_EQ(s.cells(), std::vector<int32_t>(cells.begin(), cells.begin() + 6));
    EXPECT_EQ(s.reserved(), 6);  // it may grow back to 12
    EXPECT_EQ(cache->stats().used, 6);
    EXPECT_EQ(cache->stats().reserved, 6);
    EXPECT_INVARIANTS(*cache);
    cache->truncate(s, 8);  // longer than the sequence: no-op
    EXPECT_EQ(s.n_tokens(), 6);
    ASSERT_TRUE(cache->append(s, toks(6, 200)));
    EXPECT_EQ(s.n_tokens(), 12);
    cache->truncate(s, -3);  // clamped to 0
    EXPECT_EQ(s.n_tokens(), 0);
    EXPECT_EQ(cache->stats().used, 0);
    EXPECT_EQ(cache->stats().reserved, 12);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, TruncateOfForkKeepsParentCells) {
    auto cache = make_cache();
    Sequence parent = prefill(*cache, toks(8), 8);
    std::optional<Sequence> f = cache->fork(parent, 4);
    ASSERT_TRUE(f.has_value());
    ASSERT_TRUE(cache->append(*f, toks(4, 40)));
    cache->truncate(*f, 5);
    EXPECT_EQ(f->n_tokens(), 5);
    EXPECT_EQ(parent.n_tokens(), 8);
    EXPECT_EQ(cache->stats().used, 8);    // the fork's 4 own cells went back; the shared ones stay
    EXPECT_EQ(cache->stats().shared, 5);
    EXPECT_INVARIANTS(*cache);
}

// BUG (kv_cache.cpp truncate, lines 300-301): truncate adds every dropped position to the
// reservation, but positions whose cells someone else still holds (a fork's parent, a live
// reuser of a prefix block) free no cell. The cache then promises cells it does not have.
TEST(KvCacheTest, TruncateOfSharedCellsDoesNotOverReserve) {
    auto cache = make_cache();
    Sequence a = prefill(*cache, toks(32), 32);  // 32 used, 0 reserved
    std::optional<Sequence> b = cache->fork(a, 0);
    ASSERT_TRUE(b.has_value());
    Sequence c = admit_ok(*cache, toks(1, 900), 32);  // reserves the 32 free cells
    cache->truncate(*b, 0);  // frees nothing: every cell b dropped is still a's
    const KvStats st = cache->stats();
    EXPECT_LE(st.reserved, st.free + st.cached) << st.summary();
    EXPECT_INVARIANTS(*cache);
    // Every reservation must still be honoured.
    ASSERT_TRUE(cache->append(c, toks(32, 900)));
    const int32_t r = b->reserved();
    if (r > 0) {
        EXPECT_TRUE(cache->append(*b, toks(r, 700))) << "b was promised " << r << " cells; " << cache->stats().summary();
    }
}

// ================================================================ prefix reuse

TEST(KvCacheTest, PrefixKeptOnlyOnceSeenInTwoPrompts) {
    auto cache = make_cache();
    const std::vector<int32_t> prompt = toks(10);  // blocks [0,4) [4,8) and 2 tokens

    run_request(*cache, prompt);  // 1st request: nothing is kept
    KvStats st = cache->stats();
    EXPECT_EQ(st.used, 0);
    EXPECT_EQ(st.cached, 0);
    EXPECT_EQ(st.prefix_blocks, 0);
    EXPECT_EQ(cache->peek_prefix(prompt), 0);

    std::vector<int32_t> cached_cells;
    {
        Sequence s2 = prefill(*cache, prompt, 12);
        EXPECT_EQ(s2.n_reused(), 0);
        cached_cells.assign(s2.cells().begin(), s2.cells().begin() + 8);
        cache->publish_prefix(s2, 10);  // 2nd request: both full blocks are kept
        st = cache->stats();
        EXPECT_EQ(st.cached, 8);
        EXPECT_EQ(st.prefix_blocks, 2);
        EXPECT_EQ(st.shared, 8);
        EXPECT_EQ(st.used, 10);
        EXPECT_EQ(st.free, kCells - 10);
        cache->publish_prefix(s2, 10);  // a second publish of the same sequence changes nothing
        EXPECT_EQ(cache->stats().cached, 8);
        EXPECT_INVARIANTS(*cache);
    }
    st = cache->stats();
    EXPECT_EQ(st.used, 0);  // no sequence holds a cell, but the cached blocks outlive the request
    EXPECT_EQ(st.cached, 8);
    EXPECT_EQ(st.free, kCells - 8);
    EXPECT_EQ(st.shared, 0);
    EXPECT_EQ(st.prefix_hits, 0u);
    EXPECT_EQ(cache->peek_prefix(prompt), 8);

    // 3rd request: admission takes the cached blocks.
    Sequence s3 = admit_ok(*cache, prompt, 14);
    EXPECT_EQ(s3.n_reused(), 8);
    EXPECT_EQ(s3.n_tokens(), 8);
    EXPECT_EQ(s3.cells(), cached_cells);
    EXPECT_EQ(s3.tokens(), toks(8));
    EXPECT_EQ(s3.reserved(), 14 - 8);
    st = cache->stats();
    EXPECT_EQ(st.prefix_hit_tokens, 8u);
    EXPECT_EQ(st.prefix_hits, 1u);
    EXPECT_EQ(st.used, 8);
    EXPECT_EQ(st.shared, 8);
    EXPECT_EQ(st.reserved, 6);
    ASSERT_TRUE(cache->append(s3, toks(2, 108)));
    EXPECT_EQ(s3.tokens(), prompt);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, PrefixReuseStopsAtFirstDifferingBlock) {
    auto cache = make_cache();
    const std::vector<int32_t> prompt = toks(13);  // 3 full blocks and 1 token
    run_request(*cache, prompt);
    run_request(*cache, prompt);
    ASSERT_EQ(cache->stats().prefix_blocks, 3);

    std::vector<int32_t> other = prompt;
    other[5] = 9999;  // inside block 1
    EXPECT_EQ(cache->peek_prefix(other), 4);
    Sequence s = admit_ok(*cache, other, 20);
    EXPECT_EQ(s.n_reused(), 4);
    EXPECT_EQ(s.tokens(), toks(4));

    other = prompt;
    other[0] = 9999;  // block 0 differs: nothing, even though later blocks match
    EXPECT_EQ(cache->peek_prefix(other), 0);

    other = prompt;
    other[12] = 9999;  // only the uncached tail differs
    EXPECT_EQ(cache->peek_prefix(other), 12);
    EXPECT_EQ(cache->stats().prefix_hit_tokens, 4u);
}

TEST(KvCacheTest, PrefixReuseLeavesOneTokenToCompute) {
    auto cache = make_cache();
    run_request(*cache, toks(13));
    run_request(*cache, toks(13));
    ASSERT_EQ(cache->stats().prefix_blocks, 3);
    EXPECT_EQ(cache->peek_prefix(toks(12)), 8);  // 12 = 3 whole blocks: the last is recomputed
    EXPECT_EQ(cache->peek_prefix(toks(9)), 8);
    EXPECT_EQ(cache->peek_prefix(toks(8)), 4);
    EXPECT_EQ(cache->peek_prefix(toks(5)), 4);
    EXPECT_EQ(cache->peek_prefix(toks(4)), 0);
    EXPECT_EQ(cache->peek_prefix(toks(1)), 0);
    EXPECT_EQ(cache->peek_prefix(std::vector<int32_t>{}), 0);
    Sequence s = admit_ok(*cache, toks(12), 12);
    EXPECT_EQ(s.n_reused(), 8);
    EXPECT_TRUE(cache->append(s, toks(4, 108)));
    Sequence e = admit_ok(*cache, std::vector<int32_t>{}, 0);
    EXPECT_EQ(e.n_reused(), 0);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, PrefixReuseDisabled) {
    auto cache = make_cache(kCells, tiny_hparams(), GgmlType::F32, /*prefix_reuse=*/false);
    run_request(*cache, toks(9));
    run_request(*cache, toks(9));
    EXPECT_EQ(cache->stats().prefix_blocks, 0);
    EXPECT_EQ(cache->stats().used, 0);
    EXPECT_EQ(cache->peek_prefix(toks(9)), 0);
}

TEST(KvCacheTest, AdmitCanSkipPrefixReuse) {
    auto cache = make_cache();
    run_request(*cache, toks(9));
    run_request(*cache, toks(9));
    ASSERT_EQ(cache->peek_prefix(toks(9)), 8);
    Sequence s = admit_ok(*cache, toks(9), 9);
    std::optional<Sequence> own = cache->admit(toks(9), 9, /*reuse_prefix=*/false);
    ASSERT_TRUE(own.has_value());
    EXPECT_EQ(own->n_reused(), 0);
    EXPECT_EQ(own->n_tokens(), 0);
    EXPECT_EQ(own->reserved(), 9);
    ASSERT_TRUE(cache->append(*own, toks(9)));
    EXPECT_EQ(cache->stats().prefix_hit_tokens, 8u);  // only s's reuse
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, PublishOnlyFullPromptBlocks) {
    auto cache = make_cache();
    const std::vector<int32_t> prompt = toks(7);  // one full block and 3 tokens
    for (int r = 0; r < 2; ++r) {
        Sequence s = prefill(*cache, prompt, 20);
        ASSERT_TRUE(cache->append(s, toks(6, 500)));  // generated tokens are never published
        cache->publish_prefix(s, 7);
    }
    EXPECT_EQ(cache->stats().prefix_blocks, 1);
    EXPECT_EQ(cache->stats().cached, 4);
    EXPECT_EQ(cache->stats().used, 0);
    EXPECT_EQ(cache->stats().free, kCells - 4);
    cache->clear_prefix_cache();
    EXPECT_EQ(cache->stats().free, kCells);
    EXPECT_EQ(cache->stats().cached, 0);
    EXPECT_EQ(cache->stats().prefix_blocks, 0);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, ClearPrefixCacheKeepsBlocksInUse) {
    auto cache = make_cache();
    run_request(*cache, toks(9));
    run_request(*cache, toks(9));
    Sequence s = admit_ok(*cache, toks(9), 9);
    ASSERT_EQ(s.n_reused(), 8);
    cache->clear_prefix_cache();
    EXPECT_EQ(cache->stats().prefix_blocks, 2);  // s still holds them
    EXPECT_EQ(s.n_tokens(), 8);
    s.release();
    cache->clear_prefix_cache();
    EXPECT_EQ(cache->stats().prefix_blocks, 0);
    EXPECT_EQ(cache->stats().used, 0);
    EXPECT_INVARIANTS(*cache);
}

// ================================================================ eviction

TEST(KvCacheTest, EvictsLeastRecentlyUsedBlockFirst) {
    auto cache = make_cache(32);
    const std::vector<int32_t> p = toks(5, 100), q = toks(5, 200);
    run_request(*cache, p);
    run_request(*cache, p);
    run_request(*cache, q);
    run_request(*cache, q);
    ASSERT_EQ(cache->stats().prefix_blocks, 2);
    { Sequence touch = admit_ok(*cache, p, 5); }  // p is now the more recent
    EXPECT_EQ(cache->stats().cached, 8);
    // 24 free cells: needing 28 evicts exactly one block, the older (q).
    Sequence big = admit_ok(*cache, toks(1, 900), 28);
    ASSERT_TRUE(cache->append(big, toks(24, 900)));
    EXPECT_EQ(cache->stats().evictions, 0u);  // the free cells go first
    ASSERT_TRUE(cache->append(big, toks(4, 950)));
    KvStats st = cache->stats();
    EXPECT_EQ(st.evictions, 1u);
    EXPECT_EQ(st.prefix_blocks, 1);
    EXPECT_EQ(cache->peek_prefix(p), 4);
    EXPECT_EQ(cache->peek_prefix(q), 0);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, EvictsLeafBlocksBeforeTheirParents) {
    auto cache = make_cache(32);
    const std::vector<int32_t> prompt = toks(9);  // chain of 2 blocks, used at the same time
    run_request(*cache, prompt);
    run_request(*cache, prompt);
    ASSERT_EQ(cache->stats().prefix_blocks, 2);
    Sequence big = admit_ok(*cache, toks(1, 900), 28);
    ASSERT_TRUE(cache->append(big, toks(28, 900)));
    EXPECT_EQ(cache->stats().evictions, 1u);
    EXPECT_EQ(cache->peek_prefix(prompt), 4);  // the first block stays, the second went
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, NeverEvictsBlocksALiveSequenceHolds) {
    auto cache = make_cache(32);
    const std::vector<int32_t> p = toks(9, 100), q = toks(9, 200);
    run_request(*cache, p);
    run_request(*cache, p);
    run_request(*cache, q);
    run_request(*cache, q);
    Sequence user = admit_ok(*cache, p, 9);  // holds p's blocks
    ASSERT_EQ(user.n_reused(), 8);
    // 16 free, q's 8 evictable; p's 8 are held. 25 cannot be had.
    EXPECT_FALSE(cache->admit(toks(1, 900), 25).has_value());
    Sequence big = admit_ok(*cache, toks(1, 900), 23);  // 24 available minus user's 1 reserved
    ASSERT_TRUE(cache->append(big, toks(23, 900)));
    EXPECT_EQ(cache->peek_prefix(p), 8);
    EXPECT_EQ(cache->peek_prefix(q), 0);
    EXPECT_EQ(user.tokens(), toks(8, 100));
    ASSERT_TRUE(cache->append(user, toks(1, 108)));
    EXPECT_INVARIANTS(*cache);
}

// BUG (kv_cache.cpp evictable_cells_locked, lines 134-142): a block counts as evictable when its
// own cells are held only by the cache, even when it has a child block that a live sequence
// holds, so it cannot be evicted (evict_one_locked only takes leaves). That happens when a
// sequence that computed a prefix itself publishes it after the parent block was cached from
// another sequence's cells (publish_prefix lines 382-384 accept the existing parent with
// different cells and then hang the new child under it). Admission then reserves cells that do
// not exist and an admitted sequence's append within its reservation fails.
TEST(KvCacheTest, NonLeafBlockUnderLiveChildIsNotCountedEvictable) {
    auto cache = make_cache(32);
    const std::vector<int32_t> a = toks(4, 100), b = toks(4, 200);
    const std::vector<int32_t> ab_x = concat(concat(a, b), {7}), a_y = concat(a, {8});
    run_request(*cache, ab_x);                  // seen: A once, AB once
    Sequence s2 = prefill(*cache, ab_x, 9);     // computes A and B on its own cells
    run_request(*cache, a_y);                   // seen A twice: A cached on s3's cells
    ASSERT_EQ(cache->stats().prefix_blocks, 1);
    // AB is seen twice, but s2 holds its own copy of A, not the cached one: hanging AB (on s2's
    // cells) below the cached A would let a live child pin its parent, so publishing stops.
    cache->publish_prefix(s2, 9);
    KvStats st = cache->stats();
    ASSERT_EQ(st.prefix_blocks, 1);
    EXPECT_EQ(st.used, 9);
    EXPECT_EQ(st.cached, 4);
    EXPECT_EQ(st.free, 19);
    EXPECT_INVARIANTS(*cache);
    // 19 cells are free; block A cannot be evicted while s2 holds its child AB.
    std::optional<Sequence> d = cache->admit(toks(1, 900), 23);
    if (d) {
        EXPECT_TRUE(cache->append(*d, toks(23, 900))) << "admitted with 23 reserved but could not append them: " << cache->stats().summary();
    }
    EXPECT_INVARIANTS(*cache);
}

// ================================================================ stats

TEST(KvCacheTest, StatsCountEveryKindOfCell) {
    auto cache = make_cache();
    Sequence a = prefill(*cache, toks(10), 20);
    std::optional<Sequence> b = cache->fork(a, 5);
    ASSERT_TRUE(b.has_value());
    KvStats st = cache->stats();
    EXPECT_EQ(st.total, kCells);
    EXPECT_EQ(st.used, 10);
    EXPECT_EQ(st.free, kCells - 10);
    EXPECT_EQ(st.shared, 10);
    EXPECT_EQ(st.cached, 0);
    EXPECT_EQ(st.reserved, 15);
    EXPECT_EQ(st.n_sequences, 2);
    EXPECT_EQ(st.admissions, 2u);
    ASSERT_EQ(st.sequences.size(), 2u);
    EXPECT_EQ(st.sequences[0].seq_id, a.id());
    EXPECT_EQ(st.sequences[0].n_tokens, 10);
    EXPECT_EQ(st.sequences[0].n_shared, 10);
    EXPECT_EQ(st.sequences[0].reserved, 10);
    EXPECT_EQ(st.sequences[1].seq_id, b->id());
    EXPECT_EQ(st.sequences[1].reserved, 5);

    ASSERT_TRUE(cache->append(*b, toks(3, 50)));
    st = cache->stats();
    EXPECT_EQ(st.used, 13);
    EXPECT_EQ(st.peak_used, 13);
    EXPECT_EQ(st.reserved, 12);
    EXPECT_EQ(st.sequences[1].n_tokens, 13);
    EXPECT_EQ(st.sequences[1].n_shared, 10);
    EXPECT_EQ(st.used + st.free, st.total);

    a.release();
    st = cache->stats();
    EXPECT_EQ(st.used, 13);
    EXPECT_EQ(st.shared, 0);
    EXPECT_EQ(st.n_sequences, 1);
    EXPECT_EQ(st.sequences[0].n_shared, 0);
    b.reset();
    st = cache->stats();
    EXPECT_EQ(st.used, 0);
    EXPECT_EQ(st.peak_used, 13);  // the peak survives
    EXPECT_TRUE(st.sequences.empty());

    // Cached cells count as used and shared while a sequence also holds them.
    run_request(*cache, toks(9, 300));
    Sequence c = prefill(*cache, toks(9, 300), 9);
    cache->publish_prefix(c, 9);
    st = cache->stats();
    EXPECT_EQ(st.cached, 8);
    EXPECT_EQ(st.used, 9);
    EXPECT_EQ(st.free, kCells - 9);
    EXPECT_EQ(st.shared, 8);
    EXPECT_EQ(st.sequences[0].n_shared, 8);
    c.release();
    st = cache->stats();
    EXPECT_EQ(st.used, 0);  // used counts cells of live sequences; cached ones are apart
    EXPECT_EQ(st.cached, 8);
    EXPECT_EQ(st.free, kCells - 8);
    EXPECT_EQ(st.shared, 0);
    EXPECT_EQ(st.peak_used, 13);

    cache->note_rejection(RejectReason::busy);
    cache->note_rejection(RejectReason::busy);
    cache->note_truncation();
    st = cache->stats();
    EXPECT_EQ(st.rejections[static_cast<int>(RejectReason::busy)], 2u);
    EXPECT_EQ(st.rejections[static_cast<int>(RejectReason::never_fits)], 0u);
    EXPECT_EQ(st.truncations, 1u);
    EXPECT_NE(st.summary().find("rejected_busy=2"), std::string::npos) << st.summary();
    EXPECT_NE(st.summary().find("cached=8"), std::string::npos) << st.summary();
}

// ================================================================ context shift

struct ShiftCase {
    int32_t n_rot;
    bool neox;
};

class KvCacheShiftTest : public ::testing::TestWithParam<ShiftCase> {};

TEST_P(KvCacheShiftTest, DropsMovesAndReRotatesKeys) {
    const ShiftCase pc = GetParam();
    const model::ModelHParams hp = tiny_hparams(pc.n_rot, pc.neox);
    auto cache = make_cache(kCells, hp);
    Sequence s = prefill(*cache, toks(10), 16);
    const std::vector<int32_t> before = s.cells();
    for (int32_t p = 0; p < 10; ++p) write_rows(*cache, before[static_cast<size_t>(p)], p);

    const int32_t n_keep = 2, n_discard = 3;
    ASSERT_TRUE(cache->shift(s, n_keep, n_discard));
    EXPECT_EQ(cache->stats().shifts, 1u);
    ASSERT_EQ(s.n_tokens(), 7);
    std::vector<int32_t> want_tokens = toks(2);
    want_tokens = concat(want_tokens, toks(5, 105));
    EXPECT_EQ(s.tokens(), want_tokens);
    EXPECT_EQ(cache->stats().used, 7);  // the 3 dropped cells are free
    EXPECT_INVARIANTS(*cache);

    for (int32_t p = 0; p < 7; ++p) {
        const int32_t old_pos = p < n_keep ? p : p + n_discard;
        const int32_t cell = s.cells()[static_cast<size_t>(p)];
        EXPECT_EQ(cell, before[static_cast<size_t>(old_pos)]) << "unshared cells move without a copy";
        for (int il = 0; il < hp.n_layer; ++il) {
            const std::string what = "pos " + std::to_string(p) + " layer " + std::to_string(il);
            std::vector<float> k_want = pattern_row(*cache, il, old_pos, 0);
            if (p >= n_keep) k_want = ref_rotate(k_want, hp.head_dim, hp.n_rot, hp.rope_freq_base, -n_discard, pc.neox);
            expect_row_near(k_row(*cache, il, cell), k_want, 1e-5f, "K " + what);
            expect_row_near(v_row(*cache, il, cell), pattern_row(*cache, il, old_pos, 1), 0.0f, "V " + what);
        }
    }
    // The reservation covers growing back by n_discard.
    EXPECT_GE(s.reserved(), 6 + n_discard);
    ASSERT_TRUE(cache->append(s, toks(9, 400)));
    EXPECT_INVARIANTS(*cache);
}

INSTANTIATE_TEST_SUITE_P(KvCacheRope, KvCacheShiftTest,
                         ::testing::Values(ShiftCase{8, false}, ShiftCase{8, true}, ShiftCase{4, false}, ShiftCase{4, true}),
                         [](const ::testing::TestParamInfo<ShiftCase>& i) {
                             return std::string(i.param.neox ? "neox" : "norm") + "_rot" + std::to_string(i.param.n_rot);
                         });

TEST(KvCacheTest, ShiftRotationComposesWithPosition) {
    // A key written at position p and shifted by -d must equal the reference rotation of the
    // unrotated key by p - d (RoPE angles are linear in the position).
    const model::ModelHParams hp = tiny_hparams();
    auto cache = make_cache(kCells, hp);
    Sequence s = prefill(*cache, toks(20), 20);
    const int32_t w = cache->geometry().n_embd_kv;
    std::vector<float> raw(static_cast<size_t>(w));
    for (int j = 0; j < w; ++j) raw[static_cast<size_t>(j)] = 0.5f + 0.1f * static_cast<float>(j);
    for (int32_t p = 0; p < 20; ++p) {
        const std::vector<float> k = ref_rotate(raw, hp.head_dim, hp.n_rot, hp.rope_freq_base, p, false);
        std::memcpy(k_row(*cache, 0, s.cells()[static_cast<size_t>(p)]), k.data(), k.size() * sizeof(float));
    }
    ASSERT_TRUE(cache->shift(s, 4, 7));
    ASSERT_TRUE(cache->shift(s, 0, 2));
    ASSERT_EQ(s.n_tokens(), 11);
    for (int32_t p = 0; p < 11; ++p) {
        const std::vector<float> want = ref_rotate(raw, hp.head_dim, hp.n_rot, hp.rope_freq_base, p, false);
        expect_row_near(k_row(*cache, 0, s.cells()[static_cast<size_t>(p)]), want, 1e-4f, "pos " + std::to_string(p));
    }
}

// The rotation is the model's: with rope frequency factors (llama-3 style rope_freqs) a moved
// key must land where the forward pass would have put it, theta_i = pos * base^(-2i/n_rot) / f_i.
TEST(KvCacheTest, ShiftUsesTheModelsFrequencyFactors) {
    const model::ModelHParams hp = tiny_hparams();
    const std::vector<float> factors = {1.0f, 2.0f, 4.0f, 8.0f};  // (n_rot / 2)
    KvCacheConfig cfg;
    cfg.n_cells = kCells;
    cfg.type = GgmlType::F32;
    cfg.block_tokens = kBlock;
    auto made = KvCache::create(hp, cfg, model::KeyRotation(hp, factors));
    ASSERT_TRUE(made.ok());
    std::shared_ptr<KvCache> cache = *made;
    auto rotate = [&](std::vector<float> row, double pos) {
        for (size_t h = 0; h < row.size() / static_cast<size_t>(hp.head_dim); ++h) {
            float* x = row.data() + h * static_cast<size_t>(hp.head_dim);
            for (int32_t i = 0; i < hp.n_rot / 2; ++i) {
                const double theta = pos * std::pow(static_cast<double>(hp.rope_freq_base), -2.0 * i / hp.n_rot) / factors[static_cast<size_t>(i)];
                const double x0 = x[2 * i], x1 = x[2 * i + 1];
                x[2 * i] = static_cast<float>(x0 * std::cos(theta) - x1 * std::sin(theta));
                x[2 * i + 1] = static_cast<float>(x0 * std::sin(theta) + x1 * std::cos(theta));
            }
        }
        return row;
    };
    Sequence s = prefill(*cache, toks(12), 12);
    std::vector<float> raw(static_cast<size_t>(cache->geometry().n_embd_kv));
    for (size_t j = 0; j < raw.size(); ++j) raw[j] = 0.3f + 0.05f * static_cast<float>(j);
    for (int32_t p = 0; p < 12; ++p) {
        const std::vector<float> k = rotate(raw, p);
        std::memcpy(k_row(*cache, 1, s.cells()[static_cast<size_t>(p)]), k.data(), k.size() * sizeof(float));
    }
    ASSERT_TRUE(cache->shift(s, 2, 5));
    for (int32_t p = 0; p < 7; ++p) {
        expect_row_near(k_row(*cache, 1, s.cells()[static_cast<size_t>(p)]), rotate(raw, p), 1e-4f, "pos " + std::to_string(p));
    }
    EXPECT_INVARIANTS(*cache);
}

// Sliding-window models (gemma3) rotate local layers with their own base: a shift must move
// each layer's keys with that layer's frequencies.
TEST(KvCacheTest, ShiftUsesEachLayersRopeBaseOnSlidingWindowModels) {
    model::ModelHParams hp = tiny_hparams();
    hp.rope_freq_base = 1e6f;        // global layer 1
    hp.rope_freq_base_swa = 10000.0f;  // local layer 0
    hp.n_swa = 4;
    hp.swa_pattern = 2;
    ASSERT_TRUE(hp.is_swa(0));
    ASSERT_FALSE(hp.is_swa(1));
    auto cache = make_cache(kCells, hp);
    Sequence s = prefill(*cache, toks(12), 12);
    std::vector<float> raw(static_cast<size_t>(cache->geometry().n_embd_kv));
    for (size_t j = 0; j < raw.size(); ++j) raw[j] = 0.4f - 0.03f * static_cast<float>(j);
    for (int il = 0; il < 2; ++il) {
        for (int32_t p = 0; p < 12; ++p) {
            const std::vector<float> k = ref_rotate(raw, hp.head_dim, hp.n_rot, hp.rope_base(il), p, false);
            std::memcpy(k_row(*cache, il, s.cells()[static_cast<size_t>(p)]), k.data(), k.size() * sizeof(float));
        }
    }
    ASSERT_TRUE(cache->shift(s, 2, 5));
    for (int il = 0; il < 2; ++il) {
        for (int32_t p = 0; p < 7; ++p) {
            expect_row_near(k_row(*cache, il, s.cells()[static_cast<size_t>(p)]),
                            ref_rotate(raw, hp.head_dim, hp.n_rot, hp.rope_base(il), p, false), 1e-4f,
                            "layer " + std::to_string(il) + " pos " + std::to_string(p));
        }
    }
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, ShiftRejectsBadRanges) {
    auto cache = make_cache();
    Sequence s = prefill(*cache, toks(10), 10);
    const std::vector<int32_t> cells = s.cells();
    EXPECT_MISUSE(cache->shift(s, -1, 2), "shift range");
    EXPECT_MISUSE(cache->shift(s, 2, 0), "shift range");
    EXPECT_MISUSE(cache->shift(s, 5, 6), "shift range");
    Sequence empty;
    EXPECT_MISUSE(cache->shift(empty, 0, 1), "sequence is empty");
    EXPECT_EQ(s.cells(), cells);
    EXPECT_EQ(cache->stats().shifts, 0u);
    EXPECT_TRUE(cache->shift(s, 5, 5));  // dropping the whole tail is allowed
    EXPECT_EQ(s.n_tokens(), 5);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, ShiftCopiesSharedCellsFirst) {
    const model::ModelHParams hp = tiny_hparams();
    auto cache = make_cache(kCells, hp);
    Sequence parent = prefill(*cache, toks(10), 10);
    const std::vector<int32_t> cells = parent.cells();
    for (int32_t p = 0; p < 10; ++p) write_rows(*cache, cells[static_cast<size_t>(p)], p);
    std::optional<Sequence> child = cache->fork(parent, 0);
    ASSERT_TRUE(child.has_value());

    ASSERT_TRUE(cache->shift(*child, 3, 4));
    ASSERT_EQ(child->n_tokens(), 6);
    EXPECT_EQ(parent.cells(), cells);
    EXPECT_EQ(cache->stats().used, 13);  // 10 shared + 3 copies
    EXPECT_INVARIANTS(*cache);
    // The parent's cells keep their original contents.
    for (int32_t p = 0; p < 10; ++p) {
        for (int il = 0; il < hp.n_layer; ++il) {
            expect_row_near(k_row(*cache, il, cells[static_cast<size_t>(p)]), pattern_row(*cache, il, p, 0), 0.0f, "parent K " + std::to_string(p));
            expect_row_near(v_row(*cache, il, cells[static_cast<size_t>(p)]), pattern_row(*cache, il, p, 1), 0.0f, "parent V " + std::to_string(p));
        }
    }
    // The child's kept positions are still shared; its moved ones are rotated copies.
    for (int32_t p = 0; p < 6; ++p) {
        const int32_t old_pos = p < 3 ? p : p + 4;
        const int32_t cell = child->cells()[static_cast<size_t>(p)];
        if (p < 3) {
            EXPECT_EQ(cell, cells[static_cast<size_t>(p)]);
            continue;
        }
        EXPECT_EQ(std::count(cells.begin(), cells.end(), cell), 0) << "moved shared cell was not copied";
        for (int il = 0; il < hp.n_layer; ++il) {
            const std::vector<float> k_want = ref_rotate(pattern_row(*cache, il, old_pos, 0), hp.head_dim, hp.n_rot, hp.rope_freq_base, -4, false);
            expect_row_near(k_row(*cache, il, cell), k_want, 1e-5f, "child K " + std::to_string(p));
            expect_row_near(v_row(*cache, il, cell), pattern_row(*cache, il, old_pos, 1), 0.0f, "child V " + std::to_string(p));
        }
    }
    child.reset();
    EXPECT_EQ(cache->stats().used, 10);
    parent.release();
    EXPECT_EQ(cache->stats().used, 0);
    EXPECT_INVARIANTS(*cache);
}

TEST(KvCacheTest, ShiftOfCachedPrefixCopiesAndKeepsCacheIntact) {
    const model::ModelHParams hp = tiny_hparams();
    auto cache = make_cache(kCells, hp);
    const std::vector<int32_t> prompt = toks(9);
    run_request(*cache, prompt);
    std::vector<int32_t> cached;
    {
        Sequence s = prefill(*cache, prompt, 9);
        for (int32_t p = 0; p < 9; ++p) write_rows(*cache, s.cells()[static_cast<size_t>(p)], p);
        cache->publish_prefix(s, 9);
        cached.assign(s.cells().begin(), s.cells().begin() + 8);
    }
    Sequence s = admit_ok(*cache, prompt, 12);
    ASSERT_EQ(s.n_reused(), 8);
    ASSERT_TRUE(cache->append(s, toks(1, 8)));
    ASSERT_TRUE(cache->shift(s, 1, 2));
    // Cached cells keep the unshifted keys, so the next reuser gets exact K/V.
    for (int32_t p = 0; p < 8; ++p) {
        expect_row_near(k_row(*cache, 0, cached[static_cast<size_t>(p)]), pattern_row(*cache, 0, p, 0), 0.0f, "cached K " + std::to_string(p));
    }
    EXPECT_INVARIANTS(*cache);
    s.release();
    cache->clear_prefix_cache();
    EXPECT_EQ(cache->stats().used, 0);
}

TEST(KvCacheTest, ShiftRefusedWithoutRoomForCopiesLeavesSequenceUnchanged) {
    auto cache = make_cache(16);
    Sequence parent = prefill(*cache, toks(10), 10);
    std::optional<Sequence> child = cache->fork(parent, 0);
    ASSERT_TRUE(child.has_value());
    Sequence hog = prefill(*cache, toks(6, 500), 6);  // no free cell left
    const std::vector<int32_t> cells = child->cells();
    EXPECT_FALSE(cache->shift(*child, 0, 2));  // 8 moved shared cells, no room to copy them
    EXPECT_EQ(child->cells(), cells);
    EXPECT_EQ(child->tokens(), toks(10));
    EXPECT_EQ(cache->stats().shifts, 0u);
    EXPECT_INVARIANTS(*cache);
}

// BUG (kv_cache.cpp publish_prefix, line 388; shift, line 362): a shifted sequence can still
// publish its prompt blocks. Its token list no longer matches the K/V its cells hold (they were
// computed with the discarded tokens in context), and a block that straddles n_keep mixes cells
// of an already cached block with new ones. Two cached blocks then hold the same cell, each
// cell's count is 2, neither block is ever "held only by the cache", in_cache_ (a 0/1 flag)
// goes wrong, and the cells leak: even with no sequence left, clear_prefix_cache cannot free them.
TEST(KvCacheTest, PublishAfterShiftNeverLeaksCells) {
    auto cache = make_cache();
    const std::vector<int32_t> prompt = toks(10);
    run_request(*cache, prompt);
    run_request(*cache, prompt);  // blocks [0,4) and [4,8) cached
    ASSERT_EQ(cache->stats().prefix_blocks, 2);
    for (int r = 0; r < 2; ++r) {
        Sequence s = admit_ok(*cache, prompt, 10);
        ASSERT_EQ(s.n_reused(), 8);
        ASSERT_TRUE(cache->append(s, toks(2, 108)));
        ASSERT_TRUE(cache->shift(s, 2, 4));  // tokens now 100 101 106 107 108 109
        cache->publish_prefix(s, 6);
        EXPECT_INVARIANTS(*cache);
    }
    cache->clear_prefix_cache();
    const KvStats st = cache->stats();
    EXPECT_EQ(st.free, st.total) << st.summary();
    EXPECT_EQ(st.used, 0);
    EXPECT_EQ(st.cached, 0);
    EXPECT_EQ(st.prefix_blocks, 0);
    EXPECT_INVARIANTS(*cache);
}

// BUG (kv_cache.cpp publish_prefix, block creation at lines 388-396): the same leak without a
// shift. Sequences that reused a cached block, rolled back into the middle of it (truncate) and
// regenerated the same tokens publish a new block made partly of the cached block's cells. A
// cell in two blocks never gets back to "held only by the cache", and in_cache_ is a 0/1 flag,
// so check_invariants fails and the cells are never freed.
TEST(KvCacheTest, RepublishAfterRollbackNeverLeaksCells) {
    auto cache = make_cache();
    const std::vector<int32_t> prompt = toks(9);
    run_request(*cache, prompt);
    run_request(*cache, prompt);  // blocks [0,4) and [4,8) cached
    ASSERT_EQ(cache->stats().prefix_blocks, 2);
    for (int r = 0; r < 2; ++r) {
        Sequence s = admit_ok(*cache, prompt, 12);
        ASSERT_EQ(s.n_reused(), 8);
        cache->truncate(s, 2);
        ASSERT_TRUE(cache->append(s, toks(7, 500)));  // tokens 100 101 500 ... 506
        cache->publish_prefix(s, 9);
        EXPECT_INVARIANTS(*cache);
    }
    cache->clear_prefix_cache();
    const KvStats st = cache->stats();
    EXPECT_EQ(st.free, st.total) << st.summary();
    EXPECT_EQ(st.cached, 0);
    EXPECT_EQ(st.prefix_blocks, 0);
    EXPECT_INVARIANTS(*cache);
}

// BUG (kv_cache.cpp shift, line 362; publish_prefix line 366): after a context shift a sequence's cells
// hold K/V computed with the discarded tokens in context (and re-rotated keys), so they are not
// what a prefill of its remaining tokens computes. Publishing them lets a fresh prompt equal to
// the shifted token list reuse those cells and silently attend to another context.
TEST(KvCacheTest, ShiftedSequenceNeverPublishes) {
    auto cache = make_cache();
    const std::vector<int32_t> prompt = toks(14);
    for (int r = 0; r < 2; ++r) {
        Sequence s = prefill(*cache, prompt, 14);
        ASSERT_TRUE(cache->shift(s, 0, 2));  // tokens now 102 ... 113, computed after 100 101
        cache->publish_prefix(s, 12);
    }
    std::vector<int32_t> fresh = toks(12, 102);
    fresh.push_back(7);
    EXPECT_EQ(cache->peek_prefix(fresh), 0) << "a fresh prompt would reuse K/V computed in another context";
    EXPECT_EQ(cache->stats().prefix_blocks, 0);
}

// ================================================================ misuse vs no room

// Misuse is a bug in the caller and stops the process with a message naming the precondition;
// it is never reported as "no room" (the empty returns above).
TEST(KvCacheTest, MisuseStopsTheProcess) {
    auto cache = make_cache(16);
    auto other = make_cache(16);
    Sequence s = prefill(*cache, toks(6), 8);
    Sequence foreign = prefill(*other, toks(6), 8);
    Sequence empty;
    Sequence moved = prefill(*cache, toks(2, 50), 2);
    Sequence taker = std::move(moved);

    EXPECT_MISUSE(cache->append(empty, toks(1)), "sequence is empty");
    EXPECT_MISUSE(cache->append(moved, toks(1)), "sequence is empty");
    EXPECT_MISUSE(cache->append(foreign, toks(1)), "another KV cache");
    EXPECT_MISUSE(cache->truncate(foreign, 0), "another KV cache");
    EXPECT_MISUSE(cache->truncate(empty, 0), "sequence is empty");
    EXPECT_MISUSE(cache->publish_prefix(foreign, 4), "another KV cache");
    EXPECT_MISUSE(cache->shift(foreign, 0, 1), "another KV cache");
    EXPECT_MISUSE(cache->fork(foreign, 0), "another KV cache");
    EXPECT_MISUSE(cache->fork(s, -1), "negative reservation");
    EXPECT_MISUSE(cache->admit(toks(2), -1), "negative max_tokens");

    // None of it touched the cache (each death ran in a child process).
    EXPECT_EQ(cache->stats().used, 8);
    EXPECT_EQ(foreign.n_tokens(), 6);
    EXPECT_INVARIANTS(*cache);
    EXPECT_INVARIANTS(*other);
    // "No room" stays an empty return.
    EXPECT_FALSE(cache->admit(toks(1, 900), 9).has_value());
    EXPECT_FALSE(cache->append(taker, toks(9, 900)));
}

// File-local macros: the unity build compiles several test files as one.
#undef EXPECT_INVARIANTS
#undef EXPECT_MISUSE

}  // namespace
}  // namespace kvrag::kvcache
