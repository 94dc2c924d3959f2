// The PostgreSQL store when its server goes away and comes back (issue 18, point 4), and its
// connection pool (point 2), on throwaway servers (tests/test_postgres.h):
//   - a store idle across a restart answers its very first call after it (the pooled
//     connections see the server's goodbye and reconnect before sending a statement);
//   - errors while the server is down are E6007 memory_unavailable (HTTP 503 + Retry-After);
//   - a job whose worker gave up while the server was down is not renewed by the watcher:
//     its lease runs out, another store takes it over, and the document is written once;
//   - a job failed by an outage goes back to the queue; one failed by its content does not;
//   - the pool lends each connection to one caller at a time, opens up to its size, and a
//     caller that finds it busy too long gets a clear error.
// The single-store restart and the vector catch-up are in postgres_store_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "memory/pg_db.h"
#include "memory/postgres_store.h"
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

// Idle across a restart: nothing was called while the server was down, and the first calls
// after it (on pooled connections the server closed) succeed.
TEST(PostgresOutage, FirstCallAfterARestartSucceeds) {
    KVRAG_REQUIRE_POSTGRES_SERVER(uri, true);
    PostgresOptions opt;
    opt.n_connections = 2;
    auto a = open_pg(uri, opt);
    ASSERT_TRUE(a);
    ASSERT_TRUE(a->ensure_index("default", kFakeStoreModel).ok());
    ASSERT_TRUE(a->write_document(one_chunk_doc("one", "first words")).ok());
    ASSERT_EQ((*a->vectors("default"))->size(), 1u);
    auto* server = ::kvrag::testing::TestPostgres::get(nullptr, true);
    ASSERT_TRUE(server->pg_ctl("-m fast stop"));
    ASSERT_TRUE(server->start_server());
    auto docs = a->list_documents();
    ASSERT_TRUE(docs.ok()) << "the first call after the restart failed: " << docs.error().what();
    EXPECT_EQ(docs->size(), 1u);
    auto lex = a->lexical("default", "first", 5);
    ASSERT_TRUE(lex.ok()) << lex.error().what();
    EXPECT_EQ(lex->size(), 1u);
    // The watcher listens again (it reconnects by itself) and a write reaches the vectors.
    EXPECT_TRUE(within(5000ms, [&] { return as_pg(*a).listening(); }));
    ASSERT_TRUE(a->write_document(one_chunk_doc("two", "second words")).ok());
    EXPECT_TRUE(within(3000ms, [&] {
        auto v = a->vectors("default");
        return v.ok() && (*v)->size() == 2u;
    }));
}

// While the server is down every call fails at once with E6007 (no hang), whichever the path:
// a query, a transaction, the vector reload.
TEST(PostgresOutage, CallsWhileDownAreUnavailableErrors) {
    KVRAG_REQUIRE_POSTGRES_SERVER(uri, true);
    auto a = open_pg(uri);
    ASSERT_TRUE(a);
    ASSERT_TRUE(a->ensure_index("default", kFakeStoreModel).ok());
    ASSERT_TRUE(a->write_document(one_chunk_doc("one", "words")).ok());
    auto* server = ::kvrag::testing::TestPostgres::get(nullptr, true);
    ASSERT_TRUE(server->pg_ctl("-m fast stop"));
    // Wait until the watcher has seen it: vectors() then reloads, and must fail too.
    EXPECT_TRUE(within(3000ms, [&] { return !as_pg(*a).listening(); }));
    const auto t0 = Clock::now();
    auto list = a->list_documents();
    auto write = a->write_document(one_chunk_doc("two", "more"));
    auto vecs = a->vectors("default");
    auto lex = a->lexical("default", "words", 5);
    auto enq = a->enqueue(new_job("three", "the text of three"));
    EXPECT_LT(Clock::now() - t0, 5000ms) << "calls against a stopped server must fail fast";
    for (const Error* e : {list.ok() ? nullptr : &list.error(), write.ok() ? nullptr : &write.error(),
                           vecs.ok() ? nullptr : &vecs.error(), lex.ok() ? nullptr : &lex.error(), enq.ok() ? nullptr : &enq.error()}) {
        ASSERT_NE(e, nullptr) << "a call succeeded while the server was stopped";
        EXPECT_EQ(e->code, Errc::memory_unavailable) << e->what();
        EXPECT_NE(e->message.find("is the PostgreSQL server running"), std::string::npos) << e->message;
    }
    ASSERT_TRUE(server->start_server());
    auto docs = a->list_documents();
    ASSERT_TRUE(docs.ok()) << docs.error().what();
    ASSERT_EQ(docs->size(), 1u) << "the write and the enqueue that failed left nothing behind";
    EXPECT_EQ(*a->check_consistency(), "");
}

