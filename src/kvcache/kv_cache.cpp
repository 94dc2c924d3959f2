#include "kvcache/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"

namespace kvrag::kvcache {

const char* reject_reason_name(RejectReason r) {
    switch (r) {
        case RejectReason::never_fits: return "never_fits";
        case RejectReason::busy: return "busy";
        case RejectReason::timeout: return "timeout";
        default: return "?";
    }
}

std::string KvStats::size_line() const {
    std::string out = std::to_string(total) + " cells x " + std::to_string(bytes_per_cell) + " bytes";
    if (local_total > 0) out += " + " + std::to_string(local_total) + " local cells x " + std::to_string(bytes_per_local_cell) + " bytes";
    return out + " = " + std::to_string(bytes) + " bytes";
}

std::string KvStats::summary() const {
    std::string s = "total=" + std::to_string(total) + " used=" + std::to_string(used) + " cached=" + std::to_string(cached) +
                    " free=" + std::to_string(free) + " shared=" + std::to_string(shared) +
                    " reserved=" + std::to_string(reserved) + " peak=" + std::to_string(peak_used) +
                    " sequences=" + std::to_string(n_sequences) + " admissions=" + std::to_string(admissions);
    for (int r = 0; r < static_cast<int>(RejectReason::count); ++r) {
        s += std::string(" rejected_") + reject_reason_name(static_cast<RejectReason>(r)) + "=" + std::to_string(rejections[r]);
    }
    s += " truncations=" + std::to_string(truncations) + " shifts=" + std::to_string(shifts) +
         " prefix_hits=" + std::to_string(prefix_hits) + " prefix_hit_tokens=" + std::to_string(prefix_hit_tokens) +
         " evictions=" + std::to_string(evictions);
    if (local_total > 0) {
        s += " window=" + std::to_string(window) + " local_total=" + std::to_string(local_total) + " local_used=" + std::to_string(local_used) +
             " local_cached=" + std::to_string(local_cached) + " local_free=" + std::to_string(local_free) +
             " local_reserved=" + std::to_string(local_reserved) + " local_peak=" + std::to_string(local_peak_used);
    }
    return s;
}

// ---------------------------------------------------------------- Sequence

Sequence::Sequence(Sequence&& other) noexcept : cache_(std::move(other.cache_)), state_(std::move(other.state_)) {}

Sequence& Sequence::operator=(Sequence&& other) noexcept {
    if (this != &other) {
        release();
        cache_ = std::move(other.cache_);
        state_ = std::move(other.state_);
    }
    return *this;
}

void Sequence::release() {
    if (!state_) return;
    {
        std::lock_guard<std::mutex> lock(cache_->mu_);
        cache_->release_locked(*state_);
    }
    state_.reset();
    cache_.reset();
}

int64_t Sequence::id() const { return state_ ? state_->id : 0; }
int32_t Sequence::n_tokens() const { return state_ ? static_cast<int32_t>(state_->cells.size()) : 0; }
int32_t Sequence::reserved() const { return state_ ? state_->reserved : 0; }
int32_t Sequence::n_reused() const { return state_ ? state_->n_reused : 0; }
const std::vector<int32_t>& Sequence::cells() const {
    static const std::vector<int32_t> kEmpty;
    return state_ ? state_->cells : kEmpty;
}
const std::vector<int32_t>& Sequence::tokens() const {
    static const std::vector<int32_t> kEmpty;
    return state_ ? state_->tokens : kEmpty;
}
const std::vector<int32_t>& Sequence::local_cells() const {
    static const std::vector<int32_t> kEmpty;
    return state_ ? state_->local : kEmpty;
}
int32_t Sequence::local_begin() const { return state_ ? state_->local_begin : 0; }

void Sequence::fill_local(model::BatchToken& bt) const {
    KVRAG_CHECK(state_ != nullptr && cache_->split_local(), "fill_local on a sequence without local cells");
    const State& s = *state_;
    const int32_t n = static_cast<int32_t>(s.cells.size());
    KVRAG_CHECK(bt.pos >= s.local_begin && bt.pos < n, "fill_local for a position whose local cell is gone");
    const int32_t from = std::max(s.local_begin, bt.pos - cache_->window_ + 1);
    bt.local_cell = s.local[static_cast<size_t>(bt.pos - s.local_begin)];
    bt.local_visible = s.local.data() + (from - s.local_begin);
    bt.n_local_visible = bt.pos - from + 1;
}

// ---------------------------------------------------------------- KvCache

Result<std::shared_ptr<KvCache>> KvCache::create(const model::ModelHParams& hp, const KvCacheConfig& config,
                                                 model::KeyRotation rotation) {
    if (config.n_cells < 1) {
        return Error{Errc::engine_bad_config, "KV cache size " + std::to_string(config.n_cells) + " cells must be >= 1"};
    }
    if (config.block_tokens < 1 || config.block_tokens > 1024) {
        return Error{Errc::engine_bad_config, "prefix block size " + std::to_string(config.block_tokens) + " is outside 1..1024"};
    }
    auto geo = make_geometry(hp, config.type, config.split_local);
    if (!geo) return geo.error();
    if (geo->split() && (config.n_local_cells < 1 || config.max_append < 1)) {
        return Error{Errc::engine_bad_config, "sliding-window KV cache needs >= 1 local cells and max_append >= 1 (got " +
                                                  std::to_string(config.n_local_cells) + ", " + std::to_string(config.max_append) + ")"};
    }
    return std::make_shared<KvCache>(*geo, config, std::move(rotation));
}

KvCache::KvCache(const KvGeometry& geo, const KvCacheConfig& config, model::KeyRotation rotation)
    : store_(geo, config.n_cells, geo.split() ? config.n_local_cells : 0), config_(config), rotation_(std::move(rotation)),
      pool_(config.n_cells), local_pool_(geo.split() ? std::make_unique<CellPool>(config.n_local_cells) : nullptr),
      window_(geo.split() ? geo.n_swa : 0), local_align_(config.prefix_reuse ? config.block_tokens : 1),
      local_cap_(geo.split() ? geo.n_swa - 1 + (local_align_ - 1) + config.max_append : 0),
      prefix_(pool_, config.block_tokens, local_pool_.get(), geo.split() ? geo.n_swa - 1 : 0) {
    KVRAG_CHECK(rotation_.n_layer() == geo.n_layer, "key rotation built for another model (layer count differs)");
    counters_.total = config.n_cells;
    counters_.bytes = store_.bytes();
    counters_.bytes_per_cell = geo.bytes_per_cell();
    if (local_pool_) {
        counters_.window = window_;
        counters_.local_total = local_pool_->n_cells();
        counters_.local_bytes = store_.local_bytes();
        counters_.bytes_per_local_cell = geo.bytes_per_local_cell();
    }
}

void KvCache::check_own(const Sequence& seq) const {
    KVRAG_CHECK(seq.state_ != nullptr, "sequence is empty (released or moved from)");
    KVRAG_CHECK(seq.cache_.get() == this, "sequence belongs to another KV cache");
}

int32_t KvCache::peek_prefix(std::span<const int32_t> prompt) const {
    std::lock_guard<std::mutex> lock(mu_);
    return config_.prefix_reuse ? prefix_.peek(prompt) : 0;
}

int32_t KvCache::available_locked() const {
    return pool_.n_free() + prefix_.n_evictable_cells() - pool_.n_reserved();
}

void KvCache::note_used_locked() { counters_.peak_used = std::max(counters_.peak_used, pool_.n_used()); }

void KvCache::ref_seq_locked(int32_t cell) {
    // A cached cell's first sequence holder pins its block: the prefix cache must know.
    if (pool_.ref_seq(cell) && pool_.cached(cell)) prefix_.seq_holds(cell);
    note_used_locked();
}

void KvCache::unref_seq_locked(int32_t cell) {
    if (pool_.unref_seq(cell) && pool_.cached(cell)) prefix_.seq_released(cell);
}

int32_t KvCache::take_cell_locked() {
    while (pool_.n_free() == 0) {
        if (!prefix_.evict_one()) return -1;
    }
    const int32_t c = pool_.take();
    note_used_locked();
    return c;
}

std::optional<Sequence> KvCache::admit(std::span<const int32_t> prompt, int32_t max_tokens, bool reuse_prefix, ForkPlan forks) {
    KVRAG_CHECK(max_tokens >= 0, "admit with a negative max_tokens");
    KVRAG_CHECK(forks.n_forks >= 0, "admit with a negative fork count");
    std::lock_guard<std::mutex> lock(mu_);
    const PrefixMatch m = reuse_prefix && config_.prefix_reuse ? prefix_.match(prompt) : PrefixMatch{};
    const int32_t n_reused = static_cast<int32_t>(m.cells.size());
    const int32_t need = std::max(0, max_tokens - n_reused);
    // Sliding-window cache: the local cells this sequence may hold at once, less the reused ones
    // (which stop being reclaimable once held, like the reused blocks below).
    // With forks, each choice's window on top (fork_reserved() moves them to the forks).
    const int32_t local_each = local_pool_ ? std::min(forks.n_forks > 0 ? forks.choice_tokens : max_tokens, local_cap_) : 0;
    const int32_t local_need = local_pool_ ? std::max(0, local_each - static_cast<int32_t>(m.local_cells.size())) + forks.n_forks * local_each : 0;
    const bool local_short = local_pool_ && (static_cast<int64_t>(local_each) * (forks.n_forks + 1) > local_pool_->n_cells() ||
                                             local_available_locked() - m.n_local_reclaimable < local_need);
    // Once this sequence holds the reused blocks they stop being evictable: count them out.
    if (max_tokens > n_cells() || available_locked() - m.n_evictable_cells < need || local_short) {
        // The peak has always included the reused cells of a refused admission (they used to
        // be referenced before the check and dropped after it); keep reporting the same peak.
        int32_t n_first = 0;
        for (int32_t c : m.cells) n_first += pool_.seq_refs(c) == 0 ? 1 : 0;
        counters_.peak_used = std::max(counters_.peak_used, pool_.n_used() + n_first);
        return std::nullopt;
    }
    auto st = std::make_unique<Sequence::State>();
    st->cells = m.cells;
    st->tokens = m.tokens;
    for (int32_t c : st->cells) ref_seq_locked(c);  // held by the cache already, so never free
    if (local_pool_) {
        st->local = m.local_cells;
        st->local_begin = n_reused - static_cast<int32_t>(m.local_cells.size());
        for (int32_t lc : st->local) ref_local_locked(lc);
        st->local_reserved = local_need;
        local_pool_->reserve(local_need);
    }
    prefix_.touch(m.blocks);
    st->id = next_seq_id_++;
    st->reserved = need;
    st->n_reused = n_reused;
    pool_.reserve(need);
    ++counters_.admissions;
    if (n_reused > 0) {
        ++counters_.prefix_hits;
        counters_.prefix_hit_tokens += static_cast<uint64_t>(n_reused);
    }
    live_[st->id] = st.get();
    return Sequence(shared_from_this(), std::move(st));
}

std::optional<Sequence> KvCache::fork(const Sequence& parent, int32_t reserve) {
    check_own(parent);
    KVRAG_CHECK(reserve >= 0, "fork with a negative reservation");
    std::lock_guard<std::mutex> lock(mu_);
    const Sequence::State& ps = *parent.state_;
    const int32_t local_need =
        local_pool_ ? std::max(0, std::min(static_cast<int32_t>(ps.cells.size()) + reserve, local_cap_) - static_cast<int32_t>(ps.local.size())) : 0;
    if (available_locked() < reserve || (local_pool_ && local_available_locked() < local_need)) return std::nullopt;
    auto st = std::make_unique<Sequence::State>();
    st->cells = ps.cells;
    st->tokens = ps.tokens;
    for (int32_t c : st->cells) ref_seq_locked(c);
    if (local_pool_) {
        st->local = ps.local;
        st->local_begin = ps.local_begin;
        for (int32_t lc : st->local) ref_local_locked(lc);
        st->local_reserved = local_need;
        local_pool_->reserve(local_need);
    }
    st->id = next_seq_id_++;
    st->reserved = reserve;
    pool_.reserve(reserve);
    ++counters_.admissions;
    live_[st->id] = st.get();
    return Sequence(shared_from_this(), std::move(st));
}

Sequence KvCache::fork_reserved(Sequence& parent, int32_t n_keep, int32_t reserve) {
    check_own(parent);
    std::lock_guard<std::mutex> lock(mu_);
    Sequence::State& ps = *parent.state_;
    KVRAG_CHECK(n_keep >= 0 && static_cast<size_t>(n_keep) <= ps.cells.size(), "fork_reserved keeps positions the parent does not hold");
    KVRAG_CHECK(reserve >= 0 && reserve <= ps.reserved, "fork_reserved beyond the parent's reservation");
    auto st = std::make_unique<Sequence::State>();
    st->cells.assign(ps.cells.begin(), ps.cells.begin() + n_keep);
    st->tokens.assign(ps.tokens.begin(), ps.tokens.begin() + n_keep);
    for (int32_t c : st->cells) ref_seq_locked(c);
    // The pool's reservation total is unchanged: the cells only change holder.
    ps.reserved -= reserve;
    st->reserved = reserve;
    if (local_pool_) fork_local_locked(ps, *st, n_keep, std::min(n_keep + reserve, local_cap_));
    st->id = next_seq_id_++;
    ++counters_.admissions;
    live_[st->id] = st.get();
    return Sequence(shared_from_this(), std::move(st));
}

void KvCache::release_locked(Sequence::State& s) {
    for (int32_t c : s.cells) unref_seq_locked(c);
    pool_.unreserve(s.reserved);
    if (local_pool_) {
        for (int32_t lc : s.local) unref_local_locked(lc);
        local_pool_->unreserve(s.local_reserved);
        s.local.clear();
        s.local_reserved = 0;
    }
    s.cells.clear();
    s.tokens.clear();
    s.reserved = 0;
    live_.erase(s.id);
}

bool KvCache::append(Sequence& seq, std::span<const int32_t> tokens) {
    check_own(seq);
    std::lock_guard<std::mutex> lock(mu_);
    Sequence::State& s = *seq.state_;
    const int32_t n = static_cast<int32_t>(tokens.size());
    const int32_t from_reserve = std::min(n, s.reserved);
    const int32_t extra = n - from_reserve;
    if (extra > 0 && available_locked() < extra) return false;
    const size_t before = s.cells.size();
    int32_t from_local_reserve = 0;
    if (local_pool_) {
        // The new tokens' windows reach back n_swa - 1 positions: older local cells can go,
        // in whole prefix blocks so that a block published later carries all its local cells.
        const int32_t reach = std::max(0, static_cast<int32_t>(before) - (window_ - 1));
        trim_local_locked(s, reach / local_align_ * local_align_);
        from_local_reserve = std::min(n, s.local_reserved);
        if (n - from_local_reserve > 0 && local_available_locked() < n - from_local_reserve) return false;
    }
    const size_t local_before = s.local.size();
    for (int32_t i = 0; i < n; ++i) {
        const int32_t c = take_cell_locked();
        const int32_t lc = c >= 0 && local_pool_ ? take_local_locked() : 0;
        if (c < 0 || lc < 0) {  // cannot happen while the accounting holds; undo and report no room
            if (c >= 0) unref_seq_locked(c);
            for (size_t k = before; k < s.cells.size(); ++k) unref_seq_locked(s.cells[k]);
            for (size_t k = local_before; k < s.local.size(); ++k) unref_local_locked(s.local[k]);
            s.cells.resize(before);
            s.tokens.resize(before);
            s.local.resize(local_before);
            return false;
        }
        s.cells.push_back(c);
        s.tokens.push_back(tokens[i]);
        if (local_pool_) s.local.push_back(lc);
    }
    s.reserved -= from_reserve;
    pool_.unreserve(from_reserve);
    if (local_pool_) {
        s.local_reserved -= from_local_reserve;
        local_pool_->unreserve(from_local_reserve);
    }
    return true;
}

void KvCache::truncate(Sequence& seq, int32_t n_keep) {
    check_own(seq);
    std::lock_guard<std::mutex> lock(mu_);
    Sequence::State& s = *seq.state_;
    n_keep = std::max(0, n_keep);
    if (static_cast<size_t>(n_keep) >= s.cells.size()) return;
    const int32_t dropped = static_cast<int32_t>(s.cells.size()) - n_keep;
    for (size_t k = static_cast<size_t>(n_keep); k < s.cells.size(); ++k) unref_seq_locked(s.cells[k]);
    s.cells.resize(static_cast<size_t>(n_keep));
    s.tokens.resize(static_cast<size_t>(n_keep));
    if (local_pool_) {
        // Positions >= n_keep lose their local cells too. When the cut goes below the local
        // cells still held, later tokens see a shorter window (as after a shift).
        const int32_t keep_local = std::clamp(n_keep - s.local_begin, 0, static_cast<int32_t>(s.local.size()));
        const int32_t dropped_local = static_cast<int32_t>(s.local.size()) - keep_local;
        for (size_t k = static_cast<size_t>(keep_local); k < s.local.size(); ++k) unref_local_locked(s.local[k]);
        s.local.resize(static_cast<size_t>(keep_local));
        s.local_begin = std::min(s.local_begin, n_keep);
        grant_local_locked(s, dropped_local);
    }
    // The sequence may grow back to where it was, so its worst case still holds.
    const int32_t grant = std::clamp(available_locked(), 0, dropped);
    s.reserved += grant;
    pool_.reserve(grant);
}

void KvCache::copy_cell_locked(int32_t dst, int32_t src) {
    const size_t rb = store_.geometry().row_bytes();
    for (int il = 0; il < store_.geometry().n_layer; ++il) {
        if (store_.geometry().is_local(il)) continue;  // those rows live in local cells
        const model::KvLayerRef l = store_.layer(il);
        std::memcpy(l.k + static_cast<size_t>(dst) * rb, l.k + static_cast<size_t>(src) * rb, rb);
        std::memcpy(l.v + static_cast<size_t>(dst) * rb, l.v + static_cast<size_t>(src) * rb, rb);
    }
}

bool KvCache::shift(Sequence& seq, int32_t n_keep, int32_t n_discard) {
    check_own(seq);
    std::lock_guard<std::mutex> lock(mu_);
    Sequence::State& s = *seq.state_;
    const int32_t n = static_cast<int32_t>(s.cells.size());
    KVRAG_CHECK(n_keep >= 0 && n_discard >= 1 && n_keep + n_discard <= n, "shift range [n_keep, n_keep + n_discard) outside the sequence");
    // Moved cells that someone else also holds must be copied before they are rotated.
    int32_t n_copies = 0, n_freed = 0;
    for (int32_t p = n_keep + n_discard; p < n; ++p) n_copies += pool_.refs(s.cells[p]) > 1 ? 1 : 0;
    for (int32_t p = n_keep; p < n_keep + n_discard; ++p) n_freed += pool_.refs(s.cells[p]) == 1 ? 1 : 0;
    if (n_copies > 0 && available_locked() + n_freed < n_copies) return false;
    if (local_pool_ && !shift_local_check_locked(s, n_keep, n_discard)) return false;
    for (int32_t p = n_keep; p < n_keep + n_discard; ++p) unref_seq_locked(s.cells[p]);
    for (int32_t p = n_keep + n_discard; p < n; ++p) {
        int32_t c = s.cells[p];
        if (pool_.refs(c) > 1) {
            const int32_t fresh = take_cell_locked();
            KVRAG_CHECK(fresh >= 0, "no cell for a copy although room for every copy was checked");
            copy_cell_locked(fresh, c);
            unref_seq_locked(c);
            s.cells[p] = c = fresh;
        }
        rotation_.rotate(store_, c, -n_discard, local_pool_ ? model::KeyRotation::Layers::global : model::KeyRotation::Layers::all);
    }
    if (local_pool_) shift_local_locked(s, n_keep, n_discard);
    s.cells.erase(s.cells.begin() + n_keep, s.cells.begin() + n_keep + n_discard);
    s.tokens.erase(s.tokens.begin() + n_keep, s.tokens.begin() + n_keep + n_discard);
    // The sequence will grow again by up to n_discard positions; reserve what is available.
    const int32_t grant = std::clamp(available_locked(), 0, n_discard);
    s.reserved += grant;
    pool_.reserve(grant);
    ++counters_.shifts;
    s.shifted = true;  // its cells no longer match a fresh prefill of its tokens
    return true;
}

void KvCache::publish_prefix(Sequence& seq, int32_t n_prompt) {
    check_own(seq);
    if (!config_.prefix_reuse) return;
    std::lock_guard<std::mutex> lock(mu_);
    Sequence::State& s = *seq.state_;
    if (s.published || s.shifted) return;
    s.published = true;
    publish_locked(s, std::min(static_cast<size_t>(std::max(0, n_prompt)), s.cells.size()), /*keep_first_sight=*/false);
}

void KvCache::publish_continuation(Sequence& seq) {
    check_own(seq);
    if (!config_.prefix_reuse) return;
    std::lock_guard<std::mutex> lock(mu_);
    Sequence::State& s = *seq.state_;
    if (s.continued || s.shifted) return;
    s.continued = true;
    publish_locked(s, s.cells.size(), /*keep_first_sight=*/true);
}

void KvCache::publish_locked(const Sequence::State& s, size_t n_positions, bool keep_first_sight) {
    const size_t n_blocks = n_positions / static_cast<size_t>(config_.block_tokens);
    if (!local_pool_) {
        prefix_.publish(s.tokens, s.cells, n_blocks, {}, keep_first_sight);
        return;
    }
    // Each published position's local cell, -1 where this sequence no longer holds it.
    std::vector<int32_t> local(n_blocks * static_cast<size_t>(config_.block_tokens), -1);
    for (size_t i = 0; i < s.local.size(); ++i) {
        const size_t p = static_cast<size_t>(s.local_begin) + i;
        if (p < local.size()) local[p] = s.local[i];
    }
    prefix_.publish(s.tokens, s.cells, n_blocks, local, keep_first_sight);
}

void KvCache::clear_prefix_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    prefix_.clear();
}

