// The KV cache manager: one fixed pool of n_cells cells shared by every sequence. This class is
// the facade the engine uses; it composes
//   - CellPool (cell_pool.h): per-cell holders, the free list, the reservation total;
//   - PrefixCache (prefix_cache.h): published prompt blocks, their reuse and LRU eviction;
//   - model::KeyRotation (model/key_rotation.h): the model's RoPE, to move keys in a shift;
// plus the live sequences and the counters, all behind one mutex.
//
// Ownership model. A cell is held by reference count: by each live Sequence whose position
// list contains it, and by the prefix cache when it belongs to a published prompt block. A cell
// with count 0 is free. K/V rows of a cell are written once, when its token is computed, and are
// immutable afterwards, so sharing a cell between sequences (fork, prefix reuse) needs no copy;
// the one operation that rewrites a cell (context shift's re-rotation) copies it first when it
// is shared.
//
// Leaks are impossible by type: a Sequence is a move-only handle whose destructor returns all
// its references and its unused reservation, on every path (return, exception, cancellation).
//
// Capacity. Admission reserves a request's worst case (cells it may still need) up front;
// appends draw first on the reservation, so an admitted request can never run out of cells mid
// generation. Any free cell serves any sequence (the forward pass takes an explicit cell list
// per token), so fragmentation cannot make an allocation fail while enough cells are free.
//
// Failure contract. "No room" is an empty return: nullopt from admit/fork, false from
// append/shift; the sequence is unchanged then. Misuse is a bug in the caller, never confused
// with no room: a Sequence that is empty (released, moved from) or belongs to another cache, a
// shift range outside the sequence, a negative reservation stop the process with KVRAG_CHECK
// (core/check.h), which names the broken precondition.
//
// Thread safety: every method locks one mutex; a Sequence's cell list is read without a lock by
// the single thread that drives that sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/ggml_type.h"
#include "kvcache/cell_pool.h"
#include "kvcache/kv_store.h"
#include "kvcache/prefix_cache.h"
#include "model/hparams.h"
#include "model/key_rotation.h"

namespace kvrag::kvcache {

struct KvCacheConfig {
    int32_t n_cells = 2048;
    GgmlType type = GgmlType::F16;
    int32_t block_tokens = 16;   // prefix-reuse granularity (tokens per shared block)
    bool prefix_reuse = true;
    // Sliding-window models only (ignored for others): keep the local layers' K/V in a second
    // pool of n_local_cells cells, of which a sequence holds only its last n_swa - 1 positions
    // (from a block boundary when prefix reuse is on, so the blocks it publishes can carry
    // them) plus the tokens being appended; max_append is the most tokens one append() gives
    // (the engine's batch size). A sequence holds at most local_cap() local cells.
    bool split_local = false;
    int32_t n_local_cells = 0;
    int32_t max_append = 256;
};

enum class RejectReason { never_fits = 0, busy = 1, timeout = 2, count = 3 };
const char* reject_reason_name(RejectReason r);

struct SequenceUsage {
    int64_t seq_id = 0;
    int32_t n_tokens = 0;    // positions held == cells referenced
    int32_t n_shared = 0;    // of those, cells also held by someone else
    int32_t reserved = 0;    // cells still reserved for future tokens
    int32_t n_local = 0;     // local cells held (sliding-window caches; else 0)
};

struct KvStats {
    int32_t total = 0;       // n_cells
    int32_t used = 0;        // cells held by live sequences (running requests)
    int32_t cached = 0;      // cells held by the prefix cache (those no sequence uses are reclaimable)
    int32_t free = 0;        // cells nobody holds
    int32_t shared = 0;      // cells with two or more holders (sequences and/or the prefix cache)
    int32_t reserved = 0;    // promised to admitted sequences, not yet used
    int32_t peak_used = 0;   // most cells live sequences held at once
    int32_t n_sequences = 0;
    int32_t prefix_blocks = 0;
    uint64_t admissions = 0;
    uint64_t rejections[static_cast<int>(RejectReason::count)] = {};
    uint64_t truncations = 0;
    uint64_t shifts = 0;
    uint64_t prefix_hit_tokens = 0;   // prompt tokens whose prefill was skipped by reuse
    uint64_t prefix_hits = 0;         // admissions that reused at least one block
    uint64_t evictions = 0;           // prefix blocks evicted to make room
    size_t bytes = 0;                 // K/V memory, exactly n_cells * bytes_per_cell (+ local_total * bytes_per_local_cell)
    size_t bytes_per_cell = 0;
    // The local pool of a sliding-window cache (all 0 otherwise): the same meanings for the
    // cells holding the local layers' K/V of each sequence's last positions.
    int32_t window = 0;               // n_swa: positions a local layer sees
    int32_t local_total = 0;
    int32_t local_used = 0;
    int32_t local_cached = 0;         // local cells carried by cached prefix blocks
    int32_t local_free = 0;
    int32_t local_reserved = 0;
    int32_t local_peak_used = 0;
    size_t local_bytes = 0;           // exactly local_total * bytes_per_local_cell (part of bytes)
    size_t bytes_per_local_cell = 0;
    std::vector<SequenceUsage> sequences;

