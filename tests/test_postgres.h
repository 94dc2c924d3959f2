// A throwaway PostgreSQL server for the tests of the PostgreSQL memory store.
//
// Under ctest the server is shared: the fixture test `postgres_test_server_start`
// (scripts/test-postgres) starts one before the suite and writes its folder to the file named
// by KVRAG_TEST_POSTGRES_STATE; every test process uses it (each gtest case is its own process
// there, and a server start costs about a second). Otherwise (kvrag_tests run by hand, or a
// test that restarts the server) the process starts its own, on first use, and stops it (its
// folder removed) when the process exits. Either listens on a unix socket in its own temporary
// folder only (no TCP port: parallel runs never collide), with fsync off. initdb is slow
// (seconds), so a private server copies an initdb output made once per machine and user into
// ${TMPDIR:-/tmp}/kvrag-test-pg-template-15-UID. As root, the server runs as the `postgres`
// user (Debian's package makes it), else `nobody`: initdb refuses root.
//
// Tests call KVRAG_REQUIRE_POSTGRES(uri) to get the URI of a fresh, empty database. Without
// the PostgreSQL 15 binaries (Debian: postgresql-15; scripts/setup.sh installs it) the test
// skips with a message, or fails under KVRAG_REQUIRE_SHARED=1 (CI), so it never goes quietly
// untested there.
#pragma once

#include <gtest/gtest.h>
#include <postgresql/libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>

#include "test_paths.h"

namespace kvrag::testing {

class TestPostgres {
public:
    // The shared server when ctest started one, else this process's own; null with *why set
    // when none can run here. private_server: always this process's own (a test that stops
    // and starts it must not disturb other processes).
    static TestPostgres* get(std::string* why, bool private_server = false) {
        static std::mutex mu;
        static std::unique_ptr<TestPostgres> shared, own;
        static std::string failure;
        std::lock_guard lk(mu);
        if (!private_server) {
            if (!shared) shared = attach_shared();
            if (shared) return shared.get();
        }
        if (!own && failure.empty()) {
            auto pg = std::unique_ptr<TestPostgres>(new TestPostgres());
            failure = pg->start();
            if (failure.empty()) own = std::move(pg);
        }
        if (why) *why = failure;
        return own.get();
    }

    ~TestPostgres() { stop(); }

    // A new empty database; its libpq URI. Empty string (and a test failure) on error.
    std::string new_database() {
        static std::atomic<int> n{0};
        const std::string name = "kvrag_test_" + std::to_string(getpid()) + "_" + std::to_string(n++);
        PGconn* c = PQconnectdb(uri("postgres").c_str());
        std::string err;
        if (PQstatus(c) != CONNECTION_OK) {
            err = PQerrorMessage(c);
        } else {
            PGresult* r = PQexec(c, ("CREATE DATABASE " + name).c_str());
            if (PQresultStatus(r) != PGRES_COMMAND_OK) err = PQresultErrorMessage(r);
            PQclear(r);
        }
        PQfinish(c);
        if (!err.empty()) {
            ADD_FAILURE() << "cannot create test database " << name << ": " << err;
            return "";
        }
        return uri(name);
    }

    std::string uri(const std::string& db) const { return "postgresql:///" + db + "?host=" + dir_ + "&port=5432&user=kvrag"; }
    const std::string& dir() const { return dir_; }

    // Runs pg_ctl with `args` on this server (stop/start in restart tests, on a private
    // server only). True on success.
    bool pg_ctl(const std::string& args) {
        if (attached_) return false;
        return run(as_user_ + bin_ + "/pg_ctl -D " + dir_ + "/data -s -w " + args + " >>" + dir_ + "/pg_ctl.log 2>&1");
    }
    bool start_server() {
        return pg_ctl("-l " + dir_ + "/server.log -o \"-F -k " + dir_ + " -c listen_addresses='' -p 5432 -c max_connections=200\" start");
    }

private:
    TestPostgres() = default;

    // The server scripts/test-postgres started, when KVRAG_TEST_POSTGRES_STATE names its state
    // file and its socket is there; not stopped by this process.
    static std::unique_ptr<TestPostgres> attach_shared() {
        const char* state = std::getenv("KVRAG_TEST_POSTGRES_STATE");
        if (!state || !*state) return nullptr;
        std::ifstream f(state);
        std::string dir;
        if (!std::getline(f, dir) || dir.empty() || !std::filesystem::exists(dir + "/.s.PGSQL.5432")) return nullptr;
        auto pg = std::unique_ptr<TestPostgres>(new TestPostgres());
        pg->dir_ = dir;
        pg->attached_ = true;
        return pg;
    }

    static bool run(const std::string& cmd) { return std::system(cmd.c_str()) == 0; }

