// The scheduler against a real engine on a tiny synthetic model: batching, queue bound,
// KV-wait, cancellation and timeouts, with the cache's invariants checked after each.
#include "server/scheduler.h"

#include <gtest/gtest.h>

#include <thread>

#include "engine/engine_test_util.h"

namespace kvrag::server {
namespace {

using engine::testing::greedy;
using engine::testing::load_synthetic;
using engine::testing::make_engine;

bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return pred();
}

std::shared_ptr<Job> make_job(engine::Engine& e, const std::string& prompt, int32_t max_tokens) {
    auto j = std::make_shared<Job>();
    j->options = greedy(max_tokens);
    j->prompt = e.tokenize(prompt, j->options);
    j->label = prompt;
    return j;
}

TEST(Scheduler, ConcurrentGreedyRequestsEqualSequentialOnes) {
    auto eng = make_engine(load_synthetic("sched"), 1024);
    const std::vector<std::string> prompts = {"Once upon a time", "The cat", "A long way from home, the", "Hi"};
    std::vector<std::vector<int32_t>> want;
    for (const auto& p : prompts) {
        auto r = eng->generate(p, greedy(40));
        ASSERT_TRUE(r.ok()) << r.error().what();
        want.push_back(r->tokens);
    }
    SchedulerConfig cfg;
    cfg.max_running = 4;
    Scheduler s(*eng, cfg);
    std::vector<std::shared_ptr<Job>> jobs;
    for (const auto& p : prompts) {
        jobs.push_back(make_job(*eng, p, 40));
        ASSERT_TRUE(s.submit(jobs.back()).ok());
    }
    for (size_t i = 0; i < jobs.size(); ++i) {
        ASSERT_TRUE(jobs[i]->wait_done(std::chrono::seconds(30)));
        EXPECT_EQ(jobs[i]->end(), JobEnd::finished);
        EXPECT_EQ(jobs[i]->result().tokens, want[i]) << prompts[i];
        EXPECT_GT(jobs[i]->ttft_ms(), 0.0);
    }
    EXPECT_TRUE(wait_for([&] { return s.snapshot().n_running == 0; }));
    EXPECT_EQ(eng->cache().stats().used, 0);
    EXPECT_EQ(eng->cache().check_invariants(), "");
}

TEST(Scheduler, BoundedQueueRefusesAndKvWaitTimesOut) {
    // 128 cells: a request reserving 100 leaves no room for a second one of 100.
    auto eng = make_engine(load_synthetic("sched"), 128);
    SchedulerConfig cfg;
    cfg.max_running = 4;
    cfg.max_queued = 1;
    cfg.queue_timeout_s = 0.2;
    Scheduler s(*eng, cfg);
    auto a = make_job(*eng, "Once upon a time", 100);
    a->keep_pieces = true;
    ASSERT_TRUE(s.submit(a).ok());
    ASSERT_EQ(a->wait_admitted(std::chrono::seconds(5)), JobState::running);
    auto b = make_job(*eng, "The cat sat", 100);
    ASSERT_TRUE(s.submit(b).ok());
    auto c = make_job(*eng, "no room", 4);
    auto refused = s.submit(c);
    if (!a->wait_done(std::chrono::milliseconds(0))) {
        // A still runs: B waits in the queue (KV busy), C finds the queue full.
        ASSERT_FALSE(refused.ok());
        EXPECT_EQ(refused.error().code, Errc::kv_no_space);
        EXPECT_NE(refused.error().message.find("limit 1"), std::string::npos) << refused.error().message;
    }
    a->cancel();
    ASSERT_TRUE(a->wait_done(std::chrono::seconds(5)));
    ASSERT_TRUE(b->wait_done(std::chrono::seconds(5)));
    // B either ran once A left, or timed out first with the cell numbers in the message.
    if (b->end() == JobEnd::queue_timeout) {
        EXPECT_NE(b->error().message.find("cells"), std::string::npos) << b->error().message;
    } else {
        EXPECT_EQ(b->end(), JobEnd::finished);
    }
    EXPECT_TRUE(wait_for([&] { return s.snapshot().n_running == 0 && eng->cache().stats().used == 0; }));
    EXPECT_EQ(eng->cache().check_invariants(), "");
}

TEST(Scheduler, CancelFreesCellsAndTooLongIsRefusedWithNumbers) {
    auto eng = make_engine(load_synthetic("sched"), 256);
    SchedulerConfig cfg;
    Scheduler s(*eng, cfg);
    auto big = make_job(*eng, "Once upon a time", 300);
    ASSERT_TRUE(s.submit(big).ok());
    ASSERT_TRUE(big->wait_done(std::chrono::seconds(5)));
    EXPECT_EQ(big->end(), JobEnd::too_long);
    EXPECT_NE(big->error().message.find("max_tokens 300"), std::string::npos) << big->error().message;

    auto run = make_job(*eng, "Once upon a time", 240);
    run->keep_pieces = true;
    ASSERT_TRUE(s.submit(run).ok());
    ASSERT_TRUE(wait_for([&] { return run->n_generated() >= 2 || run->state() == JobState::done; }));
    run->cancel();
    ASSERT_TRUE(run->wait_done(std::chrono::seconds(5)));
    if (run->result().tokens.size() < 240u) {
        EXPECT_EQ(run->end(), JobEnd::cancelled);
    }
    EXPECT_TRUE(wait_for([&] { return eng->cache().stats().used == 0 && eng->cache().stats().reserved == 0; }));
    EXPECT_EQ(eng->cache().check_invariants(), "");

    // The blocking helper used by extensions.
    auto r = s.run(eng->tokenize("Hello", greedy(5)), greedy(5));
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r->tokens.size(), 5u);
    auto dead = s.run(eng->tokenize("Hello", greedy(200)), greedy(200), [] { return false; });
    EXPECT_FALSE(dead.ok());
}

TEST(Scheduler, RequestTimeoutAndDrain) {
    auto eng = make_engine(load_synthetic("sched"), 2048);
    SchedulerConfig cfg;
    cfg.request_timeout_s = 0.05;
    Scheduler s(*eng, cfg);
    auto j = make_job(*eng, "Once upon a time", 2000);
    ASSERT_TRUE(s.submit(j).ok());
    ASSERT_TRUE(j->wait_done(std::chrono::seconds(10)));
    if (j->result().tokens.size() < 2000u) {
        EXPECT_EQ(j->end(), JobEnd::timed_out);
        EXPECT_NE(j->error().message.find("timed out after 0.05 s"), std::string::npos) << j->error().message;
    }
    s.drain(std::chrono::milliseconds(100));
    auto late = make_job(*eng, "late", 2);
    EXPECT_FALSE(s.submit(late).ok());
    s.stop();
    EXPECT_EQ(eng->cache().stats().used, 0);
    EXPECT_EQ(eng->cache().check_invariants(), "");
}

}  // namespace
}  // namespace kvrag::server
