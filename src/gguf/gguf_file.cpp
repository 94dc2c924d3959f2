#include "gguf/gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

namespace kvrag::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian uint32
constexpr uint32_t kMaxDims = 4;         // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 4;        // nested arrays deeper than this are treated as corrupt
constexpr uint64_t kMaxNameLength = 1 << 16;

bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::FLOAT64); }

template <class T>
T load_le(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));  // x86/ARM little-endian hosts; GGUF is little-endian
    return v;
}

// Bounds-checked cursor over the file image. Every read names what it was reading so a
// truncated file reports "reading X at offset A needs B bytes, file has C".
class Cursor {
public:
    Cursor(const uint8_t* base, uint64_t size, const std::string& path)
        : base_(base), size_(size), path_(path) {}

    uint64_t pos() const { return pos_; }
    uint64_t left() const { return size_ - pos_; }

    const uint8_t* take(uint64_t n, const char* what) {
        if (n > left()) {
            throw_error(Errc::gguf_truncated,
                        path_ + ": truncated while reading " + what + " at offset " +
                            std::to_string(pos_) + ": need " + std::to_string(n) +
                            " bytes, only " + std::to_string(left()) + " left (file size " +
                            std::to_string(size_) + ")");
        }
        const uint8_t* p = base_ + pos_;
        pos_ += n;
        return p;
    }
    template <class T>
    T read(const char* what) { return load_le<T>(take(sizeof(T), what)); }

    std::string_view read_string(const char* what) {
        const uint64_t len = read<uint64_t>(what);
        if (len > left()) {
            throw_error(Errc::gguf_bad_value,
                        path_ + ": " + what + " at offset " + std::to_string(pos_ - 8) +
                            " claims length " + std::to_string(len) + " but only " +
                            std::to_string(left()) + " bytes are left in the file");
        }
        const uint8_t* p = take(len, what);
        return {reinterpret_cast<const char*>(p), static_cast<size_t>(len)};
    }

private:
    const uint8_t* base_;
    uint64_t size_;
    uint64_t pos_ = 0;
    const std::string& path_;
};

Value read_value(Cursor& c, ValueType type, const std::string& path, const std::string& key,
                 int depth);

std::shared_ptr<ArrayValue> read_array(Cursor& c, const std::string& path, const std::string& key,
                                       int depth) {
    if (depth > kMaxArrayDepth) {
        throw_error(Errc::gguf_bad_value, path + ": key '" + key + "' nests arrays deeper than " +
                                              std::to_string(kMaxArrayDepth));
    }
    auto arr = std::make_shared<ArrayValue>();
    const uint32_t raw_type = c.read<uint32_t>("array element type");
    if (!valid_value_type(raw_type)) {
        throw_error(Errc::gguf_bad_value, path + ": key '" + key + "' has array element type " +
                                              std::to_string(raw_type) + ", expected 0..12");
    }
    arr->elem_type = static_cast<ValueType>(raw_type);
    arr->n = c.read<uint64_t>("array length");
    const size_t esz = value_type_size(arr->elem_type);
    if (esz > 0) {
        if (arr->n > c.left() / esz) {
            throw_error(Errc::gguf_bad_value,
                        path + ": key '" + key + "' array of " + std::to_string(arr->n) + " " +
                            std::string(value_type_name(arr->elem_type)) + " needs " +
                            std::to_string(arr->n) + " x " + std::to_string(esz) +
                            " bytes, only " + std::to_string(c.left()) + " left");
        }
        arr->data = c.take(arr->n * esz, "array data");
        if (arr->elem_type == ValueType::BOOL) {
            for (uint64_t i = 0; i < arr->n; ++i) {
                if (arr->data[i] > 1) {
                    throw_error(Errc::gguf_bad_value, path + ": key '" + key + "' bool element " +
                                                          std::to_string(i) + " is " +
                                                          std::to_string(arr->data[i]));
                }
            }
        }
    } else if (arr->elem_type == ValueType::STRING) {
        // Each string needs at least its 8-byte length, which bounds n before reserving.
        if (arr->n > c.left() / 8) {
            throw_error(Errc::gguf_bad_value,
                        path + ": key '" + key + "' claims " + std::to_string(arr->n) +
                            " strings but only " + std::to_string(c.left()) + " bytes are left");
        }
        arr->strings.reserve(arr->n);
        for (uint64_t i = 0; i < arr->n; ++i) arr->strings.push_back(c.read_string("array string"));
    } else {  // nested arrays: each needs at least type + length
        if (arr->n > c.left() / 12) {
            throw_error(Errc::gguf_bad_value,
                        path + ": key '" + key + "' claims " + std::to_string(arr->n) +
                            " nested arrays but only " + std::to_string(c.left()) + " bytes are left");
        }
        arr->arrays.reserve(arr->n);
        for (uint64_t i = 0; i < arr->n; ++i) {
            arr->arrays.push_back(read_value(c, ValueType::ARRAY, path, key, depth + 1));
        }
    }
    return arr;
}

