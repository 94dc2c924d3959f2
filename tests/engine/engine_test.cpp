// The engine's promises: admission with the numbers, every context policy, cells released on
// every exit path, and the same greedy output alone, batched, reused or on any thread count.
#include <gtest/gtest.h>

#include <stdexcept>

#include "tools/soak.h"
#include "engine_test_util.h"

namespace kvrag::engine {
namespace {

using testing::greedy;
using testing::load_synthetic;
using testing::make_engine;
using tools::run_soak;
using tools::SoakConfig;

void expect_clean(Engine& e) {
    const auto st = e.cache().stats();
    EXPECT_EQ(st.used, 0) << st.summary();
    EXPECT_EQ(st.reserved, 0) << st.summary();
    EXPECT_EQ(st.n_sequences, 0) << st.summary();
    EXPECT_EQ(e.cache().check_invariants(), "");
}

std::vector<int32_t> tokens_of(Engine& e, const std::string& text) { return e.tokenize(text, greedy(1)); }

TEST(Engine, AdmissionErrorNamesTheNumbers) {
    auto e = make_engine(load_synthetic("base"), 64);
    std::vector<int32_t> prompt(50, 300);
    prompt[0] = 1;
    auto r = e->generate_tokens(prompt, greedy(20));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::request_too_long);
    EXPECT_EQ(r.error().message,
              "prompt 50 tokens + max_tokens 20 = 70 > context 64; raise --ctx, lower max_tokens, or use --context-policy truncate");
    EXPECT_EQ(e->cache().stats().rejections[static_cast<int>(kvcache::RejectReason::never_fits)], 1u);
    expect_clean(*e);
}

TEST(Engine, BusyWhenTheWorstCaseDoesNotFitNow) {
    auto e = make_engine(load_synthetic("base"), 100);
    const auto p = tokens_of(*e, "the cat and the dog");
    auto a = e->start(p, greedy(60));
    ASSERT_TRUE(a.ok()) << a.error().what();
    auto b = e->start(p, greedy(60));  // 5 + 60 more cannot be promised while a holds its reservation
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.error().code, Errc::kv_no_space);
    EXPECT_NE(b.error().message.find("needs up to " + std::to_string(p.size() + 60) + " cells"), std::string::npos) << b.error().message;
    Request* active[1] = {a->get()};
    while (!(*a)->done()) e->step(active);
    EXPECT_EQ((*a)->result().tokens.size(), 60u);
    auto c = e->start(p, greedy(60));  // a finished: its cells are back
    EXPECT_TRUE(c.ok());
    c->reset();
    a->reset();
    expect_clean(*e);
}

TEST(Engine, TruncatePolicyKeepsTheHeadAndDropsTheOldest) {
    auto e = make_engine(load_synthetic("base"), 64);
    std::vector<int32_t> prompt;
    prompt.push_back(1);
    for (int i = 0; i < 79; ++i) prompt.push_back(300 + i % 50);
    auto opt = greedy(10);
    opt.policy = ContextPolicy::truncate;
    opt.n_keep = 4;
    auto r = e->generate_tokens(prompt, opt);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r->n_truncated, 80 + 10 - 64);
    ASSERT_EQ(r->prompt_tokens.size(), 54u);
    // BOS + n_keep tokens stay, then the newest tokens of the prompt.
    EXPECT_TRUE(std::equal(prompt.begin(), prompt.begin() + 5, r->prompt_tokens.begin()));
    EXPECT_TRUE(std::equal(prompt.end() - 49, prompt.end(), r->prompt_tokens.begin() + 5));
    EXPECT_EQ(r->tokens.size(), 10u);
    EXPECT_EQ(e->cache().stats().truncations, 1u);
    expect_clean(*e);
    // Truncation cannot help when the kept head plus max_tokens already fill the context.
    opt.n_keep = 40;
    opt.max_tokens = 30;
    auto bad = e->generate_tokens(prompt, opt);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("truncation cannot help"), std::string::npos) << bad.error().message;
}

TEST(Engine, ShiftPolicyGeneratesPastTheContext) {
    auto e = make_engine(load_synthetic("base"), 64);
    const auto p = tokens_of(*e, "once upon a time the little girl");
    auto opt = greedy(200);
    opt.policy = ContextPolicy::shift;
    opt.n_keep = 2;
    auto r = e->generate_tokens(p, opt);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r->tokens.size(), 200u);
    EXPECT_EQ(r->finish, FinishReason::length);
    EXPECT_GE(r->n_shifts, 3);
    EXPECT_EQ(e->cache().stats().shifts, static_cast<uint64_t>(r->n_shifts));
    EXPECT_LE(e->cache().stats().peak_used, 64);
    expect_clean(*e);
}

