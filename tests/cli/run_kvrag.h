// Runs the real `kvrag` binary (KVRAG_BINARY) for end-to-end CLI tests: stdout through a pipe,
// stderr through a temporary file, and the exit code.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace kvrag::testing {

struct RunResult {
    int exit_code = -1;
    std::string out;
    std::string err;
};

inline RunResult run_kvrag(const std::string& args) {
    static int counter = 0;
    namespace fs = std::filesystem;
    const fs::path err_file = fs::temp_directory_path() / ("kvrag-cli-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + ".err");
    const std::string cmd = std::string(KVRAG_BINARY) + " " + args + " 2>" + err_file.string();
    RunResult r;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return r;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
    const int status = pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::stringstream ss;
    ss << std::ifstream(err_file).rdbuf();
    r.err = ss.str();
    fs::remove(err_file);
    return r;
}

// The pairs of the output's summary line that starts with `prefix` ("bench ", "demo "); empty
// when there is no such line.
inline std::map<std::string, std::string> summary_pairs(const std::string& out, const std::string& prefix) {
    std::map<std::string, std::string> kv;
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
        if (line.rfind(prefix, 0) != 0) continue;
        std::istringstream words(line.substr(prefix.size()));
        for (std::string w; words >> w;) {
            const size_t eq = w.find('=');
            if (eq != std::string::npos) kv[w.substr(0, eq)] = w.substr(eq + 1);
        }
    }
    return kv;
}

}  // namespace kvrag::testing
