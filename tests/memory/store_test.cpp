// Store units on SQLite :memory:, plus crash safety on a real directory (fork + kill).
#include "memory/store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "memory/memory_test_util.h"

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

std::unique_ptr<Store> open_memory() {
    auto s = Store::open(":memory:");
    EXPECT_TRUE(s.ok()) << s.error().what();
    return std::move(*s);
}

TEST(MemoryStore, IndexRecordsModelAndRefusesAnother) {
    auto st = open_memory();
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

TEST(MemoryStore, InsertReplaceDeleteNeverDuplicates) {
    auto st = open_memory();
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

TEST(MemoryStore, InjectedFailureMidDocumentRollsBack) {
    auto st = open_memory();
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

TEST(MemoryStore, TagAndDocumentFilters) {
    auto st = open_memory();
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

TEST(MemoryStore, ConversationsKeepOrder) {
    auto st = open_memory();
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

// A process killed in the middle of writing a document (after its placeholder committed and
// while its chunks are being inserted) leaves a store that reopens consistent: the old
// documents intact, nothing of the new one.
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
            if (!(*st)->mark_ingesting("default", "victim", "victim.txt", "test")) _exit(4);
            (*st)->fault_hook = [kill_at](int32_t i) {
                if (i == kill_at) kill(getpid(), SIGKILL);
            };
            (void)(*st)->write_document(doc("victim", 50));
            _exit(5);  // not reached
        }
        int status = 0;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
        EXPECT_EQ(WTERMSIG(status), SIGKILL);

        auto st = Store::open(dir.string());
        ASSERT_TRUE(st.ok()) << st.error().what();
        EXPECT_EQ((*st)->n_cleaned_at_open(), 1) << "the 'ingesting' placeholder is removed at open";
        EXPECT_EQ(*(*st)->check_consistency(), "");
        auto docs = (*st)->list_documents();
        ASSERT_EQ(docs->size(), 1u);
        EXPECT_EQ((*docs)[0].doc_id, "kept");
        EXPECT_EQ((*(*st)->vectors("default"))->size(), 4u);
        EXPECT_TRUE((*st)->lexical("default", "victim", 10)->empty());
    }
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvrag::memory
