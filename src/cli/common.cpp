#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "cli/commands.h"
#include "core/thread_pool.h"

namespace kvrag::cli {

int fail(const Error& err) {
    std::fprintf(stderr, "kvrag: %s\n", err.what().c_str());
    return 1;
}

std::string threads_warning(int32_t n_threads, int n_cpus, int n_physical) {
    if (n_threads <= n_cpus) return {};
    auto count = [](int n, const char* noun) { return std::to_string(n) + " " + noun + (n == 1 ? "" : "s"); };
    return "kvrag: warning: --threads " + std::to_string(n_threads) + " is more than the " + count(n_cpus, "CPU") +
           " this process may use; the pool runs at most " + std::to_string(n_cpus) + " of them at a time (default: " +
           count(n_physical, "physical core") + ")";
}

void warn_threads(int32_t n_threads) {
    static std::atomic<bool> warned{false};
    if (n_threads <= 0) return;  // the default: no need to read /proc/cpuinfo
    const std::string msg = threads_warning(n_threads, available_cpu_count(), physical_core_count());
    if (!msg.empty() && !warned.exchange(true)) std::fprintf(stderr, "%s\n", msg.c_str());
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
