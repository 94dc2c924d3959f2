#include "kvcache/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "kernels/ops.h"
#include "kernels/quant.h"

namespace kvrag::kvcache {

const char* reject_reason_name(RejectReason r) {
    switch (r) {
        case RejectReason::never_fits: return "never_fits";
        case RejectReason::busy: return "busy";
        case RejectReason::timeout: return "timeout";
        default: return "?";
    }
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

// ---------------------------------------------------------------- KvCache

Result<std::shared_ptr<KvCache>> KvCache::create(const model::ModelHParams& hp, const KvCacheConfig& config) {
    if (config.n_cells < 1) {
        return Error{Errc::engine_bad_config, "KV cache size " + std::to_string(config.n_cells) + " cells must be >= 1"};
    }
    if (config.block_tokens < 1 || config.block_tokens > 1024) {
        return Error{Errc::engine_bad_config, "prefix block size " + std::to_string(config.block_tokens) + " is outside 1..1024"};
    }
    auto geo = make_geometry(hp, config.type);
    if (!geo) return geo.error();
    RopeParams rope{hp.n_rot, hp.rope_freq_base, hp.rope_freq_scale, hp.rope_neox, {}};
    return std::make_shared<KvCache>(*geo, config, std::move(rope));
}

KvCache::KvCache(const KvGeometry& geo, const KvCacheConfig& config, RopeParams rope)
    : store_(geo, config.n_cells), config_(config), rope_(std::move(rope)), ref_(config.n_cells, 0),
      in_cache_(config.n_cells, 0) {
    free_.reserve(config.n_cells);
    // Lowest cell on top of the stack: cells are handed out in ascending order on a fresh cache.
    for (int32_t c = config.n_cells - 1; c >= 0; --c) free_.push_back(c);
    counters_.total = config.n_cells;
    counters_.bytes = store_.bytes();
    counters_.bytes_per_cell = geo.bytes_per_cell();
}

uint64_t KvCache::block_hash(uint64_t parent, std::span<const int32_t> tokens) const {
    // splitmix64-style mixing of the parent hash and each token: a block's hash names its
    // whole prefix, so equal hashes mean equal prefixes (tokens are compared too, on lookup).
    uint64_t h = parent ^ 0x9e3779b97f4a7c15ull;
    for (int32_t t : tokens) {
        h ^= static_cast<uint64_t>(static_cast<uint32_t>(t)) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
        h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
        h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
        h ^= h >> 31;
    }
    return h == 0 ? 1 : h;
}

std::vector<uint64_t> KvCache::match_locked(std::span<const int32_t> prompt) const {
    std::vector<uint64_t> out;
    if (!config_.prefix_reuse || prompt.empty()) return out;
    const size_t B = static_cast<size_t>(config_.block_tokens);
    const size_t max_blocks = (prompt.size() - 1) / B;  // leave >= 1 token to compute
    uint64_t parent = 0;
    for (size_t i = 0; i < max_blocks; ++i) {
        const auto toks = prompt.subspan(i * B, B);
        const uint64_t h = block_hash(parent, toks);
        auto it = blocks_.find(h);
        if (it == blocks_.end() || it->second.parent != parent ||
            !std::equal(toks.begin(), toks.end(), it->second.tokens.begin())) {
            break;
        }
        out.push_back(h);
        parent = h;
    }
    return out;
}

int32_t KvCache::peek_prefix(std::span<const int32_t> prompt) const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int32_t>(match_locked(prompt).size()) * config_.block_tokens;
}

int32_t KvCache::evictable_cells_locked() const {
    std::unordered_map<uint64_t, bool> pinned;
    for (const auto& [h, b] : blocks_) {
        bool only_cache = true;
        for (int32_t c : b.cells) only_cache = only_cache && ref_[c] == 1;
        if (!only_cache) {
            for (uint64_t x = h; x != 0 && !pinned[x];) {
                pinned[x] = true;
                auto it = blocks_.find(x);
                x = it == blocks_.end() ? 0 : it->second.parent;
            }
        }
    }
    int32_t n = 0;
    for (const auto& [h, b] : blocks_) {
        auto it = pinned.find(h);
        if (it == pinned.end() || !it->second) n += static_cast<int32_t>(b.cells.size());
    }
    return n;
}

int32_t KvCache::available_locked() const {
    return static_cast<int32_t>(free_.size()) + evictable_cells_locked() - reserved_;
}

void KvCache::note_used_locked() { counters_.peak_used = std::max(counters_.peak_used, live_used_); }

void KvCache::ref_seq_locked(int32_t cell) {
    if (ref_[cell] - in_cache_[cell] == 0) ++live_used_;
    ++ref_[cell];
    note_used_locked();
}

void KvCache::unref_locked(int32_t cell) {
    if (--ref_[cell] - in_cache_[cell] == 0) --live_used_;
    if (ref_[cell] == 0) {
        free_.push_back(cell);
        --held_;
    }
}

void KvCache::unref_cache_locked(int32_t cell) {
    in_cache_[cell] = 0;
    if (--ref_[cell] == 0) {
        free_.push_back(cell);
        --held_;
    }
}

bool KvCache::evict_one_locked() {
    uint64_t victim = 0;
    uint64_t oldest = UINT64_MAX;
    for (const auto& [h, b] : blocks_) {
        if (b.n_children != 0 || b.last_used >= oldest) continue;
        bool only_cache = true;
        for (int32_t c : b.cells) only_cache = only_cache && ref_[c] == 1;
        if (only_cache) {
            victim = h;
            oldest = b.last_used;
        }
    }
    if (oldest == UINT64_MAX) return false;
    Block& b = blocks_[victim];
    for (int32_t c : b.cells) unref_cache_locked(c);
    if (b.parent != 0) {
        auto p = blocks_.find(b.parent);
        if (p != blocks_.end()) --p->second.n_children;
    }
    blocks_.erase(victim);
    ++counters_.evictions;
    return true;
}

int32_t KvCache::take_cell_locked() {
    while (free_.empty()) {
        if (!evict_one_locked()) return -1;
    }
    const int32_t c = free_.back();
    free_.pop_back();
    ref_[c] = 1;
    ++held_;
    ++live_used_;
    note_used_locked();
    return c;
}

std::optional<Sequence> KvCache::admit(std::span<const int32_t> prompt, int32_t max_tokens, bool reuse_prefix) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::vector<uint64_t> hashes = reuse_prefix ? match_locked(prompt) : std::vector<uint64_t>{};
    auto st = std::make_unique<Sequence::State>();
    for (uint64_t h : hashes) {
        const Block& b = blocks_.at(h);
        st->cells.insert(st->cells.end(), b.cells.begin(), b.cells.end());
        st->tokens.insert(st->tokens.end(), b.tokens.begin(), b.tokens.end());
    }
    for (int32_t c : st->cells) ref_seq_locked(c);  // held by the cache already, so never free
    const int32_t n_reused = static_cast<int32_t>(st->cells.size());
    const int32_t need = std::max(0, max_tokens - n_reused);
    if (max_tokens > n_cells() || available_locked() < need) {
        for (int32_t c : st->cells) unref_locked(c);
        return std::nullopt;
    }
    ++clock_;
    for (uint64_t h : hashes) blocks_.at(h).last_used = clock_;
    st->id = next_seq_id_++;
    st->reserved = need;
    st->n_reused = n_reused;
    reserved_ += need;
    ++counters_.admissions;
    if (n_reused > 0) {
        ++counters_.prefix_hits;
        counters_.prefix_hit_tokens += static_cast<uint64_t>(n_reused);
    }
    live_[st->id] = st.get();
    return Sequence(shared_from_this(), std::move(st));
}

