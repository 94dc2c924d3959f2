// The PostgreSQL store's own behaviour, on a throwaway server (tests/test_postgres.h): the
// schema migrated once when replicas start together, clear errors, lexical ranking compared
// with SQLite's BM25 on one corpus, the shared queue's leases (an expired claim is taken over
// and the job written exactly once; concurrent claimers never share a job), vectors kept in
// step across stores through LISTEN/NOTIFY, and a server restart.
// The behaviour both backends share runs on each in store_test.cpp and ingest_queue_test.cpp.
#include "memory/postgres_store.h"

#include <gtest/gtest.h>
#include <postgresql/libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <thread>

#include "memory/memory_test_util.h"
#include "memory/pg_db.h"
#include "memory/store_test_util.h"
#include "test_postgres.h"

namespace kvrag::memory {
namespace {

using ::kvrag::testing::within;

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

using testing::as_pg;
using testing::kFakeStoreModel;
using testing::new_job;
using testing::one_chunk_doc;
using testing::open_pg;

TEST(PostgresStore, ReplicasStartingTogetherMigrateOnce) {
    KVRAG_REQUIRE_POSTGRES(uri);
    // A database without the schema is "no store" for commands that need one.
    auto none = Store::open(uri, OpenMode::existing);
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.error().code, Errc::memory_not_found);
    EXPECT_NE(none.error().message.find("no kvrag schema"), std::string::npos) << none.error().message;

    std::vector<std::thread> threads;
    std::vector<std::string> errors(4);
    for (int i = 0; i < 4; ++i) {
        threads.emplace_back([&, i] {
            auto s = Store::open(uri);
            if (!s) errors[static_cast<size_t>(i)] = s.error().what();
        });
    }
    for (auto& t : threads) t.join();
    for (const auto& e : errors) EXPECT_EQ(e, "");
    auto st = Store::open(uri, OpenMode::existing);
    ASSERT_TRUE(st.ok()) << st.error().what();
    // One row per version: every migration step ran exactly once.
    auto c = pg::Connection::open(uri);
    ASSERT_TRUE(c.ok());
    auto v = (*c)->exec("SELECT count(*), max(version) FROM kvrag_schema_version");
    ASSERT_TRUE(v.ok()) << v.error().what();
    EXPECT_EQ(v->i64(0, 0), PostgresStore::schema_version());
    EXPECT_EQ(v->i64(0, 1), PostgresStore::schema_version());
    // A schema newer than this kvrag is refused with both numbers.
    ASSERT_TRUE((*c)->exec("INSERT INTO kvrag_schema_version(version) VALUES (99)").ok());
    auto newer = Store::open(uri);
    ASSERT_FALSE(newer.ok());
    EXPECT_NE(newer.error().message.find("schema version 99"), std::string::npos) << newer.error().message;
}

TEST(PostgresStore, UnreachableServerIsAClearError) {
    const std::string uri = "postgresql://kvrag:secret@/nodb?host=/nonexistent-kvrag-dir&port=1";
    auto s = Store::open(uri);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, Errc::memory_unavailable);  // HTTP 503 + Retry-After
    EXPECT_NE(s.error().message.find("cannot connect to postgresql://kvrag:***@"), std::string::npos) << s.error().message;
    EXPECT_NE(s.error().message.find("is the PostgreSQL server running"), std::string::npos) << s.error().message;
    EXPECT_EQ(s.error().message.find("secret"), std::string::npos) << "the password leaked: " << s.error().message;
}

