#include "memory/ids.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "memory/sha256.h"

namespace kvrag::memory {

Result<Tags> parse_tags(const std::string& s) {
    Tags out;
    size_t i = 0;
    while (i < s.size()) {
        size_t j = s.find(',', i);
        if (j == std::string::npos) j = s.size();
        const std::string item = s.substr(i, j - i);
        i = j + 1;
        if (item.empty()) continue;
        const size_t eq = item.find('=');
        if (eq == std::string::npos || eq == 0) {
            return Error{Errc::memory_bad_input, "tag '" + item + "' is not key=value"};
        }
        out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    }
    return out;
}

Tags sorted_tags(Tags tags) {
    std::sort(tags.begin(), tags.end());
    tags.erase(std::unique(tags.begin(), tags.end()), tags.end());
    return tags;
}

std::string format_tags(const Tags& tags) {
    std::string out;
    for (const auto& [k, v] : sorted_tags(tags)) {
        if (!out.empty()) out += ',';
        out += k + "=" + v;
    }
    return out;
}

bool valid_id(const std::string& id) {
    if (id.empty() || id.size() > 128) return false;
    return std::all_of(id.begin(), id.end(), [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '_' || c == '-'; });
}

std::string sanitize_id(const std::string& text) {
    std::string out;
    for (unsigned char c : text) out += (std::isalnum(c) || c == '.' || c == '_' || c == '-') ? static_cast<char>(c) : '_';
    while (out.size() > 1 && (out[0] == '_' || out[0] == '.')) out.erase(0, 1);
    if (out.size() > 128) out = out.substr(out.size() - 128);
    if (out.empty()) out = "doc";
    return out;
}

std::string file_doc_id(const std::string& path, const std::string& cwd) {
    namespace fs = std::filesystem;
    const fs::path abs = (fs::path(cwd) / fs::path(path)).lexically_normal();  // an absolute path replaces cwd
    const fs::path rel = abs.lexically_relative(fs::path(cwd).lexically_normal());
    const bool inside = !rel.empty() && *rel.begin() != "..";
    return sanitize_id(inside ? rel.string() : abs.string());
}

std::string disambiguated_id(const std::string& id, std::string_view key) {
    const std::string suffix = "-" + sha256_hex(key).substr(0, 8);
    const size_t keep = 128 - suffix.size();  // the end of a long id: the file name's side
    return (id.size() > keep ? id.substr(id.size() - keep) : id) + suffix;
}

}  // namespace kvrag::memory
