// The prefix cache: published prompt blocks that later prompts reuse instead of prefilling.
//
// A block is block_tokens consecutive prompt tokens at a block boundary and the cells holding
// their K/V. It is named by a hash chained over its whole prefix (parent hash + its tokens), so
// equal hashes mean equal prefixes; tokens are compared too on lookup. Blocks form a forest:
// each block's parent is the block before it, and a block is only cached while its parent is.
//
// What is kept: a block is cached only once its content has been offered by two prompts (an
// admission filter), so one-off text never occupies cells after its request.
//
// Eviction. A block is pinned while a live sequence holds one of its cells or one of its
// descendants is pinned; an unpinned block (and so its whole subtree) is reclaimable. The
// count of reclaimable cells is kept up to date on every change (O(1) to read, what admission
// adds to the free cells). The unpinned leaves, the blocks that can go now, sit in an intrusive
// list ordered by last use, oldest first: eviction pops the head in O(1). Evicting a leaf may
// make its parent a leaf, which then joins the list.
//
// Every touch (admission reuse, publish) stamps a root-to-block path with one new clock value,
// so a parent is always used at least as recently as its children and two unpinned leaves never
// share a stamp: the list head is exactly the block a linear scan for the lowest last_used
// among unpinned leaves would pick (check_invariants verifies this).
//
// Holds the prefix cache's reference on its cells in the CellPool it is given. The owner must
// report every change of a cached cell's sequence holders between none and some
// (seq_holds / seq_released), as CellPool::ref_seq / unref_seq return it.
//
// Sliding-window caches (a second CellPool for the local layers' cells). A sequence holds local
// cells only for its last positions, so a block may carry its positions' local cells (when the
// publishing sequence still held them all) or not. Reusing a prefix of length L needs the local
// K/V of positions [L - local_span, L) (local_span = n_swa - 1: what the first computed token's
// window reaches back to), so match() returns the longest cached prefix whose blocks covering
// that range all carry local cells. Attached local cells never pin anything: one that no
// sequence holds is reclaimable at once (an O(1) list, oldest first), and reclaiming it detaches
// the local cells of its whole block (the block stays, usable inside a longer reused prefix).
// The owner reports every change of a cached local cell's sequence holders between none and
// some (local_seq_holds / local_seq_released).
//
// Not thread-safe: the owning KvCache serialises every call.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "kvcache/cell_pool.h"

namespace kvrag::kvcache {

// The cached blocks a prompt can take, root first.
struct PrefixMatch {
    std::vector<uint64_t> blocks;      // block hashes
    std::vector<int32_t> cells;        // (n_blocks * block_tokens) cell of each position
    std::vector<int32_t> tokens;       // (n_blocks * block_tokens)
    int32_t n_evictable_cells = 0;     // of `cells`, those now counted reclaimable
    // Sliding-window caches only: the local cells of positions [n - local_cells.size(), n),
    // n = cells.size(), and how many of them are now counted reclaimable.
    std::vector<int32_t> local_cells;
    int32_t n_local_reclaimable = 0;
};

// A read-only picture of one cached block (tests and debugging).
struct PrefixBlockInfo {
    uint64_t hash = 0;
    uint64_t parent = 0;                   // 0 for a first block
    std::vector<int32_t> cells;            // (block_tokens)
    uint64_t last_used = 0;                // clock value of its last touch
    std::vector<int32_t> local_cells;      // (block_tokens) or empty: local cells attached
};

class PrefixCache {
public:
    // Preconditions: block_tokens >= 1; pool (and local_pool) outlive this cache; local_span >= 0.
    // local_pool: the local cells of a sliding-window cache, or null.
    PrefixCache(CellPool& pool, int32_t block_tokens, CellPool* local_pool = nullptr, int32_t local_span = 0);
    PrefixCache(const PrefixCache&) = delete;
    PrefixCache& operator=(const PrefixCache&) = delete;

    int32_t block_tokens() const { return block_tokens_; }

    // ---- lookup ----
    // Longest run of cached blocks matching the prompt from its start, capped to leave at least
    // one prompt token to compute (so the request gets logits).
    PrefixMatch match(std::span<const int32_t> prompt) const;
    // match(prompt).cells.size() without building the match.
    int32_t peek(std::span<const int32_t> prompt) const;
    // Marks the blocks as used now (one new clock value). Precondition: they are cached and a
    // root-first chain, as match() returns them.
    void touch(std::span<const uint64_t> blocks);

    // ---- publishing ----
    // Offers the first n_blocks full blocks of a sequence (tokens and the cells holding them,
    // position order). Keeps each block seen in two prompts whose prefix is cached and whose
    // cells are in no other block; already cached blocks are touched. Stops at the first block
    // whose cached copy lives on other cells than the sequence's: a live child would otherwise
    // pin a parent it does not hold. Preconditions: tokens.size() == cells.size() >=
    // n_blocks * block_tokens; a sequence holds every cell.
    // local (sliding-window caches): the local cell of each of those positions, -1 where the
    // sequence no longer holds one; a new block whose positions all have one carries them.
    // keep_first_sight: keep new blocks on their first offer (a chat turn's end, whose next turn
    // extends it), still only where their prefix is cached and their cells are in no other block.
    void publish(std::span<const int32_t> tokens, std::span<const int32_t> cells, size_t n_blocks,
                 std::span<const int32_t> local = {}, bool keep_first_sight = false);

