// n > 1 choices of one prompt (Engine::start with n_forks, Engine::fork, Job::forks): the
// prompt is computed once, each fork takes its cells and computes only its last position, and
// each choice is the sequence a request of its own with the same seed would give.
#include <gtest/gtest.h>

#include "engine/engine_test_util.h"
#include "engine/fork_test_util.h"
#include "engine/scheduler_core.h"

namespace kvrag::engine {
namespace {

using testing::load_synthetic;
using testing::make_engine;

GenerateOptions sampled(int32_t max_tokens, uint64_t seed) { return testing::sampled_options(max_tokens, seed, 0.9f); }

// A generate job with n - 1 forks, seeds seed, seed + 1, ...
std::shared_ptr<Job> make_group(Engine& e, const std::string& prompt, int32_t n, int32_t max_tokens, uint64_t seed) {
    const GenerateOptions o = sampled(max_tokens, seed);
    return testing::choice_group(e.tokenize(prompt, o), n, o);
}

const std::string kPrompt = "Fork test: the quick brown fox jumps over the lazy dog and runs into the forest, where";

TEST(Fork, FourChoicesComputeThePromptOnceAndEqualSeparateRequests) {
    auto e = make_engine(load_synthetic("fork"), 1024);
    SchedulerConfig cfg;
    cfg.max_running = 4;
    SchedulerCore core(*e, cfg);
    auto group = make_group(*e, kPrompt, 4, 10, 100);
    const auto n_prompt = static_cast<uint64_t>(group->prompt.size());
    ASSERT_GT(n_prompt, 20u);
    const uint64_t before = e->totals().prompt_tokens;
    ASSERT_TRUE(core.submit(group, Clock::time_point{}).ok());
    testing::run_core_until_idle(*e, core, 1000);
    // The prompt once, plus each fork's last prompt position (its own first logits).
    EXPECT_EQ(e->totals().prompt_tokens - before, n_prompt + 3);
    std::vector<std::shared_ptr<Job>> jobs = {group};
    jobs.insert(jobs.end(), group->forks.begin(), group->forks.end());
    for (size_t i = 0; i < jobs.size(); ++i) {
        ASSERT_TRUE(jobs[i]->finished()) << i << ": " << jobs[i]->error().what();
        EXPECT_EQ(jobs[i]->result().tokens.size(), 10u) << i;
        if (i > 0) {
            EXPECT_EQ(jobs[i]->result().n_reused, static_cast<int32_t>(n_prompt) - 1) << i;
        }
    }
    EXPECT_EQ(e->cache().stats().reserved, 0);

    // Each choice is what a request of its own with that seed gives (computed from scratch).
    auto fresh = make_engine(load_synthetic("fork"), 1024);
    for (size_t i = 0; i < jobs.size(); ++i) {
        auto alone = fresh->generate_tokens(jobs[i]->prompt, jobs[i]->options);
        ASSERT_TRUE(alone.ok()) << alone.error().what();
        EXPECT_EQ(jobs[i]->result().tokens, alone->tokens) << "choice " << i;
    }
    EXPECT_NE(jobs[0]->result().tokens, jobs[1]->result().tokens);  // separately seeded
}

TEST(Fork, ForksShareEvenWhenTheFirstChoiceEndsAtItsFirstToken) {
    auto e = make_engine(load_synthetic("fork"), 1024);
    SchedulerCore core(*e, SchedulerConfig{});
    auto group = make_group(*e, kPrompt, 4, 1, 7);
    const auto n_prompt = static_cast<uint64_t>(group->prompt.size());
    const uint64_t before = e->totals().prompt_tokens;
    ASSERT_TRUE(core.submit(group, Clock::time_point{}).ok());
    testing::run_core_until_idle(*e, core, 1000);
    EXPECT_EQ(e->totals().prompt_tokens - before, n_prompt + 3);
    EXPECT_TRUE(group->finished());
    for (const auto& f : group->forks) {
        ASSERT_TRUE(f->finished()) << f->error().what();
        EXPECT_EQ(f->result().tokens.size(), 1u);
    }
    EXPECT_EQ(e->cache().stats().reserved, 0);
}

TEST(Fork, CancellingTheFirstChoiceWhilePrefillingEndsItsForks) {
    // n_batch 8: the prompt takes several steps, so the cancel lands during its prefill.
    auto e = make_engine(load_synthetic("fork"), 1024, 2, /*n_batch=*/8);
    auto parent = e->start(e->tokenize(kPrompt, GenerateOptions{}), sampled(5, 1), nullptr, nullptr, 2);
    ASSERT_TRUE(parent.ok()) << parent.error().what();
    auto a = e->fork(**parent, sampled(5, 2));
    auto b = e->fork(**parent, sampled(5, 3));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_TRUE((*a)->waiting_for_fork());
    Request* all[3] = {parent->get(), a->get(), b->get()};
    e->step(all);
    ASSERT_TRUE((*parent)->prefilling());
    (*parent)->cancel();
    e->step(all);
    for (Request* r : all) EXPECT_EQ(r->result().finish, FinishReason::cancelled);
    EXPECT_EQ(e->cache().check_invariants(), "");
    EXPECT_EQ(e->cache().stats().reserved, 0);
    // A destroyed parent leaves no dangling fork (the scheduler's failure path).
    auto p2 = e->start(e->tokenize(kPrompt, GenerateOptions{}), sampled(5, 1), nullptr, nullptr, 1);
    ASSERT_TRUE(p2.ok());
    auto c = e->fork(**p2, sampled(5, 2));
    ASSERT_TRUE(c.ok());
    p2->reset();
    EXPECT_FALSE((*c)->waiting_for_fork());
    EXPECT_EQ((*c)->result().finish, FinishReason::error);
}

TEST(Fork, MisuseAndGroupsThatCannotFitAreRefusedWithTheNumbers) {
    auto e = make_engine(load_synthetic("fork"), 256);
    const auto prompt = e->tokenize(kPrompt, GenerateOptions{});
    // 4 choices x 100 tokens + the prompt cannot fit 256 cells, though one choice would.
    auto big = e->start(prompt, sampled(100, 1), nullptr, nullptr, 3);
    ASSERT_FALSE(big.ok());
    EXPECT_EQ(big.error().code, Errc::request_too_long);
    EXPECT_NE(big.error().message.find("4 choices"), std::string::npos) << big.error().message;
    EXPECT_NE(big.error().message.find("256"), std::string::npos) << big.error().message;

    auto p = e->start(prompt, sampled(5, 1), nullptr, nullptr, 1);
    ASSERT_TRUE(p.ok());
    auto other = sampled(6, 2);  // a different max_tokens: not what the reservation was sized for
    EXPECT_EQ(e->fork(**p, other).error().code, Errc::request_invalid);
    auto ok = e->fork(**p, sampled(5, 2));
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ(e->fork(**p, sampled(5, 3)).error().code, Errc::request_invalid);  // none left
}

}  // namespace
}  // namespace kvrag::engine
