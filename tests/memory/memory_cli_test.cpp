// End to end through the real binary: ingest (with per-document errors), search, ask with
// sources, docs list/delete, the embedding-model check across processes; ids from paths,
// text by content, a missing store, an interrupted ingest resumed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "cli/run_kvrag.h"
#include "memory/memory_test_util.h"

namespace kvrag::memory {
namespace {

namespace fs = std::filesystem;

using kvrag::testing::run_kvrag;

// Runs the commands of a test from `dir` (document ids are relative to the working directory).
struct InDir {
    fs::path old = fs::current_path();
    explicit InDir(const fs::path& dir) { fs::current_path(dir); }
    ~InDir() { fs::current_path(old); }
};

TEST(MemoryCli, IngestSearchAskDocs) {
    const fs::path dir = testing::temp_dir("cli");
    const std::string model = (dir / "m.gguf").string(), other = (dir / "other.gguf").string();
    const std::string store = (dir / "store").string();
    ASSERT_EQ(run_kvrag("make-model -o " + model + " --type q8_0").exit_code, 0);
    ASSERT_EQ(run_kvrag("make-model -o " + other + " --type q8_0 --dim 96").exit_code, 0);
    testing::write_file(dir / "aardvark.pdf", testing::make_pdf("Aardvarks are nocturnal burrowing mammals."));
    const std::string common = " -m " + model + " --memory " + store + " -t 2 --ctx 1024 --chunk-tokens 96 ";
    InDir in_dir(dir);
    // A directory named "memory" holding the top-level test files (not the retrieval/ set
    // below them, which the eval test uses), so ids (relative to the working directory, dir)
    // are memory_<file>.
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

// Ids from paths never collide silently, text is found by content (any name, Latin-1 with a
// warning, .gz), a binary file fails alone.
TEST(MemoryCli, IdsFromPathsAndTextByContent) {
    const fs::path dir = testing::temp_dir("cli-ids");
    InDir in_dir(dir);
    ASSERT_EQ(run_kvrag("make-model -o m.gguf --type q8_0").exit_code, 0);
    const std::string common = " -m m.gguf --memory store -t 2 --ctx 512 --chunk-tokens 64 ";
    fs::create_directories(dir / "a");
    fs::create_directories(dir / "b");
    testing::write_file(dir / "a" / "README.md", "# A\n\nThe first readme talks about anchors.\n");
    testing::write_file(dir / "b" / "README.md", "# B\n\nThe second readme talks about buoys.\n");
    auto files = run_kvrag("ingest" + common + "a/README.md b/README.md");
    ASSERT_EQ(files.exit_code, 0) << files.err;
    EXPECT_NE(files.out.find("inserted  a/README.md  id=a_README.md"), std::string::npos) << files.out;
    EXPECT_NE(files.out.find("inserted  b/README.md  id=b_README.md"), std::string::npos) << files.out;
    // The same files named through their folders: the same ids, nothing to do.
    auto folders = run_kvrag("ingest" + common + "a b");
    ASSERT_EQ(folders.exit_code, 0) << folders.err;
    EXPECT_NE(folders.out.find("ingested 0, unchanged 2, failed 0 of 2 documents"), std::string::npos) << folders.out;

    fs::create_directories(dir / "c");
    testing::write_file(dir / "c" / "AUTHORS", "Ada Lovelace wrote the notes on the engine.\n");
    testing::write_file(dir / "c" / "main.c", "/* prints the tide table */\nint main(void) { return 0; }\n");
    testing::write_file(dir / "c" / "menu.txt", "Caf\xE9 cr\xE8me br\xFBl\xE9" "e\n");
    testing::write_file(dir / "c" / "image.png", std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16));
    // A gzip member of "changelog entry: fixed the lantern\n", made with Python's gzip (mtime 0).
    const unsigned char gz[] = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xff, 0x4b, 0xce, 0x48, 0xcc, 0x4b, 0x4f, 0xcd, 0xc9,
                                0x4f, 0x57, 0x48, 0xcd, 0x2b, 0x29, 0xaa, 0xb4, 0x52, 0x48, 0xcb, 0xac, 0x48, 0x4d, 0x51, 0x28, 0xc9, 0x48,
                                0x55, 0xc8, 0x49, 0xcc, 0x2b, 0x49, 0x2d, 0xca, 0xe3, 0x02, 0x00, 0xee, 0x19, 0xab, 0x74, 0x23, 0x00, 0x00,
                                0x00};
    testing::write_file(dir / "c" / "changelog.gz", std::string(reinterpret_cast<const char*>(gz), sizeof(gz)));
    auto c = run_kvrag("ingest" + common + "c");
    EXPECT_EQ(c.exit_code, 1) << c.err;
    EXPECT_NE(c.err.find("kvrag: c/image.png: E6003 'image.png' is binary (byte 0x00 at offset 8)"), std::string::npos) << c.err;
    EXPECT_NE(c.err.find("warning: 'menu.txt' is not valid UTF-8; read as Windows-1252"), std::string::npos) << c.err;
    for (const char* id : {"c_AUTHORS", "c_main.c", "c_menu.txt", "c_changelog.gz"}) {
        EXPECT_NE(c.out.find(std::string("id=") + id), std::string::npos) << id << "\n" << c.out;
    }
    EXPECT_NE(c.out.find("ingested 4, unchanged 0, failed 1 of 5 documents"), std::string::npos) << c.out;
    auto lantern = run_kvrag("search" + common + "lantern --mode lexical -n 1");
    ASSERT_EQ(lantern.exit_code, 0) << lantern.err;
    EXPECT_EQ(lantern.out.rfind("1. c_changelog.gz #0", 0), 0u) << lantern.out;
    auto creme = run_kvrag("search" + common + "'crème' --mode lexical -n 1");
    EXPECT_EQ(creme.out.rfind("1. c_menu.txt #0", 0), 0u) << creme.out;
    fs::remove_all(dir);
}

// search, ask and docs on a path with no store fail naming it, before loading a model, and
// create nothing.
TEST(MemoryCli, MissingStoreIsAnErrorNamingThePath) {
    const fs::path dir = testing::temp_dir("cli-missing");
    const std::string typo = (dir / "stroe").string();
    for (const std::string& cmd : {"ask -m " + (dir / "absent.gguf").string() + " --memory " + typo + " 'anything?'",
                                   "search -m " + (dir / "absent.gguf").string() + " --memory " + typo + " anything",
                                   "docs --memory " + typo + " list"}) {
        auto r = run_kvrag(cmd);
        EXPECT_NE(r.exit_code, 0) << cmd;
        EXPECT_NE(r.err.find("E6005 no memory store at '" + typo + "'"), std::string::npos) << cmd << "\n" << r.err;
        EXPECT_FALSE(fs::exists(typo)) << cmd;
    }
    fs::remove_all(dir);
}

// Ctrl-C during `kvrag ingest` stops within about a second with exit 130, leaving the
// unfinished document queued; the next `kvrag ingest` on the store resumes and completes it.
TEST(MemoryCli, InterruptedIngestResumesAtTheNextRun) {
    const fs::path dir = testing::temp_dir("cli-sigint");
    InDir in_dir(dir);
    ASSERT_EQ(run_kvrag("make-model -o m.gguf --type q8_0").exit_code, 0);
    testing::write_file(dir / "a_small.txt", "A short note about the harbour lights.\n");
    std::string big;
    // Big enough that embedding it takes far longer than the 50 ms before the interrupt (2,000
    // sentences once did, until the kernels got faster: it finished within the old 200 ms).
    for (int i = 0; i < 8000; ++i) big += "The keeper logged tide " + std::to_string(i) + " at the rock. ";
    testing::write_file(dir / "b_big.txt", big);
    const std::string out_path = (dir / "ingest.out").string(), err_path = (dir / "ingest.err").string();
    std::vector<std::string> args = {KVRAG_BINARY, "ingest", "-m", "m.gguf", "--memory", "store", "--chunk-tokens", "16",
                                     "--chunk-overlap", "0", "-t", "1", "a_small.txt", "b_big.txt"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int err_fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(out_fd, 0);
    ASSERT_GE(err_fd, 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        dup2(out_fd, STDOUT_FILENO);
        dup2(err_fd, STDERR_FILENO);
        execv(argv[0], argv.data());
        _exit(127);
    }
    close(out_fd);
    close(err_fd);
    auto slurp = [](const std::string& p) {
        std::stringstream ss;
        ss << std::ifstream(p).rdbuf();
        return ss.str();
    };
    // The small file is done (its line is out), so the big one is being embedded.
    const auto t_wait = std::chrono::steady_clock::now();
    while (slurp(out_path).find("a_small.txt") == std::string::npos && std::chrono::steady_clock::now() - t_wait < std::chrono::seconds(30)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_NE(slurp(out_path).find("inserted  a_small.txt"), std::string::npos) << slurp(out_path) << slurp(err_path);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto t0 = std::chrono::steady_clock::now();
    kill(pid, SIGINT);
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(20)) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            FAIL() << "kvrag ingest did not stop on SIGINT\n" << slurp(err_path);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(took, 1.5) << slurp(err_path);
    ASSERT_TRUE(WIFEXITED(status)) << slurp(err_path);
    EXPECT_EQ(WEXITSTATUS(status), 130) << slurp(err_path);
    EXPECT_NE(slurp(err_path).find("interrupted; 1 document(s) stay queued in store"), std::string::npos) << slurp(err_path);
    EXPECT_EQ(slurp(out_path).find("b_big.txt  id="), std::string::npos) << "the big file must not be finished: " << slurp(out_path);
    auto list = run_kvrag("docs --memory store list");
    EXPECT_NE(list.out.find("default/b_big.txt  ingesting  chunks=0"), std::string::npos) << list.out;

    auto again = run_kvrag("ingest -m m.gguf --memory store --chunk-tokens 16 --chunk-overlap 0 -t 1 a_small.txt");
    ASSERT_EQ(again.exit_code, 0) << again.err;
    EXPECT_NE(again.err.find("resuming 1 document(s) queued by an earlier run"), std::string::npos) << again.err;
    EXPECT_NE(again.out.find("unchanged a_small.txt"), std::string::npos) << again.out;
    EXPECT_NE(again.out.find("inserted  " + (dir / "b_big.txt").string() + "  id=b_big.txt"), std::string::npos) << again.out;
    auto after = run_kvrag("docs --memory store list");
    EXPECT_NE(after.out.find("default/b_big.txt  ready"), std::string::npos) << after.out;
    fs::remove_all(dir);
}

}  // namespace
}  // namespace kvrag::memory