Value read_value(Cursor& c, ValueType type, const std::string& path, const std::string& key,
                 int depth) {
    Value v;
    v.type = type;
    switch (type) {
        case ValueType::UINT8: v.u = c.read<uint8_t>("u8 value"); break;
        case ValueType::INT8: v.i = c.read<int8_t>("i8 value"); break;
        case ValueType::UINT16: v.u = c.read<uint16_t>("u16 value"); break;
        case ValueType::INT16: v.i = c.read<int16_t>("i16 value"); break;
        case ValueType::UINT32: v.u = c.read<uint32_t>("u32 value"); break;
        case ValueType::INT32: v.i = c.read<int32_t>("i32 value"); break;
        case ValueType::UINT64: v.u = c.read<uint64_t>("u64 value"); break;
        case ValueType::INT64: v.i = c.read<int64_t>("i64 value"); break;
        case ValueType::FLOAT32: v.f = c.read<float>("f32 value"); break;
        case ValueType::FLOAT64: v.f = c.read<double>("f64 value"); break;
        case ValueType::BOOL: {
            const uint8_t b = c.read<uint8_t>("bool value");
            if (b > 1) {
                throw_error(Errc::gguf_bad_value,
                            path + ": key '" + key + "' bool value is " + std::to_string(b) + ", expected 0 or 1");
            }
            v.u = b;
            break;
        }
        case ValueType::STRING: v.str = c.read_string("string value"); break;
        case ValueType::ARRAY: v.arr = read_array(c, path, key, depth); break;
    }
    return v;
}

std::string type_mismatch(const std::string& path, std::string_view key, ValueType found,
                          const char* wanted) {
    return path + ": metadata key '" + std::string(key) + "' has type " +
           std::string(value_type_name(found)) + ", expected " + wanted;
}

bool is_unsigned(ValueType t) {
    return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 ||
           t == ValueType::UINT64;
}
bool is_signed(ValueType t) {
    return t == ValueType::INT8 || t == ValueType::INT16 || t == ValueType::INT32 ||
           t == ValueType::INT64;
}

}  // namespace

size_t value_type_size(ValueType t) {
    switch (t) {
        case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
        case ValueType::UINT16: case ValueType::INT16: return 2;
        case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
        case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: return 8;
        default: return 0;
    }
}

std::string_view value_type_name(ValueType t) {
    switch (t) {
        case ValueType::UINT8: return "uint8";
        case ValueType::INT8: return "int8";
        case ValueType::UINT16: return "uint16";
        case ValueType::INT16: return "int16";
        case ValueType::UINT32: return "uint32";
        case ValueType::INT32: return "int32";
        case ValueType::FLOAT32: return "float32";
        case ValueType::BOOL: return "bool";
        case ValueType::STRING: return "string";
        case ValueType::ARRAY: return "array";
        case ValueType::UINT64: return "uint64";
        case ValueType::INT64: return "int64";
        case ValueType::FLOAT64: return "float64";
    }
    return "?";
}

