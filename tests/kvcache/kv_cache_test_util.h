// Constants and helpers shared by the KV cache tests (one definition each, so the unity build
// of the suite never meets two copies).
#pragma once

#include <cstdint>
#include <numeric>
#include <vector>

namespace kvrag::kvcache {

// Tokens per block in the caches and prefix indexes these tests build: small, so a few tokens
// already cross block edges.
inline constexpr int32_t kBlock = 4;

// n token ids: first, first + 1, ...
inline std::vector<int32_t> toks(int32_t n, int32_t first = 100) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    std::iota(v.begin(), v.end(), first);
    return v;
}

}  // namespace kvrag::kvcache
