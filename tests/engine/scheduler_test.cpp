// The scheduler's policy as deterministic step tables: SchedulerCore driven by hand with an
// injected clock against a real engine on a tiny synthetic model (no threads, no sleeps, so
// every assertion holds on every run), then the thread driver end to end.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include "engine/engine_test_util.h"
#include "engine/scheduler_core.h"
#include "sampling/grammar.h"

namespace kvrag::engine {
namespace {

using testing::greedy;
using testing::load_synthetic;
using testing::make_engine;
using std::chrono::milliseconds;

std::shared_ptr<Job> make_job(Engine& e, const std::string& prompt, int32_t max_tokens, bool pieces = false) {
    auto j = std::make_shared<Job>();
    j->options = greedy(max_tokens);
    j->prompt = e.tokenize(prompt, j->options);
    j->label = prompt;
    j->keep_pieces = pieces;
    return j;
}

std::shared_ptr<Job> make_embed_job(Engine& e, const std::string& text) {
    auto j = std::make_shared<Job>();
    j->kind = JobKind::embed;
    j->prompt = e.tokenize(text, GenerateOptions{});
    j->label = "embed:" + text;
    return j;
}

// Drives a SchedulerCore by hand: each iterate() is one plan/execute/complete at time now(),
// after which the ended jobs are published (Job::mark_done), as the driver does.
class Steps {
public:
    Steps(Engine& e, SchedulerConfig cfg) : engine_(e), core_(e, cfg) {}
    SchedulerCore& core() { return core_; }
    Clock::time_point now() const { return t_; }
    void advance(milliseconds d) { t_ += d; }
    Result<void> submit(const std::shared_ptr<Job>& j) { return core_.submit(j, t_); }
    // One iteration; returns how many requests were stepped.
    size_t iterate() {
        StepPlan plan = core_.plan(t_);
        const size_t n = plan.step.size();
        core_.execute(plan);
        core_.complete(plan, t_);
        for (auto& j : core_.take_ended()) j->mark_done();
        EXPECT_EQ(engine_.cache().check_invariants(), "");
        return n;
    }
    void run_until_idle(int limit = 10000) {
        for (int i = 0; i < limit && !core_.idle(); ++i) iterate();
        ASSERT_TRUE(core_.idle());
    }
    SchedulerSnapshot snap() const { return core_.snapshot(t_); }

private:
    Engine& engine_;
    SchedulerCore core_;
    Clock::time_point t_ = Clock::time_point{} + std::chrono::hours(1);
};

TEST(SchedulerCore, BatchedGreedyRequestsEqualSequentialOnes) {
    auto eng = make_engine(load_synthetic("sched"), 1024);
    const std::vector<std::string> prompts = {"Once upon a time", "The cat", "A long way from home, the", "Hi", "Five"};
    std::vector<std::vector<int32_t>> want;
    for (const auto& p : prompts) {
        auto r = eng->generate(p, greedy(24));
        ASSERT_TRUE(r.ok()) << r.error().what();
        want.push_back(r->tokens);
    }
    SchedulerConfig cfg;
    cfg.max_running = 3;
    Steps s(*eng, cfg);
    std::vector<std::shared_ptr<Job>> jobs;
    for (const auto& p : prompts) {
        jobs.push_back(make_job(*eng, p, 24));
        ASSERT_TRUE(s.submit(jobs.back()).ok());
    }
    // Step 1: three admitted in FIFO order (max_running), two wait.
    EXPECT_EQ(s.iterate(), 3u);
    auto snap = s.snap();
    EXPECT_EQ(snap.n_running, 3);
    EXPECT_EQ(snap.n_queued, 2);
    EXPECT_EQ(jobs[0]->state(), JobState::running);
    EXPECT_EQ(jobs[3]->state(), JobState::queued);
    ASSERT_EQ(snap.entries.size(), 5u);
    EXPECT_EQ(snap.entries[3].state, "queued");
    EXPECT_EQ(snap.entries[3].label, "Hi");
    s.run_until_idle();
    for (size_t i = 0; i < jobs.size(); ++i) {
        ASSERT_EQ(jobs[i]->state(), JobState::done);
        EXPECT_EQ(jobs[i]->error().code, Errc::ok) << jobs[i]->error().what();
        EXPECT_EQ(jobs[i]->result().tokens, want[i]) << prompts[i];
    }
    EXPECT_EQ(s.snap().ends[job_outcome(Errc::ok)], 5u);
    EXPECT_EQ(eng->cache().stats().used, 0);
}

// A streaming job's pieces know which logprobs are theirs, however many steps ran between two
// take()s: a character held back over several byte tokens comes out with all of their
// entries (Job::Update::logprobs_end), so a stream sends each token's logprob with its text.
TEST(SchedulerCore, StreamedPiecesCarryTheirTokensLogprobs) {
    auto eng = make_engine(load_synthetic("sched"), 1024);
    auto j = make_job(*eng, "Once upon a time", 20, /*pieces=*/true);
    j->options.n_logprobs = 0;
    // The built-in vocabulary has no token for these characters: each is three byte tokens.
    auto g = sampling::Grammar::parse(R"(root ::= "带带a带")");
    ASSERT_TRUE(g) << g.error().what();
    j->options.grammar = *g;
    Steps s(*eng, SchedulerConfig{});
    ASSERT_TRUE(s.submit(j).ok());
    s.run_until_idle();
    ASSERT_EQ(j->error().code, Errc::ok) << j->error().what();
    const auto u = j->take(milliseconds(0));
    ASSERT_EQ(u.pieces, (std::vector<std::string>{"带", "带", "a", "带"}));
    ASSERT_EQ(u.logprobs_end.size(), u.pieces.size());
    const auto& tok = *eng->model().tokenizer;
    size_t at = 0;
    for (size_t i = 0; i < u.pieces.size(); ++i) {
        std::string text;
        for (; at < u.logprobs_end[i]; ++at) text += tok.token_to_piece(u.logprobs[at].token.id);
        EXPECT_EQ(text, u.pieces[i]) << "piece " << i;
    }
    EXPECT_EQ(at, u.logprobs.size());
    EXPECT_EQ(u.logprobs.size(), j->result().tokens.size());
}

TEST(SchedulerCore, FullQueueIsRefusedWithTheNumbers) {
    auto eng = make_engine(load_synthetic("sched"), 256);
    SchedulerConfig cfg;
    cfg.max_queued = 2;
    Steps s(*eng, cfg);
    ASSERT_TRUE(s.submit(make_job(*eng, "a", 4)).ok());
    ASSERT_TRUE(s.submit(make_job(*eng, "b", 4)).ok());
    auto refused = s.submit(make_job(*eng, "c", 4));
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code, Errc::request_queue_full);
    EXPECT_NE(refused.error().message.find("2 requests are already queued (limit 2)"), std::string::npos) << refused.error().message;
    EXPECT_EQ(s.snap().n_refused_full, 1u);
    s.run_until_idle();
    EXPECT_EQ(s.snap().ends[job_outcome(Errc::ok)], 2u);
}

TEST(SchedulerCore, HeadOfLineWaitsForRoomThenTimesOutWithCellNumbers) {
    // 128 cells: A reserves 100, so B (100) waits at the head and C (small) behind it must not
    // overtake; after the queue timeout B ends with the cell numbers, then C runs.
    auto eng = make_engine(load_synthetic("sched"), 128);
    SchedulerConfig cfg;
    cfg.queue_timeout_s = 0.2;
    Steps s(*eng, cfg);
    auto a = make_job(*eng, "Once upon a time", 100);
    auto b = make_job(*eng, "The cat sat", 100);
    auto c = make_job(*eng, "Hi", 2);
    for (auto& j : {a, b, c}) ASSERT_TRUE(s.submit(j).ok());
    EXPECT_EQ(s.iterate(), 1u);
    EXPECT_EQ(a->state(), JobState::running);
    EXPECT_EQ(b->state(), JobState::queued);
    EXPECT_EQ(c->state(), JobState::queued);
    EXPECT_TRUE(s.core().head_blocked());
    s.advance(milliseconds(199));
    s.iterate();
    EXPECT_EQ(b->state(), JobState::queued);
    EXPECT_EQ(c->state(), JobState::queued);
    s.advance(milliseconds(1));
    s.iterate();
    ASSERT_EQ(b->state(), JobState::done);
    EXPECT_EQ(b->error().code, Errc::request_queue_timeout);
    EXPECT_NE(b->error().message.find("queue timeout of 0.2 s"), std::string::npos) << b->error().message;
    EXPECT_NE(b->error().message.find("cells"), std::string::npos) << b->error().message;
    // C timed out as well (it waited as long), not admitted past B.
    EXPECT_EQ(c->error().code, Errc::request_queue_timeout);
    EXPECT_EQ(eng->cache().stats().rejections[static_cast<int>(kvcache::RejectReason::timeout)], 2u);
    s.run_until_idle();
    EXPECT_EQ(a->error().code, Errc::ok);
    EXPECT_EQ(s.snap().ends[job_outcome(Errc::request_queue_timeout)], 2u);
}

TEST(SchedulerCore, WaitingRequestIsAdmittedInTheStepAfterRoomFrees) {
    auto eng = make_engine(load_synthetic("sched"), 128);
    Steps s(*eng, SchedulerConfig{});
    auto a = make_job(*eng, "Once upon a time", 100);
    auto b = make_job(*eng, "The cat sat", 100);
    ASSERT_TRUE(s.submit(a).ok());
    ASSERT_TRUE(s.submit(b).ok());
    s.iterate();
    a->cancel();
    s.iterate();  // A is cancelled in this step, its cells freed; B still waits (planned before)
    EXPECT_EQ(a->error().code, Errc::request_cancelled);
    EXPECT_EQ(eng->cache().stats().used, 0);
    EXPECT_EQ(b->state(), JobState::queued);
    s.iterate();
    EXPECT_EQ(b->state(), JobState::running);
    s.run_until_idle();
    EXPECT_EQ(b->error().code, Errc::ok);
}

TEST(SchedulerCore, TooLongEndsAtOnceAndInvalidDoesNotBlockTheQueue) {
    auto eng = make_engine(load_synthetic("sched"), 256);
    Steps s(*eng, SchedulerConfig{});
    auto big = make_job(*eng, "Once upon a time", 300);
    auto bad = make_job(*eng, "x", 4);
    bad->prompt.clear();  // the engine refuses an empty prompt
    auto ok = make_job(*eng, "fine", 3);
    for (auto& j : {big, bad, ok}) ASSERT_TRUE(s.submit(j).ok());
    EXPECT_EQ(s.iterate(), 1u);
    EXPECT_EQ(big->error().code, Errc::request_too_long);
    EXPECT_NE(big->error().message.find("max_tokens 300"), std::string::npos) << big->error().message;
    EXPECT_EQ(bad->error().code, Errc::request_invalid);
    EXPECT_EQ(ok->state(), JobState::running);
    s.run_until_idle();
    const auto snap = s.snap();
    EXPECT_EQ(snap.ends[job_outcome(Errc::request_too_long)], 1u);
    EXPECT_EQ(snap.ends[job_outcome(Errc::request_invalid)], 1u);
    EXPECT_EQ(snap.ends[job_outcome(Errc::ok)], 1u);
}

TEST(SchedulerCore, CancelQueuedAndRunningFreesCellsInOneStep) {
    auto eng = make_engine(load_synthetic("sched"), 512);
    SchedulerConfig cfg;
    cfg.max_running = 1;
    Steps s(*eng, cfg);
    auto run = make_job(*eng, "Once upon a time", 200, /*pieces=*/true);
    auto queued = make_job(*eng, "The cat", 200);
    ASSERT_TRUE(s.submit(run).ok());
    ASSERT_TRUE(s.submit(queued).ok());
    for (int i = 0; i < 4; ++i) s.iterate();
    EXPECT_GT(run->n_generated(), 0);
    EXPECT_GT(eng->cache().stats().used, 0);
    run->cancel();
    queued->cancel();
    s.iterate();
    EXPECT_EQ(run->error().code, Errc::request_cancelled);
    EXPECT_EQ(queued->error().code, Errc::request_cancelled);
    EXPECT_EQ(queued->error().message, "the client disconnected while queued");
    EXPECT_GT(run->result().tokens.size(), 0u);  // what it had produced stays readable
    EXPECT_EQ(eng->cache().stats().used, 0);
    EXPECT_EQ(eng->cache().stats().reserved, 0);
    EXPECT_TRUE(s.core().idle());
}

TEST(SchedulerCore, RequestTimeoutCountsFromSubmitForQueuedAndRunning) {
    auto eng = make_engine(load_synthetic("sched"), 512);
    SchedulerConfig cfg;
    cfg.max_running = 1;
    cfg.request_timeout_s = 0.05;
    Steps s(*eng, cfg);
    auto a = make_job(*eng, "Once upon a time", 400);
    auto b = make_job(*eng, "The cat", 4);
    ASSERT_TRUE(s.submit(a).ok());
    ASSERT_TRUE(s.submit(b).ok());
    s.iterate();
    s.iterate();
    s.advance(milliseconds(50));
    s.iterate();
    EXPECT_EQ(a->error().code, Errc::request_timed_out);
    EXPECT_NE(a->error().message.find("timed out after 0.05 s (--timeout) with"), std::string::npos) << a->error().message;
    EXPECT_EQ(b->error().code, Errc::request_timed_out);
    EXPECT_NE(b->error().message.find("while waiting for KV cells"), std::string::npos) << b->error().message;
    EXPECT_EQ(eng->cache().stats().used, 0);
    EXPECT_EQ(s.snap().ends[job_outcome(Errc::request_timed_out)], 2u);
}

TEST(SchedulerCore, DrainRefusesNewWorkEndsQueuedAndCancelsRunningAfterGrace) {
    auto eng = make_engine(load_synthetic("sched"), 512);
    SchedulerConfig cfg;
    cfg.max_running = 1;
    Steps s(*eng, cfg);
    auto run = make_job(*eng, "Once upon a time", 400);
    auto queued = make_job(*eng, "The cat", 4);
    ASSERT_TRUE(s.submit(run).ok());
    ASSERT_TRUE(s.submit(queued).ok());
    s.iterate();
    s.core().drain(s.now() + milliseconds(100));
    auto late = s.submit(make_job(*eng, "late", 2));
    ASSERT_FALSE(late.ok());
    EXPECT_EQ(late.error().code, Errc::server_shutting_down);
    s.iterate();
    EXPECT_EQ(queued->error().code, Errc::server_shutting_down);
    EXPECT_EQ(run->state(), JobState::running);  // within the grace period it keeps running
    s.advance(milliseconds(100));
    s.iterate();
    EXPECT_EQ(run->error().code, Errc::server_shutting_down);
    EXPECT_NE(run->error().message.find("cancelled after"), std::string::npos) << run->error().message;
    EXPECT_TRUE(s.core().idle());
    EXPECT_EQ(eng->cache().stats().used, 0);
}

TEST(SchedulerCore, EmbeddingsGoThroughTheQueueInOrder) {
    auto eng = make_engine(load_synthetic("sched"), 128);
    Steps s(*eng, SchedulerConfig{});
    auto direct = eng->embed_tokens(eng->tokenize("a red apple", GenerateOptions{}), Pooling::mean);
    ASSERT_TRUE(direct.ok());
    // A generation holds all but one cell: the embedding behind it waits (head of line).
    auto gen = make_job(*eng, "Once upon a time", 1);
    gen->options.max_tokens = 128 - static_cast<int32_t>(gen->prompt.size()) - 1;
    auto emb = make_embed_job(*eng, "a red apple");
    ASSERT_TRUE(s.submit(gen).ok());
    s.iterate();
    ASSERT_TRUE(s.submit(emb).ok());
    s.iterate();
    EXPECT_EQ(emb->state(), JobState::queued);
    EXPECT_TRUE(s.core().head_blocked());
    EXPECT_EQ(s.snap().entries.back().state, "queued");
    gen->cancel();
    s.iterate();  // frees the cells
    s.iterate();  // the embedding runs
    ASSERT_EQ(emb->state(), JobState::done);
    ASSERT_EQ(emb->error().code, Errc::ok) << emb->error().what();
    EXPECT_EQ(emb->embedding(), *direct);  // bit-identical to the engine's direct path
    EXPECT_EQ(eng->cache().stats().used, 0);
}

TEST(SchedulerCore, EmbeddingThatCanNeverFitEndsWithTheNumbers) {
    auto eng = make_engine(load_synthetic("sched"), 16);
    Steps s(*eng, SchedulerConfig{});
    auto emb = std::make_shared<Job>();
    emb->kind = JobKind::embed;
    emb->prompt.assign(40, 5);
    ASSERT_TRUE(s.submit(emb).ok());
    s.iterate();
    EXPECT_EQ(emb->error().code, Errc::request_too_long);
    EXPECT_NE(emb->error().message.find("40 tokens"), std::string::npos) << emb->error().message;
}

// ---- the thread driver ----

TEST(Scheduler, DriverRunsGenerationsAndEmbeddingsConcurrently) {
    auto eng = make_engine(load_synthetic("sched"), 1024);
    auto want = eng->generate("Once upon a time", greedy(20));
    ASSERT_TRUE(want.ok());
    auto want_vec = eng->embed_tokens(eng->tokenize("hello", GenerateOptions{}), Pooling::mean);
    ASSERT_TRUE(want_vec.ok());
    Scheduler s(*eng, SchedulerConfig{});
    std::vector<std::shared_ptr<Job>> jobs;
    for (int i = 0; i < 3; ++i) {
        jobs.push_back(make_job(*eng, "Once upon a time", 20, true));
        ASSERT_TRUE(s.submit(jobs.back()).ok());
    }
    auto v = s.embed(eng->tokenize("hello", GenerateOptions{}), Pooling::mean);
    ASSERT_TRUE(v.ok()) << v.error().what();
    EXPECT_EQ(*v, *want_vec);
    for (auto& j : jobs) {
        ASSERT_TRUE(j->wait_done(std::chrono::seconds(30)));
        EXPECT_EQ(j->error().code, Errc::ok);
        EXPECT_EQ(j->result().tokens, want->tokens);
        EXPECT_GT(j->ttft_ms(), 0.0);
    }
    auto r = s.run(eng->tokenize("Hello", greedy(5)), greedy(5));
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r->tokens.size(), 5u);
    // A client that is gone: cancelled, and the blocking helper returns the cancellation.
    auto dead = s.run(eng->tokenize("Hello", greedy(200)), greedy(200), [] { return false; });
    ASSERT_FALSE(dead.ok());
    EXPECT_EQ(dead.error().code, Errc::request_cancelled);
    s.drain(milliseconds(100));
    const auto snap = s.snapshot();  // published before the waiters were woken
    EXPECT_EQ(snap.n_running, 0);
    EXPECT_EQ(snap.ends[job_outcome(Errc::ok)], 5u);
    EXPECT_FALSE(s.submit(make_job(*eng, "late", 2)).ok());
    s.stop();
    EXPECT_EQ(eng->cache().stats().used, 0);
    EXPECT_EQ(eng->cache().check_invariants(), "");
}

