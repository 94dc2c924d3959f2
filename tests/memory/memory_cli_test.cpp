// End to end through the real binary: ingest (with per-document errors), search, ask with
// sources, docs list/delete, and the embedding-model check across processes.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/run_kvrag.h"
#include "memory/memory_test_util.h"

namespace kvrag::memory {
namespace {

namespace fs = std::filesystem;

using kvrag::testing::run_kvrag;

TEST(MemoryCli, IngestSearchAskDocs) {
    const fs::path dir = testing::temp_dir("cli");
    const std::string model = (dir / "m.gguf").string(), other = (dir / "other.gguf").string();
    const std::string store = (dir / "store").string();
    ASSERT_EQ(run_kvrag("make-model -o " + model + " --type q8_0").exit_code, 0);
    ASSERT_EQ(run_kvrag("make-model -o " + other + " --type q8_0 --dim 96").exit_code, 0);
    testing::write_file(dir / "aardvark.pdf", testing::make_pdf("Aardvarks are nocturnal burrowing mammals."));
    const std::string common = " -m " + model + " --memory " + store + " -t 2 --ctx 1024 --chunk-tokens 96 ";
    // A directory named "memory" holding the top-level test files (not the retrieval/ set
    // below them, which the eval test uses), so ids are memory_<file> as for tests/data/memory.
    const fs::path data = dir / "memory";
    fs::create_directories(data);
    for (const auto& e : fs::directory_iterator(testing::data_dir())) {
        if (e.is_regular_file()) fs::copy_file(e.path(), data / e.path().filename());
    }

    // A batch with a broken PDF and an unsupported file: both reported, the rest ingested, exit 1.
    auto ing = run_kvrag("ingest" + common + "--tags team=red " + data.string() + " " + (dir / "aardvark.pdf").string());
    EXPECT_EQ(ing.exit_code, 1) << ing.err;
    EXPECT_NE(ing.err.find("E6002 'broken.pdf' is a broken PDF"), std::string::npos) << ing.err;
    EXPECT_NE(ing.err.find("E6003 'report.docx'"), std::string::npos) << ing.err;
    EXPECT_NE(ing.out.find("inserted  " + data.string() + "/lighthouse.html  id=memory_lighthouse.html"), std::string::npos) << ing.out;
    EXPECT_NE(ing.out.find("id=aardvark.pdf"), std::string::npos) << ing.out;
    EXPECT_NE(ing.out.find("ingested 5, unchanged 0, failed 2 of 7 documents"), std::string::npos) << ing.out;
    // Again: everything unchanged.
    auto again = run_kvrag("ingest" + common + "--tags team=red " + testing::data_dir() + "/lighthouse.html --id memory_lighthouse.html");
    EXPECT_EQ(again.exit_code, 0) << again.err;
    EXPECT_NE(again.out.find("unchanged"), std::string::npos) << again.out;

    auto s = run_kvrag("search" + common + "'Quillback lighthouse automated' -n 3");
    ASSERT_EQ(s.exit_code, 0) << s.err;
    EXPECT_EQ(s.out.rfind("1. memory_lighthouse.html #0", 0), 0u) << s.out;
    auto sj = run_kvrag("search" + common + "aardvarks --mode lexical --json");
    ASSERT_EQ(sj.exit_code, 0) << sj.err;
    EXPECT_NE(sj.out.find("\"documentId\": \"aardvark.pdf\""), std::string::npos) << sj.out;

    auto a = run_kvrag("ask" + common + "'When was the Quillback lighthouse automated?' -n 8 --conversation talk1 -v");
    ASSERT_EQ(a.exit_code, 0) << a.err;
    EXPECT_NE(a.out.find("\nSources:\n[1] "), std::string::npos) << a.out;
    EXPECT_NE(a.err.find("kv stats: total=1024 used=0"), std::string::npos) << a.err;
    auto none = run_kvrag("ask" + common + "'anything' --min-relevance 1");
    ASSERT_EQ(none.exit_code, 0) << none.err;
    EXPECT_NE(none.out.find("I found nothing relevant"), std::string::npos) << none.out;

    // Another model may not search this index.
    auto mismatch = run_kvrag("search -m " + other + " --memory " + store + " aardvark");
    EXPECT_NE(mismatch.exit_code, 0);
    EXPECT_NE(mismatch.err.find("E6004 index 'default' was embedded by model"), std::string::npos) << mismatch.err;

    auto list = run_kvrag("docs --memory " + store + " list");
    ASSERT_EQ(list.exit_code, 0) << list.err;
    EXPECT_NE(list.out.find("default/memory_zebra_facts.html  ready"), std::string::npos) << list.out;
    EXPECT_NE(list.out.find("default/memory_broken.pdf  failed"), std::string::npos) << list.out;
    auto del = run_kvrag("docs --memory " + store + " delete memory_zebra_facts.html");
    ASSERT_EQ(del.exit_code, 0) << del.err;
    EXPECT_EQ(run_kvrag("docs --memory " + store + " list").out.find("zebra"), std::string::npos);
    auto del2 = run_kvrag("docs --memory " + store + " delete memory_zebra_facts.html");
    EXPECT_NE(del2.exit_code, 0);
    EXPECT_NE(del2.err.find("E6005"), std::string::npos) << del2.err;
    fs::remove_all(dir);
}

}  // namespace
}  // namespace kvrag::memory
