// The KV cache of a sliding-window model with split cells (no model): local layers' cells are
// held only for each sequence's last n_swa - 1 positions plus the tokens being appended,
// admission counts them, prefix reuse only ends where the window's local cells are cached, and
// check_invariants() holds after every step.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <optional>
#include <vector>

#include "kvcache/kv_cache.h"
#include "kvcache/kv_cache_test_util.h"

namespace kvrag::kvcache {
namespace {

// Appends `tokens` kSwaAppend at a time (as the engine's chunked prefill does), checking the
// window bound and the invariants after each append. The sequence computes every position.
void append_chunks(KvCache& cache, Sequence& s, const std::vector<int32_t>& tokens) {
    for (size_t at = 0; at < tokens.size(); at += kSwaAppend) {
        const size_t n = std::min<size_t>(kSwaAppend, tokens.size() - at);
        const int32_t before = s.n_tokens();
        ASSERT_TRUE(cache.append(s, std::span<const int32_t>(tokens.data() + at, n))) << cache.stats().summary();
        // The new tokens' windows reach back 7 positions, kept from the block boundary below.
        EXPECT_EQ(s.local_begin(), std::max(0, before - (kSwaWindow - 1)) / kBlock * kBlock);
        EXPECT_EQ(s.local_begin() + static_cast<int32_t>(s.local_cells().size()), s.n_tokens());
        EXPECT_LE(static_cast<int32_t>(s.local_cells().size()), kSwaLocalCap);
        ASSERT_EQ(cache.check_invariants(), "");
    }
}

TEST(KvCacheSwa, GeometrySplitsTheLocalLayersOff) {
    auto split = make_swa_cache(64, 2 * kSwaLocalCap);
    auto whole = make_swa_cache(64, 0, /*split=*/false);
    const KvStats a = split->stats(), b = whole->stats();
    const size_t row = 2 * 8 * sizeof(float);  // n_head_kv * head_dim f32
    EXPECT_EQ(a.bytes_per_cell, 2 * row * 1);   // K+V of the one global layer
    EXPECT_EQ(a.bytes_per_local_cell, 2 * row * 3);
    EXPECT_EQ(a.local_total, 2 * kSwaLocalCap);
    EXPECT_EQ(a.window, kSwaWindow);
    EXPECT_EQ(a.bytes, a.bytes_per_cell * 64 + a.bytes_per_local_cell * 2 * kSwaLocalCap);
    EXPECT_EQ(b.bytes_per_cell, 2 * row * 4);   // without the split every cell holds all layers
    EXPECT_EQ(b.local_total, 0);
    EXPECT_FALSE(whole->split_local());
    EXPECT_EQ(b.summary().find("local"), std::string::npos);
    EXPECT_NE(a.summary().find("local_total=" + std::to_string(2 * kSwaLocalCap)), std::string::npos);
    EXPECT_EQ(split->local_cap(), kSwaLocalCap);
}

TEST(KvCacheSwa, ASequenceHoldsOnlyItsWindowsLocalCells) {
    auto cache = make_swa_cache(128, kSwaLocalCap);
    std::optional<Sequence> s = cache->admit(toks(40), 100);
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->reserved(), 100);
    EXPECT_EQ(cache->stats().local_reserved, kSwaLocalCap);
    append_chunks(*cache, *s, toks(40));
    // Decode-like appends, one token at a time, far past several windows.
    for (int i = 0; i < 50; ++i) {
        const int32_t t = 7;
        ASSERT_TRUE(cache->append(*s, std::span<const int32_t>(&t, 1)));
        // 7 before the new one, from the block boundary at or below: 8 to 11 cells.
        EXPECT_GE(static_cast<int32_t>(s->local_cells().size()), kSwaWindow);
        EXPECT_LE(static_cast<int32_t>(s->local_cells().size()), kSwaWindow + kBlock - 1);
        ASSERT_EQ(cache->check_invariants(), "");
    }
    EXPECT_EQ(s->n_tokens(), 90);
    KvStats st = cache->stats();
    EXPECT_EQ(st.used, 90);
    EXPECT_EQ(s->local_begin(), 80);  // the last append (position 89) reached back to 82
    EXPECT_EQ(st.local_used, 10);
    EXPECT_LE(st.local_peak_used, kSwaLocalCap);
    EXPECT_EQ(st.sequences.at(0).n_local, 10);
    // The last token's window: its own local cell and the 7 before, in position order.
    model::BatchToken bt;
    bt.pos = 89;
    s->fill_local(bt);
    EXPECT_EQ(bt.local_cell, s->local_cells().back());
    EXPECT_EQ(bt.n_local_visible, kSwaWindow);
    EXPECT_EQ(bt.local_visible, s->local_cells().data() + 2);
    s->release();
    st = cache->stats();
    EXPECT_EQ(st.local_used, 0);
    EXPECT_EQ(st.local_reserved, 0);
    EXPECT_EQ(st.local_free, kSwaLocalCap);
    EXPECT_EQ(cache->check_invariants(), "");
}

TEST(KvCacheSwa, EarlyPositionsSeeOnlyWhatExists) {
    auto cache = make_swa_cache(64, kSwaLocalCap);
    std::optional<Sequence> s = cache->admit(toks(3), 10);
    ASSERT_TRUE(s.has_value());
    ASSERT_TRUE(cache->append(*s, toks(3)));
    for (int32_t pos = 0; pos < 3; ++pos) {
        model::BatchToken bt;
        bt.pos = pos;
        s->fill_local(bt);
        EXPECT_EQ(bt.n_local_visible, pos + 1);
        EXPECT_EQ(bt.local_visible, s->local_cells().data());
        EXPECT_EQ(bt.local_cell, s->local_cells()[static_cast<size_t>(pos)]);
    }
}

TEST(KvCacheSwa, AdmissionCountsLocalCells) {
    // Plenty of global cells, local cells for two windows.
    auto cache = make_swa_cache(256, 2 * kSwaLocalCap);
    std::optional<Sequence> a = cache->admit(toks(20), 60);
    std::optional<Sequence> b = cache->admit(toks(20, 300), 60);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(cache->stats().local_reserved, 2 * kSwaLocalCap);
    // A third long request finds no local cells although 136 global cells are free.
    EXPECT_FALSE(cache->admit(toks(20, 500), 60).has_value());
    EXPECT_EQ(cache->stats().reserved, 120);
    // A short one needs only min(max_tokens, window + chunk) local cells: still none free.
    EXPECT_FALSE(cache->admit(toks(2, 500), 3).has_value());
    a->release();
    std::optional<Sequence> c = cache->admit(toks(2, 500), 3);
    ASSERT_TRUE(c.has_value());
    EXPECT_EQ(cache->stats().local_reserved, kSwaLocalCap + 3);
    // A request whose window can never fit the local pool is refused, not left waiting.
    auto small = make_swa_cache(256, 5);
    EXPECT_FALSE(small->admit(toks(2), 6).has_value());
    EXPECT_TRUE(small->admit(toks(2), 5).has_value());
    EXPECT_EQ(cache->check_invariants(), "");
}

// Two prompts publish [P] so its blocks are kept, from the second sequence's cells.
void publish_twice(KvCache& cache, const std::vector<int32_t>& prompt) {
    for (int i = 0; i < 2; ++i) {
        std::optional<Sequence> s = cache.admit(prompt, static_cast<int32_t>(prompt.size()) + 4, /*reuse_prefix=*/false);
        ASSERT_TRUE(s.has_value());
        append_chunks(cache, *s, prompt);
        cache.publish_prefix(*s, static_cast<int32_t>(prompt.size()));
    }
}

TEST(KvCacheSwa, PrefixReuseEndsOnlyWhereTheWindowsLocalCellsAreCached) {
    auto cache = make_swa_cache(128, 3 * kSwaLocalCap);
    const std::vector<int32_t> p = toks(16);
    publish_twice(*cache, p);
    // At publish the sequence held local cells of positions [4, 16) (the last chunk's windows
    // reach back to 5, kept from the block boundary 4): blocks 1-3 carry them, block 0 not.
    KvStats st = cache->stats();
    EXPECT_EQ(st.prefix_blocks, 4);
    EXPECT_EQ(st.local_cached, 12);
    EXPECT_EQ(cache->check_invariants(), "");

    // Reuse at L = 16 needs positions [9, 16): blocks 2 and 3, both carried.
    std::vector<int32_t> longer = p;
    longer.push_back(1);
    EXPECT_EQ(cache->peek_prefix(longer), 16);
    // Reuse at L = 12 needs [5, 12): blocks 1 and 2, carried.
    std::vector<int32_t> diverging(p.begin(), p.begin() + 12);
    diverging.push_back(2);
    diverging.push_back(3);
    EXPECT_EQ(cache->peek_prefix(diverging), 12);
    // Reuse at L = 8 would need [1, 8): block 0 lacks them; so would L = 4: nothing reused.
    diverging.resize(8);
    diverging.push_back(2);
    diverging.push_back(3);
    EXPECT_EQ(cache->peek_prefix(diverging), 0);

    std::optional<Sequence> s = cache->admit(longer, 30);
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->n_reused(), 16);
    EXPECT_EQ(s->local_begin(), 9);
    EXPECT_EQ(s->local_cells().size(), size_t{7});
    EXPECT_EQ(cache->stats().local_reserved, kSwaLocalCap - 7);
    ASSERT_TRUE(cache->append(*s, std::span<const int32_t>(&longer.back(), 1)));
    EXPECT_EQ(cache->check_invariants(), "");
    s->release();

