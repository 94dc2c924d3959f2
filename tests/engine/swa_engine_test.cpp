// Gemma 3's sliding-window layers through the engine with the split KV cache: local-layer cells
// are held only for each sequence's window, and nothing the model computes changes. Greedy
// tokens and their logprobs (the softmax of the logits, so any difference in K/V shows) are
// compared bit for bit against the engine with whole cells (every cell holds every layer) and
// without prefix reuse, and against the reference engine's greedy continuation.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine_test_util.h"
#include "test_paths.h"

namespace kvrag::engine {
namespace {

using testing::greedy;

constexpr int32_t kBatch = 16;

std::unique_ptr<Engine> gemma3_engine(const std::string& dir, bool split, bool reuse) {
    auto m = LoadedModel::load(dir + "/models/synth-gemma3-f32.gguf");
    EXPECT_TRUE(m.ok()) << m.error().what();
    if (!m.ok()) return nullptr;
    EngineConfig cfg;
    cfg.n_ctx = 512;
    cfg.n_threads = 2;
    cfg.n_batch = kBatch;
    cfg.prefix_reuse = reuse;
    cfg.swa_split = split;
    cfg.n_seq_window = 1;
    auto e = Engine::create(std::move(*m), cfg);
    EXPECT_TRUE(e.ok()) << e.error().what();
    return e.ok() ? std::move(*e) : nullptr;
}

// The oracle's 100-token prompt and the reference engine's 32 greedy tokens after it.
struct OracleCase {
    std::vector<int32_t> prompt, greedy;
};
OracleCase long_case(const std::string& dir) {
    std::ifstream in(dir + "/oracle/synth-gemma3-f32-greedy.json");
    for (const auto& c : nlohmann::json::parse(in)) {
        if (c["prompt_tokens"].size() == 100) return {c["prompt_tokens"].get<std::vector<int32_t>>(), c["greedy_tokens"].get<std::vector<int32_t>>()};
    }
    ADD_FAILURE() << "no 100-token prompt in the gemma3 oracle";
    return {};
}

GenerateResult run(Engine& e, const std::vector<int32_t>& prompt, int32_t max_tokens) {
    GenerateOptions o = greedy(max_tokens);
    o.n_logprobs = 0;
    auto r = e.generate_tokens(prompt, o);
    EXPECT_TRUE(r.ok()) << r.error().what();
    return r.ok() ? *r : GenerateResult{};
}

void expect_bit_identical(const GenerateResult& a, const GenerateResult& b) {
    ASSERT_EQ(a.tokens, b.tokens);
    ASSERT_EQ(a.logprobs.size(), b.logprobs.size());
    for (size_t i = 0; i < a.logprobs.size(); ++i) {
        // Exact float equality: the same K/V in the same order give the same bits.
        EXPECT_EQ(a.logprobs[i].token.logprob, b.logprobs[i].token.logprob) << "token " << i;
    }
}

// 100 prompt tokens + 100 generated = 200 positions, over six windows of 32.
TEST(EngineSwa, LongGemma3SequenceHoldsAWindowOfLocalCellsAndMatches) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const OracleCase oc = long_case(dir);
    auto split = gemma3_engine(dir, true, false);
    auto whole = gemma3_engine(dir, false, false);
    ASSERT_TRUE(split && whole);
    ASSERT_TRUE(split->cache().split_local());
    ASSERT_FALSE(whole->cache().split_local());

    const GenerateResult a = run(*split, oc.prompt, 100);
    const GenerateResult b = run(*whole, oc.prompt, 100);
    ASSERT_EQ(a.tokens.size(), size_t{100});
    expect_bit_identical(a, b);
    EXPECT_EQ(std::vector<int32_t>(a.tokens.begin(), a.tokens.begin() + 32), oc.greedy);  // the reference engine's

    const kvcache::KvStats st = split->cache().stats();
    const int32_t cap = split->cache().local_cap();
    EXPECT_EQ(st.window, 32);
    EXPECT_EQ(cap, 31 + kBatch);                  // no prefix reuse: no block alignment
    EXPECT_EQ(st.local_total, cap);               // one sequence's windows (n_seq_window 1)
    EXPECT_LE(st.local_peak_used, cap);           // never more than window + chunk, of 200 positions
    EXPECT_GE(st.local_peak_used, 32);
    EXPECT_EQ(st.peak_used, 199);                 // the global layer keeps every position (the last token is not stored)
    EXPECT_EQ(st.local_used, 0);
    EXPECT_EQ(st.local_reserved, 0);
    // 3 of 4 layers local: a cell holds 1 layer, a local cell 3.
    const kvcache::KvStats whole_st = whole->cache().stats();
    EXPECT_EQ(st.bytes_per_cell * 4, whole_st.bytes_per_cell);
    EXPECT_EQ(st.bytes_per_local_cell * 4, whole_st.bytes_per_cell * 3);
    EXPECT_LT(st.bytes, whole_st.bytes);
    std::printf("gemma3 split: peak cells %d (global layer), peak local cells %d; kv bytes %zu (whole cells %zu)\n", st.peak_used,
                st.local_peak_used, st.bytes, whole_st.bytes);
}

TEST(EngineSwa, Gemma3PrefixReuseIsBitIdenticalToRecomputing) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const OracleCase oc = long_case(dir);
    auto reuse = gemma3_engine(dir, true, true);
    auto plain = gemma3_engine(dir, true, false);
    ASSERT_TRUE(reuse && plain);
    EXPECT_EQ(reuse->cache().local_cap(), 31 + 15 + kBatch);  // windows kept from block boundaries

