// Helpers of the n > 1 choices tests (fork_test, swa_fork_test): a job with its forks, run
// through the scheduler core step by step with the cache's invariants checked at every step.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "engine/engine.h"
#include "engine/scheduler_core.h"

namespace kvrag::engine::testing {

// Options for a sampled choice: `max_tokens` tokens (no early end at an end-of-generation
// token) at `temperature`, seeded with `seed`.
inline GenerateOptions sampled_options(int32_t max_tokens, uint64_t seed, float temperature) {
    GenerateOptions o;
    o.max_tokens = max_tokens;
    o.stop_at_eog = false;
    o.sampling.temperature = temperature;
    o.sampling.seed = seed;
    return o;
}

// The first job of a group of n choices of `prompt`, the other n - 1 in its Job::forks.
// Choice i runs with `options` and the seed options.sampling.seed + i.
inline std::shared_ptr<Job> choice_group(const std::vector<int32_t>& prompt, int32_t n, const GenerateOptions& options) {
    auto j = std::make_shared<Job>();
    j->options = options;
    j->prompt = prompt;
    for (int32_t i = 1; i < n; ++i) {
        auto f = std::make_shared<Job>();
        f->options = options;
        f->options.sampling.seed = options.sampling.seed + static_cast<uint64_t>(i);
        f->prompt = prompt;
        j->forks.push_back(f);
    }
    return j;
}

// plan/execute/complete until the core is idle, at most max_steps times, checking the cache's
// invariants after every step and, with check_windows (a sliding-window model's split cache),
// that no sequence holds more local cells than local_cap(). A test failure when it never idles.
inline void run_core_until_idle(Engine& e, SchedulerCore& core, int max_steps, bool check_windows = false) {
    const Clock::time_point t{};
    for (int i = 0; i < max_steps && !core.idle(); ++i) {
        StepPlan plan = core.plan(t);
        core.execute(plan);
        core.complete(plan, t);
        for (auto& j : core.take_ended()) j->mark_done();
        ASSERT_EQ(e.cache().check_invariants(), "");
        if (check_windows) {
            const kvcache::KvStats st = e.cache().stats();
            for (const auto& s : st.sequences) ASSERT_LE(s.n_local, e.cache().local_cap());
        }
    }
    ASSERT_TRUE(core.idle());
}

}  // namespace kvrag::engine::testing
