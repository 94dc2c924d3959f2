// A large /upload through the real `kvrag serve --memory`: the body goes to an unlinked file in
// the store's directory while it arrives (seen through the server's /proc/<pid>/fd), the
// server's peak resident set does not grow with it, and SIGINT in the middle of it stops the
// server within about a second, leaving no temporary file.
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "server/server_process.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::ServerProcess;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The pid of this process's child `kvrag` (ServerProcess forks it; one runs at a time here).
pid_t kvrag_child() {
    DIR* d = opendir("/proc");
    if (!d) return -1;
    pid_t found = -1;
    while (dirent* e = readdir(d)) {
        const pid_t pid = static_cast<pid_t>(std::atol(e->d_name));
        if (pid <= 0) continue;
        std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
        std::string stat;
        std::getline(in, stat);
        // "pid (comm) state ppid ..."
        const size_t close = stat.rfind(')');
        if (close == std::string::npos || stat.find("(kvrag)") == std::string::npos) continue;
        int ppid = 0;
        char state = 0;
        if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == getpid()) found = pid;
    }
    closedir(d);
    return found;
}

long status_kib(pid_t pid, const char* field) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    const std::string key = std::string(field) + ":";
    while (std::getline(in, line)) {
        if (line.rfind(key, 0) == 0) return std::stol(line.substr(key.size()));
    }
    return -1;
}

// Size of the upload's temporary file the server holds open (its fd links to
// "<dir>/.kvrag-upload-XXXXXX (deleted)"), or -1 while it has none.
long long open_upload_file_size(pid_t pid, const std::string& dir) {
    const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(fd_dir, ec)) {
        std::error_code ec2;
        const std::string target = fs::read_symlink(e.path(), ec2).string();
        if (ec2 || target.rfind(dir + "/.kvrag-upload-", 0) != 0 || target.find("(deleted)") == std::string::npos) continue;
        struct stat st {};
        if (::stat(e.path().c_str(), &st) == 0) return static_cast<long long>(st.st_size);
    }
    return -1;
}

int temp_files_in(const std::string& dir) {
    int n = 0;
    for (const auto& e : fs::directory_iterator(dir)) n += e.path().filename().string().rfind(".kvrag-upload", 0) == 0;
    return n;
}

// A socket connected to 127.0.0.1:port; -1 when it cannot be.
int connect_loopback(int port) {
    const int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        close(s);
        return -1;
    }
    return s;
}