    // ---- holder changes (from the owner) ----
    // A cached cell got its first sequence holder. Precondition: the cell is cached.
    void seq_holds(int32_t cell);
    // A cached cell lost its last sequence holder. Precondition: the cell is cached.
    void seq_released(int32_t cell);
    // The same for local cells (sliding-window caches). Precondition: the local cell is cached.
    void local_seq_holds(int32_t local_cell);
    void local_seq_released(int32_t local_cell);

    // ---- eviction ----
    // Evicts the least recently used unpinned leaf block, O(1); false when there is none.
    bool evict_one();
    // Evicts until only pinned blocks are left.
    void clear();
    // Frees local cells (sliding-window caches): detaches the local cells of the block owning
    // the oldest reclaimable one, O(block_tokens); false when no local cell is reclaimable.
    bool evict_local_one();

    // ---- queries ----
    int32_t n_evictable_cells() const { return n_evictable_cells_; }  // O(1)
    int32_t n_blocks() const { return static_cast<int32_t>(blocks_.size()); }
    int32_t n_cached_cells() const { return n_blocks() * block_tokens_; }
    uint64_t n_evictions() const { return n_evictions_; }
    int32_t n_reclaimable_local_cells() const { return n_lfree_; }   // O(1)
    int32_t n_cached_local_cells() const { return n_local_attached_; }
    // The block evict_one() would take now, if any (for tests).
    std::optional<uint64_t> next_victim() const;
    // Every cached block, in no particular order. O(n_cached_cells), for tests.
    std::vector<PrefixBlockInfo> blocks() const;

    // Checks every structure against a recomputation from scratch: child and pin counts, the
    // cells' cache flags, the reclaimable count (brute force), the list (exactly the unpinned
    // leaves, oldest first) and that its head is the linear scan's victim. Returns the first
    // violation, or empty. O(n_blocks * depth), for tests.
    std::string check_invariants() const;

    static uint64_t block_hash(uint64_t parent, std::span<const int32_t> tokens);

private:
    struct Block {
        uint64_t hash = 0;
        uint64_t parent = 0;                 // hash of the previous block, 0 for the first
        Block* parent_block = nullptr;       // the same block, by address (map nodes are stable)
        std::vector<int32_t> tokens;         // (block_tokens)
        std::vector<int32_t> cells;          // (block_tokens)
        std::vector<int32_t> local;          // (block_tokens) local cells, or empty
        int32_t n_children = 0;
        int32_t n_seq_cells = 0;             // cells some live sequence holds
        int32_t n_pinned_children = 0;
        uint64_t last_used = 0;
        Block* lru_prev = nullptr;           // intrusive list of unpinned leaves, oldest first
        Block* lru_next = nullptr;
        bool in_lru = false;

        bool pinned() const { return n_seq_cells > 0 || n_pinned_children > 0; }
    };

    Block* owner_of(int32_t cell) const;
    // b's pinned state may have changed (it was was_pinned): update the count, the list and
    // the ancestors' pinned-children counts, up to the first block whose state stays.
    void repin(Block* b, bool was_pinned);
    void lru_insert(Block* b);               // at its place by last_used
    void lru_unlink(Block* b);
    // The victim by the definition (lowest last_used among unpinned leaves), by a full scan.
    const Block* scan_victim() const;
    int32_t brute_force_evictable_cells() const;
    void detach_local(Block* b);             // drops b's local cells (frees those nobody holds)
    void lfree_push(int32_t lc);             // the local cell joins the reclaimable list (tail)
    void lfree_unlink(int32_t lc);
    std::string check_local_invariants() const;

    CellPool& pool_;
    int32_t block_tokens_;
    std::unordered_map<uint64_t, Block> blocks_;
    std::unordered_map<uint64_t, uint32_t> seen_;   // block hash -> times offered in a prompt
    std::vector<Block*> owner_;                     // (n_cells) cached block holding the cell, or null
    Block* lru_head_ = nullptr;                     // least recently used unpinned leaf
    Block* lru_tail_ = nullptr;
    int32_t n_lru_ = 0;
    int32_t n_evictable_cells_ = 0;                 // cells of unpinned blocks
    uint64_t clock_ = 0;
    uint64_t n_evictions_ = 0;
    // Sliding-window caches only (local_pool_ set); vectors sized by the local pool.
    CellPool* local_pool_ = nullptr;
    int32_t local_span_ = 0;
    std::vector<Block*> local_owner_;               // (n_local_cells) block carrying the local cell
    std::vector<int32_t> lprev_, lnext_;            // (n_local_cells) reclaimable list links, -1 ends
    std::vector<uint8_t> in_lfree_;                 // (n_local_cells) 1 while on the list
    int32_t lhead_ = -1, ltail_ = -1;               // oldest / newest reclaimable local cell
    int32_t n_lfree_ = 0;
    int32_t n_local_attached_ = 0;
};

}  // namespace kvrag::kvcache
