// `kvrag bench --grammar` end to end (issue 14, point 1: the grammar's cost per token is
// measured in the bench): through the real binary on a tiny synthetic model, for both kinds, the
// summary line carries the three per-token figures and the estimate per decode row, all
// positive, the estimate below the plain decode rate. An unknown kind is refused by name.
// No absolute timing is asserted: the figures depend on the machine and its load.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>

#include "cli/run_kvrag.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using testing::run_kvrag;

TEST(BenchGrammarCli, PrintsTheGrammarsCostPerTokenBesideTheDecodeRows) {
    const fs::path dir = fs::temp_directory_path() / ("kvrag-bench-grammar-" + std::to_string(getpid()));
    fs::create_directories(dir);
    const std::string model = (dir / "tiny.gguf").string();
    ASSERT_EQ(run_kvrag("make-model -o " + model + " --type f32 --dim 64 --layers 1 --heads 4 --kv-heads 2 --ctx 64").exit_code, 0);
    for (const std::string kind : {"json", "json_object"}) {
        const auto r = run_kvrag("bench -m " + model + " -p 8 -n 4 -r 3 --threads 1 --grammar " + kind);
        ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
        EXPECT_NE(r.out.find("grammar " + kind + ":"), std::string::npos) << r.out;
        const auto kv = testing::summary_pairs(r.out, "bench ");
        const std::string g = "grammar_" + kind;
        for (const std::string& key : {g + "_us_per_token", g + "_cached_us_per_token", g + "_fast_us_per_token", "tg4_" + g + "_est"}) {
            ASSERT_TRUE(kv.count(key)) << key << " missing from: " << r.out;
            EXPECT_GT(std::stod(kv.at(key)), 0.0) << key << "=" << kv.at(key);
        }
        // With the grammar the decode estimate can only be slower than tg4 itself.
        EXPECT_LE(std::stod(kv.at("tg4_" + g + "_est")), std::stod(kv.at("tg4"))) << r.out;
    }
    const auto bad = run_kvrag("bench -m " + model + " -p 8 -n 4 -r 1 --grammar xml");
    EXPECT_NE(bad.exit_code, 0);
    EXPECT_NE((bad.err + bad.out).find("--grammar 'xml' is not one of json, json_object"), std::string::npos) << bad.err << bad.out;
    fs::remove_all(dir);
}

}  // namespace
}  // namespace kvrag
