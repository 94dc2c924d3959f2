// Constants and helpers shared by the KV cache tests (one definition each, so the unity build
// of the suite never meets two copies).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "kvcache/kv_cache.h"
#include "model/hparams.h"

namespace kvrag::kvcache {

// Tokens per block in the caches and prefix indexes these tests build: small, so a few tokens
// already cross block edges.
inline constexpr int32_t kBlock = 4;

// n token ids: first, first + 1, ...
inline std::vector<int32_t> toks(int32_t n, int32_t first = 100) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    std::iota(v.begin(), v.end(), first);
    return v;
}

// The shape of the tiny model these tests' caches are made for (no weights): n_layer layers of
// 4 query and 2 KV heads of 8 dims, all rotated (base 10000), width 32, vocabulary 64.
inline model::ModelHParams tiny_kv_hparams(int32_t n_layer = 2) {
    model::ModelHParams hp;
    hp.n_vocab = 64;
    hp.n_layer = n_layer;
    hp.n_head = 4;
    hp.n_head_kv = 2;
    hp.head_dim = 8;
    hp.n_embd = 32;
    hp.n_ff = 64;
    hp.n_rot = 8;
    hp.rope_freq_base = 10000.0f;
    return hp;
}

// The sliding-window caches of the SWA tests (kv_cache_swa_test, kv_cache_swa_fork_test).
inline constexpr int32_t kSwaWindow = 8;  // n_swa
inline constexpr int32_t kSwaAppend = 4;  // max_append
// A sequence holds at most 7 positions back (from a block boundary: up to 3 more) + 4 new.
inline constexpr int32_t kSwaLocalCap = kSwaWindow - 1 + kBlock - 1 + kSwaAppend;  // 14

// 4 layers, pattern 4: layers 0-2 local (window kSwaWindow), layer 3 global.
inline model::ModelHParams swa_hparams() {
    model::ModelHParams hp = tiny_kv_hparams(4);
    hp.n_swa = kSwaWindow;
    hp.swa_pattern = 4;
    return hp;
}

// An F32 cache of n_cells for swa_hparams(), blocks of kBlock, appends of up to kSwaAppend;
// split: local layers in their own pool of n_local_cells. Null (and a test failure) on error.
inline std::shared_ptr<KvCache> make_swa_cache(int32_t n_cells, int32_t n_local_cells, bool split = true) {
    KvCacheConfig cfg;
    cfg.n_cells = n_cells;
    cfg.type = GgmlType::F32;
    cfg.block_tokens = kBlock;
    cfg.split_local = split;
    cfg.n_local_cells = n_local_cells;
    cfg.max_append = kSwaAppend;
    const model::ModelHParams hp = swa_hparams();
    auto r = KvCache::create(hp, cfg, model::KeyRotation(hp));
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().what());
    return r.ok() ? *r : nullptr;
}

}  // namespace kvrag::kvcache