TEST(Engine, ExceptionInTheMiddleLeavesNoCells) {
    auto e = make_engine(load_synthetic("base"), 128);
    const auto p = tokens_of(*e, "the cat");
    // A callback that throws ends its request with an error; the cells go back.
    int n = 0;
    auto r = e->generate_tokens(p, greedy(20), [&](std::string_view, int32_t) -> bool {
        if (++n == 3) throw std::runtime_error("client handler failed");
        return true;
    });
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("client handler failed"), std::string::npos) << r.error().what();
    expect_clean(*e);
    // An exception in the caller's own code unwinds through the request handle.
    try {
        auto req = e->start(p, greedy(20));
        ASSERT_TRUE(req.ok());
        Request* active[1] = {req->get()};
        e->step(active);
        e->step(active);
        EXPECT_GT(e->cache().stats().used, 0);
        throw std::runtime_error("caller failed mid-generation");
    } catch (const std::runtime_error&) {
    }
    expect_clean(*e);
}

TEST(Engine, CancelReleasesAtTheNextStep) {
    auto e = make_engine(load_synthetic("base"), 128);
    auto req = e->start(tokens_of(*e, "the cat"), greedy(50));
    ASSERT_TRUE(req.ok());
    Request* active[1] = {req->get()};
    e->step(active);
    EXPECT_GT(e->cache().stats().used, 0);
    (*req)->cancel();
    e->step(active);
    EXPECT_TRUE((*req)->done());
    EXPECT_EQ((*req)->result().finish, FinishReason::cancelled);
    expect_clean(*e);  // released although the Request object still exists
}

// The promise: the same greedy output alone, in a batch with others, and on any thread count.
void expect_greedy_independent_of_batching_and_threads(const std::string& tag, int32_t dim, GgmlType kv_type) {
    const std::vector<std::string> prompts = {"once upon a time", "the dog and the cat play in the park", "what is the answer to the question"};
    std::vector<std::vector<int32_t>> alone;
    {
        auto e = make_engine(load_synthetic(tag, dim), 256, 1, 64, kv_type);
        for (const auto& p : prompts) {
            auto r = e->generate(p, greedy(24));
            ASSERT_TRUE(r.ok()) << r.error().what();
            alone.push_back(r->tokens);
        }
    }
    // Together, with a small batch budget so prefill chunks interleave with decoding.
    auto e = make_engine(load_synthetic(tag, dim), 256, 2, 5, kv_type);
    std::vector<std::unique_ptr<Request>> reqs;
    std::vector<Request*> active;
    for (const auto& p : prompts) {
        auto r = e->start(e->tokenize(p, greedy(24)), greedy(24));
        ASSERT_TRUE(r.ok());
        active.push_back(r->get());
        reqs.push_back(std::move(*r));
        e->step(active);  // staggered arrival
    }
    while (std::any_of(active.begin(), active.end(), [](Request* r) { return !r->done(); })) e->step(active);
    for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(reqs[i]->result().tokens, alone[i]) << prompts[i];
    reqs.clear();
    expect_clean(*e);
}

TEST(Engine, GreedyOutputIsIndependentOfBatchingAndThreads) { expect_greedy_independent_of_batching_and_threads("base", 64, GgmlType::F16); }

// The same with q8_0 cells (head size 32: the AVX2 tiled q8_0 attention where the CPU has it).
TEST(Engine, GreedyOutputWithQ8_0CellsIsIndependentOfBatchingAndThreads) {
    expect_greedy_independent_of_batching_and_threads("dim128", 128, GgmlType::Q8_0);
}

