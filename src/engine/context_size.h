// The one rule for how many KV cells a model gets when the user does not say: every command
// that loads a model for generation (generate, ingest/search/ask, serve, and what info prints
// as the default) goes through default_context_size, so the default is written once.
#pragma once

#include <cstdint>

#include "model/hparams.h"

namespace kvrag::engine {

// Default cache size cap: enough for chat and RAG prompts, without allocating a cache of the
// whole trained context (128k tokens and gigabytes of KV for some models) that few requests use.
inline constexpr int32_t kDefaultMaxCtx = 4096;

struct ContextSize {
    int32_t n_ctx = 0;      // KV cells in the shared cache (EngineConfig::n_ctx)
    int32_t n_ctx_seq = 0;  // most positions one sequence may hold (EngineConfig::n_ctx_seq); <= n_ctx
};

// requested_ctx is the user's --ctx; 0 (or less) means the default:
//   n_ctx     = requested_ctx > 0 ? requested_ctx : min(kDefaultMaxCtx, n_ctx_train)
//   n_ctx_seq = min(n_ctx, n_ctx_train)
// so a default cache never exceeds the trained context, and a larger --ctx buys room for more
// concurrent sequences, not longer ones. An n_ctx_train <= 0 (parse_hparams never gives one;
// a hand-built ModelHParams may) counts as unknown: n_ctx defaults to kDefaultMaxCtx and
// n_ctx_seq = n_ctx. Nothing is validated: an out-of-range requested_ctx is passed through so
// Engine::create rejects it with its own message (E4xxx, naming the range).
//
// Who uses n_ctx_seq: the server, where requests share the cells and each must stay within
// the trained context. The CLI's one-request-at-a-time commands (generate; ingest, search and
// ask) set n_ctx only and leave EngineConfig::n_ctx_seq at 0 (= n_ctx): their single sequence
// may use every cell, so `generate --ctx 8192` on a 2048-trained model really gives 8192
// positions (past the trained length, at the user's request) instead of leaving 6144 cells
// unusable. With the default --ctx the two agree (n_ctx <= n_ctx_train).
ContextSize default_context_size(const model::ModelHParams& hp, int32_t requested_ctx);

}  // namespace kvrag::engine
