// `kvrag make-model --arch phi3` end to end through the real binary (no ../shared): the file it
// writes loads, `kvrag info` names the architecture and says whether LongRoPE factors are there
// and which set the default context takes, and greedy generation runs; bad flag combinations
// are refused with a message.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "cli/run_kvrag.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;

using testing::run_kvrag;

class Phi3CliTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("kvrag-phi3-cli-" + std::to_string(getpid()));
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    std::string path(const std::string& name) const { return (dir_ / name).string(); }
    fs::path dir_;
};

TEST_F(Phi3CliTest, MakeModelWritesPhi3WithAndWithoutLongRope) {
    const std::string lr = path("phi3-longrope.gguf"), plain = path("phi3.gguf");
    auto mk = run_kvrag("make-model -o " + lr + " --arch phi3 --type q8_0 --ff 128 --ctx 4096 --rope-dim 12 --longrope --orig-ctx 1024");
    ASSERT_EQ(mk.exit_code, 0) << mk.err;
    mk = run_kvrag("make-model -o " + plain + " --arch phi3 --type f16 --ff 128");
    ASSERT_EQ(mk.exit_code, 0) << mk.err;

    auto info = run_kvrag("info " + lr);
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("architecture:  phi3"), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("rope:          n_rot 12,"), std::string::npos) << info.out;
    // attn_factor sqrt(1 + ln(4096 / 1024) / ln(1024)) = sqrt(1.2); the default --ctx is 4096.
    EXPECT_NE(info.out.find("longrope:      rope_factors_long present, rope_factors_short present (6 each), original context 1024, attn_factor 1.09545; "
                            "long factors when the per-sequence context rounded up to 256 exceeds 1024 (default --ctx 4096: long)"),
              std::string::npos)
        << info.out;
    info = run_kvrag("info " + plain);
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("architecture:  phi3"), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("longrope:      none (no rope_factors_long/short)"), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("rope:          n_rot 16,"), std::string::npos) << info.out;  // the whole head by default

    for (const std::string& m : {lr, plain}) {
        const auto gen = run_kvrag("generate -m " + m + " -p 'Once upon a time' -n 24 --temp 0 --ids --ignore-eos -t 1");
        ASSERT_EQ(gen.exit_code, 0) << m << ": " << gen.err;
        EXPECT_EQ(std::count(gen.out.begin(), gen.out.end(), ' ') + 1, 24) << gen.out;
    }
}

// A trained context equal to the original one: attn_factor 1 (the converter's formula at a scale
// of 1), and the default context (1024, not above 1024) takes the short set.
TEST_F(Phi3CliTest, InfoSaysWhichSetTheDefaultContextTakes) {
    const std::string m = path("phi3-short.gguf");
    auto mk = run_kvrag("make-model -o " + m + " --arch phi3 --type f32 --ff 128 --ctx 1024 --longrope --orig-ctx 1024");
    ASSERT_EQ(mk.exit_code, 0) << mk.err;
    auto info = run_kvrag("info " + m);
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("original context 1024, attn_factor 1; "), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("(default --ctx 1024: short)"), std::string::npos) << info.out;
}

TEST_F(Phi3CliTest, BadLongRopeFlagsAreRefused) {
    auto r = run_kvrag("make-model -o " + path("a.gguf") + " --arch phi3 --orig-ctx 512");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("--orig-ctx 512 is LongRoPE's original context: add --longrope"), std::string::npos) << r.err;
    r = run_kvrag("make-model -o " + path("b.gguf") + " --arch llama --longrope");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("for arch phi3 only"), std::string::npos) << r.err;
    r = run_kvrag("make-model -o " + path("c.gguf") + " --arch phi3 --longrope --ctx 2048 --orig-ctx 4096");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("original context 4096 must be in 1..2048"), std::string::npos) << r.err;
    r = run_kvrag("make-model -o " + path("d.gguf") + " --arch phi3 --rope-dim 20");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("rope dims 20 must be even and in 2..16"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(path("a.gguf")) || fs::exists(path("b.gguf")) || fs::exists(path("c.gguf")) || fs::exists(path("d.gguf")));
}

}  // namespace
}  // namespace kvrag
