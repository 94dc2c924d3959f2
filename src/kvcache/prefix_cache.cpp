#include "kvcache/prefix_cache.h"

#include <algorithm>

#include "core/check.h"

namespace kvrag::kvcache {

PrefixCache::PrefixCache(CellPool& pool, int32_t block_tokens, CellPool* local_pool, int32_t local_span)
    : pool_(pool), block_tokens_(block_tokens), owner_(static_cast<size_t>(pool.n_cells()), nullptr), local_pool_(local_pool),
      local_span_(local_span) {
    KVRAG_CHECK(block_tokens >= 1, "a prefix block needs at least one token");
    KVRAG_CHECK(local_span >= 0, "negative local span");
    if (local_pool_ != nullptr) {
        const size_t n = static_cast<size_t>(local_pool_->n_cells());
        local_owner_.assign(n, nullptr);
        lprev_.assign(n, -1);
        lnext_.assign(n, -1);
        in_lfree_.assign(n, 0);
    }
}

uint64_t PrefixCache::block_hash(uint64_t parent, std::span<const int32_t> tokens) {
    // splitmix64-style mixing of the parent hash and each token: a block's hash names its
    // whole prefix, so equal hashes mean equal prefixes (tokens are compared too, on lookup).
    uint64_t h = parent ^ 0x9e3779b97f4a7c15ull;
    for (int32_t t : tokens) {
        h ^= static_cast<uint64_t>(static_cast<uint32_t>(t)) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
        h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
        h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
        h ^= h >> 31;
    }
    return h == 0 ? 1 : h;  // 0 means "no parent"
}

// ---------------------------------------------------------------- lookup

PrefixMatch PrefixCache::match(std::span<const int32_t> prompt) const {
    PrefixMatch m;
    if (prompt.empty()) return m;
    const size_t B = static_cast<size_t>(block_tokens_);
    const size_t max_blocks = (prompt.size() - 1) / B;  // leave >= 1 token to compute
    uint64_t parent = 0;
    for (size_t i = 0; i < max_blocks; ++i) {
        const auto toks = prompt.subspan(i * B, B);
        const uint64_t h = block_hash(parent, toks);
        auto it = blocks_.find(h);
        if (it == blocks_.end() || it->second.parent != parent || !std::equal(toks.begin(), toks.end(), it->second.tokens.begin())) {
            break;
        }
        const Block& b = it->second;
        m.blocks.push_back(h);
        m.cells.insert(m.cells.end(), b.cells.begin(), b.cells.end());
        m.tokens.insert(m.tokens.end(), b.tokens.begin(), b.tokens.end());
        if (!b.pinned()) m.n_evictable_cells += block_tokens_;
        parent = h;
    }
    if (local_pool_ == nullptr || m.blocks.empty()) return m;
    // Sliding-window cache: the reuse may end after k blocks only when the blocks covering
    // positions [k * B - local_span, k * B) all carry local cells. Take the largest such k.
    const int32_t n_match = static_cast<int32_t>(m.blocks.size());
    std::vector<const Block*> chain(static_cast<size_t>(n_match));
    for (int32_t i = 0; i < n_match; ++i) chain[static_cast<size_t>(i)] = &blocks_.find(m.blocks[static_cast<size_t>(i)])->second;
    int32_t k = n_match;
    for (; k > 0; --k) {
        const int32_t end = k * block_tokens_;
        const int32_t first_block = std::max(0, end - local_span_) / block_tokens_;
        bool ok = true;
        for (int32_t i = first_block; i < k && ok; ++i) ok = !chain[static_cast<size_t>(i)]->local.empty();
        if (ok) break;
    }
    const size_t n_pos = static_cast<size_t>(k) * B;
    m.blocks.resize(static_cast<size_t>(k));
    m.cells.resize(n_pos);
    m.tokens.resize(n_pos);
    m.n_evictable_cells = 0;
    for (int32_t i = 0; i < k; ++i) m.n_evictable_cells += chain[static_cast<size_t>(i)]->pinned() ? 0 : block_tokens_;
    const int32_t end = k * block_tokens_;
    for (int32_t p = std::max(0, end - local_span_); p < end; ++p) {
        const int32_t lc = chain[static_cast<size_t>(p / block_tokens_)]->local[static_cast<size_t>(p % block_tokens_)];
        m.local_cells.push_back(lc);
        m.n_local_reclaimable += local_pool_->seq_refs(lc) == 0 ? 1 : 0;
    }
    return m;
}

int32_t PrefixCache::peek(std::span<const int32_t> prompt) const {
    return static_cast<int32_t>(match(prompt).cells.size());
}

void PrefixCache::touch(std::span<const uint64_t> blocks) {
    ++clock_;
    uint64_t parent = 0;
    for (uint64_t h : blocks) {
        auto it = blocks_.find(h);
        KVRAG_CHECK(it != blocks_.end(), "touch of a block that is not cached");
        Block& b = it->second;
        // One stamp on a root-first path keeps parents at least as recent as their children.
        KVRAG_CHECK(b.parent == parent, "touch of blocks that are not a root-first chain");
        parent = h;
        b.last_used = clock_;
        // A listed block must move to its new place. Reused blocks are pinned by their new
        // holder before the touch, so this does not happen on the engine's paths.
        if (b.in_lru) {
            lru_unlink(&b);
            lru_insert(&b);
        }
    }
}

// ---------------------------------------------------------------- publishing

void PrefixCache::publish(std::span<const int32_t> tokens, std::span<const int32_t> cells, size_t n_blocks,
                          std::span<const int32_t> local, bool keep_first_sight) {
    const size_t B = static_cast<size_t>(block_tokens_);
    KVRAG_CHECK(tokens.size() == cells.size(), "publish with tokens and cells of different lengths");
    KVRAG_CHECK(local.empty() || (local_pool_ != nullptr && local.size() >= n_blocks * B), "publish with a short local cell list");
    KVRAG_CHECK(n_blocks * B <= cells.size(), "publish of more blocks than the sequence holds");
    if (seen_.size() > (1u << 16)) seen_.clear();  // bounded memory for the admission filter
    ++clock_;
    uint64_t parent = 0;
    Block* parent_block = nullptr;
    bool chain = true;  // a block can only be cached if its whole prefix is
    for (size_t i = 0; i < n_blocks; ++i) {
        const std::span<const int32_t> toks = tokens.subspan(i * B, B);
        const std::span<const int32_t> blk_cells = cells.subspan(i * B, B);
        const uint64_t h = block_hash(parent, toks);
        auto it = blocks_.find(h);
        if (it != blocks_.end()) {
            Block& b = it->second;
            if (b.parent != parent || !std::equal(toks.begin(), toks.end(), b.tokens.begin())) break;
            // This sequence computed its own copy of a block cached meanwhile: its later blocks
            // must not hang below cells it does not hold (a live child would pin the parent).
            if (!std::equal(b.cells.begin(), b.cells.end(), blk_cells.begin())) break;
            b.last_used = clock_;
            if (b.in_lru) {  // not on the engine's paths: the publisher holds the block's cells
                lru_unlink(&b);
                lru_insert(&b);
            }
            parent_block = &b;
        } else {
            uint32_t& seen = seen_[h];
            seen += 1;
            // A cell already in another block holds another prefix's K/V: never cache it twice.
            bool fresh = true;
            for (int32_t c : blk_cells) fresh = fresh && !pool_.cached(c);
            if (chain && fresh && (seen >= 2 || keep_first_sight)) {
                Block& b = blocks_[h];
                b.hash = h;
                b.parent = parent;
                b.parent_block = parent_block;
                b.tokens.assign(toks.begin(), toks.end());
                b.cells.assign(blk_cells.begin(), blk_cells.end());
                b.last_used = clock_;
                for (int32_t c : b.cells) {
                    pool_.ref_cache(c);
                    owner_[static_cast<size_t>(c)] = &b;
                    b.n_seq_cells += pool_.seq_refs(c) > 0 ? 1 : 0;
                }
                if (!local.empty()) {
                    const std::span<const int32_t> blk_local = local.subspan(i * B, B);
                    bool all = true;
                    for (int32_t lc : blk_local) all = all && lc >= 0 && !local_pool_->cached(lc);
                    if (all) {
                        b.local.assign(blk_local.begin(), blk_local.end());
                        for (int32_t lc : b.local) {
                            local_pool_->ref_cache(lc);
                            local_owner_[static_cast<size_t>(lc)] = &b;
                            if (local_pool_->seq_refs(lc) == 0) lfree_push(lc);
                        }
                        n_local_attached_ += block_tokens_;
                    }
                }
                if (parent_block != nullptr) {
                    ++parent_block->n_children;
                    if (parent_block->in_lru) lru_unlink(parent_block);  // no longer a leaf
                }
                // Count the new block as unpinned first, then let repin settle its real state
                // (and its ancestors').
                n_evictable_cells_ += block_tokens_;
                if (b.pinned()) {
                    repin(&b, false);
                } else {
                    lru_insert(&b);
                }
                parent_block = &b;
            } else {
                chain = false;
                parent_block = nullptr;
            }
        }
        parent = h;
    }
}

// ---------------------------------------------------------------- pinning

PrefixCache::Block* PrefixCache::owner_of(int32_t cell) const {
    KVRAG_CHECK(cell >= 0 && static_cast<size_t>(cell) < owner_.size(), "cell index outside the pool");
    Block* b = owner_[static_cast<size_t>(cell)];
    KVRAG_CHECK(b != nullptr, "holder change reported for a cell the prefix cache does not hold");
    return b;
}

void PrefixCache::seq_holds(int32_t cell) {
    Block* b = owner_of(cell);
    KVRAG_CHECK(b->n_seq_cells < block_tokens_, "more held cells than the block has");
    const bool was = b->pinned();
    ++b->n_seq_cells;
    repin(b, was);
}

void PrefixCache::seq_released(int32_t cell) {
    Block* b = owner_of(cell);
    KVRAG_CHECK(b->n_seq_cells > 0, "release reported for a block no sequence holds");
    const bool was = b->pinned();
    --b->n_seq_cells;
    repin(b, was);
}

void PrefixCache::local_seq_holds(int32_t lc) {
    KVRAG_CHECK(local_pool_ != nullptr && lc >= 0 && lc < local_pool_->n_cells() && local_owner_[static_cast<size_t>(lc)] != nullptr,
                "holder change reported for a local cell the prefix cache does not hold");
    lfree_unlink(lc);
}

void PrefixCache::local_seq_released(int32_t lc) {
    KVRAG_CHECK(local_pool_ != nullptr && lc >= 0 && lc < local_pool_->n_cells() && local_owner_[static_cast<size_t>(lc)] != nullptr,
                "holder change reported for a local cell the prefix cache does not hold");
    lfree_push(lc);
}

void PrefixCache::lfree_push(int32_t lc) {
    KVRAG_CHECK(!in_lfree_[static_cast<size_t>(lc)], "local cell listed reclaimable twice");
    lprev_[static_cast<size_t>(lc)] = ltail_;
    lnext_[static_cast<size_t>(lc)] = -1;
    (ltail_ < 0 ? lhead_ : lnext_[static_cast<size_t>(ltail_)]) = lc;
    ltail_ = lc;
    in_lfree_[static_cast<size_t>(lc)] = 1;
    ++n_lfree_;
}

void PrefixCache::lfree_unlink(int32_t lc) {
    KVRAG_CHECK(in_lfree_[static_cast<size_t>(lc)], "local cell is not on the reclaimable list");
    const int32_t p = lprev_[static_cast<size_t>(lc)], n = lnext_[static_cast<size_t>(lc)];
    (p < 0 ? lhead_ : lnext_[static_cast<size_t>(p)]) = n;
    (n < 0 ? ltail_ : lprev_[static_cast<size_t>(n)]) = p;
    lprev_[static_cast<size_t>(lc)] = lnext_[static_cast<size_t>(lc)] = -1;
    in_lfree_[static_cast<size_t>(lc)] = 0;
    --n_lfree_;
}

void PrefixCache::detach_local(Block* b) {
    for (int32_t lc : b->local) {
        if (in_lfree_[static_cast<size_t>(lc)]) lfree_unlink(lc);
        local_owner_[static_cast<size_t>(lc)] = nullptr;
        local_pool_->unref_cache(lc);  // frees it unless a sequence still holds it
    }
    n_local_attached_ -= static_cast<int32_t>(b->local.size());
    b->local.clear();
}

bool PrefixCache::evict_local_one() {
    if (lhead_ < 0) return false;
    detach_local(local_owner_[static_cast<size_t>(lhead_)]);
    return true;
}

void PrefixCache::repin(Block* b, bool was_pinned) {
    // A block's pinned state depends on its own cells and its children's states, so a change
    // walks up the chain, but only as far as states actually flip: each flip is paid for by
    // the holder change that caused it.
    while (b != nullptr) {
        const bool now = b->pinned();
        if (now == was_pinned) return;
        if (now) {
            n_evictable_cells_ -= block_tokens_;
            if (b->in_lru) lru_unlink(b);
        } else {
            n_evictable_cells_ += block_tokens_;
            if (b->n_children == 0) lru_insert(b);
        }
        Block* p = b->parent_block;
        if (p == nullptr) return;
        was_pinned = p->pinned();
        p->n_pinned_children += now ? 1 : -1;
        b = p;
    }
}

// ---------------------------------------------------------------- the list of unpinned leaves

void PrefixCache::lru_insert(Block* b) {
    // Ordered by last_used. A block joins either when its last sequence lets go (usually it
    // was used recently: near the tail) or as the parent of the evicted head (used as late as
    // that child, the oldest: at or near the head). So search from both ends at once; the cost
    // is the distance to the nearer end, usually 0.
    Block* after = lru_tail_;   // walks towards the head: insert after the first with last_used <= b's
    Block* before = lru_head_;  // walks towards the tail: insert before the first with last_used > b's
    Block* prev = nullptr;
    for (;;) {
        if (after == nullptr || after->last_used <= b->last_used) {
            prev = after;
            break;
        }
        if (before == nullptr || before->last_used > b->last_used) {
            prev = before == nullptr ? lru_tail_ : before->lru_prev;
            break;
        }
        after = after->lru_prev;
        before = before->lru_next;
    }
    Block* next = prev == nullptr ? lru_head_ : prev->lru_next;
    b->lru_prev = prev;
    b->lru_next = next;
    (prev == nullptr ? lru_head_ : prev->lru_next) = b;
    (next == nullptr ? lru_tail_ : next->lru_prev) = b;
    b->in_lru = true;
    ++n_lru_;
}

void PrefixCache::lru_unlink(Block* b) {
    (b->lru_prev == nullptr ? lru_head_ : b->lru_prev->lru_next) = b->lru_next;
    (b->lru_next == nullptr ? lru_tail_ : b->lru_next->lru_prev) = b->lru_prev;
    b->lru_prev = b->lru_next = nullptr;
    b->in_lru = false;
    --n_lru_;
}

// ---------------------------------------------------------------- eviction

bool PrefixCache::evict_one() {
    Block* v = lru_head_;
    if (v == nullptr) return false;
    lru_unlink(v);
    n_evictable_cells_ -= block_tokens_;
    if (!v->local.empty()) detach_local(v);
    for (int32_t c : v->cells) {
        owner_[static_cast<size_t>(c)] = nullptr;
        pool_.unref_cache(c);  // no sequence holds it (unpinned), so the cell is free now
    }
    if (Block* p = v->parent_block; p != nullptr) {
        // v was unpinned, so p's pinned-children count does not change; p may become a leaf.
        if (--p->n_children == 0 && !p->pinned()) lru_insert(p);
    }
    blocks_.erase(v->hash);
    ++n_evictions_;
    return true;
}

void PrefixCache::clear() {
    while (evict_one()) {
    }
}

std::optional<uint64_t> PrefixCache::next_victim() const {
    if (lru_head_ == nullptr) return std::nullopt;
    return lru_head_->hash;
}

std::vector<PrefixBlockInfo> PrefixCache::blocks() const {
    std::vector<PrefixBlockInfo> out;
    out.reserve(blocks_.size());
    for (const auto& [h, b] : blocks_) out.push_back(PrefixBlockInfo{h, b.parent, b.cells, b.last_used, b.local});
    return out;
}

// ---------------------------------------------------------------- checks

const PrefixCache::Block* PrefixCache::scan_victim() const {
    // What eviction did before the list existed: the lowest last_used among blocks with no
    // children whose cells no sequence holds.
    const Block* victim = nullptr;
    for (const auto& [h, b] : blocks_) {
        if (b.n_children != 0 || (victim != nullptr && b.last_used >= victim->last_used)) continue;
        bool only_cache = true;
        for (int32_t c : b.cells) only_cache = only_cache && pool_.seq_refs(c) == 0;
        if (only_cache) victim = &b;
    }
    return victim;
}

int32_t PrefixCache::brute_force_evictable_cells() const {
    // A block a sequence uses pins itself and every ancestor; the rest can all go.
    std::unordered_map<uint64_t, bool> pinned;
    for (const auto& [h, b] : blocks_) {
        bool only_cache = true;
        for (int32_t c : b.cells) only_cache = only_cache && pool_.seq_refs(c) == 0;
        if (only_cache) continue;
        for (uint64_t x = h; x != 0 && !pinned[x];) {
            pinned[x] = true;
            auto it = blocks_.find(x);
            x = it == blocks_.end() ? 0 : it->second.parent;
        }
    }
    int32_t n = 0;
    for (const auto& [h, b] : blocks_) {
        auto it = pinned.find(h);
        if (it == pinned.end() || !it->second) n += static_cast<int32_t>(b.cells.size());
    }
    return n;
}

std::string PrefixCache::check_invariants() const {
    std::vector<const Block*> holder(owner_.size(), nullptr);
    for (const auto& [h, b] : blocks_) {
        const std::string name = "prefix block " + std::to_string(h);
        if (b.hash != h) return name + " is filed under another hash";
        if (b.cells.size() != static_cast<size_t>(block_tokens_) || b.tokens.size() != b.cells.size()) return name + " has a wrong size";
        if (b.parent == 0 ? b.parent_block != nullptr : (b.parent_block == nullptr || b.parent_block->hash != b.parent)) {
            return name + " parent pointer does not match its parent hash";
        }
        if (b.parent != 0 && blocks_.find(b.parent) == blocks_.end()) return name + " outlived its parent";
        int32_t children = 0, pinned_children = 0;
        for (const auto& [h2, b2] : blocks_) {
            if (b2.parent != h) continue;
            ++children;
            pinned_children += b2.pinned() ? 1 : 0;
        }
        if (children != b.n_children) return name + " child count " + std::to_string(b.n_children) + " != actual " + std::to_string(children);
        if (pinned_children != b.n_pinned_children) {
            return name + " pinned-children count " + std::to_string(b.n_pinned_children) + " != actual " + std::to_string(pinned_children);
        }
        int32_t seq_cells = 0;
        for (int32_t c : b.cells) {
            if (c < 0 || c >= pool_.n_cells()) return name + " holds cell " + std::to_string(c) + " outside the pool";
            if (holder[static_cast<size_t>(c)] != nullptr) return "cell " + std::to_string(c) + " is in two prefix blocks";
            holder[static_cast<size_t>(c)] = &b;
            seq_cells += pool_.seq_refs(c) > 0 ? 1 : 0;
        }
        if (seq_cells != b.n_seq_cells) return name + " held-cell count " + std::to_string(b.n_seq_cells) + " != actual " + std::to_string(seq_cells);
        const bool leaf_unpinned = b.n_children == 0 && !b.pinned();
        if (b.in_lru != leaf_unpinned) return name + (b.in_lru ? " is listed evictable but is pinned or has children" : " is an unpinned leaf missing from the eviction list");
    }
    for (size_t c = 0; c < owner_.size(); ++c) {
        if (owner_[c] != holder[c]) return "cell " + std::to_string(c) + " owner pointer does not match the blocks";
        if (pool_.cached(static_cast<int32_t>(c)) != (holder[c] != nullptr)) {
            return "cell " + std::to_string(c) + " cache flag " + std::to_string(pool_.cached(static_cast<int32_t>(c))) + " but held by " +
                   std::to_string(holder[c] != nullptr ? 1 : 0) + " blocks";
        }
    }
    // The list: exactly the unpinned leaves (checked above from the blocks' side), in order.
    int32_t n = 0;
    for (const Block* b = lru_head_; b != nullptr; b = b->lru_next) {
        if (++n > n_blocks()) return "eviction list is longer than the block count (a cycle?)";
        if (!b->in_lru) return "eviction list holds a block not flagged as listed";
        if ((b->lru_next == nullptr) != (b == lru_tail_)) return "eviction list tail pointer is wrong";
        if (b->lru_next != nullptr && (b->lru_next->lru_prev != b || b->lru_next->last_used <= b->last_used)) {
            return "eviction list is not strictly ordered by last use";
        }
    }
    if (n != n_lru_) return "eviction list has " + std::to_string(n) + " blocks, count says " + std::to_string(n_lru_);
    if (lru_head_ != nullptr && lru_head_->lru_prev != nullptr) return "eviction list head has a predecessor";
    if (const Block* v = scan_victim(); v != lru_head_) {
        return "eviction would take block " + (lru_head_ ? std::to_string(lru_head_->hash) : std::string("none")) + ", the linear scan picks " +
               (v ? std::to_string(v->hash) : std::string("none"));
    }
    if (const int32_t bf = brute_force_evictable_cells(); bf != n_evictable_cells_) {
        return "evictable cells " + std::to_string(n_evictable_cells_) + " != brute-force count " + std::to_string(bf);
    }
    return check_local_invariants();
}

std::string PrefixCache::check_local_invariants() const {
    if (local_pool_ == nullptr) {
        for (const auto& [h, b] : blocks_) {
            if (!b.local.empty()) return "prefix block " + std::to_string(h) + " carries local cells in a cache without them";
        }
        return "";
    }
    const size_t n = local_owner_.size();
    std::vector<const Block*> holder(n, nullptr);
    int32_t attached = 0, reclaimable = 0;
    for (const auto& [h, b] : blocks_) {
        if (b.local.empty()) continue;
        if (b.local.size() != static_cast<size_t>(block_tokens_)) return "prefix block " + std::to_string(h) + " has a partial local cell list";
        for (int32_t lc : b.local) {
            if (lc < 0 || static_cast<size_t>(lc) >= n) return "prefix block " + std::to_string(h) + " carries local cell " + std::to_string(lc) + " outside the pool";
            if (holder[static_cast<size_t>(lc)] != nullptr) return "local cell " + std::to_string(lc) + " is in two prefix blocks";
            holder[static_cast<size_t>(lc)] = &b;
            ++attached;
            reclaimable += local_pool_->seq_refs(lc) == 0 ? 1 : 0;
        }
    }
    for (size_t c = 0; c < n; ++c) {
        if (local_owner_[c] != holder[c]) return "local cell " + std::to_string(c) + " owner pointer does not match the blocks";
        if (local_pool_->cached(static_cast<int32_t>(c)) != (holder[c] != nullptr)) return "local cell " + std::to_string(c) + " cache flag is wrong";
        const bool should = holder[c] != nullptr && local_pool_->seq_refs(static_cast<int32_t>(c)) == 0;
        if (static_cast<bool>(in_lfree_[c]) != should) return "local cell " + std::to_string(c) + (should ? " is reclaimable but not listed" : " is listed but not reclaimable");
    }
    int32_t listed = 0;
    for (int32_t c = lhead_; c >= 0; c = lnext_[static_cast<size_t>(c)]) {
        if (++listed > static_cast<int32_t>(n)) return "local reclaimable list has a cycle";
    }
    if (attached != n_local_attached_) return "attached local cells " + std::to_string(n_local_attached_) + " != actual " + std::to_string(attached);
    if (listed != n_lfree_ || reclaimable != n_lfree_) {
        return "reclaimable local cells " + std::to_string(n_lfree_) + " != listed " + std::to_string(listed) + " / actual " + std::to_string(reclaimable);
    }
    return "";
}

}  // namespace kvrag::kvcache
