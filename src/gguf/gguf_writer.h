// Writes GGUF version 3 files: used for synthetic test models, the demo, and `kvrag` tools.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/ggml_type.h"
#include "gguf/gguf_file.h"

namespace kvrag::gguf {

// Writes bytes to path through a temporary file and a rename, so a reader never sees a
// half-written model.
Result<void> write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);

class GgufWriter {
public:
    explicit GgufWriter(uint32_t alignment = 32) : alignment_(alignment) {}

    // Metadata; setting a key again replaces it.
    void set_string(std::string_view key, std::string_view value);
    void set_u32(std::string_view key, uint32_t value);
    void set_i32(std::string_view key, int32_t value);
    void set_u64(std::string_view key, uint64_t value);
    void set_f32(std::string_view key, float value);
    void set_bool(std::string_view key, bool value);
    void set_string_array(std::string_view key, const std::vector<std::string>& values);
    void set_f32_array(std::string_view key, const std::vector<float>& values);
    void set_i32_array(std::string_view key, const std::vector<int32_t>& values);
    // Copies a key (any type, arrays included) from another file, e.g. a vocabulary.
    void copy_key(const GgufFile& from, std::string_view key);
    // Copies every key that starts with prefix ("tokenizer.").
    void copy_keys_with_prefix(const GgufFile& from, std::string_view prefix);

    // Tensor data must be exactly ggml_row_size(type, ne[0]) * ne[1] * ... bytes.
    Result<void> add_tensor(std::string_view name, GgmlType type, std::vector<int64_t> ne,
                            std::vector<uint8_t> data);

    std::vector<uint8_t> to_bytes() const;
    Result<void> write(const std::string& path) const;

private:
    void set_raw(std::string_view key, ValueType type, std::vector<uint8_t> payload);

    struct Tensor {
        std::string name;
        GgmlType type;
        std::vector<int64_t> ne;
        std::vector<uint8_t> data;
    };
    uint32_t alignment_;
    std::vector<std::pair<std::string, std::pair<ValueType, std::vector<uint8_t>>>> kv_;
    std::vector<Tensor> tensors_;
};

}  // namespace kvrag::gguf
