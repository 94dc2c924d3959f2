// `kvrag bench` end to end through the real binary on a tiny synthetic model: the table rows
// and the summary line's keys are there, with positive figures; bad lists and points that do
// not fit the context give the promised error and warning. No timing is asserted: the numbers
// depend on the machine and its load.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "cli/run_kvrag.h"
#include "test_paths.h"
#include "tools/model_bench.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;

using RunOutput = testing::RunResult;
using testing::run_kvrag;

std::map<std::string, std::string> bench_summary(const std::string& out) { return testing::summary_pairs(out, "bench "); }

// A table row: the test label then its depth, e.g. "pp16" and 16.
bool has_row(const std::string& out, const std::string& label, int depth) {
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
        std::istringstream words(line);
        std::string first;
        int d = -1;
        if (words >> first >> d && first == label && d == depth) return true;
    }
    return false;
}

class BenchCliTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("kvrag-bench-test-" + std::to_string(getpid()));
        fs::create_directories(dir_);
        model_ = (dir_ / "tiny.gguf").string();
        ASSERT_EQ(run_kvrag("make-model -o " + model_ + " --type q8_0 --dim 64 --layers 2 --heads 4 --kv-heads 2 --ctx 64").exit_code, 0);
    }
    void TearDown() override { fs::remove_all(dir_); }
    RunOutput bench(const std::string& args) { return run_kvrag("bench -m " + model_ + " " + args); }

    fs::path dir_;
    std::string model_;
};

TEST_F(BenchCliTest, PrintsRowsPerTestAndDepthAndOneSummaryLine) {
    const RunOutput r = bench("-p 8,16 -n 4 -r 2 --depth 0,16 --threads 2");
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    for (int depth : {0, 16}) {
        EXPECT_TRUE(has_row(r.out, "pp8", depth)) << r.out;
        EXPECT_TRUE(has_row(r.out, "pp16", depth)) << r.out;
        EXPECT_TRUE(has_row(r.out, "tg4", depth)) << r.out;
    }
    const auto kv = bench_summary(r.out);
    EXPECT_EQ(kv.at("model"), "tiny.gguf");
    EXPECT_EQ(kv.at("type"), "q8_0");
    EXPECT_EQ(kv.at("kv"), "f16");
    EXPECT_EQ(kv.at("threads"), "2");
    EXPECT_EQ(kv.at("reps"), "2");
    for (const char* key : {"pp8", "pp16", "tg4", "pp8_depth16", "pp16_depth16", "tg4_depth16", "bw_gbs", "tg4_bw_ratio",
                            "tg4_depth16_bw_ratio"}) {
        ASSERT_TRUE(kv.count(key)) << key << " missing from: " << r.out;
        EXPECT_GT(std::stod(kv.at(key)), 0.0) << key << "=" << kv.at(key);
    }
    // Runs of the thread pool that found a worker not running: a count, 0 on a quiet machine.
    ASSERT_TRUE(kv.count("pool_overruns")) << r.out;
    EXPECT_GE(std::stoll(kv.at("pool_overruns")), 0);
    // Exactly one summary line.
    size_t n_lines = 0;
    for (size_t at = r.out.find("\nbench "); at != std::string::npos; at = r.out.find("\nbench ", at + 1)) ++n_lines;
    EXPECT_EQ(n_lines, 1u) << r.out;
}

TEST_F(BenchCliTest, DecodeBytesPerTokenGrowWithDepth) {
    // The KV cells a decode step reads are part of its bytes: deeper means more MiB/token.
    const RunOutput r = bench("-p 4 -n 2 -r 1 --depth 0,48 --kv-type f32 --threads 1");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto mib = [&](int depth) {
        std::istringstream lines(r.out);
        std::string line, label;
        while (std::getline(lines, line)) {
            std::istringstream w(line);
            int d;
            double mn, med, mx, bytes;
            if (w >> label >> d >> mn >> med >> mx >> bytes && label == "tg2" && d == depth) return bytes;
        }
        return -1.0;
    };
    EXPECT_GT(mib(0), 0.0) << r.out;
    EXPECT_GT(mib(48), mib(0)) << r.out;
    EXPECT_EQ(bench_summary(r.out).at("kv"), "f32");
}