    // Local cells the cache carries are reclaimed when sequences need them: fill the local
    // pool with three sequences' windows, and the prefix can no longer end at 16.
    std::vector<Sequence> hogs;
    for (int i = 0; i < 3; ++i) {  // 3 x 12 local cells at the peak, 30 free: 2 blocks' go
        std::optional<Sequence> h = cache->admit(toks(32, 1000 + 100 * i), 40, /*reuse_prefix=*/false);
        ASSERT_TRUE(h.has_value()) << cache->stats().summary();
        append_chunks(*cache, *h, toks(32, 1000 + 100 * i));  // ends holding 7 + 4 local cells
        hogs.push_back(std::move(*h));
    }
    st = cache->stats();
    EXPECT_LE(st.local_cached, 4);
    EXPECT_EQ(st.prefix_blocks, 4);  // the blocks themselves stay (their global cells)
    EXPECT_EQ(cache->peek_prefix(longer), 0);
    EXPECT_EQ(cache->check_invariants(), "");
}

TEST(KvCacheSwa, TruncateShiftAndForkKeepLocalCellsConsistent) {
    auto cache = make_swa_cache(128, 4 * kSwaLocalCap);
    std::optional<Sequence> s = cache->admit(toks(30), 60);
    ASSERT_TRUE(s.has_value());
    append_chunks(*cache, *s, toks(30));
    EXPECT_EQ(s->local_begin(), 20);  // the last chunk (28, 29) reaches back to 21: block 20

    std::optional<Sequence> f = cache->fork(*s, 10);
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->local_cells(), s->local_cells());
    EXPECT_EQ(cache->check_invariants(), "");

    cache->truncate(*s, 25);  // inside the held local cells
    EXPECT_EQ(s->local_begin(), 20);
    EXPECT_EQ(s->local_cells().size(), size_t{5});
    EXPECT_EQ(cache->check_invariants(), "");
    cache->truncate(*s, 10);  // below them: later tokens see a shorter window
    EXPECT_EQ(s->local_begin(), 10);
    EXPECT_TRUE(s->local_cells().empty());
    EXPECT_EQ(cache->check_invariants(), "");

    // Shift the fork: drop [4, 16) (before its local cells): they move down by 12.
    ASSERT_TRUE(cache->shift(*f, 4, 12));
    EXPECT_EQ(f->n_tokens(), 18);
    EXPECT_EQ(f->local_begin(), 8);
    EXPECT_EQ(cache->check_invariants(), "");
    // Shift across the local cells: [4, 12) drops positions 8..11 of them.
    ASSERT_TRUE(cache->shift(*f, 4, 8));
    EXPECT_EQ(f->n_tokens(), 10);
    EXPECT_EQ(f->local_begin(), 4);
    EXPECT_EQ(f->local_cells().size(), size_t{6});
    EXPECT_EQ(cache->check_invariants(), "");
    const int32_t t = 5;
    ASSERT_TRUE(cache->append(*f, std::span<const int32_t>(&t, 1)));
    model::BatchToken bt;
    bt.pos = 10;
    f->fill_local(bt);
    EXPECT_EQ(bt.n_local_visible, 7);  // positions 4..10: the window's older part is gone
    EXPECT_EQ(cache->check_invariants(), "");
}

}  // namespace
}  // namespace kvrag::kvcache

