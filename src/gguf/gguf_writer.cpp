#include "gguf/gguf_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <type_traits>

namespace kvrag::gguf {
namespace {

template <class T>
void put(std::vector<uint8_t>& out, T v) {
    const size_t at = out.size();
    out.resize(at + sizeof(T));
    std::memcpy(out.data() + at, &v, sizeof(T));
}

void put_string(std::vector<uint8_t>& out, std::string_view s) {
    put<uint64_t>(out, s.size());
    out.insert(out.end(), s.begin(), s.end());
}

// Serialises a value read from a file back to its on-disk payload (without the type tag).
void put_value(std::vector<uint8_t>& out, const Value& v) {
    switch (v.type) {
        case ValueType::UINT8: put<uint8_t>(out, static_cast<uint8_t>(v.u)); break;
        case ValueType::INT8: put<int8_t>(out, static_cast<int8_t>(v.i)); break;
        case ValueType::UINT16: put<uint16_t>(out, static_cast<uint16_t>(v.u)); break;
        case ValueType::INT16: put<int16_t>(out, static_cast<int16_t>(v.i)); break;
        case ValueType::UINT32: put<uint32_t>(out, static_cast<uint32_t>(v.u)); break;
        case ValueType::INT32: put<int32_t>(out, static_cast<int32_t>(v.i)); break;
        case ValueType::UINT64: put<uint64_t>(out, v.u); break;
        case ValueType::INT64: put<int64_t>(out, v.i); break;
        case ValueType::FLOAT32: put<float>(out, static_cast<float>(v.f)); break;
        case ValueType::FLOAT64: put<double>(out, v.f); break;
        case ValueType::BOOL: put<uint8_t>(out, v.u ? 1 : 0); break;
        case ValueType::STRING: put_string(out, v.str); break;
        case ValueType::ARRAY: {
            const ArrayValue& a = *v.arr;
            put<uint32_t>(out, static_cast<uint32_t>(a.elem_type));
            put<uint64_t>(out, a.n);
            if (a.elem_type == ValueType::STRING) {
                for (auto s : a.strings) put_string(out, s);
            } else if (a.elem_type == ValueType::ARRAY) {
                for (const auto& sub : a.arrays) put_value(out, sub);
            } else {
                out.insert(out.end(), a.data, a.data + a.n * value_type_size(a.elem_type));
            }
            break;
        }
    }
}

}  // namespace

void GgufWriter::set_raw(std::string_view key, ValueType type, std::vector<uint8_t> payload) {
    for (auto& kv : kv_) {
        if (kv.first == key) {
            kv.second = {type, std::move(payload)};
            return;
        }
    }
    kv_.push_back({std::string(key), {type, std::move(payload)}});
}

namespace {

template <class T>
std::vector<uint8_t> scalar_payload(T value) {
    std::vector<uint8_t> p;
    put(p, value);
    return p;
}

template <class T>
std::vector<uint8_t> array_payload(ValueType elem_type, const std::vector<T>& values) {
    std::vector<uint8_t> p;
    put<uint32_t>(p, static_cast<uint32_t>(elem_type));
    put<uint64_t>(p, values.size());
    for (const T& v : values) {
        if constexpr (std::is_same_v<T, std::string>) {
            put_string(p, v);
        } else {
            put(p, v);
        }
    }
    return p;
}

}  // namespace

void GgufWriter::set_string(std::string_view key, std::string_view value) {
    std::vector<uint8_t> p;
    put_string(p, value);
    set_raw(key, ValueType::STRING, std::move(p));
}
void GgufWriter::set_u32(std::string_view key, uint32_t value) { set_raw(key, ValueType::UINT32, scalar_payload(value)); }
void GgufWriter::set_i32(std::string_view key, int32_t value) { set_raw(key, ValueType::INT32, scalar_payload(value)); }
void GgufWriter::set_u64(std::string_view key, uint64_t value) { set_raw(key, ValueType::UINT64, scalar_payload(value)); }
void GgufWriter::set_f32(std::string_view key, float value) { set_raw(key, ValueType::FLOAT32, scalar_payload(value)); }
void GgufWriter::set_bool(std::string_view key, bool value) {
    set_raw(key, ValueType::BOOL, scalar_payload<uint8_t>(value ? 1 : 0));
}
void GgufWriter::set_string_array(std::string_view key, const std::vector<std::string>& values) {
    set_raw(key, ValueType::ARRAY, array_payload(ValueType::STRING, values));
}
void GgufWriter::set_f32_array(std::string_view key, const std::vector<float>& values) {
    set_raw(key, ValueType::ARRAY, array_payload(ValueType::FLOAT32, values));
}
void GgufWriter::set_i32_array(std::string_view key, const std::vector<int32_t>& values) {
    set_raw(key, ValueType::ARRAY, array_payload(ValueType::INT32, values));
}

void GgufWriter::copy_key(const GgufFile& from, std::string_view key) {
    const Value* v = from.find(key);
    if (!v) return;
    std::vector<uint8_t> p;
    put_value(p, *v);
    set_raw(key, v->type, std::move(p));
}

void GgufWriter::copy_keys_with_prefix(const GgufFile& from, std::string_view prefix) {
    for (const auto& [key, value] : from.metadata()) {
        if (key.compare(0, prefix.size(), prefix) == 0) copy_key(from, key);
    }
}

Result<void> GgufWriter::add_tensor(std::string_view name, GgmlType type, std::vector<int64_t> ne,
                                    std::vector<uint8_t> data) {
    const GgmlTypeTraits tr = ggml_type_traits(type);
    if (ne.empty() || ne.size() > 4) {
        return Error{Errc::gguf_write, "tensor '" + std::string(name) + "' has " + std::to_string(ne.size()) + " dims, expected 1..4"};
    }
    if (ne[0] % tr.block_size != 0) {
        return Error{Errc::gguf_write, "tensor '" + std::string(name) + "' row length " + std::to_string(ne[0]) +
                                           " is not a multiple of block size " + std::to_string(tr.block_size)};
    }
    uint64_t rows = 1;
    for (size_t d = 1; d < ne.size(); ++d) rows *= static_cast<uint64_t>(ne[d]);
    const uint64_t expect = ggml_row_size(type, ne[0]) * rows;
    if (data.size() != expect) {
        return Error{Errc::gguf_write, "tensor '" + std::string(name) + "' data is " + std::to_string(data.size()) +
                                           " bytes, expected " + std::to_string(expect)};
    }
    tensors_.push_back({std::string(name), type, std::move(ne), std::move(data)});
    return {};
}

std::vector<uint8_t> GgufWriter::to_bytes() const {
    std::vector<uint8_t> out;
    put<uint32_t>(out, 0x46554747);
    put<uint32_t>(out, 3);
    put<uint64_t>(out, tensors_.size());
    const bool write_alignment = alignment_ != 32;
    put<uint64_t>(out, kv_.size() + (write_alignment ? 1 : 0));
    if (write_alignment) {
        put_string(out, "general.alignment");
        put<uint32_t>(out, static_cast<uint32_t>(ValueType::UINT32));
        put<uint32_t>(out, alignment_);
    }
    for (const auto& [key, tv] : kv_) {
        put_string(out, key);
        put<uint32_t>(out, static_cast<uint32_t>(tv.first));
        out.insert(out.end(), tv.second.begin(), tv.second.end());
    }
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors_) {
        put_string(out, t.name);
        put<uint32_t>(out, static_cast<uint32_t>(t.ne.size()));
        for (int64_t d : t.ne) put<uint64_t>(out, static_cast<uint64_t>(d));
        put<uint32_t>(out, static_cast<uint32_t>(t.type));
        put<uint64_t>(out, offset);
        offsets.push_back(offset);
        offset += (t.data.size() + alignment_ - 1) / alignment_ * alignment_;
    }
    out.resize((out.size() + alignment_ - 1) / alignment_ * alignment_, 0);
    const size_t data_start = out.size();
    for (size_t i = 0; i < tensors_.size(); ++i) {
        out.resize(data_start + offsets[i], 0);
        out.insert(out.end(), tensors_[i].data.begin(), tensors_[i].data.end());
    }
    return out;
}

Result<void> write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
    const std::string tmp = path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) return Error{Errc::gguf_write, path + ": cannot create: " + std::strerror(errno)};
    const size_t n = std::fwrite(bytes.data(), 1, bytes.size(), f);
    const bool ok = n == bytes.size() && std::fflush(f) == 0;
    std::fclose(f);
    if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        return Error{Errc::gguf_write, path + ": write failed after " + std::to_string(n) + " of " +
                                           std::to_string(bytes.size()) + " bytes"};
    }
    return {};
}

Result<void> GgufWriter::write(const std::string& path) const { return write_file_atomic(path, to_bytes()); }

}  // namespace kvrag::gguf
