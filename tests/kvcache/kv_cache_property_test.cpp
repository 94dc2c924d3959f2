// Randomised property test of the KV cache manager: thousands of random operations (admit with
// prompts drawn from a few shared prefixes, append, fork, truncate, shift, publish_prefix,
// release, clear_prefix_cache) against a simple model kept in the test, with every invariant
// checked after every step.
//
// The model keeps, for each live sequence, its tokens and what each of its cells must hold. The
// test writes every freshly computed cell itself (an F32 cache, so contents are exact):
//   V row: [0] a unique origin id (one per fresh cell), [1] a hash of the tokens [0, pos],
//   K row: (1, 0) in every rotated pair, i.e. an unrotated key; context shift must rotate it.
// So a cell handed to two sequences that should not share it is caught when the second write
// changes the first one's origin; a reused prefix block is checked to hold the K/V of exactly
// that prefix; a shift is checked to have rotated exactly the moved keys and copied shared ones.
#include "kvcache/kv_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kvcache/kv_cache_test_util.h"

namespace kvrag::kvcache {
namespace {

constexpr int32_t kPropertyCacheCells = 96;
constexpr int32_t kHeadDim = 8;
constexpr int32_t kRot = 8;
constexpr float kBase = 10000.0f;
constexpr size_t kMaxLive = 10;

// The reference rotation below uses kHeadDim, kRot and kBase: the cache's model must match.
model::ModelHParams hparams() {
    model::ModelHParams hp = tiny_kv_hparams();
    hp.head_dim = kHeadDim;
    hp.n_rot = kRot;
    hp.rope_freq_base = kBase;
    return hp;
}

uint32_t prefix_hash(const std::vector<int32_t>& tokens, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; ++i) {
        h ^= static_cast<uint32_t>(tokens[i]);
        h *= 16777619u;
    }
    return h;
}

float as_float(uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}
uint32_t as_bits(float f) {
    uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    return b;
}

struct ModelSeq {
    Sequence h;
    std::vector<int32_t> tokens;
    std::vector<uint32_t> origin;  // (n_tokens) origin id in each position's V row
    std::vector<uint32_t> vhash;   // (n_tokens) prefix hash in each position's V row
    std::vector<int32_t> rot;      // (n_tokens) total RoPE delta applied to each position's K
    int32_t n_prompt = 0;
    int32_t reserved = 0;          // what the model expects h.reserved() to be
    bool shifted = false;
};

struct Options {
    bool publish_after_shift = false;  // also publish sequences that were context-shifted
};

class Runner {
public:
    Runner(uint32_t seed, Options opt) : rng_(seed), opt_(opt) {
        KvCacheConfig cfg;
        cfg.n_cells = kPropertyCacheCells;
        cfg.type = GgmlType::F32;
        cfg.block_tokens = kBlock;
        auto r = KvCache::create(hparams(), cfg, model::KeyRotation(hparams()));
        if (r.ok()) cache_ = *r;
        // A few shared prefixes: prompts start with some of one of them.
        for (int f = 0; f < 4; ++f) {
            std::vector<int32_t> p(16);
            for (auto& t : p) t = rand_int(0, 999);
            families_.push_back(p);
        }
    }

    // Runs n_ops operations; returns "" or a description of the first violation.
    std::string run(int n_ops) {
        if (!cache_) return "cache creation failed";
        std::string err = check();
        for (step_ = 0; step_ < n_ops && err.empty(); ++step_) {
            err = one_op();
            if (err.empty()) err = check();
        }
        if (err.empty()) err = drain();
        if (!err.empty()) {
            std::ostringstream os;
            os << "step " << step_ << ": " << err << "\nstats: " << cache_->stats().summary() << "\nlast ops:";
            for (const std::string& s : log_) os << "\n  " << s;
            return os.str();
        }
        return "";
    }

