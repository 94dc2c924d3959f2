// `kvrag embed` and `kvrag rerank` end to end through the real binary: the shared BERT-family
// models against the reference outputs, the decoder fallback on a synthetic chat model, and
// the errors when a model is handed to the wrong command.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/run_kvrag.h"
#include "test_paths.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::run_kvrag;

std::vector<std::string> lines_of(const std::string& s) {
    std::vector<std::string> out;
    std::istringstream in(s);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

// Single-quoted for the shell (the texts here hold no single quotes).
std::string q(const std::string& s) { return "'" + s + "'"; }

json oracle_cases(const std::string& dir, const std::string& model) {
    std::ifstream in(dir + "/oracle/bert-embeddings.json");
    return json::parse(in)[model];
}

float max_abs_diff_f32(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float m = 0.0f;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

TEST(EmbedCli, PrintsOneJsonArrayPerTextMatchingTheReference) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const json cases = oracle_cases(dir, "synth-bert-f32.gguf");
    const std::string model = dir + "/models/synth-bert-f32.gguf";
    const std::string t0 = cases[0]["text"], t1 = cases[1]["text"];
    for (bool raw : {false, true}) {
        const auto r = run_kvrag("embed -m " + model + " -t 2 " + (raw ? "--no-normalize " : "") + q(t0) + " " + q(t1));
        ASSERT_EQ(r.exit_code, 0) << r.err;
        const auto lines = lines_of(r.out);
        ASSERT_EQ(lines.size(), 2u) << r.out;
        for (size_t i = 0; i < 2; ++i) {
            const auto got = json::parse(lines[i]).get<std::vector<float>>();
            EXPECT_LE(max_abs_diff_f32(got, cases[i][raw ? "embedding_raw" : "embedding"].get<std::vector<float>>()), 2e-4f);
        }
    }
    // --pooling none: one array of per-token rows ([CLS] hello world [SEP]: 4 rows of 64).
    const auto none = run_kvrag("embed -m " + model + " --pooling none " + q(t0));
    ASSERT_EQ(none.exit_code, 0) << none.err;
    const json rows = json::parse(lines_of(none.out).at(0));
    ASSERT_EQ(rows.size(), 4u);
    EXPECT_EQ(rows[0].size(), 64u);
    // A bad pooling name is a usage error naming the choices.
    const auto bad = run_kvrag("embed -m " + model + " --pooling max hi");
    EXPECT_EQ(bad.exit_code, 1);
    EXPECT_NE(bad.err.find("E9001 --pooling: pooling 'max' is not one of none, mean, cls, last, rank"), std::string::npos) << bad.err;
}

TEST(RerankCli, PrintsOneScorePerDocumentInInputOrder) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const json cases = oracle_cases(dir, "synth-bert-rerank-f32.gguf");
    const std::string model = dir + "/models/synth-bert-rerank-f32.gguf";
    // The first two pairs share the query "what is a panda?".
    const json& a = cases[8];
    const json& b = cases[9];
    ASSERT_EQ(a["query"], b["query"]);
    for (bool hf : {false, true}) {
        const auto r = run_kvrag("rerank -m " + model + (hf ? " --hf-pairs " : " ") + q(a["query"]) + " " + q(a["document"]) +
                                 " " + q(b["document"]));
        ASSERT_EQ(r.exit_code, 0) << r.err;
        const auto lines = lines_of(r.out);
        ASSERT_EQ(lines.size(), 2u) << r.out;
        const char* key = hf ? "score_cli" : "score";
        EXPECT_NEAR(std::stof(lines[0]), a[key].get<float>(), 5e-4f);
        EXPECT_NEAR(std::stof(lines[1]), b[key].get<float>(), 5e-4f);
    }
    // An embedding model cannot rerank: the error says why.
    const auto e = run_kvrag("rerank -m " + dir + "/models/synth-bert-f32.gguf q d");
    EXPECT_EQ(e.exit_code, 1);
    EXPECT_NE(e.err.find("E5001"), std::string::npos) << e.err;
    EXPECT_NE(e.err.find("without a classifier head"), std::string::npos) << e.err;
}

TEST(EmbedCli, BertModelGivenToGenerateSaysWhatToDo) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const auto r = run_kvrag("generate -m " + dir + "/models/synth-bert-f32.gguf -p hi -n 2");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("E7001"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("architecture 'bert' is an embedding/rerank (encoder-only) model and cannot generate text"),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("--embed-model"), std::string::npos) << r.err;
}

