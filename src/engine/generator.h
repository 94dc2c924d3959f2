// Single-request text generation: prefill the prompt in chunks, then sample token by token,
// streaming text pieces to a callback. The multi-request scheduler (server) is built on the
// same forward pass and cache.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/loaded_model.h"
#include "kvcache/kv_store.h"
#include "model/forward.h"
#include "sampling/sampler.h"

namespace kvrag::engine {

struct EngineConfig {
    int32_t n_ctx = 2048;        // KV cells
    int32_t n_threads = 0;       // 0 = physical cores
    int32_t n_batch = 256;       // max tokens per prefill chunk
    GgmlType kv_type = GgmlType::F16;
};

struct GenerateOptions {
    int32_t max_tokens = 128;
    sampling::SamplingParams sampling;
    std::vector<std::string> stop;   // stop strings (not included in the output)
    bool stop_at_eog = true;         // end at the model's end-of-generation tokens
    bool add_special = true;         // BOS/EOS as the model's metadata says
    bool parse_special = false;      // recognise special-token texts in the prompt
};

struct GenerateResult {
    std::vector<int32_t> prompt_tokens;
    std::vector<int32_t> tokens;     // generated ids (an end-of-generation token is not included)
    std::string text;                // generated text, stop string excluded
    std::string finish_reason;       // "stop" (eog or stop string) or "length"
    double prefill_ms = 0.0;
    double decode_ms = 0.0;
};

// Receives each piece of text as it becomes safe to show, with the id that completed it.
// Returning false cancels the generation (finish_reason "cancelled").
using TextCallback = std::function<bool(std::string_view piece, int32_t token)>;

class Generator {
public:
    static Result<std::unique_ptr<Generator>> create(LoadedModel model, const EngineConfig& config);

    const LoadedModel& model() const { return model_; }
    const EngineConfig& config() const { return config_; }
    size_t kv_bytes() const { return kv_->bytes(); }
    int n_threads() const { return pool_->size(); }

    Result<GenerateResult> generate(std::string_view prompt, const GenerateOptions& options,
                                    const TextCallback& on_text = nullptr);
    Result<GenerateResult> generate_tokens(const std::vector<int32_t>& prompt, const GenerateOptions& options,
                                           const TextCallback& on_text = nullptr);

private:
    Generator(LoadedModel model, const EngineConfig& config, const kvcache::KvGeometry& geo);

    LoadedModel model_;
    EngineConfig config_;
    std::unique_ptr<ThreadPool> pool_;
    std::unique_ptr<kvcache::KvStore> kv_;
    std::unique_ptr<model::ForwardPass> forward_;
    std::vector<int32_t> cells_;       // cell of each position of the current sequence
    std::vector<float> logits_;
};

}  // namespace kvrag::engine