// A worker that gave up its job while the server was down (finish_job and fail_job both
// failed) leaves it to run out of lease: the watcher does not renew it after the restart, a
// live store takes it over and writes the document exactly once.
TEST(PostgresOutage, JobGivenUpWhileDownIsTakenOverExactlyOnce) {
    KVRAG_REQUIRE_POSTGRES_SERVER(uri, true);
    PostgresOptions ao;
    ao.claimer = "replica-a";
    ao.lease = 600ms;
    PostgresOptions bo;
    bo.claimer = "replica-b";
    bo.lease = 600ms;
    auto a = open_pg(uri, ao);
    auto b = open_pg(uri, bo);
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(a->ensure_index("default", kFakeStoreModel).ok());
    auto id = a->enqueue(new_job("doc", "the text of doc"));
    ASSERT_TRUE(id.ok()) << id.error().what();
    auto ja = a->claim_job();
    ASSERT_TRUE(ja.ok() && ja->has_value());
    EXPECT_EQ(as_pg(*a).held_jobs(), std::vector<int64_t>{*id});

    auto* server = ::kvrag::testing::TestPostgres::get(nullptr, true);
    ASSERT_TRUE(server->pg_ctl("-m fast stop"));
    auto fin = a->finish_job(*id, one_chunk_doc("doc", "written by a"));
    ASSERT_FALSE(fin.ok());
    EXPECT_EQ(fin.error().code, Errc::memory_unavailable) << fin.error().what();
    EXPECT_FALSE(a->fail_job(*id, fin.error().what()).ok());
    EXPECT_TRUE(as_pg(*a).held_jobs().empty()) << "a job given up must not be renewed";
    ASSERT_TRUE(server->start_server());

    // Taken over once the lease (600 ms) ran out: a's watcher, renewing every 200 ms, would
    // otherwise keep it forever.
    std::optional<IngestJob> jb;
    EXPECT_TRUE(within(5000ms, [&] {
        auto j = b->claim_job();
        if (j.ok() && j->has_value()) jb = **j;
        return jb.has_value();
    })) << "the abandoned job was never taken over";
    ASSERT_TRUE(jb.has_value());
    EXPECT_EQ(jb->job_id, *id);
    auto done = b->finish_job(*id, one_chunk_doc("doc", "written by b"));
    ASSERT_TRUE(done.ok()) << done.error().what();
    ASSERT_TRUE(done->has_value());
    auto late = a->finish_job(*id, one_chunk_doc("doc", "written by a"));
    ASSERT_TRUE(late.ok()) << late.error().what();
    EXPECT_FALSE(late->has_value()) << "a's late result must be refused";
    auto docs = b->list_documents();
    ASSERT_TRUE(docs.ok());
    ASSERT_EQ(docs->size(), 1u);
    EXPECT_EQ((*docs)[0].state, "ready");
    EXPECT_EQ(b->lexical("default", "written", 5)->size(), 1u);
    EXPECT_EQ(b->lexical("default", "b", 5)->size(), 1u);
    EXPECT_TRUE(b->list_jobs()->empty());
    EXPECT_EQ(*b->check_consistency(), "");
}