    uint64_t reused_tokens() const { return reused_tokens_; }
    uint64_t n_shifts() const { return n_shifts_; }
    uint64_t n_forks() const { return n_forks_; }
    uint64_t n_refused() const { return n_refused_; }

private:
    int32_t rand_int(int32_t lo, int32_t hi) { return std::uniform_int_distribution<int32_t>(lo, hi)(rng_); }
    // Generated tokens: often from a tiny alphabet, so that rewritten blocks recur in several
    // sequences and get published too.
    int32_t gen_token() { return rand_int(0, 3) == 0 ? rand_int(0, 2) : rand_int(0, 999); }

    void note(std::string s) {
        log_.push_back(std::move(s));
        if (log_.size() > 24) log_.pop_front();
    }

    float* k_row(int il, int32_t cell) {
        const model::KvLayerRef l = cache_->view().layer(il);
        return reinterpret_cast<float*>(l.k + static_cast<size_t>(cell) * l.row_bytes);
    }
    float* v_row(int il, int32_t cell) {
        const model::KvLayerRef l = cache_->view().layer(il);
        return reinterpret_cast<float*>(l.v + static_cast<size_t>(cell) * l.row_bytes);
    }

    // Plays the forward pass for positions [from, n) of m: writes their K/V.
    void compute(ModelSeq& m, size_t from) {
        const int32_t w = cache_->geometry().n_embd_kv;
        for (size_t p = from; p < m.tokens.size(); ++p) {
            const int32_t cell = m.h.cells()[p];
            const uint32_t origin = ++next_origin_;
            const uint32_t vh = prefix_hash(m.tokens, p + 1);
            for (int il = 0; il < 2; ++il) {
                float* k = k_row(il, cell);
                float* v = v_row(il, cell);
                for (int32_t j = 0; j < w; ++j) {
                    k[j] = (j % 2 == 0) ? 1.0f : 0.0f;
                    v[j] = 0.0f;
                }
                v[0] = as_float(origin);
                v[1] = as_float(vh);
            }
            m.origin.push_back(origin);
            m.vhash.push_back(vh);
            m.rot.push_back(0);
        }
    }

    std::set<int32_t> live_cells(const ModelSeq* except = nullptr) const {
        std::set<int32_t> out;
        for (const ModelSeq& m : live_) {
            if (&m != except) out.insert(m.h.cells().begin(), m.h.cells().end());
        }
        return out;
    }

    // Cells at positions >= from of m must be fresh: held by no other live sequence.
    std::string expect_fresh(const ModelSeq& m, size_t from, const std::vector<int32_t>& old_cells = {}) const {
        const std::set<int32_t> others = live_cells(&m);
        for (size_t p = from; p < m.h.cells().size(); ++p) {
            const int32_t c = m.h.cells()[p];
            if (p < old_cells.size() && old_cells[p] == c) continue;
            if (others.count(c)) return "cell " + std::to_string(c) + " given to seq " + std::to_string(m.h.id()) + " at pos " + std::to_string(p) + " is held by another live sequence";
        }
        return "";
    }

    int32_t sum_reserved() const {
        int32_t r = 0;
        for (const ModelSeq& m : live_) r += m.h.reserved();
        return r;
    }

    // ---- operations ----

    std::string one_op() {
        const int r = rand_int(0, 99);
        if (live_.empty() || r < 15) return op_admit();
        if (r < 20) return op_admit_greedy();
        ModelSeq& m = live_[static_cast<size_t>(rand_int(0, static_cast<int32_t>(live_.size()) - 1))];
        if (r < 36) return op_append(m, false);
        if (r < 40) return op_rewrite(m);
        if (r < 48) return op_append(m, true);
        if (r < 55) return op_fork(m);
        if (r < 63) return op_truncate(m);
        if (r < 72) return op_shift(m);
        if (r < 82) return op_publish(m);
        if (r < 96) return op_release(m);
        if (r < 99) return op_clear();
        return op_release_all();
    }