void KvCache::note_rejection(RejectReason reason) {
    std::lock_guard<std::mutex> lock(mu_);
    ++counters_.rejections[static_cast<int>(reason)];
}

void KvCache::note_truncation() {
    std::lock_guard<std::mutex> lock(mu_);
    ++counters_.truncations;
}

KvStats KvCache::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    KvStats st = counters_;
    st.used = pool_.n_used();
    st.free = pool_.n_free();
    st.reserved = pool_.n_reserved();
    st.n_sequences = static_cast<int32_t>(live_.size());
    st.prefix_blocks = prefix_.n_blocks();
    st.cached = prefix_.n_cached_cells();
    st.evictions = prefix_.n_evictions();
    for (int32_t c = 0; c < st.total; ++c) st.shared += pool_.refs(c) > 1 ? 1 : 0;
    if (local_pool_) {
        st.local_used = local_pool_->n_used();
        st.local_free = local_pool_->n_free();
        st.local_reserved = local_pool_->n_reserved();
        st.local_cached = prefix_.n_cached_local_cells();
    }
    for (const auto& [id, s] : live_) {
        SequenceUsage u{id, static_cast<int32_t>(s->cells.size()), 0, s->reserved, static_cast<int32_t>(s->local.size())};
        for (int32_t c : s->cells) u.n_shared += pool_.refs(c) > 1 ? 1 : 0;
        st.sequences.push_back(u);
    }
    std::sort(st.sequences.begin(), st.sequences.end(), [](const auto& a, const auto& b) { return a.seq_id < b.seq_id; });
    return st;
}

