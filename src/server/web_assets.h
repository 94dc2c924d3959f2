// The web page's files (web/index.html, app.js, style.css), built into the binary: CMake's
// cmake/embed_web_assets.cmake turns each file under web/ into bytes in a generated .cpp
// (build/generated/web_assets.cpp), so `kvrag serve` needs nothing beside the executable and
// fetches nothing at run time.
#pragma once

#include <span>
#include <string_view>

namespace kvrag::server {

struct WebAsset {
    std::string_view name;  // file name under web/, e.g. "app.js"
    std::string_view body;  // the file's bytes
};

// Every file of web/, in file-name order. Defined in the generated web_assets.cpp.
std::span<const WebAsset> web_assets();

}  // namespace kvrag::server