    std::string op_admit() {
        if (live_.size() >= kMaxLive) return "";
        const std::vector<int32_t>& fam = families_[static_cast<size_t>(rand_int(0, 3))];
        std::vector<int32_t> prompt(fam.begin(), fam.begin() + rand_int(0, 16));
        const int32_t n_suffix = rand_int(1, 5);
        for (int i = 0; i < n_suffix; ++i) prompt.push_back(rand_int(0, 999));
        const int32_t max_tokens = static_cast<int32_t>(prompt.size()) + rand_int(0, 16);
        const int32_t peek = cache_->peek_prefix(prompt);
        const KvStats before = cache_->stats();
        note("admit n=" + std::to_string(prompt.size()) + " max=" + std::to_string(max_tokens) + " peek=" + std::to_string(peek));
        std::optional<Sequence> s = cache_->admit(prompt, max_tokens);
        if (!s) {
            ++n_refused_;
            const KvStats after = cache_->stats();
            if (after.used != before.used || after.free != before.free || after.reserved != before.reserved || after.shared != before.shared ||
                after.n_sequences != before.n_sequences || after.prefix_blocks != before.prefix_blocks) {
                return "refused admit changed the cache: " + before.summary() + " -> " + after.summary();
            }
            if (max_tokens - peek <= before.free - before.reserved) {
                return "admit refused although " + std::to_string(before.free - before.reserved) + " unreserved free cells cover the " +
                       std::to_string(max_tokens - peek) + " needed";
            }
            return "";
        }
        ModelSeq m;
        m.h = std::move(*s);
        const int32_t n_reused = m.h.n_reused();
        if (n_reused != peek) return "admit reused " + std::to_string(n_reused) + " tokens, peek_prefix said " + std::to_string(peek);
        if (n_reused % kBlock != 0 || n_reused >= static_cast<int32_t>(prompt.size())) return "bad n_reused " + std::to_string(n_reused);
        if (m.h.n_tokens() != n_reused) return "admitted sequence holds " + std::to_string(m.h.n_tokens()) + " tokens, reused " + std::to_string(n_reused);
        m.tokens.assign(prompt.begin(), prompt.begin() + n_reused);
        if (m.h.tokens() != m.tokens) return "admitted sequence's tokens are not the prompt's prefix";
        // Reused cells must hold exactly this prefix's K/V, unshifted.
        for (int32_t p = 0; p < n_reused; ++p) {
            const int32_t cell = m.h.cells()[static_cast<size_t>(p)];
            const uint32_t vh = as_bits(v_row(0, cell)[1]);
            if (vh != prefix_hash(prompt, static_cast<size_t>(p) + 1)) {
                return "reused cell " + std::to_string(cell) + " at pos " + std::to_string(p) + " holds the K/V of a different prefix";
            }
            m.origin.push_back(as_bits(v_row(0, cell)[0]));
            m.vhash.push_back(vh);
            m.rot.push_back(0);
        }
        reused_tokens_ += static_cast<uint64_t>(n_reused);
        m.n_prompt = static_cast<int32_t>(prompt.size());
        m.reserved = max_tokens - n_reused;
        if (m.h.reserved() != m.reserved) return "admit reserved " + std::to_string(m.h.reserved()) + ", expected " + std::to_string(m.reserved);
        // Prefill: the rest of the prompt is within the reservation, so it must fit.
        const std::vector<int32_t> rest(prompt.begin() + n_reused, prompt.end());
        if (!cache_->append(m.h, rest)) return "prefill append of " + std::to_string(rest.size()) + " tokens within the reservation failed";
        m.tokens = prompt;
        m.reserved -= static_cast<int32_t>(rest.size());
        live_.push_back(std::move(m));
        ModelSeq& lm = live_.back();
        if (std::string e = expect_fresh(lm, static_cast<size_t>(n_reused)); !e.empty()) return e;
        compute(lm, static_cast<size_t>(n_reused));
        note("  -> seq " + std::to_string(lm.h.id()) + " reused " + std::to_string(n_reused));
        return "";
    }

