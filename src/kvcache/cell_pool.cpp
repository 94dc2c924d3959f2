#include "kvcache/cell_pool.h"

#include "core/check.h"

namespace kvrag::kvcache {

CellPool::CellPool(int32_t n_cells) {
    KVRAG_CHECK(n_cells >= 1, "a cell pool needs at least one cell");
    seq_refs_.assign(static_cast<size_t>(n_cells), 0);
    cached_.assign(static_cast<size_t>(n_cells), 0);
    free_.reserve(static_cast<size_t>(n_cells));
    // Lowest cell on top of the stack: cells are handed out in ascending order on a fresh pool.
    for (int32_t c = n_cells - 1; c >= 0; --c) free_.push_back(c);
}

void CellPool::check_cell(int32_t cell) const {
    KVRAG_CHECK(cell >= 0 && cell < n_cells(), "cell index outside the pool");
}

int32_t CellPool::seq_refs(int32_t cell) const {
    check_cell(cell);
    return seq_refs_[static_cast<size_t>(cell)];
}

bool CellPool::cached(int32_t cell) const {
    check_cell(cell);
    return cached_[static_cast<size_t>(cell)] != 0;
}

void CellPool::push_free(int32_t cell) { free_.push_back(cell); }

int32_t CellPool::take() {
    if (free_.empty()) return -1;
    const int32_t c = free_.back();
    free_.pop_back();
    seq_refs_[static_cast<size_t>(c)] = 1;
    ++n_used_;
    return c;
}

bool CellPool::ref_seq(int32_t cell) {
    check_cell(cell);
    int32_t& r = seq_refs_[static_cast<size_t>(cell)];
    KVRAG_CHECK(r > 0 || cached_[static_cast<size_t>(cell)], "a sequence may only share a cell someone holds (a free cell is taken, not shared)");
    if (++r == 1) {
        ++n_used_;
        return true;
    }
    return false;
}

bool CellPool::unref_seq(int32_t cell) {
    check_cell(cell);
    int32_t& r = seq_refs_[static_cast<size_t>(cell)];
    KVRAG_CHECK(r > 0, "unref of a cell no sequence holds");
    if (--r > 0) return false;
    --n_used_;
    if (!cached_[static_cast<size_t>(cell)]) push_free(cell);
    return true;
}

void CellPool::ref_cache(int32_t cell) {
    check_cell(cell);
    KVRAG_CHECK(seq_refs_[static_cast<size_t>(cell)] > 0, "the prefix cache may only take a cell a sequence computed and holds");
    KVRAG_CHECK(!cached_[static_cast<size_t>(cell)], "cell is already cached (it would hold two prefixes' K/V)");
    cached_[static_cast<size_t>(cell)] = 1;
}

void CellPool::unref_cache(int32_t cell) {
    check_cell(cell);
    KVRAG_CHECK(cached_[static_cast<size_t>(cell)], "unref_cache of a cell the prefix cache does not hold");
    cached_[static_cast<size_t>(cell)] = 0;
    if (seq_refs_[static_cast<size_t>(cell)] == 0) push_free(cell);
}

void CellPool::reserve(int32_t n) {
    KVRAG_CHECK(n >= 0, "negative reservation");
    reserved_ += n;
}

void CellPool::unreserve(int32_t n) {
    KVRAG_CHECK(n >= 0 && n <= reserved_, "returning more reserved cells than are reserved");
    reserved_ -= n;
}

std::string CellPool::check_invariants() const {
    int32_t used = 0, held = 0;
    for (int32_t c = 0; c < n_cells(); ++c) {
        const int32_t r = seq_refs_[static_cast<size_t>(c)];
        if (r < 0) return "cell " + std::to_string(c) + " has " + std::to_string(r) + " sequence references";
        if (cached_[static_cast<size_t>(c)] > 1) return "cell " + std::to_string(c) + " cache flag is not 0/1";
        used += r > 0 ? 1 : 0;
        held += r > 0 || cached_[static_cast<size_t>(c)] ? 1 : 0;
    }
    if (used != n_used_) return "used-by-sequences count " + std::to_string(n_used_) + " != actual " + std::to_string(used);
    if (n_free() != n_cells() - held) {
        return "free list has " + std::to_string(free_.size()) + " cells, expected " + std::to_string(n_cells() - held);
    }
    std::vector<char> in_free(seq_refs_.size(), 0);
    for (int32_t c : free_) {
        if (c < 0 || c >= n_cells()) return "free list holds cell " + std::to_string(c) + " outside the pool";
        if (refs(c) != 0 || in_free[static_cast<size_t>(c)]) return "free list holds cell " + std::to_string(c) + " twice or in use";
        in_free[static_cast<size_t>(c)] = 1;
    }
    if (reserved_ < 0) return "negative reservation total " + std::to_string(reserved_);
    return "";
}

}  // namespace kvrag::kvcache