// make-model writes BERT-family models too, so the commands are tested without shared data:
// one line per text, the same line for a text alone or among others, one score per document.
TEST(EmbedCli, SyntheticEncodersFromMakeModel) {
    const fs::path dir = fs::temp_directory_path() / ("kvrag-embed-synth-" + std::to_string(getpid()));
    fs::create_directories(dir);
    const std::string bert = (dir / "bert.gguf").string(), nomic = (dir / "nomic.gguf").string(),
                      rerank = (dir / "rerank.gguf").string();
    ASSERT_EQ(run_kvrag("make-model --arch bert -o " + bert + " --type q8_0 --dim 64 --ff 128").exit_code, 0);
    ASSERT_EQ(run_kvrag("make-model --arch nomic-bert -o " + nomic + " --type f16 --dim 64 --ff 128").exit_code, 0);
    ASSERT_EQ(run_kvrag("make-model --arch bert-rerank -o " + rerank + " --dim 64 --ff 128").exit_code, 0);
    for (const std::string& m : {bert, nomic}) {
        const auto all = run_kvrag("embed -m " + m + " 'hello world' 'the cache model' 'what is a panda?'");
        ASSERT_EQ(all.exit_code, 0) << all.err;
        const auto lines = lines_of(all.out);
        ASSERT_EQ(lines.size(), 3u);
        EXPECT_EQ(json::parse(lines[1]).size(), 64u);
        const auto one = run_kvrag("embed -m " + m + " 'the cache model'");
        ASSERT_EQ(one.exit_code, 0) << one.err;
        EXPECT_EQ(lines_of(one.out).at(0), lines[1]) << "a text changed when embedded with others";
    }
    const auto r = run_kvrag("rerank -m " + rerank + " 'what is a panda?' 'a bear' 'the city of paris' 'hello'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(lines_of(r.out).size(), 3u);
    // info describes an encoder instead of failing on the decoder tensors it does not have.
    const auto info = run_kvrag("info " + rerank);
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("encoder:       pooling rank, layer_norm_eps 1e-12, classifier head (reranker)"), std::string::npos)
        << info.out;
    // bench-embed: one line per repetition and a summary line (numbers not checked: no timing
    // assertions), every text exactly --tokens long.
    const auto b = run_kvrag("bench-embed -m " + bert + " --texts 5 --tokens 40 -r 2 -t 1");
    ASSERT_EQ(b.exit_code, 0) << b.err;
    EXPECT_NE(b.out.find("rep 2: 200 tokens in"), std::string::npos) << b.out;
    EXPECT_NE(b.out.find("bench-embed model=" + bert + " arch=bert texts=5 tokens_per_text=40"), std::string::npos) << b.out;
    fs::remove_all(dir);
}

class DecoderEmbedCli : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("kvrag-embed-cli-" + std::to_string(getpid()));
        fs::create_directories(dir_);
        model_ = (dir_ / "chat.gguf").string();
        ASSERT_EQ(run_kvrag("make-model -o " + model_ + " --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128").exit_code, 0);
    }
    void TearDown() override { fs::remove_all(dir_); }
    fs::path dir_;
    std::string model_;
};

// A chat model still embeds (mean-pooled hidden state, normalised), as before the Embedder.
TEST_F(DecoderEmbedCli, FallsBackToTheChatModelsHiddenState) {
    const auto r = run_kvrag("embed -m " + model_ + " 'hello there' 'general kenobi'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto lines = lines_of(r.out);
    ASSERT_EQ(lines.size(), 2u);
    for (const auto& line : lines) {
        const auto v = json::parse(line).get<std::vector<float>>();
        ASSERT_EQ(v.size(), 64u);
        double norm = 0.0;
        for (float x : v) norm += static_cast<double>(x) * x;
        EXPECT_NEAR(norm, 1.0, 1e-5);
    }
    const auto raw = run_kvrag("embed -m " + model_ + " --no-normalize hi");
    EXPECT_EQ(raw.exit_code, 1);
    EXPECT_NE(raw.err.find("E9001 --no-normalize"), std::string::npos) << raw.err;
}

TEST_F(DecoderEmbedCli, RerankWithAChatModelNamesTheArchitecture) {
    const auto r = run_kvrag("rerank -m " + model_ + " q d");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("E7001"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("architecture 'llama' is a text-generation (decoder) model"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("--rerank-model"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kvrag