// fail_job with an E6007 error (the store was unreachable mid-job) requeues: the document is
// not 'failed' and the job runs again. Any other error fails the document as before.
TEST(PostgresOutage, JobFailedByAnOutageGoesBackToTheQueue) {
    KVRAG_REQUIRE_POSTGRES(uri);
    auto a = open_pg(uri);
    ASSERT_TRUE(a);
    ASSERT_TRUE(a->ensure_index("default", kFakeStoreModel).ok());
    auto id = a->enqueue(new_job("doc", "the text of doc"));
    ASSERT_TRUE(id.ok());
    ASSERT_TRUE(a->claim_job()->has_value());
    const Error outage{Errc::memory_unavailable, "lost the connection to postgresql://x: server closed the connection"};
    ASSERT_TRUE(a->fail_job(*id, outage.what()).ok());
    auto job = a->find_job("default", "doc");
    ASSERT_TRUE(job.ok() && job->has_value()) << "the job must stay queued";
    EXPECT_EQ((*job)->state, "queued");
    EXPECT_TRUE(as_pg(*a).held_jobs().empty());
    auto doc = a->get_document("default", "doc");
    ASSERT_TRUE(doc.ok() && doc->has_value());
    EXPECT_EQ((*doc)->state, "ingesting");

    auto again = a->claim_job();
    ASSERT_TRUE(again.ok() && again->has_value());
    EXPECT_EQ((*again)->job_id, *id);
    ASSERT_TRUE(a->fail_job(*id, Error{Errc::memory_extract, "no text in doc.txt"}.what()).ok());
    doc = a->get_document("default", "doc");
    ASSERT_TRUE(doc.ok() && doc->has_value());
    EXPECT_EQ((*doc)->state, "failed");
    EXPECT_TRUE(a->list_jobs()->empty());
}

// Each connection goes to one caller at a time; the pool opens up to its size on demand and
// a caller that waits past the limit gets E6007 with the numbers.
TEST(PostgresPool, LendsEachConnectionToOneCallerAndBoundsTheWait) {
    KVRAG_REQUIRE_POSTGRES(uri);
    auto pool = pg::Pool::open(uri, 3, 300ms);
    ASSERT_TRUE(pool.ok()) << pool.error().what();
    EXPECT_EQ((*pool)->n_open(), 1);
    std::vector<pg::Pool::Lease> held;
    std::set<std::string> backends;
    for (int i = 0; i < 3; ++i) {
        auto l = (*pool)->acquire();
        ASSERT_TRUE(l.ok()) << l.error().what();
        held.push_back(std::move(*l));
        auto pid = (*held.back()).exec("SELECT pg_backend_pid()");
        ASSERT_TRUE(pid.ok()) << pid.error().what();
        backends.insert(pid->text(0, 0));
    }
    EXPECT_EQ(backends.size(), 3u) << "three callers must hold three connections";
    EXPECT_EQ((*pool)->n_open(), 3);
    const auto t0 = Clock::now();
    auto busy = (*pool)->acquire();
    ASSERT_FALSE(busy.ok());
    EXPECT_GE(Clock::now() - t0, 250ms);
    EXPECT_EQ(busy.error().code, Errc::memory_unavailable);
    EXPECT_NE(busy.error().message.find("all 3 connections"), std::string::npos) << busy.error().message;
    // One given back: a waiting caller gets it (no new connection).
    std::thread giver([&] {
        std::this_thread::sleep_for(50ms);
        held.pop_back();
    });
    auto waited = (*pool)->acquire();
    giver.join();
    ASSERT_TRUE(waited.ok()) << waited.error().what();
    EXPECT_EQ((*pool)->n_open(), 3);
    EXPECT_FALSE(pg::Pool::open(uri, 0).ok());
}