TEST(Scheduler, StopEndsRunningAndQueuedJobs) {
    auto eng = make_engine(load_synthetic("sched"), 2048);
    SchedulerConfig cfg;
    cfg.max_running = 1;
    auto s = std::make_unique<Scheduler>(*eng, cfg);
    auto a = make_job(*eng, "Once upon a time", 1500);
    auto b = make_job(*eng, "The cat", 1500);
    ASSERT_TRUE(s->submit(a).ok());
    ASSERT_TRUE(s->submit(b).ok());
    ASSERT_EQ(a->wait_admitted(std::chrono::seconds(5)), JobState::running);
    s->stop();
    ASSERT_EQ(a->state(), JobState::done);
    ASSERT_EQ(b->state(), JobState::done);
    // A may have finished its 1500 tokens first on a fast machine; B never ran.
    EXPECT_TRUE(a->error().code == Errc::ok || a->error().code == Errc::server_shutting_down) << a->error().what();
    EXPECT_EQ(b->error().code, Errc::server_shutting_down);
    EXPECT_EQ(eng->cache().stats().used, 0);
}

// ---- encode jobs (encoder models): no KV cells, grouped into one Encoder call ----

// Records each call; input i's vector is {sum of its ids, call number}. An input holding a
// negative id fails the whole call, as a too-long text fails Embedder::embed_tokens.
class FakeEncoder final : public Encoder {
public:
    Result<EmbedResult> encode(std::span<const std::vector<int32_t>> inputs, const EmbedOptions&) override {
        ++calls;
        call_sizes.push_back(inputs.size());
        EmbedResult r;
        for (const auto& in : inputs) {
            float sum = 0.0f;
            for (int32_t t : in) {
                if (t < 0) return Error{Errc::request_too_long, "input too long"};
                sum += static_cast<float>(t);
            }
            r.vectors.push_back({sum, static_cast<float>(calls)});
            r.n_tokens.push_back(static_cast<int32_t>(in.size()));
        }
        return r;
    }
    int calls = 0;
    std::vector<size_t> call_sizes;
};