std::optional<Sequence> KvCache::fork(const Sequence& parent, int32_t reserve) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!parent.state_ || parent.cache_.get() != this || reserve < 0 || available_locked() < reserve) return std::nullopt;
    auto st = std::make_unique<Sequence::State>();
    st->cells = parent.state_->cells;
    st->tokens = parent.state_->tokens;
    for (int32_t c : st->cells) ref_seq_locked(c);
    st->id = next_seq_id_++;
    st->reserved = reserve;
    reserved_ += reserve;
    ++counters_.admissions;
    live_[st->id] = st.get();
    return Sequence(shared_from_this(), std::move(st));
}

void KvCache::release_locked(Sequence::State& s) {
    for (int32_t c : s.cells) unref_locked(c);
    reserved_ -= s.reserved;
    s.cells.clear();
    s.tokens.clear();
    s.reserved = 0;
    live_.erase(s.id);
}

bool KvCache::append(Sequence& seq, std::span<const int32_t> tokens) {
    if (!seq.state_ || seq.cache_.get() != this) return false;
    std::lock_guard<std::mutex> lock(mu_);
    Sequence::State& s = *seq.state_;
    const int32_t n = static_cast<int32_t>(tokens.size());
    const int32_t from_reserve = std::min(n, s.reserved);
    const int32_t extra = n - from_reserve;
    if (extra > 0 && available_locked() < extra) return false;
    const size_t before = s.cells.size();
    for (int32_t i = 0; i < n; ++i) {
        const int32_t c = take_cell_locked();
        if (c < 0) {  // cannot happen while the accounting holds; undo and report no room
            for (size_t k = before; k < s.cells.size(); ++k) unref_locked(s.cells[k]);
            s.cells.resize(before);
            s.tokens.resize(before);
            return false;
        }
        s.cells.push_back(c);
        s.tokens.push_back(tokens[i]);
    }
    s.reserved -= from_reserve;
    reserved_ -= from_reserve;
    return true;
}

