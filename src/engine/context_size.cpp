#include "engine/context_size.h"

#include <algorithm>

namespace kvrag::engine {

ContextSize default_context_size(const model::ModelHParams& hp, int32_t requested_ctx) {
    const bool known = hp.n_ctx_train > 0;
    ContextSize c;
    c.n_ctx = requested_ctx > 0 ? requested_ctx : std::min(kDefaultMaxCtx, known ? hp.n_ctx_train : kDefaultMaxCtx);
    c.n_ctx_seq = known ? std::min(c.n_ctx, hp.n_ctx_train) : c.n_ctx;
    return c;
}

}  // namespace kvrag::engine