    std::string start() {
        for (const char* b : {"/usr/lib/postgresql/15/bin"}) {
            if (std::filesystem::exists(std::string(b) + "/initdb") && std::filesystem::exists(std::string(b) + "/pg_ctl")) bin_ = b;
        }
        if (bin_.empty()) {
            return "the PostgreSQL 15 server binaries (/usr/lib/postgresql/15/bin/initdb, pg_ctl) are not installed; "
                   "scripts/setup.sh installs them (Debian 12: apt-get install postgresql-15)";
        }
        uid_t uid = getuid();
        gid_t gid = getgid();
        if (geteuid() == 0) {
            const passwd* pw = getpwnam("postgres");
            if (!pw) pw = getpwnam("nobody");
            if (!pw) return "running as root and neither a 'postgres' nor a 'nobody' user exists to run initdb as";
            uid = pw->pw_uid;
            gid = pw->pw_gid;
            as_user_ = std::string("runuser -u ") + pw->pw_name + " -- ";
        }
        const char* tmp = std::getenv("TMPDIR");
        const std::string tmpdir = (tmp && *tmp) ? tmp : "/tmp";
        reap_abandoned(tmpdir);

        // The template: initdb once, published by an atomic rename.
        const std::string tmpl = tmpdir + "/kvrag-test-pg-template-15-" + std::to_string(getuid());
        if (!std::filesystem::exists(tmpl + "/PG_VERSION")) {
            std::string work = tmpdir + "/kvrag-test-pg-initdb-XXXXXX";
            if (!mkdtemp(work.data())) return "cannot create a folder under " + tmpdir;
            if (chown(work.c_str(), uid, gid) != 0) return "cannot chown " + work;
            const bool ok = run(as_user_ + bin_ + "/initdb -D " + work + "/data -A trust -U kvrag --no-sync -E UTF8 --locale=C.UTF-8 >" +
                                work + "/initdb.log 2>&1");
            if (!ok) return "initdb failed (log: " + work + "/initdb.log)";
            std::error_code ec;
            std::filesystem::rename(work + "/data", tmpl, ec);  // another process may have won: fine
            std::filesystem::remove_all(work, ec);
            if (!std::filesystem::exists(tmpl + "/PG_VERSION")) return "cannot publish the initdb template at " + tmpl;
        }

        dir_ = tmpdir + "/kvrag-pg-XXXXXX";
        if (!mkdtemp(dir_.data())) return "cannot create a folder under " + tmpdir;
        std::ofstream(dir_ + "/owner.pid") << getpid() << "\n";
        if (chown(dir_.c_str(), uid, gid) != 0) return "cannot chown " + dir_;
        if (!run("cp -a " + tmpl + " " + dir_ + "/data")) return "cannot copy the template " + tmpl;
        if (!start_server()) return "pg_ctl start failed (log: " + dir_ + "/server.log)";
        started_ = true;
        return "";
    }

    void stop() {
        // A forked child (the crash tests fork) must not stop its parent's server at exit.
        if (dir_.empty() || attached_ || getpid() != owner_) return;
        if (started_) pg_ctl("-m immediate stop");
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
        dir_.clear();
    }

    // Servers left by test processes that died (a crash skips the destructor): stop them.
    void reap_abandoned(const std::string& tmpdir) {
        std::error_code ec;
        for (const auto& e : std::filesystem::directory_iterator(tmpdir, ec)) {
            const std::string name = e.path().filename().string();
            if (name.rfind("kvrag-pg-", 0) != 0) continue;
            std::ifstream f(e.path() / "owner.pid");
            long owner = 0;
            if (!(f >> owner) || owner <= 0 || kill(static_cast<pid_t>(owner), 0) == 0) continue;
            if (std::filesystem::exists(e.path() / "data" / "postmaster.pid")) {
                run(as_user_ + bin_ + "/pg_ctl -D " + e.path().string() + "/data -s -w -m immediate stop >/dev/null 2>&1");
            }
            std::filesystem::remove_all(e.path(), ec);
        }
    }

    std::string bin_;
    std::string as_user_;
    std::string dir_;
    bool started_ = false;
    bool attached_ = false;  // the shared server: used, never stopped here
    pid_t owner_ = getpid();
};

// Polls pred() every 10 ms for up to `limit`; true when it held.
template <class P>
bool within(std::chrono::milliseconds limit, P pred) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
}

}  // namespace kvrag::testing

// Sets `uri` (a std::string) to a fresh database's URI, or skips the test (fails under
// KVRAG_REQUIRE_SHARED=1) when no PostgreSQL server can run here.
#define KVRAG_REQUIRE_POSTGRES(uri) KVRAG_REQUIRE_POSTGRES_SERVER(uri, false)
// The same on a server of this process's own (restart tests).
#define KVRAG_REQUIRE_POSTGRES_SERVER(uri, private_server)                                              \
    std::string uri;                                                                                    \
    do {                                                                                                \
        std::string why_;                                                                               \
        auto* pg_ = ::kvrag::testing::TestPostgres::get(&why_, private_server);                         \
        if (!pg_) {                                                                                     \
            if (::kvrag::testing::shared_required()) FAIL() << "PostgreSQL is required here: " << why_; \
            GTEST_SKIP() << "no PostgreSQL: " << why_;                                                  \
        }                                                                                               \
        uri = pg_->new_database();                                                                      \
        ASSERT_FALSE(uri.empty());                                                                      \
    } while (0)