namespace kvrag::kvcache {
namespace {

// A chat turn's end (publish_continuation) keeps its prompt and generated blocks on first
// sight, the last window's blocks with their local cells, so the next turn, which extends
// them, reuses up to their last block boundary; a prompt offered once (publish_prefix) is not
// kept. Split (local cells) and whole-cell caches alike.
TEST(KvCacheSwa, AChatTurnsEndKeepsItsBlocksForTheNextTurn) {
    for (bool split : {true, false}) {
        SCOPED_TRACE(split ? "split" : "whole cells");
        auto cache = make_swa_cache(128, 3 * kSwaLocalCap, split);
        {
            // The start-up line names both pools: the total is not the global cells' alone.
            const KvStats st0 = cache->stats();
            const std::string line = st0.size_line();
            EXPECT_EQ(line.find("local cells") != std::string::npos, split) << line;
            EXPECT_EQ(st0.bytes, static_cast<size_t>(st0.total) * st0.bytes_per_cell +
                                     static_cast<size_t>(st0.local_total) * st0.bytes_per_local_cell);
            EXPECT_TRUE(line.ends_with(" = " + std::to_string(st0.bytes) + " bytes")) << line;
        }
        auto add = [&](KvCache& c, Sequence& q, const std::vector<int32_t>& t) {
            if (split) return append_chunks(c, q, t);
            for (size_t at = 0; at < t.size(); at += kSwaAppend) {
                const size_t n = std::min<size_t>(kSwaAppend, t.size() - at);
                ASSERT_TRUE(c.append(q, std::span<const int32_t>(t.data() + at, n)));
            }
        };
        const std::vector<int32_t> prompt = toks(13);
        std::optional<Sequence> s = cache->admit(prompt, 13 + 12);
        ASSERT_TRUE(s.has_value());
        add(*cache, *s, prompt);
        cache->publish_prefix(*s, 13);
        EXPECT_EQ(cache->stats().prefix_blocks, 0);  // seen once
        std::vector<int32_t> conversation = prompt;
        for (int32_t i = 0; i < 11; ++i) {  // generated tokens, one step each
            const int32_t t[1] = {500 + i};
            ASSERT_TRUE(cache->append(*s, t));
            conversation.push_back(t[0]);
            ASSERT_EQ(cache->check_invariants(), "");
        }
        ASSERT_EQ(s->n_tokens(), 24);
        cache->publish_continuation(*s);
        cache->publish_continuation(*s);  // once per sequence
        EXPECT_EQ(cache->stats().prefix_blocks, 6);
        if (split) {
            // The last append (position 23) reached back to 16: blocks 4 and 5 carry local cells.
            EXPECT_EQ(s->local_begin(), 16);
            EXPECT_EQ(cache->stats().local_cached, 8);
        }
        s->release();
        ASSERT_EQ(cache->check_invariants(), "");

        // The next turn: the conversation so far (the last generated token was never computed)
        // and a new message. Reuse at 24 needs local positions [17, 24): carried.
        std::vector<int32_t> next = conversation;
        next.push_back(510);
        for (int32_t i = 0; i < 5; ++i) next.push_back(600 + i);
        EXPECT_EQ(cache->peek_prefix(next), 24);
        std::optional<Sequence> n2 = cache->admit(next, 40);
        ASSERT_TRUE(n2.has_value());
        EXPECT_EQ(n2->n_reused(), 24);
        EXPECT_EQ(n2->local_begin(), split ? 17 : 0);
        for (size_t at = 24; at < next.size(); at += kSwaAppend) {  // from the reused window on
            const size_t n = std::min<size_t>(kSwaAppend, next.size() - at);
            ASSERT_TRUE(cache->append(*n2, std::span<const int32_t>(next.data() + at, n)));
            ASSERT_EQ(cache->check_invariants(), "");
        }
        ASSERT_EQ(cache->check_invariants(), "");
        n2->release();

        // A shifted sequence's cells no longer match its tokens: nothing is offered.
        auto fresh = make_swa_cache(128, 3 * kSwaLocalCap, split);
        std::optional<Sequence> sh = fresh->admit(toks(16, 900), 40);
        ASSERT_TRUE(sh.has_value());
        add(*fresh, *sh, toks(16, 900));
        ASSERT_TRUE(fresh->shift(*sh, 4, 4));
        fresh->publish_continuation(*sh);
        EXPECT_EQ(fresh->stats().prefix_blocks, 0);
        EXPECT_EQ(fresh->check_invariants(), "");
    }
}

}  // namespace
}  // namespace kvrag::kvcache