std::shared_ptr<Job> make_encode_job(Encoder& enc, std::vector<std::vector<int32_t>> inputs, bool normalize = true) {
    auto j = std::make_shared<Job>();
    j->kind = JobKind::encode;
    j->encoder = &enc;
    j->inputs = std::move(inputs);
    j->encode_options.normalize = normalize;
    j->label = "encode";
    return j;
}

TEST(SchedulerCore, ConsecutiveEncodeJobsShareOneCallInFifoOrder) {
    auto eng = make_engine(load_synthetic("sched"), 512);
    FakeEncoder enc, other;
    Steps s(*eng, SchedulerConfig{});
    auto a = make_encode_job(enc, {{1, 2}, {3}});
    auto b = make_encode_job(enc, {{10}});
    auto c = make_encode_job(enc, {{20}}, /*normalize=*/false);  // other options: next call
    auto d = make_encode_job(other, {{30}});                       // other encoder: next call
    auto g = make_job(*eng, "Once upon a time", 2);
    for (auto& j : {a, b, c, d, g}) ASSERT_TRUE(s.submit(j).ok());
    // Iteration 1: a and b in one call; nothing behind them is admitted.
    EXPECT_EQ(s.iterate(), 0u);
    EXPECT_EQ(enc.calls, 1);
    ASSERT_EQ(enc.call_sizes, (std::vector<size_t>{3}));
    ASSERT_TRUE(a->finished() && b->finished());
    EXPECT_EQ(a->vectors(), (std::vector<std::vector<float>>{{3.0f, 1.0f}, {3.0f, 1.0f}}));
    EXPECT_EQ(b->vectors(), (std::vector<std::vector<float>>{{10.0f, 1.0f}}));
    EXPECT_EQ(c->state(), JobState::queued);
    s.iterate();
    EXPECT_EQ(enc.calls, 2);
    EXPECT_TRUE(c->finished());
    EXPECT_EQ(other.calls, 0);
    s.iterate();
    EXPECT_EQ(other.calls, 1);
    EXPECT_TRUE(d->finished());
    s.run_until_idle();
    EXPECT_TRUE(g->finished()) << g->error().what();
    EXPECT_EQ(s.snap().ends[job_outcome(Errc::ok)], 5u);
    EXPECT_EQ(eng->cache().stats().used, 0);
}