// One corpus in both stores; the lexical ranking of tsvector + idf-weighted ts_rank_cd
// against FTS5's BM25. What must agree: the top hit of every query aimed at one document (a
// rare word, an identifier, a name, a phrase), and most of the top 3 of broader queries.
TEST(PostgresStore, LexicalRankingAgreesWithSqliteBm25) {
    KVRAG_REQUIRE_POSTGRES(uri);
    auto pg = open_pg(uri);
    ASSERT_TRUE(pg);
    auto sq = Store::open(":memory:");
    ASSERT_TRUE(sq.ok());
    const std::vector<std::pair<std::string, std::string>> corpus = {
        {"garden", "The garden club meets on Tuesdays; members bring seeds, tools and a thermos of tea for the long afternoon."},
        {"roots", "Tree root growth requires steady water; pruning rules matter for old apple trees in the garden."},
        {"rrr", "Setting Rules-Requires-Root: no in debian/control lets a package build without fakeroot."},
        {"e5002", "Error E5002 means max_tokens exceeds the context of the model; lower max_tokens or raise the context."},
        {"kvfile", "The block pool lives in kv_cache.cpp next to the prefix index and the eviction queue."},
        {"cve", "CVE-2024-3094 is the xz backdoor; the details were published in March 2024 by a Microsoft engineer."},
        {"quist", "The cartographer Margarethe Quist drew the first survey of the river delta and its tides."},
        {"tides", "Tides rise twice a day; the river delta floods when spring tides meet heavy rain upstream."},
        {"tea", "Green tea is steeped at eighty degrees for two minutes; black tea wants boiling water and four minutes."},
        {"cache", "A cache keeps recent results close; the prefix cache of the engine reuses the KV blocks of a shared prompt."},
        {"water", "Water boils at one hundred degrees at sea level and at lower temperatures on high mountains."},
        {"sqlite", "SQLite stores the memory in one file with full-text search over every chunk of every document."},
    };
    for (Store* st : {pg.get(), sq->get()}) {
        ASSERT_TRUE(st->ensure_index("default", kFakeStoreModel).ok());
        for (const auto& [id, text] : corpus) ASSERT_TRUE(st->write_document(one_chunk_doc(id, text)).ok());
    }
    auto doc_of = [](Store& st, const std::vector<std::pair<int64_t, double>>& hits) {
        std::vector<int64_t> ids;
        for (const auto& h : hits) ids.push_back(h.first);
        std::vector<std::string> out;
        auto rows = st.chunks(ids);
        EXPECT_TRUE(rows.ok());
        if (rows) {
            for (const auto& c : *rows) out.push_back(c.doc_id);
        }
        return out;
    };
    struct Query {
        const char* text;
        const char* top;  // the document it aims at
    };
    const Query targeted[] = {
        {"Rules-Requires-Root", "rrr"},        {"what does E5002 mean", "e5002"}, {"kv_cache.cpp", "kvfile"},
        {"CVE-2024-3094", "cve"},              {"Margarethe Quist", "quist"},    {"how long to steep green tea", "tea"},
        {"prefix cache KV blocks", "cache"},   {"fakeroot", "rrr"},           {"the xz backdoor", "cve"},
    };
    for (const auto& q : targeted) {
        auto a = pg->lexical("default", q.text, 5);
        auto b = (*sq)->lexical("default", q.text, 5);
        ASSERT_TRUE(a.ok()) << a.error().what();
        ASSERT_TRUE(b.ok()) << b.error().what();
        const auto da = doc_of(*pg, *a), db = doc_of(**sq, *b);
        ASSERT_FALSE(da.empty()) << q.text;
        ASSERT_FALSE(db.empty()) << q.text;
        EXPECT_EQ(da[0], q.top) << "postgres, query: " << q.text;
        EXPECT_EQ(db[0], q.top) << "sqlite, query: " << q.text;
        // Scores: lower is better on both, best first.
        for (size_t i = 1; i < a->size(); ++i) EXPECT_LE((*a)[i - 1].second, (*a)[i].second) << q.text;
    }
    // Broad queries: the same set of matching chunks (both match any term), and the top 3
    // share at least 2 documents.
    for (const char* q : {"water and tides in the river delta", "garden tea", "the engine cache and the memory"}) {
        const auto da = doc_of(*pg, *pg->lexical("default", q, 20));
        const auto db = doc_of(**sq, *(*sq)->lexical("default", q, 20));
        EXPECT_EQ(std::set<std::string>(da.begin(), da.end()), std::set<std::string>(db.begin(), db.end())) << q;
        ASSERT_GE(da.size(), 3u) << q;
        ASSERT_GE(db.size(), 3u) << q;
        int shared = 0;
        for (size_t i = 0; i < 3; ++i) shared += std::count(db.begin(), db.begin() + 3, da[i]) > 0;
        EXPECT_GE(shared, 2) << q << ": postgres " << da[0] << "," << da[1] << "," << da[2] << " sqlite " << db[0] << "," << db[1] << ","
                             << db[2];
    }
    // The exact-term lookup hybrid search uses: a phrase, bounded.
    auto t = pg->term_chunks("default", "\"Rules-Requires-Root\"", 4);
    ASSERT_TRUE(t.ok()) << t.error().what();
    EXPECT_EQ(doc_of(*pg, [&] {
                  std::vector<std::pair<int64_t, double>> v;
                  for (auto id : *t) v.emplace_back(id, 0.0);
                  return v;
              }()),
              std::vector<std::string>{"rrr"});
    // User punctuation is data, never query syntax.
    EXPECT_TRUE(pg->lexical("default", "a & b | !c :* ' \" \\ ()", 5).ok());
}