void KvCache::truncate(Sequence& seq, int32_t n_keep) {
    if (!seq.state_ || seq.cache_.get() != this) return;
    std::lock_guard<std::mutex> lock(mu_);
    Sequence::State& s = *seq.state_;
    n_keep = std::max(0, n_keep);
    if (static_cast<size_t>(n_keep) >= s.cells.size()) return;
    const int32_t dropped = static_cast<int32_t>(s.cells.size()) - n_keep;
    for (size_t k = static_cast<size_t>(n_keep); k < s.cells.size(); ++k) unref_locked(s.cells[k]);
    s.cells.resize(static_cast<size_t>(n_keep));
    s.tokens.resize(static_cast<size_t>(n_keep));
    // The sequence may grow back to where it was, so its worst case still holds.
    const int32_t grant = std::clamp(available_locked(), 0, dropped);
    s.reserved += grant;
    reserved_ += grant;
}

void KvCache::copy_cell_locked(int32_t dst, int32_t src) {
    const size_t rb = store_.geometry().row_bytes();
    for (int il = 0; il < store_.geometry().n_layer; ++il) {
        const model::KvLayerRef l = store_.layer(il);
        std::memcpy(l.k + static_cast<size_t>(dst) * rb, l.k + static_cast<size_t>(src) * rb, rb);
        std::memcpy(l.v + static_cast<size_t>(dst) * rb, l.v + static_cast<size_t>(src) * rb, rb);
    }
}

void KvCache::rotate_cell_locked(int32_t cell, int32_t delta) {
    // RoPE angles are linear in the position, so R(p + delta) = R(delta) R(p): rotating a
    // stored key by delta moves it to its new position without recomputing it.
    const KvGeometry& g = store_.geometry();
    const int32_t hd = g.head_dim, n_kv_heads = g.n_embd_kv / hd;
    rot_scratch_.resize(static_cast<size_t>(hd) + static_cast<size_t>(rope_.n_rot));
    float* row = rot_scratch_.data();
    float* cs = row + hd;
    kernels::rope_table(cs, static_cast<float>(delta), rope_.n_rot, rope_.freq_base, rope_.freq_scale,
                        rope_.freq_factors.empty() ? nullptr : rope_.freq_factors.data());
    const size_t head_bytes = ggml_row_size(g.type, hd);
    for (int il = 0; il < g.n_layer; ++il) {
        uint8_t* k = store_.layer(il).k + static_cast<size_t>(cell) * g.row_bytes();
        for (int32_t h = 0; h < n_kv_heads; ++h) {
            kernels::dequantize_row(g.type, k + h * head_bytes, row, hd);
            kernels::rope_apply(row, cs, rope_.n_rot, rope_.neox);
            kernels::quantize_row(g.type, row, k + h * head_bytes, hd);
        }
    }
}