    // Seen twice: the prompt's blocks are cached, those of its last window with local cells.
    run(*reuse, oc.prompt, 4);
    run(*reuse, oc.prompt, 4);
    // The last chunk's windows reach back to 65, kept from block 64: blocks [64, 96) carry them.
    EXPECT_EQ(reuse->cache().stats().local_cached, 32);

    // A follow-up (the prompt and 12 more tokens) reuses 96 positions: [65, 96) have local cells.
    std::vector<int32_t> follow = oc.prompt;
    follow.insert(follow.end(), oc.greedy.begin(), oc.greedy.begin() + 12);
    const GenerateResult a = run(*reuse, follow, 40);
    const GenerateResult b = run(*plain, follow, 40);
    EXPECT_EQ(a.n_reused, 96);
    EXPECT_EQ(b.n_reused, 0);
    expect_bit_identical(a, b);

    // Sharing only the first 40 tokens: a reuse at 32 would need [1, 32), whose local cells
    // were released long ago, so everything is recomputed (and output is the same again).
    std::vector<int32_t> early(oc.prompt.begin(), oc.prompt.begin() + 40);
    early.insert(early.end(), oc.greedy.begin(), oc.greedy.begin() + 8);
    const GenerateResult c = run(*reuse, early, 24);
    const GenerateResult d = run(*plain, early, 24);
    EXPECT_EQ(c.n_reused, 0);
    expect_bit_identical(c, d);
    EXPECT_EQ(reuse->cache().check_invariants(), "");
}

// A chat turn (keep_for_followup) leaves its prompt and reply cached, its last window's blocks
// with their local cells, so the next turn reuses up to the reply's last block boundary; the
// same turn without the flag leaves nothing (a prompt seen once). Bit for bit as recomputing.
TEST(EngineSwa, AChatsNextTurnReusesThePreviousPromptAndReply) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const OracleCase oc = long_case(dir);
    for (bool keep : {true, false}) {
        SCOPED_TRACE(keep ? "keep_for_followup" : "one-off");
        auto reuse = gemma3_engine(dir, true, true);
        auto plain = gemma3_engine(dir, true, false);
        ASSERT_TRUE(reuse && plain);
        GenerateOptions o = greedy(40);
        o.stop_at_eog = false;
        o.keep_for_followup = keep;
        auto turn1 = reuse->generate_tokens(oc.prompt, o);
        ASSERT_TRUE(turn1.ok()) << turn1.error().what();
        ASSERT_EQ(turn1->tokens.size(), size_t{40});
        // The next prompt: the conversation (100 + 40 tokens; the last reply token was never
        // computed, so 139 positions are cached) and 12 more tokens.
        std::vector<int32_t> next = oc.prompt;
        next.insert(next.end(), turn1->tokens.begin(), turn1->tokens.end());
        next.insert(next.end(), oc.greedy.begin(), oc.greedy.begin() + 12);
        const GenerateResult a = run(*reuse, next, 24);
        const GenerateResult b = run(*plain, next, 24);
        EXPECT_EQ(a.n_reused, keep ? 128 : 0);  // blocks of 16: [0, 128), its window [97, 128) carried
        expect_bit_identical(a, b);
        EXPECT_EQ(reuse->cache().check_invariants(), "");
    }
}

// Without ../shared: a synthetic gemma3 written by the project's own writer (window 8, every
// 3rd layer global), a 40-token prompt prefilled 4 at a time and 40 generated tokens (10
// windows). The split cache equals the whole-cell cache bit for bit, with or without reuse.
TEST(EngineSwa, SyntheticGemma3SplitEqualsWholeCells) {
    ASSERT_FALSE(testing::synthetic_gemma3_path().empty());
    const auto make = [](bool split, bool reuse) { return testing::synthetic_gemma3_engine(256, split, reuse); };
    auto split = make(true, true);
    auto whole = make(false, false);
    ASSERT_EQ(split->model().model->hparams().n_swa, 8);
    ASSERT_TRUE(split->cache().split_local());
    std::vector<int32_t> prompt;
    for (int i = 0; i < 40; ++i) prompt.push_back(3 + (i * 37) % 500);
    const GenerateResult a = run(*split, prompt, 40);
    const GenerateResult b = run(*whole, prompt, 40);
    ASSERT_EQ(a.tokens.size(), size_t{40});
    expect_bit_identical(a, b);
    // Seen twice, then a follow-up reuses up to the prompt's last block with cached local cells.
    run(*split, prompt, 40);
    std::vector<int32_t> follow = prompt;
    follow.insert(follow.end(), a.tokens.begin(), a.tokens.begin() + 6);
    const GenerateResult c = run(*split, follow, 20);
    const GenerateResult d = run(*whole, follow, 20);
    EXPECT_EQ(c.n_reused, 40);
    expect_bit_identical(c, d);
    const kvcache::KvStats st = split->cache().stats();
    EXPECT_LE(st.local_peak_used, split->cache().local_cap());  // 7 + 3 + 4 = 14 of 80 positions
    EXPECT_EQ(split->cache().local_cap(), 14);
    EXPECT_EQ(split->cache().check_invariants(), "");
    // n > 1 choices (a window of local cells per fork): tests/engine/swa_fork_test.cpp.
}

}  // namespace
}  // namespace kvrag::engine