    // Takes the largest worst case admission grants now and fills it at once: catches a cache
    // that promises cells it cannot deliver (e.g. counts unevictable blocks as evictable).
    std::string op_admit_greedy() {
        if (live_.size() >= kMaxLive) return "";
        const KvStats st = cache_->stats();
        const std::vector<int32_t> prompt{rand_int(0, 999)};
        note("admit greedy free=" + std::to_string(st.free) + " cached=" + std::to_string(st.cached) + " reserved=" + std::to_string(st.reserved));
        for (int32_t max_tokens = std::min(kPropertyCacheCells, st.free + st.cached - st.reserved); max_tokens >= 1; --max_tokens) {
            std::optional<Sequence> s = cache_->admit(prompt, max_tokens);
            if (!s) continue;
            ModelSeq m;
            m.h = std::move(*s);
            m.n_prompt = 1;
            m.reserved = max_tokens;
            std::vector<int32_t> t(static_cast<size_t>(max_tokens));
            for (auto& x : t) x = rand_int(0, 999);
            note("  -> seq " + std::to_string(m.h.id()) + " max=" + std::to_string(max_tokens));
            if (!cache_->append(m.h, t)) return "greedy admit of " + std::to_string(max_tokens) + " could not append its reservation";
            m.tokens = t;
            m.reserved = 0;
            live_.push_back(std::move(m));
            if (std::string e = expect_fresh(live_.back(), 0); !e.empty()) return e;
            compute(live_.back(), 0);
            return "";
        }
        return "";
    }

    std::string op_append(ModelSeq& m, bool fill) {
        int32_t n = fill ? m.h.reserved() : rand_int(1, 6);
        if (n == 0) n = 1;
        if (m.h.n_tokens() + n > kPropertyCacheCells) return "";
        std::vector<int32_t> t(static_cast<size_t>(n));
        for (auto& x : t) x = gen_token();
        const KvStats before = cache_->stats();
        const std::vector<int32_t> cells = m.h.cells();
        const int32_t within = std::min(n, m.h.reserved());
        note("append seq " + std::to_string(m.h.id()) + " n=" + std::to_string(n) + " reserved=" + std::to_string(m.h.reserved()));
        if (!cache_->append(m.h, t)) {
            if (n <= m.h.reserved()) return "append of " + std::to_string(n) + " tokens within a reservation of " + std::to_string(m.h.reserved()) + " failed";
            if (n - within <= before.free - before.reserved) return "append beyond the reservation failed with enough unreserved free cells";
            if (m.h.cells() != cells || m.h.tokens() != m.tokens) return "failed append changed the sequence";
            if (cache_->stats().reserved != before.reserved) return "failed append changed the reservations";
            return "";
        }
        m.tokens.insert(m.tokens.end(), t.begin(), t.end());
        m.reserved -= within;
        if (std::string e = expect_fresh(m, cells.size()); !e.empty()) return e;
        compute(m, cells.size());
        return "";
    }

    // Rolls back to a random position and regenerates a fixed continuation (token = f(pos)), so
    // that sequences sharing a prefix rewrite the same block the same way (and publish it).
    std::string op_rewrite(ModelSeq& m) {
        const int32_t n = m.h.n_tokens();
        const int32_t n_keep = rand_int(std::max(0, n - 6), n);
        if (std::string e = op_truncate_to(m, n_keep); !e.empty()) return e;
        const int32_t k = std::min(m.h.reserved(), rand_int(1, 6));
        std::vector<int32_t> t;
        for (int32_t p = n_keep; p < n_keep + k; ++p) t.push_back(5000 + p);
        note("rewrite seq " + std::to_string(m.h.id()) + " keep=" + std::to_string(n_keep) + " n=" + std::to_string(k));
        if (!cache_->append(m.h, t)) return "rewrite append within the reservation failed";
        m.tokens.insert(m.tokens.end(), t.begin(), t.end());
        m.reserved -= k;
        if (std::string e = expect_fresh(m, static_cast<size_t>(n_keep)); !e.empty()) return e;
        compute(m, static_cast<size_t>(n_keep));
        return "";
    }

