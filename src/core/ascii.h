#pragma once
// ASCII case folding for protocol tokens, file extensions and search terms: bytes A-Z only,
// whatever the process locale (std::tolower follows it), and UTF-8 sequences pass unchanged.
#include <string>
#include <string_view>

namespace kvrag {

inline std::string ascii_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return out;
}

}  // namespace kvrag