bool KvCache::shift(Sequence& seq, int32_t n_keep, int32_t n_discard) {
    if (!seq.state_ || seq.cache_.get() != this) return false;
    std::lock_guard<std::mutex> lock(mu_);
    Sequence::State& s = *seq.state_;
    const int32_t n = static_cast<int32_t>(s.cells.size());
    if (n_keep < 0 || n_discard < 1 || n_keep + n_discard > n) return false;
    // Moved cells that someone else also holds must be copied before they are rotated.
    int32_t n_copies = 0, n_freed = 0;
    for (int32_t p = n_keep + n_discard; p < n; ++p) n_copies += ref_[s.cells[p]] > 1 ? 1 : 0;
    for (int32_t p = n_keep; p < n_keep + n_discard; ++p) n_freed += ref_[s.cells[p]] == 1 ? 1 : 0;
    if (n_copies > 0 && available_locked() + n_freed < n_copies) return false;
    for (int32_t p = n_keep; p < n_keep + n_discard; ++p) unref_locked(s.cells[p]);
    for (int32_t p = n_keep + n_discard; p < n; ++p) {
        int32_t c = s.cells[p];
        if (ref_[c] > 1) {
            const int32_t fresh = take_cell_locked();
            copy_cell_locked(fresh, c);
            unref_locked(c);
            s.cells[p] = c = fresh;
        }
        rotate_cell_locked(c, -n_discard);
    }
    s.cells.erase(s.cells.begin() + n_keep, s.cells.begin() + n_keep + n_discard);
    s.tokens.erase(s.tokens.begin() + n_keep, s.tokens.begin() + n_keep + n_discard);
    // The sequence will grow again by up to n_discard positions; reserve what is available.
    const int32_t grant = std::clamp(available_locked(), 0, n_discard);
    s.reserved += grant;
    reserved_ += grant;
    ++counters_.shifts;
    s.published = true;  // its cells no longer match a fresh prefill of its tokens
    return true;
}

void KvCache::publish_prefix(Sequence& seq, int32_t n_prompt) {
    if (!seq.state_ || seq.cache_.get() != this || !config_.prefix_reuse) return;
    std::lock_guard<std::mutex> lock(mu_);
    Sequence::State& s = *seq.state_;
    if (s.published) return;
    s.published = true;
    const size_t B = static_cast<size_t>(config_.block_tokens);
    const size_t n_blocks = std::min(static_cast<size_t>(std::max(0, n_prompt)), s.cells.size()) / B;
    if (seen_.size() > (1u << 16)) seen_.clear();  // bounded memory for the admission filter
    ++clock_;
    uint64_t parent = 0;
    bool chain = true;  // a block can only be cached if its whole prefix is
    for (size_t i = 0; i < n_blocks; ++i) {
        const std::span<const int32_t> toks(s.tokens.data() + i * B, B);
        const uint64_t h = block_hash(parent, toks);
        auto it = blocks_.find(h);
        if (it != blocks_.end()) {
            if (it->second.parent != parent || !std::equal(toks.begin(), toks.end(), it->second.tokens.begin())) break;
            // This sequence computed its own copy of a block cached meanwhile: its later blocks
            // must not hang below cells it does not hold (a live child would pin the parent).
            if (!std::equal(it->second.cells.begin(), it->second.cells.end(), s.cells.begin() + static_cast<std::ptrdiff_t>(i * B))) break;
            it->second.last_used = clock_;
        } else {
            uint32_t& seen = seen_[h];
            seen += 1;
            // A cell already in another block holds another prefix's K/V: never cache it twice.
            bool fresh = true;
            for (size_t k = i * B; k < (i + 1) * B; ++k) fresh = fresh && in_cache_[s.cells[k]] == 0;
            if (chain && fresh && seen >= 2) {
                Block b;
                b.parent = parent;
                b.tokens.assign(toks.begin(), toks.end());
                b.cells.assign(s.cells.begin() + static_cast<std::ptrdiff_t>(i * B), s.cells.begin() + static_cast<std::ptrdiff_t>((i + 1) * B));
                b.last_used = clock_;
                for (int32_t c : b.cells) {
                    ++ref_[c];
                    in_cache_[c] = 1;
                }
                if (parent != 0) ++blocks_.at(parent).n_children;
                blocks_.emplace(h, std::move(b));
            } else {
                chain = false;
            }
        }
        parent = h;
    }
}

