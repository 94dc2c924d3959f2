// End-to-end tests through the real `kvrag` binary on synthetic models it writes itself.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "cli/run_kvrag.h"
#include "test_paths.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;

using testing::RunResult;
using testing::run_kvrag;

std::vector<int> parse_ids(const std::string& s) {
    std::istringstream in(s);
    std::vector<int> ids;
    int v;
    while (in >> v) ids.push_back(v);
    return ids;
}

class CliTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("kvrag-cli-" + std::to_string(getpid()));
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    std::string path(const std::string& name) const { return (dir_ / name).string(); }
    fs::path dir_;
};

// More threads than CPUs: one warning naming the numbers, and the same greedy output.
TEST_F(CliTest, TooManyThreadsWarnsOnceAndKeepsTheOutput) {
    ASSERT_EQ(run_kvrag("make-model -o " + path("t.gguf") + " --type q8_0 --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128").exit_code, 0);
    const auto one = run_kvrag("generate -m " + path("t.gguf") + " -p 'Once upon' -n 12 --temp 0 --ids -t 1");
    ASSERT_EQ(one.exit_code, 0) << one.err;
    EXPECT_EQ(one.err.find("warning: --threads"), std::string::npos) << one.err;
    const auto many = run_kvrag("generate -m " + path("t.gguf") + " -p 'Once upon' -n 12 --temp 0 --ids -t 200");
    ASSERT_EQ(many.exit_code, 0) << many.err;
    const size_t at = many.err.find("kvrag: warning: --threads 200 is more than the");
    ASSERT_NE(at, std::string::npos) << many.err;
    EXPECT_EQ(many.err.find("warning: --threads", at + std::string("kvrag: warning: --threads").size()), std::string::npos)
        << "warned twice: " << many.err;
    EXPECT_EQ(parse_ids(many.out), parse_ids(one.out));
}

// Every weight type people download runs end to end: write, load, generate greedily.
TEST_F(CliTest, GeneratesFromSyntheticModelsOfEveryType) {
    struct Case { const char* type; const char* extra; };
    const Case cases[] = {
        {"f32", ""}, {"f16", ""}, {"bf16", ""}, {"q8_0", ""}, {"q4_0", ""}, {"q4_1", ""}, {"q5_0", ""}, {"q5_1", ""},
        // A Q4_K_M-style mix: Q4_K matrices with a Q6_K output head (K-quants need 256-wide rows).
        {"q4_k", "--output-type q6_k --dim 256 --ff 512"},
        {"q5_k", "--dim 256 --ff 512"},
        {"q6_k", "--dim 256 --ff 512"},
    };
    for (const Case& c : cases) {
        const std::string model = path(std::string("m-") + c.type + ".gguf");
        auto mk = run_kvrag("make-model -o " + model + " --type " + c.type + " " + c.extra);
        ASSERT_EQ(mk.exit_code, 0) << c.type << ": " << mk.err;
        auto gen = run_kvrag("generate -m " + model + " -p 'Once upon a time' -n 12 --temp 0 --ids --ignore-eos -t 2");
        ASSERT_EQ(gen.exit_code, 0) << c.type << ": " << gen.err;
        const auto ids = parse_ids(gen.out);
        EXPECT_EQ(ids.size(), 12u) << c.type << ": " << gen.out;
        // Greedy output does not depend on the thread count.
        auto gen1 = run_kvrag("generate -m " + model + " -p 'Once upon a time' -n 12 --temp 0 --ids --ignore-eos -t 1");
        EXPECT_EQ(parse_ids(gen1.out), ids) << c.type;
    }
}

TEST_F(CliTest, InfoReportsArchitectureTypesAndKvBytes) {
    const std::string model = path("info.gguf");
    ASSERT_EQ(run_kvrag("make-model -o " + model + " --type q8_0 --dim 64 --layers 3 --heads 4 --kv-heads 2").exit_code, 0);
    auto info = run_kvrag("info " + model);
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("architecture:  llama"), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("n_layer 3"), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("Q8_0 x"), std::string::npos) << info.out;
    // K and V, 3 layers, 2 kv heads x 16 dims, 2 bytes each in f16.
    EXPECT_NE(info.out.find("F16 " + std::to_string(2 * 3 * 2 * 16 * 2) + " bytes"), std::string::npos) << info.out;
}

// gemma3 (shared synth model: window 32 on 3 of 4 layers, 1 KV head of 32): the window and the
// f16 KV bytes per token with and without it, and the default cache with its local pool.
TEST_F(CliTest, InfoReportsTheSlidingWindowOfGemma3) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    auto info = run_kvrag("info " + dir + "/models/synth-gemma3-f32.gguf");
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("architecture:  gemma3"), std::string::npos) << info.out;
    // K+V of one layer: 2 x 32 x 2 bytes = 128; 4 layers without the window, the global one with it.
    EXPECT_NE(info.out.find("sliding window: 32 positions on 3 of 4 layers"), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("512 bytes without the window, 128 bytes with it (+ 12288 bytes per sequence for the window)"), std::string::npos)
        << info.out;
    // 4096 cells of the global layer + 4 windows of 31 + 15 + 256 local cells of 3 layers.
    EXPECT_NE(info.out.find("4096 cells (default --ctx) x 128 bytes + 1208 local cells x 384 bytes = 988160 bytes"), std::string::npos)
        << info.out;
}