std::optional<int64_t> ArrayValue::int_at(uint64_t idx) const {
    if (idx >= n || data == nullptr) return std::nullopt;
    const uint8_t* p = data + idx * value_type_size(elem_type);
    switch (elem_type) {
        case ValueType::UINT8: return load_le<uint8_t>(p);
        case ValueType::INT8: return load_le<int8_t>(p);
        case ValueType::UINT16: return load_le<uint16_t>(p);
        case ValueType::INT16: return load_le<int16_t>(p);
        case ValueType::UINT32: return load_le<uint32_t>(p);
        case ValueType::INT32: return load_le<int32_t>(p);
        case ValueType::INT64: return load_le<int64_t>(p);
        case ValueType::BOOL: return load_le<uint8_t>(p);
        case ValueType::UINT64: {
            const uint64_t u = load_le<uint64_t>(p);
            if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
            return static_cast<int64_t>(u);
        }
        default: return std::nullopt;
    }
}

std::optional<double> ArrayValue::float_at(uint64_t idx) const {
    if (idx >= n || data == nullptr) return std::nullopt;
    const uint8_t* p = data + idx * value_type_size(elem_type);
    if (elem_type == ValueType::FLOAT32) return load_le<float>(p);
    if (elem_type == ValueType::FLOAT64) return load_le<double>(p);
    if (auto i = int_at(idx)) return static_cast<double>(*i);
    return std::nullopt;
}

std::string Value::to_display(size_t max_array_items) const {
    switch (type) {
        case ValueType::STRING: {
            std::string s(str.substr(0, 120));
            return "\"" + s + (str.size() > 120 ? "...\"" : "\"");
        }
        case ValueType::BOOL: return u ? "true" : "false";
        case ValueType::FLOAT32: case ValueType::FLOAT64: {
            char buf[64];
            std::snprintf(buf, sizeof(buf), "%g", f);
            return buf;
        }
        case ValueType::ARRAY: {
            // "[string x 32000]" and, for short numeric arrays, the first items.
            std::string s = "[";
            s += value_type_name(arr->elem_type);
            s += " x ";
            s += std::to_string(arr->n);
            s += "]";
            if (arr->data != nullptr && arr->n <= max_array_items) {
                s += " {";
                for (uint64_t k = 0; k < arr->n; ++k) {
                    if (k) s += ", ";
                    if (auto iv = arr->int_at(k)) {
                        s += std::to_string(*iv);
                    } else if (auto fv = arr->float_at(k)) {
                        char buf[32];
                        std::snprintf(buf, sizeof(buf), "%g", *fv);
                        s += buf;
                    }
                }
                s += "}";
            }
            return s;
        }
        default:
            return is_signed(type) ? std::to_string(i) : std::to_string(u);
    }
}

std::string TensorInfo::shape_string() const {
    std::string s = "[";
    for (size_t d = 0; d < ne.size(); ++d) s += (d ? ", " : "") + std::to_string(ne[d]);
    return s + "]";
}

GgufFile::~GgufFile() {
    if (mapped_ && base_ != nullptr) munmap(const_cast<uint8_t*>(base_), size_);
}

Result<std::shared_ptr<GgufFile>> GgufFile::open(const std::string& path) {
    return catch_errors([&]() {
        std::shared_ptr<GgufFile> f(new GgufFile());
        f->path_ = path;
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            throw_error(Errc::gguf_io, path + ": cannot open: " + std::strerror(errno));
        }
        struct stat st {};
        if (fstat(fd, &st) != 0) {
            const int e = errno;
            ::close(fd);
            throw_error(Errc::gguf_io, path + ": cannot stat: " + std::strerror(e));
        }
        if (!S_ISREG(st.st_mode)) {
            ::close(fd);
            throw_error(Errc::gguf_io, path + ": not a regular file");
        }
        f->size_ = static_cast<uint64_t>(st.st_size);
        if (f->size_ == 0) {
            ::close(fd);
            throw_error(Errc::gguf_truncated, path + ": file is empty (0 bytes), expected a GGUF header");
        }
        void* p = mmap(nullptr, f->size_, PROT_READ, MAP_SHARED, fd, 0);
        const int e = errno;
        ::close(fd);
        if (p == MAP_FAILED) throw_error(Errc::gguf_io, path + ": cannot mmap: " + std::strerror(e));
        f->base_ = static_cast<const uint8_t*>(p);
        f->mapped_ = true;
        f->parse();
        return f;
    });
}