// A claimer that stops renewing (hung or dead) loses its job when the lease runs out; the
// store that takes it over writes the document, and the old claimer's late writes are refused.
TEST(PostgresStore, ExpiredLeaseIsTakenOverAndFinishedExactlyOnce) {
    KVRAG_REQUIRE_POSTGRES(uri);
    PostgresOptions dead;
    dead.claimer = "dead-replica";
    dead.lease = 1500ms;
    dead.renew_leases = false;
    auto a = open_pg(uri, dead);
    PostgresOptions live;
    live.claimer = "live-replica";
    live.lease = 1500ms;
    auto b = open_pg(uri, live);
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(a->ensure_index("default", kFakeStoreModel).ok());
    auto id = a->enqueue(new_job("doc", "the text"));
    ASSERT_TRUE(id.ok()) << id.error().what();
    auto ja = a->claim_job();
    ASSERT_TRUE(ja.ok() && ja->has_value());
    EXPECT_EQ((*ja)->job_id, *id);
    // Held: nobody else may take it while the lease runs.
    auto early = b->claim_job();
    ASSERT_TRUE(early.ok());
    EXPECT_FALSE(early->has_value());
    std::this_thread::sleep_for(1700ms);
    auto jb = b->claim_job();
    ASSERT_TRUE(jb.ok()) << jb.error().what();
    ASSERT_TRUE(jb->has_value()) << "the expired job was not taken over";
    EXPECT_EQ((*jb)->job_id, *id);
    EXPECT_EQ((*jb)->n_steps_done, 0);  // starts over
    // The old claimer comes back: every write of its is refused.
    EXPECT_FALSE(*a->update_job(*id, 2, 1, 0, 0));
    auto late = a->finish_job(*id, one_chunk_doc("doc", "written by the dead replica"));
    ASSERT_TRUE(late.ok()) << late.error().what();
    EXPECT_FALSE(late->has_value());
    ASSERT_TRUE(a->fail_job(*id, "too late").ok());
    ASSERT_TRUE(a->requeue_job(*id).ok());
    // The live one renews (its watcher) beyond the lease and finishes.
    std::this_thread::sleep_for(1700ms);
    EXPECT_TRUE(*b->update_job(*id, 3, 1, 1, 10));
    auto done = b->finish_job(*id, one_chunk_doc("doc", "written by the live replica"));
    ASSERT_TRUE(done.ok()) << done.error().what();
    ASSERT_TRUE(done->has_value());
    EXPECT_EQ(**done, WriteOutcome::inserted);
    auto docs = b->list_documents();
    ASSERT_EQ(docs->size(), 1u);
    EXPECT_EQ((*docs)[0].state, "ready");
    EXPECT_EQ((*docs)[0].n_chunks, 1);
    EXPECT_EQ(b->lexical("default", "dead", 5)->size(), 0u);
    EXPECT_EQ(b->lexical("default", "live", 5)->size(), 1u);
    EXPECT_TRUE(b->list_jobs()->empty());
    EXPECT_EQ(*b->check_consistency(), "");
}

TEST(PostgresStore, ConcurrentClaimersNeverShareAJob) {
    KVRAG_REQUIRE_POSTGRES(uri);
    auto a = open_pg(uri);
    auto b = open_pg(uri);
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(a->ensure_index("default", kFakeStoreModel).ok());
    constexpr int kJobs = 40;
    for (int i = 0; i < kJobs; ++i) ASSERT_TRUE(a->enqueue(new_job("d" + std::to_string(i), "text")).ok());
    std::mutex mu;
    std::vector<int64_t> claimed;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        Store* st = (t % 2 == 0) ? a.get() : b.get();
        threads.emplace_back([&, st] {
            for (;;) {
                auto j = st->claim_job();
                if (!j.ok() || !j->has_value()) return;
                std::lock_guard lk(mu);
                claimed.push_back((*j)->job_id);
            }
        });
    }
    for (auto& t : threads) t.join();
    std::set<int64_t> unique(claimed.begin(), claimed.end());
    EXPECT_EQ(claimed.size(), static_cast<size_t>(kJobs));
    EXPECT_EQ(unique.size(), static_cast<size_t>(kJobs));
}