    std::string op_fork(ModelSeq& parent) {
        if (live_.size() >= kMaxLive) return "";
        const int32_t reserve = rand_int(0, 8);
        const KvStats before = cache_->stats();
        note("fork seq " + std::to_string(parent.h.id()) + " reserve=" + std::to_string(reserve));
        std::optional<Sequence> f = cache_->fork(parent.h, reserve);
        if (!f) {
            if (reserve <= before.free - before.reserved) return "fork refused with enough unreserved free cells";
            return "";
        }
        ++n_forks_;
        ModelSeq m;
        m.h = std::move(*f);
        m.tokens = parent.tokens;
        m.origin = parent.origin;
        m.vhash = parent.vhash;
        m.rot = parent.rot;
        m.n_prompt = parent.n_prompt;
        m.shifted = parent.shifted;
        m.reserved = reserve;
        if (m.h.cells() != parent.h.cells()) return "fork does not share the parent's cells";
        note("  -> seq " + std::to_string(m.h.id()));
        live_.push_back(std::move(m));  // may move parent: do not use it after this
        return "";
    }

    std::string op_truncate(ModelSeq& m) { return op_truncate_to(m, rand_int(0, m.h.n_tokens())); }

    std::string op_truncate_to(ModelSeq& m, int32_t n_keep) {
        const int32_t n = m.h.n_tokens();
        const int32_t before_reserved = m.h.reserved();
        note("truncate seq " + std::to_string(m.h.id()) + " n=" + std::to_string(n) + " keep=" + std::to_string(n_keep));
        cache_->truncate(m.h, n_keep);
        m.tokens.resize(static_cast<size_t>(n_keep));
        m.origin.resize(static_cast<size_t>(n_keep));
        m.vhash.resize(static_cast<size_t>(n_keep));
        m.rot.resize(static_cast<size_t>(n_keep));
        const int32_t grant = m.h.reserved() - before_reserved;
        if (grant < 0 || grant > n - n_keep) return "truncate changed the reservation by " + std::to_string(grant);
        m.reserved += grant;
        return "";
    }

    std::string op_shift(ModelSeq& m) {
        const int32_t n = m.h.n_tokens();
        if (n < 1) return "";
        const int32_t n_keep = rand_int(0, n - 1);
        const int32_t n_discard = rand_int(1, n - n_keep);
        const std::vector<int32_t> cells = m.h.cells();
        const int32_t before_reserved = m.h.reserved();
        note("shift seq " + std::to_string(m.h.id()) + " n=" + std::to_string(n) + " keep=" + std::to_string(n_keep) + " discard=" + std::to_string(n_discard));
        if (!cache_->shift(m.h, n_keep, n_discard)) {
            if (m.h.cells() != cells || m.h.tokens() != m.tokens) return "failed shift changed the sequence";
            return "";
        }
        ++n_shifts_;
        auto erase = [&](auto& v) { v.erase(v.begin() + n_keep, v.begin() + n_keep + n_discard); };
        erase(m.tokens);
        erase(m.origin);
        erase(m.vhash);
        erase(m.rot);
        for (size_t p = static_cast<size_t>(n_keep); p < m.rot.size(); ++p) m.rot[p] -= n_discard;
        m.shifted = true;
        const int32_t grant = m.h.reserved() - before_reserved;
        if (grant < 0 || grant > n_discard) return "shift changed the reservation by " + std::to_string(grant);
        m.reserved += grant;
        // Kept positions keep their cells; a moved position keeps its cell or gets a fresh copy.
        std::vector<int32_t> moved_old(cells.begin(), cells.begin() + n_keep);
        moved_old.insert(moved_old.end(), cells.begin() + n_keep + n_discard, cells.end());
        for (int32_t p = 0; p < n_keep; ++p) {
            if (m.h.cells()[static_cast<size_t>(p)] != cells[static_cast<size_t>(p)]) return "shift moved a kept position's cell";
        }
        return expect_fresh(m, static_cast<size_t>(n_keep), moved_old);
    }