TEST(SchedulerCore, ABadEncodeJobFailsAloneNotItsGroup) {
    auto eng = make_engine(load_synthetic("sched"), 512);
    FakeEncoder enc;
    Steps s(*eng, SchedulerConfig{});
    auto a = make_encode_job(enc, {{1}});
    auto bad = make_encode_job(enc, {{2}, {-1}});
    auto c = make_encode_job(enc, {{3}});
    for (auto& j : {a, bad, c}) ASSERT_TRUE(s.submit(j).ok());
    s.iterate();
    // The grouped call failed, then each job ran alone: only the bad one ends in error.
    EXPECT_EQ(enc.call_sizes, (std::vector<size_t>{4, 1, 2, 1}));
    EXPECT_TRUE(a->finished());
    EXPECT_TRUE(c->finished());
    EXPECT_EQ(bad->error().code, Errc::request_too_long);
    EXPECT_EQ(a->vectors(), (std::vector<std::vector<float>>{{1.0f, 2.0f}}));
}

TEST(SchedulerCore, WithoutAChatEngineOnlyEncodeJobsRun) {
    auto eng = make_engine(load_synthetic("sched"), 512);  // only to build the test jobs
    FakeEncoder enc;
    SchedulerCore core(nullptr, SchedulerConfig{});
    const Clock::time_point t = Clock::time_point{} + std::chrono::hours(1);
    auto g = make_job(*eng, "Hi", 2);
    auto e = make_embed_job(*eng, "Hi");
    auto x = make_encode_job(enc, {{5}});
    for (auto& j : {g, e, x}) ASSERT_TRUE(core.submit(j, t).ok());
    StepPlan plan = core.plan(t);
    core.execute(plan);
    core.complete(plan, t);
    for (auto& j : core.take_ended()) j->mark_done();
    EXPECT_EQ(g->error().code, Errc::request_invalid);
    EXPECT_NE(g->error().message.find("no chat model"), std::string::npos) << g->error().message;
    EXPECT_EQ(e->error().code, Errc::request_invalid);
    EXPECT_TRUE(x->finished());
    EXPECT_TRUE(core.idle());
}

TEST(Scheduler, EncodeThroughTheDriverWithoutAnEngine) {
    FakeEncoder enc;
    Scheduler s(nullptr, SchedulerConfig{});
    auto r = s.encode(enc, {{1, 1}, {4}}, EmbedOptions{}, "test");
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(*r, (std::vector<std::vector<float>>{{2.0f, 1.0f}, {4.0f, 1.0f}}));
    auto bad = s.encode(enc, {{-1}}, EmbedOptions{}, "test");
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().code, Errc::request_too_long);
    s.stop();
}

}  // namespace
}  // namespace kvrag::engine