    std::string summary() const;      // one line of key=value pairs
    // "N cells x B bytes [+ L local cells x LB bytes] = T bytes": the memory and its parts.
    std::string size_line() const;
};

class KvCache;

// n > 1 choices of one prompt, for KvCache::admit: forks to be made later with
// KvCache::fork_reserved, and the most positions one choice holds.
struct ForkPlan {
    int32_t n_forks = 0;
    int32_t choice_tokens = 0;
};

// A live sequence: the positions [0, n_tokens) of one request and the cells holding them.
// Move-only; releases everything it holds when destroyed or release()d.
class Sequence {
public:
    Sequence() = default;
    Sequence(Sequence&& other) noexcept;
    Sequence& operator=(Sequence&& other) noexcept;
    Sequence(const Sequence&) = delete;
    Sequence& operator=(const Sequence&) = delete;
    ~Sequence() { release(); }

    void release();
    bool valid() const { return state_ != nullptr; }
    int64_t id() const;
    int32_t n_tokens() const;
    int32_t reserved() const;
    // Cell of each position, in position order (what the forward pass attends to).
    const std::vector<int32_t>& cells() const;
    const std::vector<int32_t>& tokens() const;
    int32_t n_reused() const;  // prompt tokens taken from the prefix cache at admission
    // Sliding-window caches: the local cells of positions [local_begin(), n_tokens()), in
    // position order (empty otherwise). Only the last n_swa - 1 positions before the latest
    // append are kept; older ones go back to the pool as the sequence grows.
    const std::vector<int32_t>& local_cells() const;
    int32_t local_begin() const;
    // Sets bt.local_cell / local_visible / n_local_visible for position bt.pos: its local cell
    // and those of its window (positions max(local_begin, pos - n_swa + 1) .. pos). The pointer
    // stays valid until the sequence changes. Precondition: a sliding-window cache and
    // local_begin() <= bt.pos < n_tokens().
    void fill_local(model::BatchToken& bt) const;

private:
    friend class KvCache;
    struct State {
        int64_t id = 0;
        std::vector<int32_t> cells;
        std::vector<int32_t> tokens;
        int32_t reserved = 0;
        int32_t n_reused = 0;
        bool published = false;       // its prompt was offered (publish_prefix)
        bool continued = false;       // its blocks were offered at its end (publish_continuation)
        bool shifted = false;         // a context shift: its cells no longer match its tokens' prefill
        std::vector<int32_t> local;   // local cells of positions [local_begin, cells.size())
        int32_t local_begin = 0;
        int32_t local_reserved = 0;   // local cells promised, not yet taken
    };
    Sequence(std::shared_ptr<KvCache> cache, std::unique_ptr<State> state)
        : cache_(std::move(cache)), state_(std::move(state)) {}

    std::shared_ptr<KvCache> cache_;
    std::unique_ptr<State> state_;
};

class KvCache : public std::enable_shared_from_this<KvCache> {
public:
    // rotation: the model's key re-rotation, used by shift() (build it from the same
    // hyperparameters and rope frequency factors as the forward pass).
    static Result<std::shared_ptr<KvCache>> create(const model::ModelHParams& hp, const KvCacheConfig& config,
                                                   model::KeyRotation rotation);

