// Exact nearest-neighbour scan over a (n, dim) matrix of L2-normalised embeddings: the
// similarity is the dot product (= cosine). Why exact and not HNSW: see docs/memory.md
// ("Vector search"), with the times `kvrag memory-bench` measures at 10k and 100k chunks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_set>
#include <utility>
#include <vector>

namespace kvrag::memory {

// a, b: (n) floats. Eight independent accumulators so the compiler can keep them in
// vector registers without -ffast-math (a plain loop is one serial dependency chain).
float dot_f32(const float* a, const float* b, int32_t n);

// The k best rows of data (n, dim) by dot product with q (dim), best first, as (row, score).
// Equal scores are ordered by row, lowest first, so the result never depends on the sort's
// internals (and a k that cuts through a tie keeps the lowest rows). Returns min(k, number of
// rows considered) pairs; k == 0 gives none.
// Filter: when both doc_rowids (n) and allowed are given, rows whose doc_rowids[row] is not
// in `allowed` are skipped (an empty set skips every row); when either is null, none are.
std::vector<std::pair<size_t, float>> top_k_scan(const float* data, size_t n, int32_t dim, const float* q, size_t k,
                                                 const std::vector<int64_t>* doc_rowids = nullptr,
                                                 const std::unordered_set<int64_t>* allowed = nullptr);

}  // namespace kvrag::memory
