// The default context rule, as a table: the server's rule (min(4096, trained) cells, each
// sequence at most the trained context), an explicit --ctx taken as given.
#include "engine/context_size.h"

#include <gtest/gtest.h>

namespace kvrag::engine {
namespace {

struct Case {
    int32_t n_ctx_train;
    int32_t requested;
    int32_t n_ctx;
    int32_t n_ctx_seq;
};

TEST(ContextSize, DefaultIsMin4096AndTrainedPerSequenceCappedAtTrained) {
    const Case cases[] = {
        {2048, 0, 2048, 2048},      // small model: its whole trained context
        {4096, 0, 4096, 4096},
        {131072, 0, 4096, 4096},    // long-context model: the cap, not 128k cells
        {512, 0, 512, 512},
        {1, 0, 1, 1},
        {2048, -3, 2048, 2048},     // <= 0 is "not given"
        {131072, 1024, 1024, 1024}, // explicit --ctx below the trained context
        {131072, 65536, 65536, 65536},
        {2048, 8192, 8192, 2048},   // explicit --ctx above: more cells, no longer sequences
        {0, 0, 4096, 4096},         // unknown trained context
        {0, 100, 100, 100},
        {2048, 1 << 23, 1 << 23, 2048},  // out of range: passed through for Engine::create to reject
    };
    for (const Case& c : cases) {
        model::ModelHParams hp;
        hp.n_ctx_train = c.n_ctx_train;
        const ContextSize got = default_context_size(hp, c.requested);
        EXPECT_EQ(got.n_ctx, c.n_ctx) << "n_ctx_train " << c.n_ctx_train << ", --ctx " << c.requested;
        EXPECT_EQ(got.n_ctx_seq, c.n_ctx_seq) << "n_ctx_train " << c.n_ctx_train << ", --ctx " << c.requested;
        EXPECT_LE(got.n_ctx_seq, got.n_ctx);
    }
}

}  // namespace
}  // namespace kvrag::engine