// make-model writes qwen3 and gemma3 (no ../shared needed); both load and generate.
TEST_F(CliTest, MakeModelWritesQwen3AndGemma3) {
    const std::string qwen3 = path("q3.gguf"), gemma3 = path("g3.gguf");
    ASSERT_EQ(run_kvrag("make-model -o " + qwen3 + " --arch qwen3 --type f32").exit_code, 0);
    ASSERT_EQ(run_kvrag("make-model -o " + gemma3 + " --arch gemma3 --type f32 --layers 4 --swa-window 16 --swa-pattern 2").exit_code, 0);
    auto info = run_kvrag("info " + qwen3);
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("architecture:  qwen3"), std::string::npos) << info.out;
    info = run_kvrag("info " + gemma3);
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("sliding window: 16 positions on 2 of 4 layers (pattern 2"), std::string::npos) << info.out;
    for (const std::string& m : {qwen3, gemma3}) {
        const auto gen = run_kvrag("generate -m " + m + " -p 'Once upon a time' -n 40 --temp 0 --ids --ignore-eos -t 1");
        ASSERT_EQ(gen.exit_code, 0) << m << ": " << gen.err;
        EXPECT_EQ(std::count(gen.out.begin(), gen.out.end(), ' ') + 1, 40) << gen.out;
    }
    EXPECT_NE(run_kvrag("make-model -o " + path("x.gguf") + " --arch mamba").exit_code, 0);
}

TEST_F(CliTest, BadFilesGiveClearErrorsAndNonZeroExit) {
    const std::string model = path("good.gguf");
    ASSERT_EQ(run_kvrag("make-model -o " + model + " --type f32").exit_code, 0);
    // Truncated copy.
    {
        std::ifstream in(model, std::ios::binary);
        std::string bytes((std::istreambuf_iterator<char>(in)), {});
        std::ofstream out(path("cut.gguf"), std::ios::binary);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
    }
    auto cut = run_kvrag("generate -m " + path("cut.gguf") + " -p hi -n 2");
    EXPECT_NE(cut.exit_code, 0);
    EXPECT_NE(cut.err.find("E1004"), std::string::npos) << cut.err;
    EXPECT_NE(cut.err.find("cut.gguf"), std::string::npos) << cut.err;
    // Not a GGUF at all.
    std::ofstream(path("text.gguf")) << "hello, this is not a model";
    auto text = run_kvrag("info " + path("text.gguf"));
    EXPECT_NE(text.exit_code, 0);
    EXPECT_NE(text.err.find("E1002"), std::string::npos) << text.err;
    // Missing file.
    auto missing = run_kvrag("generate -m " + path("nope.gguf") + " -p hi");
    EXPECT_NE(missing.exit_code, 0);
    EXPECT_NE(missing.err.find("cannot open"), std::string::npos) << missing.err;
    // Prompt + max tokens beyond the context: the numbers are named.
    auto big = run_kvrag("generate -m " + model + " -p 'Once upon a time' -n 100 --ctx 64");
    EXPECT_NE(big.exit_code, 0);
    EXPECT_NE(big.err.find("max_tokens 100"), std::string::npos) << big.err;
    EXPECT_NE(big.err.find("> context 64"), std::string::npos) << big.err;
    // Invalid sampling parameter.
    auto bad = run_kvrag("generate -m " + model + " -p hi --top-p 7");
    EXPECT_NE(bad.exit_code, 0);
    EXPECT_NE(bad.err.find("top_p"), std::string::npos) << bad.err;
}

TEST_F(CliTest, SeededSamplingIsReproducible) {
    const std::string model = path("s.gguf");
    ASSERT_EQ(run_kvrag("make-model -o " + model + " --type q8_0").exit_code, 0);
    const std::string args = "generate -m " + model + " -p 'the cat' -n 16 --temp 1.0 --top-k 0 --top-p 1 --min-p 0 --ids --ignore-eos --seed ";
    auto a = run_kvrag(args + "7"), b = run_kvrag(args + "7"), c = run_kvrag(args + "8");
    ASSERT_EQ(a.exit_code, 0) << a.err;
    EXPECT_EQ(a.out, b.out);
    EXPECT_NE(a.out, c.out);
}

TEST(CliShared, TokenizeWorksOnVocabularyOnlyFiles) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    auto r = run_kvrag("tokenize -m " + dir + "/vocab/ggml-vocab-llama-spm.gguf 'Hello world'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // llama-spm adds BOS (1); "Hello world" is 15043 3186 in the reference vectors.
    EXPECT_EQ(parse_ids(r.out), (std::vector<int>{1, 15043, 3186}));
}

TEST(CliShared, GreedyIdsMatchTheReferenceEngine) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    std::ifstream in(dir + "/oracle/stories260K-greedy.json");
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string json = ss.str();
    // First case: prompt "Once upon a time"; pull its greedy_tokens array without a JSON dependency.
    const size_t at = json.find("\"greedy_tokens\"");
    ASSERT_NE(at, std::string::npos);
    const size_t open = json.find('[', at), close = json.find(']', open);
    std::string list = json.substr(open + 1, close - open - 1);
    for (char& ch : list) if (ch == ',') ch = ' ';
    const auto want = parse_ids(list);
    auto r = run_kvrag("generate -m " + dir + "/models/stories260K.gguf -p 'Once upon a time' -n " +
                       std::to_string(want.size()) + " --temp 0 --ids");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(parse_ids(r.out), want);
}

}  // namespace
}  // namespace kvrag