TEST(Engine, PrefixReuseSkipsPrefillAndKeepsOutputIdentical) {
    auto e = make_engine(load_synthetic("base"), 512, 2, 32);
    std::string system = "you are a good friend who can answer any question about the cache and the model. ";
    for (int i = 0; i < 3; ++i) system += "use only the document to answer the question. ";
    const auto p1 = tokens_of(*e, system + "what is the cat?");
    const auto p2 = tokens_of(*e, system + "who is the girl?");
    auto first = e->generate_tokens(p1, greedy(16));   // seen once: nothing kept yet
    auto second = e->generate_tokens(p1, greedy(16));  // seen twice: its prompt blocks are kept
    auto third = e->generate_tokens(p1, greedy(16));   // reuses them
    ASSERT_TRUE(first.ok() && second.ok() && third.ok());
    EXPECT_EQ(first->n_reused, 0);
    EXPECT_EQ(second->n_reused, 0);
    EXPECT_GT(third->n_reused, 32);
    EXPECT_EQ(third->tokens, first->tokens);
    // A different question after the same instructions reuses the instruction blocks only.
    auto other = e->generate_tokens(p2, greedy(16));
    ASSERT_TRUE(other.ok());
    EXPECT_GT(other->n_reused, 0);
    EXPECT_LT(other->n_reused, static_cast<int32_t>(p2.size()));
    auto fresh = make_engine(load_synthetic("base"), 512, 2, 32);
    auto other_fresh = fresh->generate_tokens(p2, greedy(16));
    ASSERT_TRUE(other_fresh.ok());
    EXPECT_EQ(other->tokens, other_fresh->tokens);
    const auto st = e->cache().stats();
    EXPECT_EQ(st.prefix_hit_tokens, static_cast<uint64_t>(third->n_reused + other->n_reused));
    EXPECT_EQ(st.used, 0);
    EXPECT_GT(st.cached, 0);
    EXPECT_EQ(e->cache().check_invariants(), "");
}

// The seed failure as a regression test: 10,000 sequential RAG-shaped requests in a 1024-token
// context. In the stacks this project replaces, the cache filled after 3 to 6 of them.
TEST(Engine, TenThousandRagRequestsLeaveTheCacheFlat) {
    auto e = make_engine(load_synthetic("soak", 32, 1, 64), 1024, 2, 512);
    SoakConfig sc;
    sc.n_requests = 10000;
    sc.max_tokens = 4;
    // Prompts of about 100 to 230 tokens: a leaking cache would be full after 5 to 10 requests.
    sc.min_chunk_tokens = 32;
    sc.max_chunk_tokens = 160;
    int32_t worst_between = 0;
    std::string violation;
    const auto rep = run_soak(*e, sc, [&](int32_t done) {
        const auto st = e->cache().stats();
        worst_between = std::max(worst_between, st.used + st.reserved);
        if (violation.empty() && done % 500 == 0) violation = e->cache().check_invariants();
        return true;
    });
    EXPECT_EQ(rep.requests, 10000);
    EXPECT_EQ(rep.failures, 0) << rep.first_error;
    EXPECT_EQ(worst_between, 0) << "cells held between requests";
    EXPECT_EQ(rep.max_cells_between, rep.baseline_cells);
    EXPECT_EQ(rep.final_cells, 0);
    EXPECT_EQ(violation, "");
    // The shared system prompt was reused by every request after the first two.
    EXPECT_EQ(e->cache().stats().prefix_hits, 9998u);
    EXPECT_GT(rep.reused_tokens, 9998u * 32);
}

}  // namespace
}  // namespace kvrag::engine

namespace kvrag::engine {
namespace {

TEST(EngineEmbed, PooledNormalisedAndDeterministic) {
    auto e = testing::make_engine(testing::load_synthetic("base"), 128);
    auto a = e->embed("the cat and the dog");
    auto b = e->embed("the cat and the dog");
    auto c = e->embed("a question about memory");
    auto last = e->embed("the cat and the dog", Pooling::last);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok() && last.ok());
    ASSERT_EQ(a->size(), static_cast<size_t>(e->embedding_dim()));
    double norm = 0.0, dot_ac = 0.0, dot_al = 0.0;
    for (size_t i = 0; i < a->size(); ++i) {
        norm += double((*a)[i]) * (*a)[i];
        dot_ac += double((*a)[i]) * (*c)[i];
        dot_al += double((*a)[i]) * (*last)[i];
    }
    EXPECT_NEAR(norm, 1.0, 1e-5);
    EXPECT_EQ(*a, *b);
    EXPECT_LT(dot_ac, 0.9999);
    EXPECT_LT(dot_al, 0.9999);  // last-token pooling is a different vector
    EXPECT_EQ(e->cache().stats().used, 0);
    EXPECT_EQ(e->cache().check_invariants(), "");
}

TEST(EngineEmbed, ErrorsNameTheNumbers) {
    auto e = testing::make_engine(testing::load_synthetic("base"), 32);
    std::vector<int32_t> toks(40, 300);
    auto r = e->embed_tokens(toks);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "input 40 tokens > context 32; split the text into smaller chunks or raise --ctx");
    EXPECT_FALSE(e->embed_tokens({}).ok());
    EXPECT_FALSE(parse_pooling("max").ok());
}

}  // namespace
}  // namespace kvrag::engine