uint64_t GgufFile::release_pages(const uint8_t* data, uint64_t n_bytes) const {
    if (!mapped_ || n_bytes == 0 || data < base_ || data + n_bytes > base_ + size_) return 0;
    const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    // Inward to whole pages: a page shared with a neighbouring tensor stays.
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + n_bytes) / page * page;
    if (end <= begin) return 0;
    if (madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED) != 0) return 0;
    return end - begin;
}

Result<std::shared_ptr<GgufFile>> GgufFile::from_bytes(std::vector<uint8_t> bytes, std::string name) {
    return catch_errors([&]() {
        std::shared_ptr<GgufFile> f(new GgufFile());
        f->path_ = std::move(name);
        f->owned_ = std::move(bytes);
        f->base_ = f->owned_.data();
        f->size_ = f->owned_.size();
        f->parse();
        return f;
    });
}

void GgufFile::parse() {
    Cursor c(base_, size_, path_);
    if (size_ < 4) {
        throw_error(Errc::gguf_truncated, path_ + ": file is " + std::to_string(size_) +
                                              " bytes, too short for the GGUF magic");
    }
    const uint32_t magic = c.read<uint32_t>("magic");
    if (magic != kMagic) {
        char buf[96];
        std::snprintf(buf, sizeof(buf), ": not a GGUF file: magic is 0x%08x, expected 0x%08x (\"GGUF\")",
                      magic, kMagic);
        throw_error(Errc::gguf_bad_magic, path_ + buf);
    }
    version_ = c.read<uint32_t>("version");
    if (version_ != 2 && version_ != 3) {
        throw_error(Errc::gguf_bad_version,
                    path_ + ": GGUF version " + std::to_string(version_) +
                        " is not supported; kvrag reads versions 2 and 3" +
                        (version_ == 1 ? " (re-convert this old file with a current converter)" : ""));
    }
    const uint64_t n_tensors = c.read<uint64_t>("tensor count");
    const uint64_t n_kv = c.read<uint64_t>("metadata count");
    // A key/value needs at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least
    // 8 + 4 + 4 + 8. Counts beyond what the file could hold are corrupt, not allocations to try.
    if (n_kv > c.left() / 13) {
        throw_error(Errc::gguf_bad_value, path_ + ": metadata count " + std::to_string(n_kv) +
                                              " cannot fit in the " + std::to_string(c.left()) +
                                              " bytes left");
    }
    if (n_tensors > c.left() / 24) {
        throw_error(Errc::gguf_bad_tensor, path_ + ": tensor count " + std::to_string(n_tensors) +
                                               " cannot fit in the " + std::to_string(c.left()) +
                                               " bytes left");
    }

    kv_.reserve(n_kv);
    for (uint64_t k = 0; k < n_kv; ++k) {
        const std::string key(c.read_string("metadata key"));
        if (key.empty()) {
            throw_error(Errc::gguf_bad_value, path_ + ": metadata entry " + std::to_string(k) + " has an empty key");
        }
        const uint32_t raw_type = c.read<uint32_t>("metadata type");
        if (!valid_value_type(raw_type)) {
            throw_error(Errc::gguf_bad_value, path_ + ": metadata key '" + key + "' has type tag " +
                                                  std::to_string(raw_type) + ", expected 0..12");
        }
        Value v = read_value(c, static_cast<ValueType>(raw_type), path_, key, 0);
        if (kv_index_.count(key)) {
            throw_error(Errc::gguf_bad_value, path_ + ": metadata key '" + key + "' appears twice");
        }
        kv_index_.emplace(key, kv_.size());
        kv_.emplace_back(key, std::move(v));
    }

    if (const Value* a = find("general.alignment")) {
        if (a->type != ValueType::UINT32) {
            throw_error(Errc::gguf_wrong_key_type, type_mismatch(path_, "general.alignment", a->type, "uint32"));
        }
        if (a->u == 0 || (a->u & (a->u - 1)) != 0) {
            throw_error(Errc::gguf_bad_value, path_ + ": general.alignment is " + std::to_string(a->u) +
                                                  ", expected a power of two");
        }
        alignment_ = static_cast<uint32_t>(a->u);
    }

    tensors_.reserve(n_tensors);
    for (uint64_t t = 0; t < n_tensors; ++t) {
        TensorInfo ti;
        const std::string_view name = c.read_string("tensor name");
        if (name.empty() || name.size() > kMaxNameLength) {
            throw_error(Errc::gguf_bad_tensor, path_ + ": tensor " + std::to_string(t) + " has a name of length " +
                                                   std::to_string(name.size()) + ", expected 1.." +
                                                   std::to_string(kMaxNameLength));
        }
        ti.name = std::string(name);
        const uint32_t n_dims = c.read<uint32_t>("tensor dim count");
        if (n_dims == 0 || n_dims > kMaxDims) {
            throw_error(Errc::gguf_bad_tensor, path_ + ": tensor '" + ti.name + "' has " + std::to_string(n_dims) +
                                                   " dims, expected 1.." + std::to_string(kMaxDims));
        }
        uint64_t n_el = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t ne = c.read<uint64_t>("tensor dim");
            if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
                n_el > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne) {
                throw_error(Errc::gguf_bad_tensor, path_ + ": tensor '" + ti.name + "' dim " + std::to_string(d) +
                                                       " is " + std::to_string(ne) +
                                                       " (zero, or the element count overflows)");
            }
            n_el *= ne;
            ti.ne.push_back(static_cast<int64_t>(ne));
        }
        const uint32_t raw_type = c.read<uint32_t>("tensor type");
        const auto traits = ggml_type_traits(raw_type);
        if (!traits) {
            throw_error(Errc::gguf_bad_tensor, path_ + ": tensor '" + ti.name + "' has type id " +
                                                   std::to_string(raw_type) + ", which GGUF does not define");
        }
        ti.type = traits->type;
        if (ti.ne[0] % traits->block_size != 0) {
            throw_error(Errc::gguf_bad_tensor,
                        path_ + ": tensor '" + ti.name + "' row length " + std::to_string(ti.ne[0]) +
                            " is not a multiple of the " + std::string(traits->name) + " block size " +
                            std::to_string(traits->block_size));
        }
        ti.n_elements = n_el;
        const uint64_t n_blocks = n_el / static_cast<uint64_t>(traits->block_size);
        if (n_blocks > std::numeric_limits<uint64_t>::max() / traits->type_size) {
            throw_error(Errc::gguf_bad_tensor, path_ + ": tensor '" + ti.name + "' byte size overflows");
        }
        ti.n_bytes = n_blocks * traits->type_size;
        ti.offset = c.read<uint64_t>("tensor offset");
        if (ti.offset % alignment_ != 0) {
            throw_error(Errc::gguf_bad_tensor, path_ + ": tensor '" + ti.name + "' offset " + std::to_string(ti.offset) +
                                                   " is not a multiple of the alignment " + std::to_string(alignment_));
        }
        if (tensor_index_.count(ti.name)) {
            throw_error(Errc::gguf_bad_tensor, path_ + ": tensor '" + ti.name + "' appears twice");
        }
        tensor_index_.emplace(ti.name, tensors_.size());
        tensors_.push_back(std::move(ti));
    }

    // The data section starts at the next multiple of the alignment after the header.
    const uint64_t header_end = c.pos();
    data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
    if (n_tensors > 0 && data_offset_ > size_) {
        throw_error(Errc::gguf_truncated, path_ + ": data section would start at " + std::to_string(data_offset_) +
                                              ", past the file size " + std::to_string(size_));
    }
    const uint64_t data_size = data_offset_ <= size_ ? size_ - data_offset_ : 0;
    std::vector<size_t> order(tensors_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    for (auto& ti : tensors_) {
        if (ti.offset > data_size || ti.n_bytes > data_size - ti.offset) {
            throw_error(Errc::gguf_truncated,
                        path_ + ": tensor '" + ti.name + "' " + ti.shape_string() + " " +
                            std::string(ggml_type_name(ti.type)) + " needs bytes [" +
                            std::to_string(data_offset_ + ti.offset) + ", " +
                            std::to_string(data_offset_ + ti.offset + ti.n_bytes) +
                            ") but the file has " + std::to_string(size_) + " bytes");
        }
        ti.data = base_ + data_offset_ + ti.offset;
    }
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
    for (size_t k = 1; k < order.size(); ++k) {
        const TensorInfo& prev = tensors_[order[k - 1]];
        const TensorInfo& cur = tensors_[order[k]];
        if (prev.offset + prev.n_bytes > cur.offset) {
            throw_error(Errc::gguf_bad_tensor,
                        path_ + ": tensors '" + prev.name + "' [" + std::to_string(prev.offset) + ", " +
                            std::to_string(prev.offset + prev.n_bytes) + ") and '" + cur.name +
                            "' (starting at " + std::to_string(cur.offset) + ") overlap");
        }
    }
}