TEST_F(BenchCliTest, PointsPastTheContextAreWarnedAndSkipped) {
    // The model's context is 64; --ctx 24 lowers it: 16 + 16 does not fit, 16 + 8 does.
    const RunOutput r = bench("-p 8,16 -n 4 -r 1 --depth 0,16 --ctx 24");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("warning: skipping pp16_depth16"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("= 32 > context 24"), std::string::npos) << r.err;
    const auto kv = bench_summary(r.out);
    EXPECT_TRUE(kv.count("pp8_depth16"));
    EXPECT_TRUE(kv.count("tg4_depth16"));
    EXPECT_FALSE(kv.count("pp16_depth16")) << r.out;
    EXPECT_FALSE(has_row(r.out, "pp16", 16)) << r.out;
    // Past the model's own context, whatever --ctx says.
    const RunOutput big = bench("-p 60 -n 4 -r 1 --depth 8 --ctx 4096");
    ASSERT_EQ(big.exit_code, 0) << big.err;
    EXPECT_NE(big.err.find("skipping pp60_depth8"), std::string::npos) << big.err;
    EXPECT_TRUE(bench_summary(big.out).count("tg4_depth8")) << big.out;
}

TEST_F(BenchCliTest, BadListsAreRefusedNamingTheValue) {
    struct Case { const char* args; const char* named; };
    const Case cases[] = {
        {"-p 64,abc", "'abc'"},
        {"-p 64,,128", "''"},
        {"-p 0", "'0'"},
        {"-n 4,-2", "'-2'"},
        {"-n 4.5", "'4.5'"},
        {"--depth 0,16x", "'16x'"},
        {"--depth 99999999999", "'99999999999'"},
        {"-p 64,", "''"},
    };
    for (const Case& c : cases) {
        const RunOutput r = bench(std::string(c.args) + " -r 1");
        EXPECT_NE(r.exit_code, 0) << c.args;
        EXPECT_NE(r.err.find("E9001"), std::string::npos) << c.args << ": " << r.err;
        EXPECT_NE(r.err.find(c.named), std::string::npos) << c.args << ": " << r.err;
        EXPECT_EQ(r.out.find("bench "), std::string::npos) << c.args;
    }
    const RunOutput kv = bench("--kv-type q4_0");
    EXPECT_NE(kv.exit_code, 0);
    EXPECT_NE(kv.err.find("E9001"), std::string::npos) << kv.err;
    EXPECT_NE(kv.err.find("q4_0"), std::string::npos) << kv.err;
}

// The plan alone: order, skipping and the cells it needs, with no model.
TEST(BenchPlanTest, OrdersByDepthAndSkipsWhatCannotFit) {
    const auto plan = tools::plan_bench({64, 512}, {32}, {0, 1024}, 1536);
    std::vector<std::string> run, skipped;
    for (const auto& t : plan.tests) run.push_back(t.name());
    for (const auto& t : plan.skipped) skipped.push_back(t.name());
    EXPECT_EQ(run, (std::vector<std::string>{"pp64", "pp512", "tg32", "pp64_depth1024", "pp512_depth1024", "tg32_depth1024"}));
    EXPECT_TRUE(skipped.empty());
    EXPECT_EQ(plan.n_cells, 1536);

    const auto tight = tools::plan_bench({64, 512}, {32}, {0, 1024}, 1500);
    ASSERT_EQ(tight.skipped.size(), 1u);
    EXPECT_EQ(tight.skipped[0].name(), "pp512_depth1024");
    EXPECT_EQ(tight.n_cells, 1024 + 64);
}

}  // namespace
}  // namespace kvrag