// A document written through one store is in another store's vectors within a second, by
// NOTIFY (not a reload on every call); deleted and replaced documents follow the same way.
TEST(PostgresStore, VectorsFollowAnotherReplicaWithinASecond) {
    KVRAG_REQUIRE_POSTGRES(uri);
    auto a = open_pg(uri);
    auto b = open_pg(uri);
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(a->ensure_index("default", kFakeStoreModel).ok());
    ASSERT_TRUE(a->write_document(one_chunk_doc("first", "first text")).ok());
    ASSERT_EQ((*b->vectors("default"))->size(), 1u);
    const auto before = (*b->vectors("default")).get();
    EXPECT_EQ((*b->vectors("default")).get(), before) << "no change: the cached set is reused";

    DocumentInput three = one_chunk_doc("three", "x");
    three.chunks.clear();
    for (int i = 0; i < 3; ++i) three.chunks.push_back(ChunkInput{i, "chunk " + std::to_string(i), 5, {0.0f, 1.0f, 0.0f, float(i)}});
    const auto t0 = Clock::now();
    ASSERT_TRUE(a->write_document(three).ok());
    EXPECT_TRUE(within(1000ms, [&] { return (*b->vectors("default"))->size() == 4u; })) << (*b->vectors("default"))->size();
    EXPECT_LT(Clock::now() - t0, 1000ms);
    EXPECT_GE(as_pg(*b).n_notifications(), 1u);
    // The rows are the written ones, in chunk id order, each with its document.
    auto vs = *b->vectors("default");
    auto direct = *a->vectors("default");
    EXPECT_EQ(vs->chunk_ids, direct->chunk_ids);
    EXPECT_EQ(vs->doc_rowids, direct->doc_rowids);
    EXPECT_EQ(vs->data, direct->data);

    three.chunks.pop_back();
    three.content_hash = "v2";
    ASSERT_TRUE(a->write_document(three).ok());
    EXPECT_TRUE(within(1000ms, [&] { return (*b->vectors("default"))->size() == 3u; }));
    ASSERT_EQ(*a->delete_document("default", "first"), 1);
    EXPECT_TRUE(within(1000ms, [&] { return (*b->vectors("default"))->size() == 2u; }));
    vs = *b->vectors("default");
    direct = *a->vectors("default");
    EXPECT_EQ(vs->chunk_ids, direct->chunk_ids);
    EXPECT_EQ(vs->data, direct->data);
}

// The server goes away: calls fail with a clear error, nothing hangs; when it is back the
// store reconnects by itself and its vectors catch up with what changed meanwhile.
TEST(PostgresStore, ServerRestartFailsCleanlyThenRecovers) {
    KVRAG_REQUIRE_POSTGRES_SERVER(uri, true);  // its own server: others' tests keep theirs
    auto a = open_pg(uri);
    ASSERT_TRUE(a);
    ASSERT_TRUE(a->ensure_index("default", kFakeStoreModel).ok());
    ASSERT_TRUE(a->write_document(one_chunk_doc("one", "one")).ok());
    ASSERT_EQ((*a->vectors("default"))->size(), 1u);
    auto* server = ::kvrag::testing::TestPostgres::get(nullptr, true);
    ASSERT_TRUE(server->pg_ctl("-m fast stop"));
    auto down = a->list_documents();
    ASSERT_FALSE(down.ok());
    EXPECT_EQ(down.error().code, Errc::memory_unavailable);
    EXPECT_NE(down.error().message.find("is the PostgreSQL server running"), std::string::npos) << down.error().message;
    ASSERT_TRUE(server->start_server());
    // Another store writes while a's watcher may still be reconnecting.
    auto b = open_pg(uri);
    ASSERT_TRUE(b);
    ASSERT_TRUE(b->write_document(one_chunk_doc("two", "two")).ok());
    auto docs = a->list_documents();
    ASSERT_TRUE(docs.ok()) << docs.error().what();
    EXPECT_EQ(docs->size(), 2u);
    EXPECT_TRUE(within(3000ms, [&] {
        auto v = a->vectors("default");
        return v.ok() && (*v)->size() == 2u;
    }));
}

}  // namespace
}  // namespace kvrag::memory
