// Greedy generation on make-model phi3 models (fused matrices, partial rotary, LongRoPE) through
// the engine: scheduler, chunked prefill, the KV manager's cells. Without ../shared. For Q8_0 and
// F16 weights, at a context that takes the long factor set and one that takes the short, the
// engine's greedy tokens equal those of a plain loop over the forward pass with the same factor
// set (prompt in one batch, then one token at a time), and the two sets give different logprobs.
// (tests/engine/arch_oracle_test.cpp checks the shared phi3 model against the reference engine.)
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "engine_test_util.h"
#include "kvcache/kv_store.h"
#include "model/forward.h"

namespace kvrag::engine {
namespace {

using testing::greedy;
using testing::make_engine;

constexpr int32_t kPhi3OrigCtx = 256;
constexpr int32_t kPhi3NewTokens = 24;
const std::vector<int32_t> kPhi3EnginePrompt = {1, 40, 311, 77, 502, 9, 260, 18, 133, 401, 64, 5, 290, 12, 350, 71, 222, 3, 180, 95};

std::string write_phi3(GgmlType type) {
    const auto dir = std::filesystem::temp_directory_path() / ("kvrag-phi3-engine-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    const std::string path = (dir / ("phi3-" + std::string(ggml_type_name(type)) + ".gguf")).string();
    tools::SyntheticSpec s;
    s.arch = "phi3";
    s.n_embd = 64;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_layer = 2;
    s.n_ff = 128;
    s.n_ctx_train = 1024;
    s.n_rot = 12;
    s.longrope = true;
    s.n_ctx_orig = kPhi3OrigCtx;
    s.weight_type = s.embd_type = s.output_type = type;
    s.seed = 5;
    auto w = tools::write_synthetic_model(s, path);
    EXPECT_TRUE(w.ok()) << w.error().what();
    return path;
}

// Greedy over the forward pass alone: F16 K/V like the engine's default cache, the factor set
// of a context of n_ctx_seq positions.
std::vector<int32_t> phi3_forward_greedy(const model::Model& m, int32_t n_ctx_seq) {
    const int32_t n_total = static_cast<int32_t>(kPhi3EnginePrompt.size()) + kPhi3NewTokens;
    auto geo = kvcache::make_geometry(m.hparams(), GgmlType::F16);
    EXPECT_TRUE(geo.ok()) << geo.error().what();
    if (!geo) return {};
    kvcache::KvStore kv(*geo, n_total);
    ThreadPool pool(2);
    model::ForwardPass fwd(m.hparams(), m.weights(), n_ctx_seq);
    std::vector<int32_t> cells(n_total);
    for (int32_t i = 0; i < n_total; ++i) cells[i] = i;
    std::vector<int32_t> seq = kPhi3EnginePrompt, out;
    std::vector<model::BatchToken> batch;
    for (int32_t i = 0; i < static_cast<int32_t>(seq.size()); ++i) {
        batch.push_back({seq[i], i, i, cells.data(), i + 1, i + 1 == static_cast<int32_t>(seq.size())});
    }
    std::vector<float> logits;
    while (static_cast<int32_t>(out.size()) < kPhi3NewTokens) {
        auto r = fwd.run(batch, kv, pool, logits);
        EXPECT_TRUE(r.ok()) << r.error().what();
        if (!r) return {};
        // The lowest id among equal maxima, as the engine's greedy sampler takes.
        const int32_t next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        out.push_back(next);
        const int32_t pos = static_cast<int32_t>(seq.size());
        seq.push_back(next);
        batch = {{next, pos, pos, cells.data(), pos + 1, true}};
    }
    return out;
}

TEST(Phi3Engine, GreedyThroughTheEngineFollowsTheContextsFactorSet) {
    for (GgmlType type : {GgmlType::Q8_0, GgmlType::F16}) {
        SCOPED_TRACE(ggml_type_name(type));
        const std::string path = write_phi3(type);
        std::vector<std::vector<float>> logprobs;  // per context
        for (int32_t n_ctx : {1024, kPhi3OrigCtx}) {  // 1024 > 256: long set; 256: short set
            SCOPED_TRACE(n_ctx);
            auto m = LoadedModel::load(path);
            ASSERT_TRUE(m.ok()) << m.error().what();
            ASSERT_EQ(m->model->hparams().arch, model::Arch::phi3);
            ASSERT_FALSE(m->model->weights().rope_factors_long.empty());
            const std::vector<int32_t> want = phi3_forward_greedy(*m->model, n_ctx);
            ASSERT_EQ(want.size(), static_cast<size_t>(kPhi3NewTokens));
            auto e = make_engine(std::move(*m), n_ctx, 2, /*n_batch=*/8);  // the prompt prefills in 3 chunks
            ASSERT_TRUE(e);
            GenerateOptions o = greedy(kPhi3NewTokens);
            o.n_logprobs = 0;
            auto r = e->generate_tokens(kPhi3EnginePrompt, o);
            ASSERT_TRUE(r.ok()) << r.error().what();
            EXPECT_EQ(r->tokens, want);
            ASSERT_EQ(r->logprobs.size(), static_cast<size_t>(kPhi3NewTokens));
            std::vector<float> lp;
            for (const auto& t : r->logprobs) lp.push_back(t.token.logprob);
            logprobs.push_back(lp);
        }
        // The long and the short set are different models: the chosen tokens' logprobs differ.
        EXPECT_NE(logprobs[0], logprobs[1]);
        std::filesystem::remove(path);
    }
}

}  // namespace
}  // namespace kvrag::engine