    // ---- for the forward pass ----
    model::KvView& view() { return store_; }
    int32_t n_cells() const { return store_.n_cells(); }
    const KvGeometry& geometry() const { return store_.geometry(); }
    // True for a sliding-window cache with a local pool: batch tokens need fill_local().
    bool split_local() const { return local_pool_ != nullptr; }
    // The most local cells one sequence holds: n_swa - 1 + (block_tokens - 1 with prefix reuse,
    // else 0) + max_append. 0 without a local pool.
    int32_t local_cap() const { return local_cap_; }

    // ---- for admission (engine) ----
    // Prompt tokens that admitting this prompt now would take from the prefix cache. Always
    // leaves at least one prompt token to compute, so the request gets logits.
    int32_t peek_prefix(std::span<const int32_t> prompt) const;
    // Admits a sequence for `prompt` that will hold at most max_tokens positions in all: takes
    // the reusable prefix and reserves the rest. nullopt when the cells are not available now,
    // or never can be (max_tokens > n_cells): a full cache is an empty return, not an error.
    // Sliding-window caches also reserve min(max_tokens, local_cap()) local cells
    // (less the reused ones), and reuse only a prefix whose window's local cells are cached.
    // reuse_prefix false: take nothing from the prefix cache (every position gets computed).
    // forks (n > 1 choices of one prompt): max_tokens counts the global cells of every choice;
    // on a sliding-window cache each choice (this sequence and the n_forks forks that
    // fork_reserved() makes from it later) gets min(choice_tokens, local_cap()) local cells
    // instead of min(max_tokens, local_cap()) for this one alone. nullopt also when those never
    // fit the local pool.
    // Preconditions: max_tokens >= 0; forks.n_forks >= 0.
    std::optional<Sequence> admit(std::span<const int32_t> prompt, int32_t max_tokens, bool reuse_prefix = true, ForkPlan forks = {});
    // A new sequence sharing all of parent's cells, with `reserve` cells reserved. nullopt when
    // the reservation is not available. Preconditions: parent is a live sequence of this cache;
    // reserve >= 0.
    std::optional<Sequence> fork(const Sequence& parent, int32_t reserve);
    // A fork for n > 1 choices of one prompt (engine/engine.h): a new sequence holding parent's
    // positions [0, n_keep), with `reserve` cells reserved; both its reservations move out of the
    // parent's rather than coming from the free cells, so it cannot fail (the parent's admission
    // reserved them: admit's ForkPlan). Global cells are shared. On a sliding-window cache the
    // fork gets min(n_keep + reserve, local_cap()) local cells, into which it copies the local
    // K/V of the positions its next tokens see (those append() would keep); copies rather than
    // shares, since each sequence releases its local cells as it grows and a shared one would
    // not come back to the pool (kv_cache_local.cpp).
    // Preconditions: parent is a live sequence of this cache; 0 <= n_keep <= parent.n_tokens();
    // 0 <= reserve <= parent.reserved(); on a sliding-window cache the parent still holds those
    // local cells and has that many local cells reserved.
    Sequence fork_reserved(Sequence& parent, int32_t n_keep, int32_t reserve);

    // ---- while a sequence runs (scheduler) ----
    // Every call below requires seq to be a live sequence of this cache (checked).
    // Gives the next tokens of seq their cells (positions n_tokens ...). Draws on the
    // reservation first, then on free cells (evicting unused prefix blocks). false when there is
    // no room; seq is unchanged then (except that a sliding-window cache may already have
    // released local cells that no later token can see).
    bool append(Sequence& seq, std::span<const int32_t> tokens);
    // Drops positions >= n_keep (e.g. to roll back speculative or rejected tokens); n_keep below
    // 0 means 0, at or past the end is a no-op.
    void truncate(Sequence& seq, int32_t n_keep);
    // Context shift: drops positions [n_keep, n_keep + n_discard), moves the later ones down by
    // n_discard and re-rotates their keys to the new positions (copying shared cells first).
    // false when there is no room for those copies; seq is unchanged then.
    // Preconditions: n_keep >= 0, n_discard >= 1, n_keep + n_discard <= n_tokens.
    bool shift(Sequence& seq, int32_t n_keep, int32_t n_discard);
    // Offers seq's full prompt blocks (first n_prompt positions) to the prefix cache. A block is
    // kept only once its content has been seen in two prompts, so one-off text (a varying RAG
    // chunk, a question) never occupies cells after its request ends.
    void publish_prefix(Sequence& seq, int32_t n_prompt);
    // Offers all of seq's full blocks (prompt and generated tokens), keeping new ones on first
    // sight: for a chat turn that ends, whose next turn extends it. On a sliding-window cache the
    // blocks of the last window carry their local cells, so the next turn can reuse up to the
    // last block boundary. Nothing after a context shift (the cells no longer match a fresh
    // prefill of the tokens); once per sequence.
    void publish_continuation(Sequence& seq);
    // Drops every cached prefix block that no sequence uses (frees their cells).
    void clear_prefix_cache();

