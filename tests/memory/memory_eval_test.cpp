// Retrieval evaluation: the set loader's errors, and `kvrag memory eval` end to end on
// tests/data/memory/retrieval with a synthetic model (random weights) and with stories260K.
//
// What the figures must be: every question of kind identifier/name/number hinges on a term
// that occurs in its document only (the set was written that way), so BM25 ranks that document
// first, and hybrid mode must too (the exact-term rule, whatever the vector side says). The
// vector figures are not checked beyond [0, 1]: neither model was trained for embeddings.
#include <gtest/gtest.h>

#include <algorithm>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "cli/run_kvrag.h"
#include "memory/memory_test_util.h"
#include "memory/retrieval_eval.h"
#include "test_paths.h"

namespace kvrag::memory {
namespace {

namespace fs = std::filesystem;
using kvrag::testing::run_kvrag;

std::string set_dir() { return testing::data_dir() + "/retrieval"; }

TEST(MemoryEval, LoadsTheShippedSet) {
    auto set = load_eval_set(set_dir());
    ASSERT_TRUE(set.ok()) << set.error().what();
    EXPECT_EQ(set->doc_paths.size(), 42u);
    EXPECT_EQ(set->questions.size(), 64u);
    std::map<std::string, int> kinds;
    for (const auto& q : set->questions) ++kinds[q.kind];
    EXPECT_EQ(kinds, (std::map<std::string, int>{{"identifier", 12}, {"name", 14}, {"number", 10}, {"paraphrase", 28}}));
}

TEST(MemoryEval, BadSetsAreNumberedErrors) {
    const fs::path dir = testing::temp_dir("evalset");
    EXPECT_EQ(load_eval_set((dir / "none").string()).error().code, Errc::memory_not_found);
    fs::create_directories(dir / "docs");
    EXPECT_NE(load_eval_set(dir.string()).error().what().find("E6005 evaluation set"), std::string::npos);
    testing::write_file(dir / "docs" / "a.txt", "alpha");
    EXPECT_NE(load_eval_set(dir.string()).error().what().find("no readable questions.tsv"), std::string::npos);
    testing::write_file(dir / "questions.tsv", "# comment\n\na.txt\tname\n");
    auto bad = load_eval_set(dir.string());
    EXPECT_NE(bad.error().what().find("E6006 " + (dir / "questions.tsv").string() + ":3: expected doc_id<TAB>kind<TAB>question"),
              std::string::npos) << bad.error().what();
    testing::write_file(dir / "questions.tsv", "a.txt\tname\tWhat is alpha?\nb.txt\tname\tWhat is beta?\n");
    auto unknown = load_eval_set(dir.string());
    EXPECT_NE(unknown.error().what().find(":2: document 'b.txt' is not a file in"), std::string::npos) << unknown.error().what();
    testing::write_file(dir / "questions.tsv", "a.txt\tname\tWhat is alpha?\r\n");
    auto ok = load_eval_set(dir.string());
    ASSERT_TRUE(ok.ok()) << ok.error().what();
    EXPECT_EQ(ok->questions.at(0).question, "What is alpha?");
    fs::remove_all(dir);
}

struct Parsed {
    std::map<std::string, std::array<double, 3>> modes;                // mode -> r1, r5, mrr
    std::map<std::string, std::map<std::string, double>> kind_r1;      // kind -> mode -> r1
    std::map<std::string, double> summary;                             // key -> value
};

// Parses both tables and the key=value line, failing the test on anything malformed.
Parsed parse_eval(const std::string& out) {
    Parsed p;
    std::istringstream in(out);
    std::string line;
    std::vector<std::string> kind_header;
    const std::regex mode_row(R"(^\| (\S+) +\| ([01]\.\d{3}) \| ([01]\.\d{3}) \| ([01]\.\d{3}) \|$)");
    const std::regex kind_row(R"(^\| (\w+) \((\d+)\) +\|(.*)$)");
    std::smatch m;
    while (std::getline(in, line)) {
        if (std::regex_match(line, m, mode_row)) {
            p.modes[m[1]] = {std::stod(m[2]), std::stod(m[3]), std::stod(m[4])};
        } else if (line.rfind("| kind (questions) |", 0) == 0) {
            std::istringstream h(line.substr(20));
            std::string cell;
            while (std::getline(h, cell, '|')) {
                if (cell.size() > 2) kind_header.push_back(cell.substr(1, cell.size() - 2));
            }
        } else if (std::regex_match(line, m, kind_row)) {
            std::istringstream cells(m[3].str());
            std::string cell;
            for (size_t i = 0; std::getline(cells, cell, '|') && i < kind_header.size(); ++i) p.kind_r1[m[1]][kind_header[i]] = std::stod(cell);
        } else if (line.rfind("eval ", 0) == 0) {
            std::istringstream kv(line.substr(5));
            std::string item;
            while (kv >> item) {
                const auto eq = item.find('=');
                if (eq != std::string::npos) p.summary[item.substr(0, eq)] = std::stod(item.substr(eq + 1));
            }
        }
    }
    return p;
}

// The checks both models share.
void check_eval(const std::string& model) {
    auto r = run_kvrag("memory eval --set " + set_dir() + " -m " + model + " -t 2");
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    const Parsed p = parse_eval(r.out);
    ASSERT_EQ(p.modes.size(), 3u) << r.out;  // no reranker: lexical, vector, hybrid
    EXPECT_EQ(p.summary.at("documents"), 42);
    EXPECT_EQ(p.summary.at("questions"), 64);
    for (const auto& [mode, v] : p.modes) {
        // The line and the table agree; recall@1 <= recall@5 and recall@1 <= MRR hold for any ranking.
        EXPECT_DOUBLE_EQ(p.summary.at(mode + "_r1"), v[0]) << mode;
        EXPECT_DOUBLE_EQ(p.summary.at(mode + "_r5"), v[1]) << mode;
        EXPECT_DOUBLE_EQ(p.summary.at(mode + "_mrr"), v[2]) << mode;
        EXPECT_LE(v[0], v[1]) << mode;
        EXPECT_LE(v[0], v[2]) << mode;
    }
    // The 36 rare-term questions (12 + 14 + 10 of 64) are found first by BM25 and by hybrid.
    for (const char* kind : {"identifier", "name", "number"}) {
        EXPECT_EQ(p.kind_r1.at(kind).at("lexical"), 1.0) << kind << "\n" << r.out;
        EXPECT_EQ(p.kind_r1.at(kind).at("hybrid"), 1.0) << kind << "\n" << r.out;
    }
    EXPECT_GE(p.modes.at("lexical")[0], 36.0 / 64.0 - 1e-9);
    EXPECT_GE(p.modes.at("hybrid")[0], 36.0 / 64.0 - 1e-9);
}

TEST(MemoryEval, CliOnASyntheticModel) {
    const fs::path dir = testing::temp_dir("eval");
    const std::string model = (dir / "m.gguf").string();
    ASSERT_EQ(run_kvrag("make-model -o " + model + " --type q8_0").exit_code, 0);
    check_eval(model);
    // A chat model as --rerank-model is refused up front, typed, saying where it belongs.
    auto rr = run_kvrag("memory eval --set " + set_dir() + " -m " + model + " --rerank-model " + model);
    EXPECT_EQ(rr.exit_code, 1);
    EXPECT_NE(rr.err.find("E7001"), std::string::npos) << rr.err;
    EXPECT_NE(rr.err.find("architecture 'llama' is a text-generation (decoder) model"), std::string::npos) << rr.err;
    auto missing = run_kvrag("memory eval --set " + (dir / "nothing").string() + " -m " + model);
    EXPECT_EQ(missing.exit_code, 1);
    EXPECT_NE(missing.err.find("E6005 evaluation set"), std::string::npos) << missing.err;
    fs::remove_all(dir);
}

TEST(MemoryEval, CliOnStories260K) {
    KVRAG_REQUIRE_SHARED_DATA(shared);
    const std::string model = shared + "/models/stories260K.gguf";
    KVRAG_SKIP_UNLESS_SHARED(fs::exists(model)) << model << " not found";
    check_eval(model);
}

// An encoder embedding model and a reranker (the shared synthetic bert models): the index is
// embedded by the bert model, and the hybrid+rerank row appears.
TEST(MemoryEval, CliWithEncoderEmbeddingAndReranker) {
    KVRAG_REQUIRE_SHARED_DATA(shared);
    const std::string chat = shared + "/models/stories260K.gguf";
    const std::string bert = shared + "/models/synth-bert-f32.gguf";
    const std::string rerank = shared + "/models/synth-bert-rerank-f32.gguf";
    auto r = run_kvrag("memory eval --set " + set_dir() + " -m " + chat + " --embed-model " + bert + " --rerank-model " + rerank + " -t 2");
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    const Parsed p = parse_eval(r.out);
    ASSERT_EQ(p.modes.size(), 4u) << r.out;
    ASSERT_TRUE(p.modes.count("hybrid+rerank")) << r.out;
    for (const auto& [mode, v] : p.modes) {
        std::string key = mode;
        std::replace(key.begin(), key.end(), '+', '_');  // hybrid+rerank -> hybrid_rerank_r1
        EXPECT_DOUBLE_EQ(p.summary.at(key + "_r1"), v[0]) << mode;
        EXPECT_LE(v[0], v[1]) << mode;
    }
    // The random-weight reranker reorders the pool: its figures differ from hybrid's.
    EXPECT_NE(p.modes.at("hybrid+rerank"), p.modes.at("hybrid")) << r.out;
    // An embedding model in the reranker's place is refused with the reason.
    auto wrong = run_kvrag("memory eval --set " + set_dir() + " -m " + chat + " --rerank-model " + bert);
    EXPECT_EQ(wrong.exit_code, 1);
    EXPECT_NE(wrong.err.find("no classifier head"), std::string::npos) << wrong.err;
}

}  // namespace
}  // namespace kvrag::memory
