#include <unistd.h>

#include <cstdio>

#include "cli/commands.h"

namespace kvrag::cli {

int fail(const Error& err) {
    std::fprintf(stderr, "kvrag: %s\n", err.what().c_str());
    return 1;
}

Result<GgmlType> parse_kv_type(const std::string& name) {
    auto t = ggml_type_from_name(name);
    if (!t || (*t != GgmlType::F16 && *t != GgmlType::F32 && *t != GgmlType::Q8_0)) {
        return Error{Errc::cli_usage, "--kv-type '" + name + "' is not one of f16, q8_0, f32"};
    }
    return *t;
}

model::LoadProgress terminal_progress(const std::string& label) {
    if (!isatty(STDERR_FILENO)) return nullptr;
    return [label](uint64_t done, uint64_t total) {
        const int pct = total ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total)) : 100;
        std::fprintf(stderr, "\r%s %3d%% (%.1f / %.1f MiB)", label.c_str(), pct, static_cast<double>(done) / 1048576.0,
                     static_cast<double>(total) / 1048576.0);
        if (done >= total) std::fprintf(stderr, "\r\033[K");
        std::fflush(stderr);
    };
}

}  // namespace kvrag::cli
