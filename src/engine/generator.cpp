#include "engine/generator.h"

#include <chrono>

#include "sampling/stop_strings.h"
#include "tokenizer/stream_decoder.h"

namespace kvrag::engine {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Result<std::unique_ptr<Generator>> Generator::create(LoadedModel model, const EngineConfig& config) {
    if (config.n_ctx < 1 || config.n_ctx > (1 << 22)) {
        return Error{Errc::engine_bad_config, "context size " + std::to_string(config.n_ctx) + " is outside 1.." + std::to_string(1 << 22)};
    }
    if (config.n_batch < 1) {
        return Error{Errc::engine_bad_config, "batch size " + std::to_string(config.n_batch) + " must be >= 1"};
    }
    if (config.n_threads < 0 || config.n_threads > 1024) {
        return Error{Errc::engine_bad_config, "thread count " + std::to_string(config.n_threads) + " is outside 0..1024"};
    }
    auto geo = kvcache::make_geometry(model.model->hparams(), config.kv_type);
    if (!geo) return geo.error();
    return std::unique_ptr<Generator>(new Generator(std::move(model), config, *geo));
}

Generator::Generator(LoadedModel model, const EngineConfig& config, const kvcache::KvGeometry& geo)
    : model_(std::move(model)), config_(config) {
    const int n_threads = config.n_threads > 0 ? config.n_threads : physical_core_count();
    config_.n_threads = n_threads;
    pool_ = std::make_unique<ThreadPool>(n_threads);
    kv_ = std::make_unique<kvcache::KvStore>(geo, config.n_ctx);
    forward_ = std::make_unique<model::ForwardPass>(model_.model->hparams(), model_.model->weights());
}

Result<GenerateResult> Generator::generate(std::string_view prompt, const GenerateOptions& options,
                                           const TextCallback& on_text) {
    return generate_tokens(model_.tokenizer->encode(prompt, options.add_special, options.parse_special), options, on_text);
}

Result<GenerateResult> Generator::generate_tokens(const std::vector<int32_t>& prompt, const GenerateOptions& options,
                                                  const TextCallback& on_text) {
    if (auto v = sampling::validate(options.sampling); !v) return v.error();
    if (prompt.empty()) return Error{Errc::request_invalid, "the prompt is empty (0 tokens); give at least one token"};
    if (options.max_tokens < 0) {
        return Error{Errc::request_invalid, "max_tokens " + std::to_string(options.max_tokens) + " must be >= 0"};
    }
    const int64_t n_prompt = static_cast<int64_t>(prompt.size());
    const int64_t need = n_prompt + options.max_tokens;
    if (need > config_.n_ctx) {
        return Error{Errc::request_too_long, "prompt " + std::to_string(n_prompt) + " tokens + max_tokens " +
                                                 std::to_string(options.max_tokens) + " = " + std::to_string(need) +
                                                 " > context " + std::to_string(config_.n_ctx) +
                                                 "; raise --ctx or lower max_tokens"};
    }
    const int32_t n_vocab = model_.model->hparams().n_vocab;
    for (int32_t t : prompt) {
        if (t < 0 || t >= n_vocab) {
            return Error{Errc::tokenizer_bad_token, "prompt token " + std::to_string(t) + " is outside the vocabulary [0, " +
                                                        std::to_string(n_vocab) + ")"};
        }
    }

    GenerateResult res;
    res.prompt_tokens = prompt;
    // One sequence that owns cells [0, n) in position order.
    cells_.clear();
    std::vector<model::BatchToken> batch;
    auto feed = [&](const int32_t* toks, int64_t n) -> Result<void> {
        batch.clear();
        const int64_t first = static_cast<int64_t>(cells_.size());
        for (int64_t i = 0; i < n; ++i) cells_.push_back(static_cast<int32_t>(first + i));
        for (int64_t i = 0; i < n; ++i) {
            model::BatchToken bt;
            bt.token = toks[i];
            bt.pos = static_cast<int32_t>(first + i);
            bt.cell = cells_[first + i];
            bt.visible = cells_.data();
            bt.n_visible = static_cast<int32_t>(first + i + 1);
            bt.want_logits = i + 1 == n;
            batch.push_back(bt);
        }
        return forward_->run(batch, *kv_, *pool_, logits_);
    };

    const auto t_prefill = std::chrono::steady_clock::now();
    for (int64_t at = 0; at < n_prompt; at += config_.n_batch) {
        const int64_t n = std::min<int64_t>(config_.n_batch, n_prompt - at);
        if (auto r = feed(prompt.data() + at, n); !r) return r.error();
    }
    res.prefill_ms = ms_since(t_prefill);

    sampling::Sampler sampler(options.sampling, n_vocab);
    for (int32_t t : prompt) sampler.accept(t);
    sampling::StopStringMatcher stops(options.stop);
    tokenizer::StreamDecoder decoder(*model_.tokenizer);
    res.finish_reason = "length";
    const auto t_decode = std::chrono::steady_clock::now();
    bool cancelled = false, stop_string_hit = false;
    auto emit = [&](const std::string& text, int32_t id) {
        if (text.empty()) return;
        res.text += text;
        if (on_text && !on_text(text, id)) cancelled = true;
    };
    for (int32_t i = 0; i < options.max_tokens; ++i) {
        const int32_t id = sampler.sample(logits_.data());
        if (options.stop_at_eog && model_.tokenizer->is_eog(id)) {
            res.finish_reason = "stop";
            break;
        }
        sampler.accept(id);
        res.tokens.push_back(id);
        const auto step = stops.feed(decoder.feed(id));
        emit(step.emit, id);
        if (step.stopped) {
            res.finish_reason = "stop";
            stop_string_hit = true;
            break;
        }
        if (cancelled) {
            res.finish_reason = "cancelled";
            break;
        }
        if (i + 1 == options.max_tokens) break;  // the last token needs no forward pass
        if (auto r = feed(&id, 1); !r) return r.error();
    }
    if (!stop_string_hit) {  // release text held back for a possible stop string or UTF-8 tail
        const auto tail = stops.feed(decoder.flush());
        emit(tail.emit, -1);
        if (!tail.stopped) emit(stops.flush(), -1);
    }
    res.decode_ms = ms_since(t_decode);
    return res;
}

}  // namespace kvrag::engine