    std::string op_publish(ModelSeq& m) {
        if (m.shifted && !opt_.publish_after_shift) return "";
        const KvStats before = cache_->stats();
        note("publish seq " + std::to_string(m.h.id()) + " n_prompt=" + std::to_string(m.n_prompt));
        cache_->publish_prefix(m.h, m.n_prompt);
        const KvStats after = cache_->stats();
        if (after.used != before.used || after.free != before.free || after.reserved != before.reserved) return "publish changed used, free or reserved cells";
        if (after.cached < before.cached) return "publish dropped cached cells";
        return "";
    }

    std::string op_release(ModelSeq& m) {
        note("release seq " + std::to_string(m.h.id()));
        const size_t i = static_cast<size_t>(&m - live_.data());
        live_.erase(live_.begin() + static_cast<std::ptrdiff_t>(i));  // the handle's destructor frees
        return "";
    }

    std::string op_clear() {
        note("clear_prefix_cache");
        cache_->clear_prefix_cache();
        if (live_.empty()) {
            const KvStats st = cache_->stats();
            if (st.used != 0 || st.cached != 0 || st.free != st.total || st.prefix_blocks != 0) {
                return "no live sequence and a cleared prefix cache, yet " + st.summary();
            }
        }
        return "";
    }

    std::string op_release_all() {
        note("release all");
        live_.clear();
        return op_clear();
    }

    std::string drain() {
        step_ = -1;
        std::string e = op_release_all();
        if (e.empty()) e = check();
        return e;
    }

    // ---- invariants, after every step ----

    std::string check() {
        if (std::string e = cache_->check_invariants(); !e.empty()) return "check_invariants: " + e;
        const KvStats st = cache_->stats();
        // used: cells live sequences hold; free: cells nobody holds; the rest only the prefix cache holds.
        if (st.total != kPropertyCacheCells) return "total " + std::to_string(st.total) + " != " + std::to_string(kPropertyCacheCells);
        const int32_t held = st.total - st.free;
        if (st.free < 0 || held < st.used) return "free " + std::to_string(st.free) + " + used " + std::to_string(st.used) + " > total";
        if (st.n_sequences != static_cast<int32_t>(live_.size())) return "n_sequences " + std::to_string(st.n_sequences) + " != live " + std::to_string(live_.size());
        if (st.reserved != sum_reserved()) return "reserved " + std::to_string(st.reserved) + " != sum over sequences " + std::to_string(sum_reserved());
        if (st.reserved > st.free + st.cached) return "reserved " + std::to_string(st.reserved) + " > free + cached " + std::to_string(st.free + st.cached);
        if (st.peak_used < st.used) return "peak below used";

        std::map<int32_t, std::pair<const ModelSeq*, size_t>> holder;  // cell -> first (seq, pos)
        for (const ModelSeq& m : live_) {
            const std::string who = "seq " + std::to_string(m.h.id());
            if (!m.h.valid()) return who + " handle invalid";
            const std::vector<int32_t>& cells = m.h.cells();
            if (m.h.tokens() != m.tokens) return who + " tokens differ from the model";
            if (cells.size() != m.tokens.size()) return who + " holds " + std::to_string(cells.size()) + " cells for " + std::to_string(m.tokens.size()) + " tokens";
            if (m.h.reserved() != m.reserved) return who + " reserved " + std::to_string(m.h.reserved()) + ", model " + std::to_string(m.reserved);
            if (std::set<int32_t>(cells.begin(), cells.end()).size() != cells.size()) return who + " holds a cell twice";
            for (size_t p = 0; p < cells.size(); ++p) {
                const int32_t c = cells[p];
                if (c < 0 || c >= kPropertyCacheCells) return who + " holds cell " + std::to_string(c) + " outside the cache";
                auto [it, fresh] = holder.emplace(c, std::make_pair(&m, p));
                if (!fresh) {
                    // Shared only through fork or prefix reuse: same origin, same position.
                    const ModelSeq& o = *it->second.first;
                    const size_t op = it->second.second;
                    if (op != p || o.origin[op] != m.origin[p]) {
                        return who + " shares cell " + std::to_string(c) + " with seq " + std::to_string(o.h.id()) + " but did not get it by fork or reuse";
                    }
                }
                if (std::string e = check_cell(m, p); !e.empty()) return who + " pos " + std::to_string(p) + ": " + e;
            }
        }
        const int32_t n_live = static_cast<int32_t>(holder.size());
        if (st.used != n_live) return "used " + std::to_string(st.used) + " != distinct cells held by live sequences " + std::to_string(n_live);
        // Expected held cells = live cells + cached blocks' cells (which may overlap the live ones).
        if (held - n_live > st.cached) return "held " + std::to_string(held) + " > live " + std::to_string(n_live) + " + cached " + std::to_string(st.cached);
        if (live_.empty() && held != st.cached) return "no live sequence: held " + std::to_string(held) + " != cached " + std::to_string(st.cached);
        return "";
    }

