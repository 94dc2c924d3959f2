// The engine (scheduler path: chunked prefill, the KV manager's cell lists as visible cells)
// against the reference engine's greedy continuations for the newer architectures. The model
// oracle tests (tests/model/oracle_test.cpp) feed the forward pass directly; these go through
// Engine::generate_tokens, so the sliding window of gemma3 is applied to a sequence's real
// cell list, with the 100-token prompt prefilled in chunks smaller than the window.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "engine_test_util.h"
#include "test_paths.h"

namespace kvrag::engine {
namespace {

using testing::greedy;
using testing::make_engine;

// Every case of the oracle whose n_ctx equals `n_ctx` (phi3 has each prompt at 4096 and 1024).
void check_engine_oracle(const std::string& model_name, const std::string& oracle_name, int32_t n_ctx, int32_t n_batch) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    auto m = LoadedModel::load(dir + "/models/" + model_name);
    ASSERT_TRUE(m.ok()) << m.error().what();
    auto e = make_engine(std::move(*m), n_ctx, 2, n_batch);
    ASSERT_TRUE(e);
    std::ifstream in(dir + "/oracle/" + oracle_name);
    const auto cases = nlohmann::json::parse(in);
    int n_checked = 0;
    for (const auto& c : cases) {
        if (c["n_ctx"].get<int32_t>() != n_ctx) continue;
        const auto prompt = c["prompt_tokens"].get<std::vector<int32_t>>();
        const auto want = c["greedy_tokens"].get<std::vector<int32_t>>();
        GenerateOptions opt = greedy(static_cast<int32_t>(want.size()));
        auto r = e->generate_tokens(prompt, opt);
        ASSERT_TRUE(r.ok()) << r.error().what();
        EXPECT_EQ(r->tokens, want) << c["prompt"];
        ++n_checked;
    }
    EXPECT_EQ(n_checked, 3);
}

// Window 32 on layers 0-2: prompts of 5, 14 and 100 tokens, prefilled 16 tokens at a time.
TEST(EngineArchOracle, Gemma3SlidingWindowThroughTheScheduler) {
    check_engine_oracle("synth-gemma3-f32.gguf", "synth-gemma3-f32-greedy.json", 4096, 16);
}

// The per-sequence context selects LongRoPE's factors: 4096 takes the long set, 1024 the short.
TEST(EngineArchOracle, Phi3LongRopeFactorsFollowTheContext) {
    check_engine_oracle("synth-phi3-f32.gguf", "synth-phi3-f32-greedy.json", 4096, 64);
    check_engine_oracle("synth-phi3-f32.gguf", "synth-phi3-f32-greedy.json", 1024, 64);
}

}  // namespace
}  // namespace kvrag::engine
