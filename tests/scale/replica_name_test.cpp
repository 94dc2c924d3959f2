// `kvrag serve --replica-name`: every response names the replica (X-Kvrag-Replica), so clients
// and tests behind a proxy see which replica answered (docs/scale.md). Through the real binary.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "server/server_process.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using testing::get;
using testing::post;
using testing::Reply;
using testing::ServerProcess;

struct Exit {
    int code = -1;
    std::string output;
};

// Runs `kvrag serve ... --replica-name NAME` expecting it to refuse before loading anything.
Exit serve_with_name(const std::string& model, const std::string& name) {
    std::string cmd = std::string(KVRAG_BINARY) + " serve -m '" + model + "' --port 0 --replica-name '" + name + "' 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    Exit e;
    if (!p) return e;
    char buf[512];
    while (std::fgets(buf, sizeof(buf), p)) e.output += buf;
    const int status = pclose(p);
    e.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return e;
}

class ReplicaNameTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("kvrag-replica-name-" + std::to_string(getpid()));
        fs::create_directories(dir_);
        model_ = (dir_ / "tiny.gguf").string();
        ASSERT_EQ(testing::run_kvrag_sync({"make-model", "-o", model_, "--type", "f32"}), 0);
    }
    void TearDown() override { fs::remove_all(dir_); }
    fs::path dir_;
    std::string model_;
};

TEST_F(ReplicaNameTest, EveryResponseNamesTheReplica) {
    ServerProcess named;
    ASSERT_TRUE(named.start({"-m", model_, "-t", "1", "--ctx", "512", "--replica-name", "r7"}, (dir_ / "named.log").string())) << named.log();
    const Reply health = get(named.port(), "/health");
    EXPECT_EQ(health.status, 200);
    EXPECT_EQ(health.headers.count("X-Kvrag-Replica"), 1u);
    EXPECT_EQ(health.headers.find("X-Kvrag-Replica")->second, "r7");
    const Reply chat = post(named.port(), "/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":2})");
    EXPECT_EQ(chat.status, 200) << chat.body;
    ASSERT_EQ(chat.headers.count("X-Kvrag-Replica"), 1u);
    EXPECT_EQ(chat.headers.find("X-Kvrag-Replica")->second, "r7");
    // Errors too: a proxy's log or a client can tell which replica refused.
    const Reply missing = get(named.port(), "/no/such/route");
    EXPECT_EQ(missing.status, 404);
    ASSERT_EQ(missing.headers.count("X-Kvrag-Replica"), 1u);
    EXPECT_EQ(missing.headers.find("X-Kvrag-Replica")->second, "r7");
    // A browser may read it (CORS exposes it).
    const Reply cors = get(named.port(), "/v1/models", {{"Origin", "http://localhost:3000"}});
    ASSERT_EQ(cors.headers.count("Access-Control-Expose-Headers"), 1u);
    EXPECT_NE(cors.headers.find("Access-Control-Expose-Headers")->second.find("X-Kvrag-Replica"), std::string::npos);
    EXPECT_EQ(named.stop(), 0) << named.log();

    // Without the option, no header.
    ServerProcess plain;
    ASSERT_TRUE(plain.start({"-m", model_, "-t", "1", "--ctx", "512"}, (dir_ / "plain.log").string())) << plain.log();
    const Reply h2 = get(plain.port(), "/health");
    EXPECT_EQ(h2.status, 200);
    EXPECT_EQ(h2.headers.count("X-Kvrag-Replica"), 0u);
    EXPECT_EQ(plain.stop(), 0) << plain.log();
}

TEST_F(ReplicaNameTest, NamesThatCouldBreakAHeaderAreRefused) {
    const std::vector<std::string> bad_names = {"r 1", "r1\r\nX-Evil: 1", "r1:2", std::string(65, 'a')};
    for (const std::string& bad : bad_names) {
        const Exit e = serve_with_name(model_, bad);
        EXPECT_NE(e.code, 0) << "name '" << bad << "' was accepted";
        EXPECT_NE(e.output.find("--replica-name"), std::string::npos) << e.output;
    }
    const Exit longest = serve_with_name(model_, std::string(65, 'a'));
    EXPECT_NE(longest.output.find("65 characters; at most 64"), std::string::npos) << longest.output;
}

}  // namespace
}  // namespace kvrag
