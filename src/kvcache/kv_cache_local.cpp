// KvCache's local pool: the cells holding a sliding-window model's local layers (see
// docs/kv-cache.md, "Sliding-window models"). A sequence holds local cells only for positions
// [local_begin, n_tokens), which append() keeps to the last n_swa - 1 positions before the
// tokens it adds (from a prefix-block boundary): nothing later can see older ones. Accounting
// mirrors the global pool: a sequence's local reservation plus the local cells it holds stays
// at most min(max_tokens, local_cap_), and cells it lets go are reserved again for it
// (they are free, or cached and reclaimable), so an admitted request never runs out. That is
// why a fork (n > 1 choices) copies its window into cells of its own rather than sharing the
// parent's: a cell still held by a sibling would not come back when one of them lets it go.
#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "kvcache/kv_cache.h"

namespace kvrag::kvcache {

int32_t KvCache::local_available_locked() const {
    return local_pool_->n_free() + prefix_.n_reclaimable_local_cells() - local_pool_->n_reserved();
}

int32_t KvCache::take_local_locked() {
    while (local_pool_->n_free() == 0) {
        if (!prefix_.evict_local_one()) return -1;
    }
    const int32_t lc = local_pool_->take();
    counters_.local_peak_used = std::max(counters_.local_peak_used, local_pool_->n_used());
    return lc;
}

void KvCache::ref_local_locked(int32_t lc) {
    if (local_pool_->ref_seq(lc) && local_pool_->cached(lc)) prefix_.local_seq_holds(lc);
    counters_.local_peak_used = std::max(counters_.local_peak_used, local_pool_->n_used());
}

void KvCache::unref_local_locked(int32_t lc) {
    if (local_pool_->unref_seq(lc) && local_pool_->cached(lc)) prefix_.local_seq_released(lc);
}

void KvCache::grant_local_locked(Sequence::State& s, int32_t n) {
    const int32_t grant = std::clamp(local_available_locked(), 0, std::max(0, n));
    s.local_reserved += grant;
    local_pool_->reserve(grant);
}

void KvCache::trim_local_locked(Sequence::State& s, int32_t keep_from) {
    const int32_t d = std::clamp(keep_from - s.local_begin, 0, static_cast<int32_t>(s.local.size()));
    if (d == 0) return;
    for (int32_t i = 0; i < d; ++i) unref_local_locked(s.local[static_cast<size_t>(i)]);
    s.local.erase(s.local.begin(), s.local.begin() + d);
    s.local_begin += d;
    // Each dropped cell is now free or reclaimable unless another sequence shares it.
    grant_local_locked(s, d);
}

void KvCache::copy_local_cell_locked(int32_t dst, int32_t src) {
    const KvGeometry& g = store_.geometry();
    const size_t rb = g.row_bytes();
    for (int il = 0; il < g.n_layer; ++il) {
        if (!g.is_local(il)) continue;
        const model::KvLayerRef l = store_.layer(il);  // indexed by local cell
        std::memcpy(l.k + static_cast<size_t>(dst) * rb, l.k + static_cast<size_t>(src) * rb, rb);
        std::memcpy(l.v + static_cast<size_t>(dst) * rb, l.v + static_cast<size_t>(src) * rb, rb);
    }
}

void KvCache::fork_local_locked(Sequence::State& ps, Sequence::State& fs, int32_t n_keep, int32_t budget) {
    // The positions the fork's next tokens see, from a block boundary, as append() keeps them:
    // the fork's window then holds what an independent run's would. A parent that reused a
    // cached prefix may start its local cells after that boundary (a reused prefix carries only
    // the window it needs, from any position); the fork then starts where the parent does.
    const int32_t needed = std::max(0, n_keep - (window_ - 1));
    const int32_t from = std::max(needed / local_align_ * local_align_, std::min(ps.local_begin, n_keep));
    KVRAG_CHECK(ps.local_begin <= needed || from == n_keep, "fork_reserved: the parent has released local cells the fork's window needs");
    KVRAG_CHECK(budget <= ps.local_reserved, "fork_reserved beyond the parent's local reservation");
    // The budget changes holder (the pool's total is unchanged), then the copies take from it.
    ps.local_reserved -= budget;
    fs.local_reserved = budget;
    fs.local_begin = from;
    for (int32_t p = fs.local_begin; p < n_keep; ++p) {
        const int32_t lc = take_local_locked();
        KVRAG_CHECK(lc >= 0, "no local cell for a fork's copy although the fork has them reserved");
        copy_local_cell_locked(lc, ps.local[static_cast<size_t>(p - ps.local_begin)]);
        fs.local.push_back(lc);
    }
    const int32_t n_copied = static_cast<int32_t>(fs.local.size());
    KVRAG_CHECK(n_copied <= budget, "a fork copies more local cells than its budget");
    fs.local_reserved -= n_copied;
    local_pool_->unreserve(n_copied);
    counters_.local_peak_used = std::max(counters_.local_peak_used, local_pool_->n_used());
}

bool KvCache::shift_local_check_locked(const Sequence::State& s, int32_t n_keep, int32_t n_discard) const {
    const int32_t n = static_cast<int32_t>(s.cells.size()), lb = s.local_begin;
    int32_t n_copies = 0, n_freed = 0;
    for (int32_t p = std::max(lb, n_keep + n_discard); p < n; ++p) n_copies += local_pool_->refs(s.local[static_cast<size_t>(p - lb)]) > 1 ? 1 : 0;
    for (int32_t p = std::max(lb, n_keep); p < std::min(n, n_keep + n_discard); ++p) {
        n_freed += local_pool_->refs(s.local[static_cast<size_t>(p - lb)]) == 1 ? 1 : 0;
    }
    return n_copies == 0 || local_available_locked() + n_freed >= n_copies;
}

void KvCache::shift_local_locked(Sequence::State& s, int32_t n_keep, int32_t n_discard) {
    // Called before s.cells loses the discarded range: positions below are the old ones.
    const int32_t n = static_cast<int32_t>(s.cells.size()), lb = s.local_begin;
    const int32_t drop_from = std::max(lb, n_keep) - lb, drop_to = std::max(lb, std::min(n, n_keep + n_discard)) - lb;
    for (int32_t i = drop_from; i < drop_to; ++i) unref_local_locked(s.local[static_cast<size_t>(i)]);
    for (int32_t i = drop_to; i < static_cast<int32_t>(s.local.size()); ++i) {
        int32_t lc = s.local[static_cast<size_t>(i)];
        if (local_pool_->refs(lc) > 1) {
            const int32_t fresh = take_local_locked();
            KVRAG_CHECK(fresh >= 0, "no local cell for a copy although room for every copy was checked");
            copy_local_cell_locked(fresh, lc);
            unref_local_locked(lc);
            s.local[static_cast<size_t>(i)] = lc = fresh;
        }
        rotation_.rotate(store_, lc, -n_discard, model::KeyRotation::Layers::local);
    }
    s.local.erase(s.local.begin() + drop_from, s.local.begin() + drop_to);
    // The held positions stay consecutive and end at the last one; when the discarded range
    // started inside them, the window of the next tokens starts later than n_swa back (those
    // positions' local K/V were released earlier), as the reference engine's shift does.
    s.local_begin = lb < n_keep ? lb : (lb >= n_keep + n_discard ? lb - n_discard : n_keep);
    grant_local_locked(s, drop_to - drop_from);
}

std::string KvCache::check_local_invariants_locked() const {
    if (!local_pool_) {
        for (const auto& [id, s] : live_) {
            if (!s->local.empty() || s->local_reserved != 0) return "sequence " + std::to_string(id) + " holds local cells in a cache without them";
        }
        return "";
    }
    if (std::string e = local_pool_->check_invariants(); !e.empty()) return "local cell pool: " + e;
    std::vector<int32_t> expect(static_cast<size_t>(local_pool_->n_cells()), 0);
    int32_t reserved = 0;
    for (const auto& [id, s] : live_) {
        const std::string name = "sequence " + std::to_string(id);
        if (s->local_begin < 0 || s->local_begin + static_cast<int32_t>(s->local.size()) != static_cast<int32_t>(s->cells.size())) {
            return name + " local cells [" + std::to_string(s->local_begin) + ", +" + std::to_string(s->local.size()) + ") do not end at its last position";
        }
        if (static_cast<int32_t>(s->local.size()) > local_cap_) return name + " holds " + std::to_string(s->local.size()) + " local cells, over the bound " + std::to_string(local_cap_);
        for (int32_t lc : s->local) {
            if (lc < 0 || lc >= local_pool_->n_cells()) return name + " holds local cell " + std::to_string(lc) + " outside the pool";
            ++expect[static_cast<size_t>(lc)];
        }
        if (s->local_reserved < 0) return name + " has a negative local reservation";
        reserved += s->local_reserved;
    }
    for (int32_t c = 0; c < local_pool_->n_cells(); ++c) {
        if (local_pool_->seq_refs(c) != expect[static_cast<size_t>(c)]) {
            return "local cell " + std::to_string(c) + " has " + std::to_string(local_pool_->seq_refs(c)) + " sequence references but " +
                   std::to_string(expect[static_cast<size_t>(c)]) + " sequences hold it";
        }
    }
    if (reserved != local_pool_->n_reserved()) return "local reserved total " + std::to_string(local_pool_->n_reserved()) + " != sum " + std::to_string(reserved);
    if (local_pool_->n_free() + prefix_.n_reclaimable_local_cells() < local_pool_->n_reserved()) {
        return "local reservations " + std::to_string(local_pool_->n_reserved()) + " exceed free + reclaimable local cells";
    }
    return "";
}

}  // namespace kvrag::kvcache
