// Store units on both backends (SQLite :memory: and a fresh PostgreSQL database from
// tests/test_postgres.h: MemoryStoreBackends/...), plus crash safety on a real directory
// (fork + kill).
#include "memory/store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "memory/memory_test_util.h"
#include "memory/store_test_util.h"

namespace kvrag::memory {
namespace {

EmbeddingModelInfo model_a() { return {"a", "size:1 sha256:aa", 4}; }

DocumentInput doc(const std::string& id, int n_chunks, const std::string& hash = "h1") {
    DocumentInput d;
    d.index = "default";
    d.doc_id = id;
    d.name = id + ".txt";
    d.content_hash = hash;
    d.settings = "max=8,overlap=0";
    d.tags = {{"lang", "en"}};
    for (int i = 0; i < n_chunks; ++i) {
        ChunkInput c;
        c.position = i;
        c.text = "chunk " + std::to_string(i) + " of " + id + " word" + std::to_string(i);
        c.n_tokens = 5;
        c.embedding = {1.0f, 0.0f, 0.0f, static_cast<float>(i)};
        d.chunks.push_back(std::move(c));
    }
    return d;
}

// The behaviour every Store must have, run on each backend ("sqlite", "postgres").
class MemoryStoreBackends : public testing::StoreBackendTest {
protected:
    std::unique_ptr<Store> open_store() {
        auto s = Store::open(spec_);
        EXPECT_TRUE(s.ok()) << s.error().what();
        return s ? std::move(*s) : nullptr;
    }
};

INSTANTIATE_TEST_SUITE_P(Backends, MemoryStoreBackends, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

TEST_P(MemoryStoreBackends, IndexRecordsModelAndRefusesAnother) {
    auto st = open_store();
    ASSERT_TRUE(st);
    ASSERT_TRUE(st->ensure_index("default", model_a()).ok());
    ASSERT_TRUE(st->ensure_index("default", model_a()).ok());
    auto other = model_a();
    other.fingerprint = "size:2 sha256:bb";
    auto r = st->ensure_index("default", other);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::memory_model_mismatch);
    EXPECT_NE(r.error().message.find("size:1 sha256:aa"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("size:2 sha256:bb"), std::string::npos) << r.error().message;
    auto dim = model_a();
    dim.dim = 8;
    EXPECT_EQ(st->ensure_index("default", dim).error().code, Errc::memory_model_mismatch);
    EXPECT_TRUE(st->ensure_index("other", dim).ok());  // another index may use another model
}

TEST_P(MemoryStoreBackends, InsertReplaceDeleteNeverDuplicates) {
    auto st = open_store();
    ASSERT_TRUE(st);
    ASSERT_TRUE(st->ensure_index("default", model_a()).ok());
    auto w1 = st->write_document(doc("d1", 3));
    ASSERT_TRUE(w1.ok()) << w1.error().what();
    EXPECT_EQ(*w1, WriteOutcome::inserted);
    EXPECT_TRUE(*st->is_unchanged("default", "d1", "h1", {{"lang", "en"}}, "max=8,overlap=0"));
    EXPECT_FALSE(*st->is_unchanged("default", "d1", "h2", {{"lang", "en"}}, "max=8,overlap=0"));
    EXPECT_FALSE(*st->is_unchanged("default", "d1", "h1", {{"lang", "fr"}}, "max=8,overlap=0"));
    auto w2 = st->write_document(doc("d1", 2, "h2"));
    ASSERT_TRUE(w2.ok());
    EXPECT_EQ(*w2, WriteOutcome::replaced);
    auto docs = st->list_documents();
    ASSERT_EQ(docs->size(), 1u);
    EXPECT_EQ((*docs)[0].n_chunks, 2);
    EXPECT_EQ((*docs)[0].content_hash, "h2");
    EXPECT_EQ((*st->vectors("default"))->size(), 2u);
    // FTS follows: the old chunk 2 text is gone, chunk 1 is found once.
    EXPECT_TRUE(st->lexical("default", "word2", 10)->empty());
    EXPECT_EQ(st->lexical("default", "word1", 10)->size(), 1u);
    EXPECT_EQ(*st->check_consistency(), "");
    ASSERT_TRUE(st->write_document(doc("d2", 4)).ok());
    EXPECT_EQ(*st->delete_document("", "d1"), 1);
    EXPECT_EQ(*st->delete_document("", "nope"), 0);
    EXPECT_EQ((*st->vectors("default"))->size(), 4u);
    EXPECT_EQ(*st->check_consistency(), "");
}

// A store's own writes show in its vectors at once: a search right after a delete must not
// find the deleted chunks, nor one right after a write miss the new ones. (PostgreSQL's
// replicas hear of changes through NOTIFY, which arrives a moment later; the writer must not
// wait for it.)
TEST_P(MemoryStoreBackends, OwnWritesShowInVectorsAtOnce) {
    auto st = open_store();
    ASSERT_TRUE(st);
    ASSERT_TRUE(st->ensure_index("default", model_a()).ok());
    ASSERT_TRUE(st->write_document(doc("base", 2)).ok());
    for (int i = 0; i < 30; ++i) {
        ASSERT_EQ((*st->vectors("default"))->size(), 2u) << "round " << i;
        const std::string id = "d" + std::to_string(i);
        ASSERT_TRUE(st->write_document(doc(id, 3)).ok());
        ASSERT_EQ((*st->vectors("default"))->size(), 5u) << "round " << i << ": the document just written is missing";
        ASSERT_TRUE(st->write_document(doc(id, 1, "h2")).ok());
        ASSERT_EQ((*st->vectors("default"))->size(), 3u) << "round " << i << ": the replaced version's chunks are still there";
        ASSERT_EQ(*st->delete_document("", id), 1);
        ASSERT_EQ((*st->vectors("default"))->size(), 2u) << "round " << i << ": the deleted document's chunks are still there";
    }
}

TEST_P(MemoryStoreBackends, InjectedFailureMidDocumentRollsBack) {
    auto st = open_store();
    ASSERT_TRUE(st);
    ASSERT_TRUE(st->ensure_index("default", model_a()).ok());
    ASSERT_TRUE(st->write_document(doc("d1", 3)).ok());
    st->fault_hook = [](int32_t i) {
        if (i == 2) throw std::runtime_error("disk on fire after chunk 2");
    };
    // A replacement fails half-way: the old version is intact.
    auto r = st->write_document(doc("d1", 6, "h2"));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("disk on fire"), std::string::npos);
    auto d = st->get_document("default", "d1");
    ASSERT_TRUE(d->has_value());
    EXPECT_EQ((*d)->content_hash, "h1");
    EXPECT_EQ((*d)->n_chunks, 3);
    // A new document fails half-way: nothing of it is visible.
    ASSERT_FALSE(st->write_document(doc("d2", 5)).ok());
    EXPECT_FALSE(st->get_document("default", "d2")->has_value());
    EXPECT_EQ((*st->vectors("default"))->size(), 3u);
    EXPECT_EQ(*st->check_consistency(), "");
}

TEST_P(MemoryStoreBackends, TagAndDocumentFilters) {
    auto st = open_store();
    ASSERT_TRUE(st);
    ASSERT_TRUE(st->ensure_index("default", model_a()).ok());
    auto a = doc("a", 1);
    a.tags = {{"team", "red"}, {"year", "2024"}};
    auto b = doc("b", 1);
    b.tags = {{"team", "blue"}, {"year", "2024"}};
    ASSERT_TRUE(st->write_document(a).ok());
    ASSERT_TRUE(st->write_document(b).ok());
    EXPECT_FALSE(st->filter_documents("default", "", {})->has_value());
    EXPECT_EQ((*st->filter_documents("default", "", {{"year", "2024"}}))->size(), 2u);
    EXPECT_EQ((*st->filter_documents("default", "", {{"year", "2024"}, {"team", "red"}}))->size(), 1u);
    EXPECT_EQ((*st->filter_documents("default", "b", {{"team", "red"}}))->size(), 0u);
    EXPECT_EQ((*st->filter_documents("default", "b", {}))->size(), 1u);
}

TEST_P(MemoryStoreBackends, ConversationsKeepOrder) {
    auto st = open_store();
    ASSERT_TRUE(st);
    ASSERT_TRUE(st->append_turns("c1", {{"user", "q1", 2}, {"assistant", "a1", 2}}).ok());
    ASSERT_TRUE(st->append_turns("c1", {{"user", "q2", 2}, {"assistant", "a2", 2}}).ok());
    auto t = st->conversation("c1");
    ASSERT_EQ(t->size(), 4u);
    EXPECT_EQ((*t)[2].content, "q2");
    EXPECT_TRUE(st->conversation("c2")->empty());
}

TEST(MemoryStore, TagsAndIds) {
    auto t = parse_tags("b=2,a=1,,a=0");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(format_tags(*t), "a=0,a=1,b=2");
    EXPECT_FALSE(parse_tags("novalue").ok());
    EXPECT_FALSE(parse_tags("=x").ok());
    EXPECT_TRUE(valid_id("docs_engine.md"));
    EXPECT_FALSE(valid_id("a/b"));
    EXPECT_FALSE(valid_id(""));
    EXPECT_EQ(sanitize_id("docs/engine.md"), "docs_engine.md");
    EXPECT_EQ(sanitize_id("../x y"), "x_y");
}

// Document ids from paths (docs/memory.md, "Document ids"): relative to the working
// directory, the same however the file was named, different for different files.
TEST(MemoryIds, FileIdsFollowThePathAndNeverCollideSilently) {
    const std::string cwd = "/home/u/work";
    EXPECT_EQ(file_doc_id("a/README.md", cwd), "a_README.md");
    EXPECT_EQ(file_doc_id("b/README.md", cwd), "b_README.md");
    // Named through a folder (as the directory walk yields it), absolutely, or with dots: the same id.
    EXPECT_EQ(file_doc_id("./a/../a/README.md", cwd), "a_README.md");
    EXPECT_EQ(file_doc_id("/home/u/work/a/README.md", cwd), "a_README.md");
    EXPECT_EQ(file_doc_id("README.md", cwd), "README.md");
    // Outside the working directory: the absolute path.
    EXPECT_EQ(file_doc_id("../other/README.md", cwd), "home_u_other_README.md");
    EXPECT_EQ(file_doc_id("/usr/share/doc/git/README", cwd), "usr_share_doc_git_README");
    // Sanitising can map two paths to one id; the second file gets a suffix from its path.
    EXPECT_EQ(file_doc_id("a b/x.txt", cwd), file_doc_id("a_b/x.txt", cwd));
    const std::string d1 = disambiguated_id("a_b_x.txt", "/home/u/work/a b/x.txt");
    const std::string d2 = disambiguated_id("a_b_x.txt", "/home/u/work/a_b/x.txt");
    EXPECT_NE(d1, d2);
    EXPECT_EQ(d1.rfind("a_b_x.txt-", 0), 0u) << d1;
    EXPECT_EQ(d1.size(), std::string("a_b_x.txt-").size() + 8);
    EXPECT_TRUE(valid_id(d1));
    const std::string long_id = disambiguated_id(std::string(128, 'x') , "k");
    EXPECT_EQ(long_id.size(), 128u);
    EXPECT_TRUE(valid_id(long_id));
}

// A process killed in the middle of writing a document (its job claimed, its chunks being
// inserted by finish_job) leaves a store that reopens consistent: the old documents intact,
// nothing of the new one, and its job queued again.
TEST(MemoryStore, KillDuringIngestionLeavesConsistentStore) {
    const auto dir = testing::temp_dir("kill");
    {
        auto st = Store::open(dir.string());
        ASSERT_TRUE(st.ok()) << st.error().what();
        ASSERT_TRUE((*st)->ensure_index("default", model_a()).ok());
        ASSERT_TRUE((*st)->write_document(doc("kept", 4)).ok());
    }
    for (int kill_at : {0, 7, 40}) {
        const pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            auto st = Store::open(dir.string());
            if (!st) _exit(3);
            NewJob job;
            job.index = "default";
            job.doc_id = "victim";
            job.name = "victim.txt";
            job.files = {SourceFile{"victim.txt", "text/plain", "victim text"}};
            auto id = (*st)->enqueue(job);
            if (!id) _exit(4);
            auto claimed = (*st)->claim_job();
            if (!claimed || !*claimed || (*claimed)->job_id != *id) _exit(6);
            (*st)->fault_hook = [kill_at](int32_t i) {
                if (i == kill_at) kill(getpid(), SIGKILL);
            };
            (void)(*st)->finish_job(*id, doc("victim", 50));
            _exit(5);  // not reached
        }
        int status = 0;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
        EXPECT_EQ(WTERMSIG(status), SIGKILL);

        auto st = Store::open(dir.string());
        ASSERT_TRUE(st.ok()) << st.error().what();
        EXPECT_EQ((*st)->n_requeued_at_open(), 1) << "the running job is queued again at open";
        EXPECT_EQ(*(*st)->check_consistency(), "");
        auto docs = (*st)->list_documents();
        ASSERT_EQ(docs->size(), 2u);
        EXPECT_EQ((*docs)[0].doc_id, "kept");
        EXPECT_EQ((*docs)[0].state, "ready");
        EXPECT_EQ((*docs)[1].doc_id, "victim");
        EXPECT_EQ((*docs)[1].state, "ingesting");
        EXPECT_EQ((*docs)[1].n_chunks, 0);
        auto jobs = (*st)->list_jobs();
        ASSERT_EQ(jobs->size(), 1u);
        EXPECT_EQ((*jobs)[0].state, "queued");
        EXPECT_EQ((*(*st)->source_files("default", "victim"))[0].bytes, "victim text");
        EXPECT_EQ((*(*st)->vectors("default"))->size(), 4u);
        EXPECT_TRUE((*st)->lexical("default", "victim", 10)->empty());
    }
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvrag::memory