// Concurrent searches through one store: every answer right, never more connections than the
// pool's size. (That they overlap is the pool's test above; the speed-up is in docs/scale.md.)
TEST(PostgresPool, ConcurrentStoreCallsShareThePool) {
    KVRAG_REQUIRE_POSTGRES(uri);
    PostgresOptions opt;
    opt.n_connections = 3;
    auto a = open_pg(uri, opt);
    ASSERT_TRUE(a);
    ASSERT_TRUE(a->ensure_index("default", kFakeStoreModel).ok());
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(a->write_document(one_chunk_doc("d" + std::to_string(i), "word" + std::to_string(i) + " common")).ok());
    std::atomic<int> n_wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            for (int k = 0; k < 15; ++k) {
                const int i = (t + k) % 10;
                auto lex = a->lexical("default", "word" + std::to_string(i), 5);
                auto rows = lex.ok() && lex->size() == 1 ? a->chunks({(*lex)[0].first}) : Result<std::vector<ChunkRow>>(Error{});
                if (!rows.ok() || rows->size() != 1 || (*rows)[0].doc_id != "d" + std::to_string(i)) ++n_wrong;
                auto vs = a->vectors("default");
                if (!vs.ok() || (*vs)->size() != 10u) ++n_wrong;
            }
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(n_wrong.load(), 0);
    EXPECT_GE(as_pg(*a).n_connections_open(), 1);
    EXPECT_LE(as_pg(*a).n_connections_open(), 3);
    PostgresOptions bad;
    bad.n_connections = 0;
    auto refused = PostgresStore::open(uri, OpenMode::create, bad);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code, Errc::memory_bad_input);
    EXPECT_NE(refused.error().message.find("1..64"), std::string::npos) << refused.error().message;

    // The pool's size in the URI (kvrag_pool=N), taken out before libpq reads it.
    auto sized = open_pg(uri + "&kvrag_pool=1");
    ASSERT_TRUE(sized);
    std::vector<std::thread> more;
    for (int t = 0; t < 4; ++t) more.emplace_back([&] { EXPECT_TRUE(sized->lexical("default", "common", 5).ok()); });
    for (auto& th : more) th.join();
    EXPECT_EQ(as_pg(*sized).n_connections_open(), 1);
    for (const char* v : {"0", "65", "x", ""}) {
        auto r = PostgresStore::open(uri + "&kvrag_pool=" + v, OpenMode::create);
        ASSERT_FALSE(r.ok()) << v;
        EXPECT_EQ(r.error().code, Errc::memory_bad_input);
        EXPECT_NE(r.error().message.find("kvrag_pool='" + std::string(v) + "' is not a number of connections in 1..64"), std::string::npos)
            << r.error().message;
    }
}

TEST(PostgresPool, UriOptionsAreTakenOutOfTheUri) {
    struct Case {
        const char* uri;
        const char* value;  // nullptr: absent
        const char* rest;
    };
    const Case cases[] = {
        {"postgresql://h/db", nullptr, "postgresql://h/db"},
        {"postgresql://h/db?kvrag_pool=8", "8", "postgresql://h/db"},
        {"postgresql://h/db?sslmode=require&kvrag_pool=2", "2", "postgresql://h/db?sslmode=require"},
        {"postgresql://h/db?kvrag_pool=3&sslmode=require&port=5", "3", "postgresql://h/db?sslmode=require&port=5"},
        {"postgresql://h/db?x_kvrag_pool=3", nullptr, "postgresql://h/db?x_kvrag_pool=3"},
    };
    for (const auto& c : cases) {
        std::string uri = c.uri;
        auto v = pg::take_uri_option(uri, "kvrag_pool");
        EXPECT_EQ(v.has_value(), c.value != nullptr) << c.uri;
        if (v && c.value) {
            EXPECT_EQ(*v, c.value) << c.uri;
        }
        EXPECT_EQ(uri, c.rest) << c.uri;
    }
}

}  // namespace
}  // namespace kvrag::memory