const Value* GgufFile::find(std::string_view key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const TensorInfo* GgufFile::find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Result<std::optional<std::string_view>> GgufFile::get_string(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return std::optional<std::string_view>{};
    if (v->type != ValueType::STRING) return Error{Errc::gguf_wrong_key_type, type_mismatch(path_, key, v->type, "string")};
    return std::optional<std::string_view>{v->str};
}

Result<std::optional<int64_t>> GgufFile::get_int(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return std::optional<int64_t>{};
    if (is_signed(v->type)) return std::optional<int64_t>{v->i};
    if (is_unsigned(v->type)) {
        if (v->u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            return Error{Errc::gguf_bad_value, path_ + ": metadata key '" + std::string(key) + "' value " +
                                                   std::to_string(v->u) + " is too large"};
        }
        return std::optional<int64_t>{static_cast<int64_t>(v->u)};
    }
    return Error{Errc::gguf_wrong_key_type, type_mismatch(path_, key, v->type, "an integer")};
}

Result<std::optional<double>> GgufFile::get_float(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return std::optional<double>{};
    if (v->type == ValueType::FLOAT32 || v->type == ValueType::FLOAT64) return std::optional<double>{v->f};
    if (is_signed(v->type)) return std::optional<double>{static_cast<double>(v->i)};
    if (is_unsigned(v->type)) return std::optional<double>{static_cast<double>(v->u)};
    return Error{Errc::gguf_wrong_key_type, type_mismatch(path_, key, v->type, "a number")};
}

Result<std::optional<bool>> GgufFile::get_bool(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return std::optional<bool>{};
    if (v->type != ValueType::BOOL) return Error{Errc::gguf_wrong_key_type, type_mismatch(path_, key, v->type, "bool")};
    return std::optional<bool>{v->u != 0};
}

Result<const ArrayValue*> GgufFile::get_array(std::string_view key) const {
    const Value* v = find(key);
    if (!v) return static_cast<const ArrayValue*>(nullptr);
    if (v->type != ValueType::ARRAY) return Error{Errc::gguf_wrong_key_type, type_mismatch(path_, key, v->type, "array")};
    return static_cast<const ArrayValue*>(v->arr.get());
}

Result<std::string_view> GgufFile::require_string(std::string_view key) const {
    auto r = get_string(key);
    if (!r) return r.error();
    if (!r.value()) return Error{Errc::gguf_missing_key, path_ + ": required metadata key '" + std::string(key) + "' is missing"};
    return *r.value();
}

Result<int64_t> GgufFile::require_int(std::string_view key) const {
    auto r = get_int(key);
    if (!r) return r.error();
    if (!r.value()) return Error{Errc::gguf_missing_key, path_ + ": required metadata key '" + std::string(key) + "' is missing"};
    return *r.value();
}

}  // namespace kvrag::gguf