void KvCache::clear_prefix_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    while (evict_one_locked()) {
    }
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
    st.used = live_used_;
    st.free = st.total - held_;
    st.reserved = reserved_;
    st.n_sequences = static_cast<int32_t>(live_.size());
    st.prefix_blocks = static_cast<int32_t>(blocks_.size());
    for (int32_t c = 0; c < st.total; ++c) st.shared += ref_[c] > 1 ? 1 : 0;
    for (const auto& [h, b] : blocks_) st.cached += static_cast<int32_t>(b.cells.size());
    for (const auto& [id, s] : live_) {
        SequenceUsage u{id, static_cast<int32_t>(s->cells.size()), 0, s->reserved};
        for (int32_t c : s->cells) u.n_shared += ref_[c] > 1 ? 1 : 0;
        st.sequences.push_back(u);
    }
    std::sort(st.sequences.begin(), st.sequences.end(), [](const auto& a, const auto& b) { return a.seq_id < b.seq_id; });
    return st;
}

std::string KvCache::check_invariants() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<int32_t> expect(ref_.size(), 0);
    int32_t reserved = 0;
    for (const auto& [id, s] : live_) {
        if (s->cells.size() != s->tokens.size()) return "sequence " + std::to_string(id) + " has cells/tokens of different lengths";
        for (int32_t c : s->cells) {
            if (c < 0 || c >= n_cells()) return "sequence " + std::to_string(id) + " holds cell " + std::to_string(c) + " outside the cache";
            ++expect[c];
        }
        if (s->reserved < 0) return "sequence " + std::to_string(id) + " has negative reservation";
        reserved += s->reserved;
    }
    std::vector<int32_t> cached(ref_.size(), 0);
    for (const auto& [h, b] : blocks_) {
        for (int32_t c : b.cells) {
            ++expect[c];
            ++cached[c];
        }
        int32_t children = 0;
        for (const auto& [h2, b2] : blocks_) children += b2.parent == h ? 1 : 0;
        if (children != b.n_children) return "prefix block child count " + std::to_string(b.n_children) + " != actual " + std::to_string(children);
    }
    for (size_t c = 0; c < ref_.size(); ++c) {
        if (cached[c] != in_cache_[c]) return "cell " + std::to_string(c) + " cache flag " + std::to_string(in_cache_[c]) + " but held by " + std::to_string(cached[c]) + " blocks";
    }
    int32_t used = 0;
    for (size_t c = 0; c < ref_.size(); ++c) {
        if (ref_[c] != expect[c]) {
            return "cell " + std::to_string(c) + " has ref " + std::to_string(ref_[c]) + " but " + std::to_string(expect[c]) + " holders";
        }
        used += ref_[c] > 0 ? 1 : 0;
    }
    if (used != held_) return "held count " + std::to_string(held_) + " != actual " + std::to_string(used);
    int32_t live = 0;
    for (size_t c = 0; c < ref_.size(); ++c) live += ref_[c] - in_cache_[c] > 0 ? 1 : 0;
    if (live != live_used_) return "used-by-sequences count " + std::to_string(live_used_) + " != actual " + std::to_string(live);
    if (static_cast<int32_t>(free_.size()) != n_cells() - used) {
        return "free list has " + std::to_string(free_.size()) + " cells, expected " + std::to_string(n_cells() - used);
    }
    std::vector<char> in_free(ref_.size(), 0);
    for (int32_t c : free_) {
        if (ref_[c] != 0 || in_free[c]) return "free list holds cell " + std::to_string(c) + " twice or in use";
        in_free[c] = 1;
    }
    if (reserved != reserved_) return "reserved total " + std::to_string(reserved_) + " != sum " + std::to_string(reserved);
    if (static_cast<int32_t>(free_.size()) + evictable_cells_locked() < reserved_) {
        return "reservations " + std::to_string(reserved_) + " exceed free + evictable cells";
    }
    return "";
}

}  // namespace kvrag::kvcache
