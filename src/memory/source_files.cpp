// Uploaded files' original bytes, for GET /download (Kernel Memory's ExportFileAsync).
//
// A minimal keeper: one file per upload under DIR/source_files/<index>/<document>/, named by
// the hex of the file name (ids may be "." or "..", and file names may hold any byte, so no
// user text becomes a path), with the content type in a ".type" file beside it. A ":memory:"
// store keeps them in a map instead. Writes go to a temporary name and are renamed, so a
// reader sees the old file or the new one.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "memory/memory.h"

namespace kvrag::memory {

namespace {

std::string hex_of(const std::string& s) {
    static const char* kDigits = "0123456789abcdef";
    std::string out;
    out.reserve(s.size() * 2);
    for (unsigned char c : s) {
        out.push_back(kDigits[c >> 4]);
        out.push_back(kDigits[c & 15]);
    }
    return out;
}

bool write_whole(const std::filesystem::path& p, const std::string& bytes) {
    const auto tmp = p.string() + ".tmp";
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        if (!f) return false;
        f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        if (!f) return false;
    }
    std::error_code ec;
    std::filesystem::rename(tmp, p, ec);
    return !ec;
}

std::optional<std::string> read_whole(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) return std::nullopt;
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

}  // namespace

std::string Memory::source_dir(const std::string& index, const std::string& document_id) const {
    auto dir = std::filesystem::path(store_->path()).parent_path() / "source_files" / hex_of(index);
    if (!document_id.empty()) dir /= hex_of(document_id);
    return dir.string();
}

Result<void> Memory::write_source_file(const std::string& index, const std::string& document_id, const SourceFile& file) {
    std::lock_guard lk(source_mu_);
    if (store_->path() == ":memory:") {
        source_mem_[index + "/" + document_id + "/" + file.name] = file;
        return {};
    }
    const std::filesystem::path dir = source_dir(index, document_id);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    const auto base = dir / hex_of(file.name);
    if (ec || !write_whole(base.string() + ".type", file.content_type) || !write_whole(base, file.bytes)) {
        return Error{Errc::memory_store, "cannot keep uploaded file '" + file.name + "' under " + dir.string()};
    }
    return {};
}

std::optional<SourceFile> Memory::read_source_file(const std::string& index, const std::string& document_id, const std::string& file_name) {
    std::lock_guard lk(source_mu_);
    if (store_->path() == ":memory:") {
        auto it = source_mem_.find(index + "/" + document_id + "/" + file_name);
        if (it == source_mem_.end()) return std::nullopt;
        return it->second;
    }
    const auto base = std::filesystem::path(source_dir(index, document_id)) / hex_of(file_name);
    auto bytes = read_whole(base);
    if (!bytes) return std::nullopt;
    SourceFile f;
    f.name = file_name;
    f.content_type = read_whole(base.string() + ".type").value_or("");
    f.bytes = std::move(*bytes);
    return f;
}

Result<void> Memory::delete_source_files(const std::string& index, const std::string& document_id) {
    std::lock_guard lk(source_mu_);
    if (store_->path() == ":memory:") {
        const std::string prefix = index + "/" + (document_id.empty() ? "" : document_id + "/");
        for (auto it = source_mem_.lower_bound(prefix); it != source_mem_.end() && it->first.rfind(prefix, 0) == 0;) it = source_mem_.erase(it);
        return {};
    }
    std::error_code ec;
    std::filesystem::remove_all(source_dir(index, document_id), ec);
    if (ec) return Error{Errc::memory_store, "cannot remove uploaded files under " + source_dir(index, document_id) + ": " + ec.message()};
    return {};
}

}  // namespace kvrag::memory