// Each test's own `kvrag serve --memory` on a small synthetic model, in a fresh folder that
// is removed afterwards.
class UploadStream : public ::testing::Test {
protected:
    // Makes the model in temp/<tag>-<pid> and starts the server with `extra` arguments; sets
    // dir_, store_ (the store's folder) and pid_ (the server's). Call in ASSERT_NO_FATAL_FAILURE.
    void start_server(const std::string& tag, const std::vector<std::string>& extra) {
        dir_ = fs::temp_directory_path() / (tag + "-" + std::to_string(getpid()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        const std::string model = (dir_ / "m.gguf").string();
        ASSERT_EQ(testing::run_kvrag_sync({"make-model", "-o", model, "--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ff", "128"}),
                  0);
        store_ = (dir_ / "store").string();
        std::vector<std::string> args = {"-m", model, "--memory", store_, "-t", "1"};
        args.insert(args.end(), extra.begin(), extra.end());
        ASSERT_TRUE(srv_.start(args, (dir_ / "serve.log").string())) << srv_.log();
        pid_ = kvrag_child();
        ASSERT_GT(pid_, 0);
    }
    void TearDown() override {
        srv_.stop(SIGKILL);  // a test that failed early left it running; else a no-op
        if (!dir_.empty()) fs::remove_all(dir_);
    }

    fs::path dir_;
    std::string store_;
    ServerProcess srv_;
    pid_t pid_ = -1;
};

TEST_F(UploadStream, ALargeBodyGoesToDiskAndSigintStopsTheServerDuringIt) {
    // --max-body raised so that httplib lets a 200 MB body through to the route (whose own
    // limit is 4 x 64 MiB).
    ASSERT_NO_FATAL_FAILURE(start_server("kvrag-upload-stream", {"--max-body", "300000000"}));
    const long hwm_before = status_kib(pid_, "VmHWM");
    ASSERT_GT(hwm_before, 0);

    // The client: announces 200 MB, sends 96 MiB as fast as it can, then keeps the upload
    // going at 64 KiB per 10 ms until the server goes away.
    constexpr size_t kFast = 96u << 20;
    std::atomic<bool> quit{false};
    std::atomic<long long> sent{0};
    auto client = std::async(std::launch::async, [&, port = srv_.port()] {
        const int s = connect_loopback(port);
        if (s < 0) return;
        const std::string head =
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 200000000\r\n\r\n"
            "--B\r\nContent-Disposition: form-data; name=file; filename=big.txt\r\n\r\n";
        std::string piece;
        while (piece.size() < (64u << 10)) piece += "The lighthouse keeper wrote another line in the log.\n";
        piece.resize(64u << 10);
        bool ok = send(s, head.data(), head.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(head.size());
        const auto t0 = Clock::now();
        while (ok && !quit && seconds_since(t0) < 60) {
            ok = send(s, piece.data(), piece.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(piece.size());
            if (ok) sent += static_cast<long long>(piece.size());
            if (sent >= static_cast<long long>(kFast)) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        close(s);
    });

    // The body lands in the store's directory, in a file nobody else can see.
    long long on_disk = -1;
    const auto t_wait = Clock::now();
    while (seconds_since(t_wait) < 60) {
        on_disk = open_upload_file_size(pid_, store_);
        if (on_disk >= static_cast<long long>(kFast)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_GE(on_disk, static_cast<long long>(kFast)) << "the server's temporary upload file never reached 96 MiB; sent " << sent.load() << "\n"
                                                      << srv_.log();
    EXPECT_EQ(temp_files_in(store_), 0) << "the temporary file is unlinked while it is written";
    const long hwm_during = status_kib(pid_, "VmHWM");
    EXPECT_LT(hwm_during - hwm_before, 16 * 1024) << "96 MiB received raised the server's peak resident set from " << hwm_before << " to "
                                                  << hwm_during << " KiB";

    const auto t0 = Clock::now();
    const int code = srv_.stop(SIGINT, std::chrono::seconds(20));
    const double took = seconds_since(t0);
    quit = true;
    client.wait();
    EXPECT_EQ(code, 0) << srv_.log();
    EXPECT_LT(took, 1.5) << "SIGINT during an upload must stop the server within about a second\n" << srv_.log();
    EXPECT_EQ(temp_files_in(store_), 0);
}

// A client that stops sending in the middle of its body (without closing) would hold its
// connection's thread until httplib's 30 s read timeout: SIGINT must still stop the server
// within a few seconds, with exit status 0 and no temporary file left.
TEST_F(UploadStream, AClientThatStallsMidBodyDoesNotHoldShutdown) {
    ASSERT_NO_FATAL_FAILURE(start_server("kvrag-upload-stall", {}));

    const int s = connect_loopback(srv_.port());
    ASSERT_GE(s, 0);
    const std::string head =
        "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 1000000\r\n\r\n"
        "--B\r\nContent-Disposition: form-data; name=file; filename=stalled.txt\r\n\r\nThe first line arrives, the rest never does.\n";
    ASSERT_EQ(send(s, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
    // The route is reading the body once its temporary file exists.
    const auto t_wait = Clock::now();
    while (open_upload_file_size(pid_, store_) < 0 && seconds_since(t_wait) < 20) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_GE(open_upload_file_size(pid_, store_), 0) << "the upload never started\n" << srv_.log();

    const auto t0 = Clock::now();
    const int code = srv_.stop(SIGINT, std::chrono::seconds(40));
    const double took = seconds_since(t0);
    close(s);
    EXPECT_EQ(code, 0) << srv_.log();
    EXPECT_LT(took, 4.0) << "a stalled client held shutdown\n" << srv_.log();
    EXPECT_NE(srv_.log().find("stopped sending in the middle of its request"), std::string::npos) << srv_.log();
    EXPECT_EQ(temp_files_in(store_), 0);
}

}  // namespace
}  // namespace kvrag