std::string KvCache::check_invariants() const {
    std::lock_guard<std::mutex> lock(mu_);
    if (std::string e = pool_.check_invariants(); !e.empty()) return "cell pool: " + e;
    if (std::string e = prefix_.check_invariants(); !e.empty()) return "prefix cache: " + e;
    std::vector<int32_t> expect(static_cast<size_t>(n_cells()), 0);
    int32_t reserved = 0;
    for (const auto& [id, s] : live_) {
        if (s->cells.size() != s->tokens.size()) return "sequence " + std::to_string(id) + " has cells/tokens of different lengths";
        for (int32_t c : s->cells) {
            if (c < 0 || c >= n_cells()) return "sequence " + std::to_string(id) + " holds cell " + std::to_string(c) + " outside the cache";
            ++expect[static_cast<size_t>(c)];
        }
        if (s->reserved < 0) return "sequence " + std::to_string(id) + " has negative reservation";
        reserved += s->reserved;
    }
    for (int32_t c = 0; c < n_cells(); ++c) {
        if (pool_.seq_refs(c) != expect[static_cast<size_t>(c)]) {
            return "cell " + std::to_string(c) + " has " + std::to_string(pool_.seq_refs(c)) + " sequence references but " +
                   std::to_string(expect[static_cast<size_t>(c)]) + " sequences hold it";
        }
    }
    if (reserved != pool_.n_reserved()) return "reserved total " + std::to_string(pool_.n_reserved()) + " != sum " + std::to_string(reserved);
    if (pool_.n_free() + prefix_.n_evictable_cells() < pool_.n_reserved()) {
        return "reservations " + std::to_string(pool_.n_reserved()) + " exceed free + evictable cells";
    }
    return check_local_invariants_locked();
}

}  // namespace kvrag::kvcache
