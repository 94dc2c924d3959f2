#include "memory/vector_scan.h"

#include <algorithm>

namespace kvrag::memory {

float dot_f32(const float* a, const float* b, int32_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
    }
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

std::vector<std::pair<size_t, float>> top_k_scan(const float* data, size_t n, int32_t dim, const float* q, size_t k,
                                                 const std::vector<int64_t>* doc_rowids,
                                                 const std::unordered_set<int64_t>* allowed) {
    std::vector<std::pair<size_t, float>> scored;
    scored.reserve(allowed ? std::min(n, allowed->size() * 8 + 16) : n);
    for (size_t r = 0; r < n; ++r) {
        if (allowed && doc_rowids && !allowed->count((*doc_rowids)[r])) continue;
        scored.emplace_back(r, dot_f32(data + r * static_cast<size_t>(dim), q, dim));
    }
    auto better = [](const auto& x, const auto& y) { return x.second > y.second || (x.second == y.second && x.first < y.first); };
    k = std::min(k, scored.size());
    std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(k), scored.end(), better);
    scored.resize(k);
    return scored;
}

}  // namespace kvrag::memory
