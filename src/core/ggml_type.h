// Tensor element types as numbered by GGUF (ggml_type), with their block geometry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace kvrag {

enum class GgmlType : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    BF16 = 30,
};

struct GgmlTypeTraits {
    GgmlType type;
    std::string_view name;
    int64_t block_size;   // elements per block
    size_t type_size;     // bytes per block
    bool supported;       // kvrag has dequantise + dot kernels for it
};

// Traits for a raw type id read from a file; nullopt for ids GGUF does not define (or that
// were removed, like 4 and 5).
std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t raw_type);
GgmlTypeTraits ggml_type_traits(GgmlType type);

inline std::string_view ggml_type_name(GgmlType t) { return ggml_type_traits(t).name; }

// Bytes needed for a row of n elements; n must be a multiple of the block size.
inline size_t ggml_row_size(GgmlType t, int64_t n) {
    const GgmlTypeTraits tr = ggml_type_traits(t);
    return static_cast<size_t>(n / tr.block_size) * tr.type_size;
}

// Parses names like "q4_0", "Q4_K", "f16" (case-insensitive).
std::optional<GgmlType> ggml_type_from_name(std::string_view name);

}  // namespace kvrag
