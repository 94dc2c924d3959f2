// Read-only, memory-mapped GGUF file (versions 2 and 3).
//
// Everything read from the file is validated before use: magic, version, counts against the
// bytes left, string and array lengths, metadata type tags, tensor dimensions, element count
// times type size, alignment, and that every tensor's data lies inside the file without
// overlapping another. A bad file yields an Error naming the file, what was wrong and the
// numbers (expected vs found); nothing is ever read out of bounds.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/ggml_type.h"

namespace kvrag::gguf {

enum class ValueType : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
    BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
std::string_view value_type_name(ValueType t);
// Bytes of one scalar of type t (0 for STRING and ARRAY, whose size is in the data).
size_t value_type_size(ValueType t);

struct Value;

// An array value. Numeric elements stay in the mapped file (little-endian, possibly
// unaligned) and are read through the accessors; strings are views into the mapping.
struct ArrayValue {
    ValueType elem_type = ValueType::UINT8;
    uint64_t n = 0;
    const uint8_t* data = nullptr;           // numeric/bool elements, n * size(elem_type) bytes
    std::vector<std::string_view> strings;   // when elem_type == STRING
    std::vector<Value> arrays;               // when elem_type == ARRAY (nested)

    // Element i converted to the requested kind; nullopt when the element type does not convert
    // (e.g. a float read as an integer) or i is out of range.
    std::optional<int64_t> int_at(uint64_t i) const;
    std::optional<double> float_at(uint64_t i) const;
};

struct Value {
    ValueType type = ValueType::UINT8;
    uint64_t u = 0;           // unsigned integers and bool
    int64_t i = 0;            // signed integers
    double f = 0.0;           // FLOAT32 / FLOAT64
    std::string_view str;     // STRING
    std::shared_ptr<ArrayValue> arr;  // ARRAY

    std::string to_display(size_t max_array_items = 8) const;
};

struct TensorInfo {
    std::string name;
    GgmlType type = GgmlType::F32;
    std::vector<int64_t> ne;   // dims, ne[0] innermost (contiguous) as in ggml
    uint64_t offset = 0;       // relative to the start of the data section
    uint64_t n_elements = 0;
    uint64_t n_bytes = 0;
    const uint8_t* data = nullptr;  // into the mapping

    int64_t dim(size_t i) const { return i < ne.size() ? ne[i] : 1; }
    std::string shape_string() const;  // "[4096, 32000]"
};

class GgufFile {
public:
    // Maps and validates the file at path.
    static Result<std::shared_ptr<GgufFile>> open(const std::string& path);
    // Validates an in-memory image (used by the fuzzer and by tests); the bytes are owned.
    static Result<std::shared_ptr<GgufFile>> from_bytes(std::vector<uint8_t> bytes,
                                                        std::string name = "<memory>");

    ~GgufFile();
    GgufFile(const GgufFile&) = delete;
    GgufFile& operator=(const GgufFile&) = delete;

    const std::string& path() const { return path_; }
    uint32_t version() const { return version_; }
    uint64_t file_size() const { return size_; }
    uint32_t alignment() const { return alignment_; }
    uint64_t data_offset() const { return data_offset_; }

    // ---- metadata ----
    const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
    const Value* find(std::string_view key) const;
    bool has(std::string_view key) const { return find(key) != nullptr; }
    // Typed lookups: nullopt when absent; an Error when present with an incompatible type.
    // Integers of any width convert when the value fits.
    Result<std::optional<std::string_view>> get_string(std::string_view key) const;
    Result<std::optional<int64_t>> get_int(std::string_view key) const;
    Result<std::optional<double>> get_float(std::string_view key) const;
    Result<std::optional<bool>> get_bool(std::string_view key) const;
    Result<const ArrayValue*> get_array(std::string_view key) const;  // nullptr when absent
    // Required variants: Error (gguf_missing_key) when absent.
    Result<std::string_view> require_string(std::string_view key) const;
    Result<int64_t> require_int(std::string_view key) const;

    // ---- tensors ----
    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const TensorInfo* find_tensor(std::string_view name) const;

    // Whether the bytes are a read-only mapping of the file (open) rather than owned memory
    // (from_bytes).
    bool is_mapped() const { return mapped_; }
    // Drops the process's mapped pages wholly inside [data, data + n_bytes), which must lie in
    // this file's bytes, and returns how many bytes that released. For a copy the model no
    // longer reads (a matrix the kernels use repacked). The bytes stay valid: the mapping is a
    // read-only MAP_SHARED view of the file, so a later read faults the page back in from the
    // page cache or the file. Owned memory (from_bytes) is never released: MADV_DONTNEED on
    // anonymous memory would zero it. Returns 0 then, and when the range holds no whole page.
    uint64_t release_pages(const uint8_t* data, uint64_t n_bytes) const;

private:
    GgufFile() = default;
    void parse();  // throws kvrag::Exception

    std::string path_;
    const uint8_t* base_ = nullptr;
    uint64_t size_ = 0;
    bool mapped_ = false;
    std::vector<uint8_t> owned_;
    uint32_t version_ = 0;
    uint32_t alignment_ = 32;
    uint64_t data_offset_ = 0;
    std::vector<std::pair<std::string, Value>> kv_;
    std::map<std::string, size_t, std::less<>> kv_index_;
    std::vector<TensorInfo> tensors_;
    std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace kvrag::gguf
