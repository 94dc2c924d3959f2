#include "core/ggml_type.h"

#include <array>
#include <cctype>

namespace kvrag {
namespace {

// Block geometry from the GGUF specification (ggml.h / ggml-common.h): QK4_0 = QK8_0 = 32,
// QK_K = 256 with the K-quant super-block sizes below.
constexpr std::array<GgmlTypeTraits, 18> kTraits = {{
    {GgmlType::F32, "F32", 1, 4, true},
    {GgmlType::F16, "F16", 1, 2, true},
    {GgmlType::Q4_0, "Q4_0", 32, 18, true},
    {GgmlType::Q4_1, "Q4_1", 32, 20, true},
    {GgmlType::Q5_0, "Q5_0", 32, 22, true},
    {GgmlType::Q5_1, "Q5_1", 32, 24, true},
    {GgmlType::Q8_0, "Q8_0", 32, 34, true},
    {GgmlType::Q8_1, "Q8_1", 32, 36, false},
    {GgmlType::Q2_K, "Q2_K", 256, 84, false},
    {GgmlType::Q3_K, "Q3_K", 256, 110, false},
    {GgmlType::Q4_K, "Q4_K", 256, 144, true},
    {GgmlType::Q5_K, "Q5_K", 256, 176, true},
    {GgmlType::Q6_K, "Q6_K", 256, 210, true},
    {GgmlType::Q8_K, "Q8_K", 256, 292, false},
    {GgmlType::I8, "I8", 1, 1, false},
    {GgmlType::I16, "I16", 1, 2, false},
    {GgmlType::I32, "I32", 1, 4, false},
    {GgmlType::BF16, "BF16", 1, 2, true},
}};

}  // namespace

std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t raw_type) {
    for (const auto& t : kTraits) {
        if (static_cast<uint32_t>(t.type) == raw_type) return t;
    }
    return std::nullopt;
}

GgmlTypeTraits ggml_type_traits(GgmlType type) {
    // Every enumerator has an entry; the fallback only guards against a cast from a bad id.
    auto t = ggml_type_traits(static_cast<uint32_t>(type));
    return t ? *t : GgmlTypeTraits{type, "?", 1, 1, false};
}

std::optional<GgmlType> ggml_type_from_name(std::string_view name) {
    for (const auto& t : kTraits) {
        if (t.name.size() != name.size()) continue;
        bool eq = true;
        for (size_t i = 0; i < name.size(); ++i) {
            if (std::toupper(static_cast<unsigned char>(name[i])) != t.name[i]) { eq = false; break; }
        }
        if (eq) return t.type;
    }
    return std::nullopt;
}

}  // namespace kvrag
