// The cells' bookkeeping: who holds each cell, which cells are free, and how many are promised.
//
// A cell has two kinds of holders: live sequences (any number, counted) and the prefix cache
// (at most one, a flag). A cell nobody holds is free and sits on the free list, a stack of cell
// indices (O(1) take and return; the lowest cell on top of a fresh pool, so cells are handed out
// in ascending order). Reservations are a single total here: cells promised to admitted
// sequences and not yet taken; which sequence owns how much is the KvCache's business.
//
// Failure contract. "No room" is an empty return (take() gives -1). Every other misuse (a cell
// out of range, a reference dropped that was never taken, a reservation returned twice) is a
// bug in the caller and stops the process with KVRAG_CHECK: silently going on would hand a
// cell that someone still reads to another sequence.
//
// Not thread-safe: the owning KvCache serialises every call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvrag::kvcache {

class CellPool {
public:
    // Precondition: n_cells >= 1.
    explicit CellPool(int32_t n_cells);

    // ---- sequence references ----
    // Takes a free cell for a sequence (one sequence reference). -1 when no cell is free.
    int32_t take();
    // A sequence takes one more reference to a cell someone already holds (fork, prefix reuse).
    // Returns true when this is the cell's first sequence holder (it was only cached).
    // Precondition: the cell is held.
    bool ref_seq(int32_t cell);
    // A sequence drops its reference. Returns true when that was the cell's last sequence holder.
    // The cell goes back on the free list when nobody holds it any more.
    // Precondition: some sequence holds the cell.
    bool unref_seq(int32_t cell);

    // ---- the prefix cache's reference ----
    // Precondition: the cell is held (by the sequence that computed it) and not cached yet.
    void ref_cache(int32_t cell);
    // Precondition: the cell is cached. Frees it when no sequence holds it either.
    void unref_cache(int32_t cell);

    // ---- reservations ----
    // Precondition: n >= 0. Whether the cells are there is the caller's check (it also counts
    // evictable cached cells, which only the prefix cache knows).
    void reserve(int32_t n);
    // Precondition: 0 <= n <= n_reserved().
    void unreserve(int32_t n);

    // ---- queries, O(1) ----
    int32_t n_cells() const { return static_cast<int32_t>(seq_refs_.size()); }
    int32_t n_free() const { return static_cast<int32_t>(free_.size()); }
    int32_t n_held() const { return n_cells() - n_free(); }   // cells with at least one holder
    int32_t n_used() const { return n_used_; }                // cells some sequence holds
    int32_t n_reserved() const { return reserved_; }
    int32_t seq_refs(int32_t cell) const;                     // sequence holders of the cell
    bool cached(int32_t cell) const;                          // the prefix cache holds the cell
    int32_t refs(int32_t cell) const { return seq_refs(cell) + (cached(cell) ? 1 : 0); }

    // Checks the pool's own invariants (free list = cells with no holder, each once; n_used);
    // returns a description of the first violation, or empty. O(n_cells), for tests.
    std::string check_invariants() const;

private:
    void check_cell(int32_t cell) const;
    void push_free(int32_t cell);

    std::vector<int32_t> seq_refs_;   // (n_cells) sequence holders per cell
    std::vector<uint8_t> cached_;     // (n_cells) 1 when the prefix cache holds the cell
    std::vector<int32_t> free_;       // stack of free cells, top = back
    int32_t n_used_ = 0;              // cells with seq_refs_ > 0
    int32_t reserved_ = 0;
};

}  // namespace kvrag::kvcache