    // ---- observability ----
    KvStats stats() const;
    void note_rejection(RejectReason reason);
    void note_truncation();
    // Checks every internal invariant (reference counts, free list, reservations, and the
    // prefix cache's structures against brute-force recomputations); returns a description of
    // the first violation, or empty. O(n_cells + n_blocks^2), for tests.
    std::string check_invariants() const;

    KvCache(const KvGeometry& geo, const KvCacheConfig& config, model::KeyRotation rotation);

private:
    friend class Sequence;

    // Precondition of every per-sequence call: seq is live and ours.
    void check_own(const Sequence& seq) const;
    void release_locked(Sequence::State& s);
    int32_t take_cell_locked();              // -1 when none even after eviction
    int32_t available_locked() const;        // free + evictable - reserved
    void ref_seq_locked(int32_t cell);       // a sequence takes a reference to a held cell
    void unref_seq_locked(int32_t cell);     // a sequence drops its reference
    void note_used_locked();
    void copy_cell_locked(int32_t dst, int32_t src);
    // ---- the local pool (sliding-window caches only) ----
    int32_t take_local_locked();             // -1 when none even after reclaiming cached ones
    int32_t local_available_locked() const;  // free + reclaimable - reserved
    void ref_local_locked(int32_t lc);
    void unref_local_locked(int32_t lc);
    void copy_local_cell_locked(int32_t dst, int32_t src);
    // Releases the local cells of positions < keep_from and re-reserves what it can of them.
    void trim_local_locked(Sequence::State& s, int32_t keep_from);
    // Reserves up to n local cells (as many as are available) for s.
    void grant_local_locked(Sequence::State& s, int32_t n);
    // Local shift: the local part of shift(); false (nothing changed) when copies do not fit.
    bool shift_local_check_locked(const Sequence::State& s, int32_t n_keep, int32_t n_discard) const;
    void shift_local_locked(Sequence::State& s, int32_t n_keep, int32_t n_discard);
    std::string check_local_invariants_locked() const;
    // fork_reserved()'s local part: moves `budget` local cells of ps's reservation to the fork
    // and copies into them the local K/V of the positions below n_keep that the fork's next
    // tokens see.
    void fork_local_locked(Sequence::State& ps, Sequence::State& fs, int32_t n_keep, int32_t budget);
    // Offers the first n_positions / block_tokens full blocks of s to the prefix cache.
    void publish_locked(const Sequence::State& s, size_t n_positions, bool keep_first_sight);

    mutable std::mutex mu_;
    KvStore store_;
    KvCacheConfig config_;
    model::KeyRotation rotation_;
    CellPool pool_;
    std::unique_ptr<CellPool> local_pool_;  // sliding-window caches only
    int32_t window_ = 0;                // n_swa of a sliding-window cache
    int32_t local_align_ = 1;           // local cells are released in whole prefix blocks (1: no reuse)
    int32_t local_cap_ = 0;             // most local cells a sequence holds: n_swa - 1 + (align - 1) + max_append
    PrefixCache prefix_;                // holds references to pool_ and local_pool_ (declared before it)
    int64_t next_seq_id_ = 1;
    std::unordered_map<int64_t, const Sequence::State*> live_;
    KvStats counters_;                  // counters and peak; the rest is computed in stats()
};

}  // namespace kvrag::kvcache