    std::string check_cell(const ModelSeq& m, size_t p) {
        const int32_t cell = m.h.cells()[p];
        const int32_t w = cache_->geometry().n_embd_kv;
        for (int il = 0; il < 2; ++il) {
            const float* v = v_row(il, cell);
            if (as_bits(v[0]) != m.origin[p] || as_bits(v[1]) != m.vhash[p]) return "V row of cell " + std::to_string(cell) + " was overwritten";
            const float* k = k_row(il, cell);
            for (int32_t h = 0; h < w / kHeadDim; ++h) {
                for (int32_t i = 0; i < kRot / 2; ++i) {
                    const double theta = m.rot[p] * std::pow(static_cast<double>(kBase), -2.0 * i / kRot);
                    const float* x = k + h * kHeadDim + 2 * i;
                    if (std::fabs(x[0] - std::cos(theta)) > 1e-3 || std::fabs(x[1] - std::sin(theta)) > 1e-3) {
                        return "K of cell " + std::to_string(cell) + " is not rotated by " + std::to_string(m.rot[p]) + " (pair " + std::to_string(i) + ": " +
                               std::to_string(x[0]) + ", " + std::to_string(x[1]) + ")";
                    }
                }
            }
        }
        return "";
    }

    std::mt19937 rng_;
    Options opt_;
    std::shared_ptr<KvCache> cache_;
    std::vector<std::vector<int32_t>> families_;
    std::vector<ModelSeq> live_;
    std::deque<std::string> log_;
    uint32_t next_origin_ = 0;
    int step_ = 0;
    uint64_t reused_tokens_ = 0, n_shifts_ = 0, n_forks_ = 0, n_refused_ = 0;
};

void run_seeds(Options opt) {
    uint64_t reused = 0, shifts = 0, forks = 0, refused = 0;
    for (uint32_t seed : {1u, 2u, 3u, 42u, 20240601u}) {
        Runner r(seed, opt);
        const std::string err = r.run(4000);
        if (!err.empty()) ADD_FAILURE() << "seed " << seed << ", " << err;
        reused += r.reused_tokens();
        shifts += r.n_shifts();
        forks += r.n_forks();
        refused += r.n_refused();
    }
    std::cout << "[ info     ] reused tokens " << reused << ", shifts " << shifts << ", forks " << forks << ", refused admissions " << refused << "\n";
    // The run must actually exercise reuse, shifts, forks and a full cache.
    EXPECT_GT(reused, 0u);
    EXPECT_GT(shifts, 0u);
    EXPECT_GT(forks, 0u);
    EXPECT_GT(refused, 0u);
}

TEST(KvCacheProperty, RandomOperationsKeepInvariants) { run_seeds(Options{}); }

// Also lets context-shifted sequences publish their prompt blocks (see the unit test
// KvCacheTest.PublishAfterShiftNeverLeaksCells).
TEST(KvCacheProperty, RandomOperationsWithPublishAfterShift) { run_seeds(Options{/*publish_after_shift=*/true}); }

}  // namespace
}  // namespace kvrag::kvcache
