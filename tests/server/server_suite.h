// Suite fixture for the end-to-end server tests: a temporary folder and a synthetic model made
// once per suite (make-model is most of a suite's start-up), and, for a suite whose tests share
// one, a `kvrag serve` on that model started before the first test and stopped after the last.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "server/server_process.h"

namespace kvrag::testing {

// make-model arguments for a model slow enough on one thread that a long request or a long
// document really stays running while a test acts on it (limits, shutdown).
inline const std::vector<std::string> kSlowModelArgs = {"--type", "q8_0", "--dim", "512", "--layers", "8", "--ff", "1024", "--heads", "8", "--kv-heads", "4"};

// Suite is the fixture deriving from this (CRTP), so every suite has a folder and server of its
// own. Usage:
//   class FooServerTest : public testing::ServerSuite<FooServerTest> {
//   protected:
//       static void SetUpTestSuite() {
//           make_suite_model("kvrag-foo-test", "fast.gguf", {"--type", "f32"});
//           start_suite_server({"--parallel", "2"}, "server.log");  // optional
//       }
//   };
// A suite that needs a TearDownTestSuite of its own calls this one from it.
template <class Suite>
class ServerSuite : public ::testing::Test {
protected:
    // Creates the suite's folder, temp/<prefix>-<pid>, and runs
    // `kvrag make-model -o <folder>/<file> <make_model_args>`. A failure is a test failure, and
    // start_suite_server() then starts nothing.
    static void make_suite_model(const std::string& prefix, const std::string& file, const std::vector<std::string>& make_model_args) {
        dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() / (prefix + "-" + std::to_string(getpid())));
        std::filesystem::create_directories(*dir_);
        model_ = (*dir_ / file).string();
        std::vector<std::string> args = {"make-model", "-o", model_};
        args.insert(args.end(), make_model_args.begin(), make_model_args.end());
        const int rc = run_kvrag_sync(args);
        model_made_ = rc == 0;
        EXPECT_EQ(rc, 0) << "kvrag make-model -o " << model_ << " failed";
    }

    // Starts the suite's server, `kvrag serve -m <model> <serve_args>`, logging to
    // <folder>/<log_name>; waits (bounded) until it is ready. A failure is a test failure.
    static void start_suite_server(const std::vector<std::string>& serve_args, const std::string& log_name) {
        if (!model_made_) return;
        server_ = new ServerProcess();
        std::vector<std::string> args = {"-m", model_};
        args.insert(args.end(), serve_args.begin(), serve_args.end());
        EXPECT_TRUE(server_->start(args, path(log_name))) << server_->log();
    }

    // Stops the server (a clean exit, code 0, is expected) and removes the folder.
    static void TearDownTestSuite() {
        if (server_) {
            EXPECT_EQ(server_->stop(), 0) << server_->log();
        }
        delete server_;
        server_ = nullptr;
        if (dir_) std::filesystem::remove_all(*dir_);
        delete dir_;
        dir_ = nullptr;
        model_made_ = false;
    }

    static const std::string& model() { return model_; }
    // A file in the suite's folder (logs, stores).
    static std::string path(const std::string& name) { return (*dir_ / name).string(); }
    // The suite server's port; 0 when it did not start (requests then fail, not crash).
    static int port() { return server_ ? server_->port() : 0; }

    inline static std::filesystem::path* dir_ = nullptr;
    inline static ServerProcess* server_ = nullptr;
    inline static std::string model_;
    inline static bool model_made_ = false;
};

}  // namespace kvrag::testing
