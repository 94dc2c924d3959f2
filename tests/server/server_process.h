// Test helper: runs the real `kvrag serve` binary on a loopback port it picks itself (--port 0),
// reads the port from its log, and stops it with a signal. Every wait is bounded.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace kvrag::testing {

inline std::string read_file_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Runs `kvrag <args...>` to completion (for make-model); returns the exit code.
inline int run_kvrag_sync(const std::vector<std::string>& args) {
    std::string cmd = KVRAG_BINARY;
    for (const auto& a : args) cmd += " '" + a + "'";
    cmd += " >/dev/null 2>&1";
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// One HTTP exchange over loopback (httplib's client); status 0 when no response came.
struct Reply {
    int status = 0;
    std::string body;
    httplib::Headers headers;
    nlohmann::json j() const { return nlohmann::json::parse(body, nullptr, false); }
};

inline Reply post(int port, const std::string& path, const std::string& body, const httplib::Headers& headers = {}) {
    httplib::Client cli("127.0.0.1", port);
    cli.set_read_timeout(60);
    auto r = cli.Post(path.c_str(), headers, body, "application/json");
    if (!r) return {};
    return {r->status, r->body, r->headers};
}

inline Reply get(int port, const std::string& path, const httplib::Headers& headers = {}) {
    httplib::Client cli("127.0.0.1", port);
    cli.set_read_timeout(30);
    auto r = cli.Get(path.c_str(), headers);
    if (!r) return {};
    return {r->status, r->body, r->headers};
}

class ServerProcess {
public:
    ServerProcess() = default;
    ServerProcess(const ServerProcess&) = delete;
    ServerProcess& operator=(const ServerProcess&) = delete;
    ~ServerProcess() { kill_now(); }

    // Starts `kvrag serve --port 0 <args>` (no --port 0 when args name a port); waits (up to 30 s) until it logs "ready".
    bool start(const std::vector<std::string>& args, const std::string& log_path) {
        log_path_ = log_path;
        std::vector<std::string> argv_s = {KVRAG_BINARY, "serve"};
        if (std::find(args.begin(), args.end(), "--port") == args.end()) argv_s.insert(argv_s.end(), {"--port", "0"});
        argv_s.insert(argv_s.end(), args.begin(), args.end());
        // Everything the child needs is built before fork: it may only make async-signal-safe calls.
        std::vector<char*> argv;
        for (auto& s : argv_s) argv.push_back(s.data());
        argv.push_back(nullptr);
        const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) return false;
        pid_ = fork();
        if (pid_ == 0) {
            dup2(fd, STDERR_FILENO);
            dup2(fd, STDOUT_FILENO);
            execv(argv[0], argv.data());
            _exit(127);
        }
        close(fd);
        if (pid_ < 0) return false;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (std::chrono::steady_clock::now() < deadline) {
            const std::string log = read_file_text(log_path_);
            const std::string tag = "listening on http://127.0.0.1:";
            if (port_ == 0) {
                if (size_t at = log.find(tag); at != std::string::npos) port_ = std::atoi(log.c_str() + at + tag.size());
            }
            if (port_ > 0 && log.find("kvrag serve: ready") != std::string::npos) return true;
            int status = 0;
            if (waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
                return false;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }

    int port() const { return port_; }
    // The exit code when start() returned false because the process ended; -2 otherwise.
    int start_exit_code() const { return exit_code_; }
    std::string log() const { return read_file_text(log_path_); }

    // Sends `sig` without waiting.
    void signal(int sig) {
        if (pid_ > 0) ::kill(pid_, sig);
    }

    // Sends `sig` and waits (bounded) for the exit; returns the exit code, or -1 when it had to
    // be killed or died from a signal.
    int stop(int sig = SIGTERM, std::chrono::milliseconds wait = std::chrono::seconds(15)) {
        if (pid_ <= 0) return -1;
        ::kill(pid_, sig);
        const auto deadline = std::chrono::steady_clock::now() + wait;
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            if (waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        kill_now();
        return -1;
    }

private:
    void kill_now() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        int status = 0;
        waitpid(pid_, &status, 0);
        pid_ = -1;
    }

    pid_t pid_ = -1;
    int port_ = 0;
    int exit_code_ = -2;
    std::string log_path_;
};

}  // namespace kvrag::testing
