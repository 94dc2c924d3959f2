#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/elapsed.h"

namespace kvrag::engine {
namespace {

using sampling::ConstrainedDraw;

// A request's grammar as the sampler's constraint. allowed() and the mask agree: a token is
// allowed when the matcher takes its piece; an end-of-generation token when the grammar is
// complete; any other token with an empty piece never.
class GrammarConstraint final : public sampling::TokenConstraint {
public:
    GrammarConstraint(const sampling::GrammarMatcher& m, const sampling::TokenMask& mask) : m_(m), mask_(mask) {}
    bool allowed(int32_t t) override {
        if (mask_.is_eog(t)) return m_.accepting();
        const std::string_view piece = mask_.piece(t);
        return !piece.empty() && m_.accepts(piece);
    }
    size_t mask(float* logits) override { return mask_.apply(m_, logits); }

private:
    const sampling::GrammarMatcher& m_;
    const sampling::TokenMask& mask_;
};

using Clock = std::chrono::steady_clock;

}  // namespace

Result<ContextPolicy> parse_context_policy(std::string_view name) {
    if (name == "error") return ContextPolicy::error;
    if (name == "truncate") return ContextPolicy::truncate;
    if (name == "shift") return ContextPolicy::shift;
    return Error{Errc::request_invalid, "context policy '" + std::string(name) + "' is not one of error, truncate, shift"};
}

const char* context_policy_name(ContextPolicy p) {
    switch (p) {
        case ContextPolicy::error: return "error";
        case ContextPolicy::truncate: return "truncate";
        case ContextPolicy::shift: return "shift";
    }
    return "?";
}

const char* finish_reason_name(FinishReason r) {
    switch (r) {
        case FinishReason::none: return "none";
        case FinishReason::stop: return "stop";
        case FinishReason::length: return "length";
        case FinishReason::cancelled: return "cancelled";
        case FinishReason::error: return "error";
    }
    return "?";
}

Request::Request(const tokenizer::Tokenizer& tok, const GenerateOptions& opt, int32_t n_vocab)
    : opt_(opt), sampler_(opt.sampling, n_vocab), stops_(opt.stop), decoder_(tok, /*special=*/false, opt.begins_text) {
    if (opt.grammar && !opt.stop.empty()) stop_grammar_.emplace(opt.grammar);
}

Request::~Request() {
    // Normally both lists are empty by now (finish() detaches); a request destroyed unfinished
    // (a scheduler failure) must not leave a pointer to itself behind.
    if (fork_parent_) std::erase(fork_parent_->forks_, this);
    for (Request* f : forks_) {
        f->fork_parent_ = nullptr;
        f->result_.finish = FinishReason::error;
        f->result_.error = Error{Errc::engine_internal, "the first choice ended before its prompt was computed"};
    }
}

Result<std::unique_ptr<Engine>> Engine::create(LoadedModel model, const EngineConfig& config) {
    if (model.model->is_encoder()) {
        // An encoder has no causal attention, no output head and no KV geometry to generate with.
        return Error{Errc::model_unsupported_arch,
                     model.model->file().path() + ": architecture '" + model.model->hparams().arch_name +
                         "' is an embedding/rerank (encoder-only) model and cannot generate text; use it with "
                         "`kvrag embed` / `kvrag rerank`, or as --embed-model / --rerank-model beside a chat model"};
    }
    if (config.n_ctx < 1 || config.n_ctx > (1 << 22)) {
        return Error{Errc::engine_bad_config, "context size " + std::to_string(config.n_ctx) + " is outside 1.." + std::to_string(1 << 22)};
    }
    if (config.n_ctx_seq < 0 || config.n_ctx_seq > config.n_ctx) {
        return Error{Errc::engine_bad_config, "per-sequence context " + std::to_string(config.n_ctx_seq) + " is outside 0.." +
                                                  std::to_string(config.n_ctx) + " (the cache size)"};
    }
    if (config.n_batch < 1) {
        return Error{Errc::engine_bad_config, "batch size " + std::to_string(config.n_batch) + " must be >= 1"};
    }
    if (config.n_threads < 0 || config.n_threads > 1024) {
        return Error{Errc::engine_bad_config, "thread count " + std::to_string(config.n_threads) + " is outside 0..1024"};
    }
    kvcache::KvCacheConfig kc;
    kc.n_cells = config.n_ctx;
    kc.type = config.kv_type;
    kc.block_tokens = config.prefix_block;
    kc.prefix_reuse = config.prefix_reuse;
    if (const model::ModelHParams& hp = model.model->hparams(); config.swa_split && hp.has_swa()) {
        if (config.n_seq_window < 1) {
            return Error{Errc::engine_bad_config, "sliding-window sequences " + std::to_string(config.n_seq_window) + " must be >= 1"};
        }
        // Each sequence holds at most its window (from a prefix-block boundary) plus one chunk:
        // KvCache::local_cap().
        const int64_t per_seq = static_cast<int64_t>(hp.n_swa) - 1 + (config.prefix_reuse ? config.prefix_block - 1 : 0) + config.n_batch;
        kc.split_local = true;
        kc.max_append = config.n_batch;
        kc.n_local_cells = static_cast<int32_t>(std::min<int64_t>(config.n_ctx, per_seq * config.n_seq_window));
    }
    // Context shift re-rotates stored keys with the model's own RoPE (frequency factors included;
    // a LongRoPE model's set is chosen by the per-sequence context, as the forward pass does).
    const int32_t n_ctx_seq = config.n_ctx_seq > 0 ? config.n_ctx_seq : config.n_ctx;
    model::KeyRotation rotation(model.model->hparams(),
                                model::rope_factors(model.model->weights(), model.model->hparams(), n_ctx_seq));
    auto cache = kvcache::KvCache::create(model.model->hparams(), kc, std::move(rotation));
    if (!cache) return cache.error();
    return std::unique_ptr<Engine>(new Engine(std::move(model), config, std::move(*cache)));
}

Engine::Engine(LoadedModel model, const EngineConfig& config, std::shared_ptr<kvcache::KvCache> cache)
    : model_(std::move(model)), config_(config), cache_(std::move(cache)) {
    config_.n_threads = config.n_threads > 0 ? config.n_threads : physical_core_count();
    if (config_.n_ctx_seq == 0) config_.n_ctx_seq = config_.n_ctx;
    pool_ = std::make_unique<ThreadPool>(config_.n_threads);
    forward_ = std::make_unique<model::ForwardPass>(model_.model->hparams(), model_.model->weights(), config_.n_ctx_seq);
}

std::vector<int32_t> Engine::tokenize(std::string_view text, const GenerateOptions& options) const {
    return model_.tokenizer->encode(text, options.add_special, options.parse_special);
}

Result<void> Engine::check_options(const GenerateOptions& opt, std::optional<sampling::GrammarMatcher>& grammar) {
    if (auto v = sampling::validate(opt.sampling); !v) return v.error();
    if (opt.max_tokens < 0) return Error{Errc::request_invalid, "max_tokens " + std::to_string(opt.max_tokens) + " must be >= 0"};
    if (opt.n_keep < 0) return Error{Errc::request_invalid, "n_keep " + std::to_string(opt.n_keep) + " must be >= 0"};
    // The grammar is checked before admission: an error after it would hold cells.
    if (opt.grammar) {
        grammar.emplace(opt.grammar);
        if (grammar->dead()) {
            return Error{Errc::request_invalid, "the grammar cannot match anything within the matcher's bounds (" +
                                                    std::to_string(sampling::kMaxStacks) + " stacks, depth " +
                                                    std::to_string(sampling::kMaxDepth) + ")"};
        }
        token_mask();  // built here, off the step loop, so the first step does not pay for it
    }
    const int32_t n_vocab = model_.model->hparams().n_vocab;
    for (const auto& [t, bias] : opt.logit_bias) {
        if (t < 0 || t >= n_vocab) {
            return Error{Errc::request_invalid, "logit_bias token " + std::to_string(t) + " is outside the vocabulary [0, " +
                                                    std::to_string(n_vocab) + ")"};
        }
        if (!std::isfinite(bias)) return Error{Errc::request_invalid, "logit_bias of token " + std::to_string(t) + " is not a finite number"};
    }
    if (opt.n_logprobs > sampling::kMaxTopLogprobs) {
        return Error{Errc::request_invalid, "top logprobs " + std::to_string(opt.n_logprobs) + " > the limit of " +
                                                std::to_string(sampling::kMaxTopLogprobs)};
    }
    return {};
}

Result<std::unique_ptr<Request>> Engine::start(std::vector<int32_t> prompt, const GenerateOptions& opt, TextCallback on_text,
                                               LogprobCallback on_logprobs, int32_t n_forks) {
    std::optional<sampling::GrammarMatcher> grammar;
    if (auto v = check_options(opt, grammar); !v) return v.error();
    if (prompt.empty()) return Error{Errc::request_invalid, "the prompt is empty (0 tokens); give at least one token"};
    if (n_forks < 0) return Error{Errc::request_invalid, "n_forks " + std::to_string(n_forks) + " must be >= 0"};
    const int32_t n_vocab = model_.model->hparams().n_vocab;
    for (int32_t t : prompt) {
        if (t < 0 || t >= n_vocab) {
            return Error{Errc::tokenizer_bad_token, "prompt token " + std::to_string(t) + " is outside the vocabulary [0, " +
                                                        std::to_string(n_vocab) + ")"};
        }
    }
    const int32_t limit = config_.n_ctx_seq;
    const int64_t n_prompt = static_cast<int64_t>(prompt.size());
    const int64_t need = n_prompt + opt.max_tokens;
    // The BOS token is always kept by truncate and shift, in addition to n_keep.
    const int32_t bos = model_.tokenizer->bos_id();
    const int32_t keep = static_cast<int32_t>(std::min<int64_t>(n_prompt, opt.n_keep + (bos >= 0 && prompt[0] == bos ? 1 : 0)));
    const std::string numbers = "prompt " + std::to_string(n_prompt) + " tokens + max_tokens " + std::to_string(opt.max_tokens) +
                                " = " + std::to_string(need) + " > context " + std::to_string(limit);
    int32_t n_truncated = 0;
    int32_t worst = static_cast<int32_t>(std::min<int64_t>(need, limit));
    switch (opt.policy) {
        case ContextPolicy::error:
            if (need > limit) {
                cache_->note_rejection(kvcache::RejectReason::never_fits);
                return Error{Errc::request_too_long, numbers + "; raise --ctx, lower max_tokens, or use --context-policy truncate"};
            }
            break;
        case ContextPolicy::truncate:
            if (need > limit) {
                if (static_cast<int64_t>(keep) + opt.max_tokens + 1 > limit) {
                    cache_->note_rejection(kvcache::RejectReason::never_fits);
                    return Error{Errc::request_too_long, numbers + ", and truncation cannot help: n_keep " + std::to_string(keep) +
                                                             " + max_tokens " + std::to_string(opt.max_tokens) +
                                                             " leaves no room for the prompt; lower max_tokens or n_keep, or raise --ctx"};
                }
                n_truncated = static_cast<int32_t>(need - limit);
                prompt.erase(prompt.begin() + keep, prompt.begin() + keep + n_truncated);
                cache_->note_truncation();
            }
            break;
        case ContextPolicy::shift:
            if (n_prompt >= limit) {
                cache_->note_rejection(kvcache::RejectReason::never_fits);
                return Error{Errc::request_too_long, "prompt " + std::to_string(n_prompt) + " tokens >= context " + std::to_string(limit) +
                                                         "; shift only makes room while generating: use --context-policy truncate or raise --ctx"};
            }
            if (keep + 2 > limit) {
                return Error{Errc::request_too_long, "n_keep " + std::to_string(keep) + " leaves nothing to shift in context " + std::to_string(limit)};
            }
            break;
    }
    // Each fork holds the prompt but its last position shared, and computes up to worst - that.
    const int32_t fork_reserve = worst - (static_cast<int32_t>(prompt.size()) - 1);
    const int64_t total = worst + static_cast<int64_t>(n_forks) * fork_reserve;
    if (n_forks > 0 && total > cache_->n_cells()) {
        cache_->note_rejection(kvcache::RejectReason::never_fits);
        return Error{Errc::request_too_long, std::to_string(n_forks + 1) + " choices need up to " + std::to_string(total) + " cells (prompt " +
                                                 std::to_string(prompt.size()) + " tokens, shared, + " + std::to_string(n_forks + 1) +
                                                 " x max_tokens " + std::to_string(opt.max_tokens) + "), more than the KV cache's " +
                                                 std::to_string(cache_->n_cells()) + "; lower n or max_tokens, or raise --ctx"};
    }
    // Sliding-window cache: every choice needs a window of local cells of its own (a fork
    // copies the prompt's, kvcache/kv_cache.h), all reserved now.
    if (n_forks > 0 && cache_->split_local()) {
        const int64_t each = std::min(worst, cache_->local_cap());
        const int64_t local_total = cache_->stats().local_total;
        if (each * (n_forks + 1) > local_total) {
            cache_->note_rejection(kvcache::RejectReason::never_fits);
            return Error{Errc::request_too_long, std::to_string(n_forks + 1) + " choices need " + std::to_string(each) +
                                                     " local cells each for their sliding windows (" + std::to_string(each * (n_forks + 1)) +
                                                     " in all), more than the local pool's " + std::to_string(local_total) +
                                                     "; lower n, or raise --parallel (the pool holds windows for --parallel + 1 sequences)"};
        }
    }
    auto r = std::unique_ptr<Request>(new Request(*model_.tokenizer, opt, n_vocab));
    auto seq = cache_->admit(prompt, static_cast<int32_t>(total), /*reuse_prefix=*/true, kvcache::ForkPlan{n_forks, worst});
    if (!seq) {
        const auto st = cache_->stats();
        std::string local;
        if (st.local_total > 0) {
            local = "; sliding-window layers: " + std::to_string(static_cast<int64_t>(std::min(worst, cache_->local_cap())) * (n_forks + 1)) +
                    " local cells needed, " +
                    std::to_string(st.local_free) + " of " + std::to_string(st.local_total) + " free and " + std::to_string(st.local_reserved) +
                    " reserved";
        }
        return Error{Errc::kv_no_space, "KV cache busy: this request needs up to " + std::to_string(worst) + " cells, " +
                                            std::to_string(st.free) + " of " + std::to_string(st.total) + " are free and " +
                                            std::to_string(st.reserved) + " reserved by running requests" + local + "; retry later"};
    }
    r->seq_ = std::move(*seq);
    r->id_ = next_request_id_.fetch_add(1);
    r->on_text_ = std::move(on_text);
    r->on_logprobs_ = std::move(on_logprobs);
    r->limit_ = limit;
    r->n_keep_ = keep;
    r->n_prefilled_ = r->seq_.n_reused();
    r->result_.n_reused = r->seq_.n_reused();
    r->result_.n_truncated = n_truncated;
    for (int32_t t : prompt) r->sampler_.accept(t);
    r->result_.prompt_tokens = std::move(prompt);
    r->grammar_ = std::move(grammar);
    r->n_forks_left_ = n_forks;
    r->fork_reserve_ = fork_reserve;
    if (opt.max_tokens == 0) finish(*r, FinishReason::length);
    return r;
}

Result<std::unique_ptr<Request>> Engine::fork(Request& parent, const GenerateOptions& opt, TextCallback on_text, LogprobCallback on_logprobs) {
    std::optional<sampling::GrammarMatcher> grammar;
    if (auto v = check_options(opt, grammar); !v) return v.error();
    if (parent.n_forks_left_ <= 0) return Error{Errc::request_invalid, "fork: the first choice was started without a reservation for another"};
    if (opt.max_tokens > 0 && (parent.done() || parent.n_prefilled_ > parent.result_.n_reused)) {
        return Error{Errc::request_invalid, "fork: the first choice has already run; forks are made right after it starts"};
    }
    if (opt.max_tokens != parent.opt_.max_tokens || opt.policy != parent.opt_.policy || opt.n_keep != parent.opt_.n_keep) {
        return Error{Errc::request_invalid, "fork: max_tokens, the context policy and n_keep must be the first choice's (its admission "
                                            "reserved the cells for them)"};
    }
    auto r = std::unique_ptr<Request>(new Request(*model_.tokenizer, opt, model_.model->hparams().n_vocab));
    r->id_ = next_request_id_.fetch_add(1);
    r->on_text_ = std::move(on_text);
    r->on_logprobs_ = std::move(on_logprobs);
    r->limit_ = parent.limit_;
    r->n_keep_ = parent.n_keep_;
    r->result_.n_truncated = parent.result_.n_truncated;
    r->result_.prompt_tokens = parent.result_.prompt_tokens;
    for (int32_t t : r->result_.prompt_tokens) r->sampler_.accept(t);
    r->grammar_ = std::move(grammar);
    r->fork_reserve_ = parent.fork_reserve_;
    --parent.n_forks_left_;
    if (opt.max_tokens == 0) {
        finish(*r, FinishReason::length);
        return r;
    }
    r->fork_parent_ = &parent;
    parent.forks_.push_back(r.get());
    return r;
}

void Engine::hand_out_forks(Request& r) {
    const int32_t n_prompt = static_cast<int32_t>(r.result_.prompt_tokens.size());
    for (Request* f : r.forks_) {
        f->fork_parent_ = nullptr;
        // The last prompt position is computed again, by the fork, for its own first logits.
        f->seq_ = cache_->fork_reserved(r.seq_, n_prompt - 1, f->fork_reserve_);
        f->n_prefilled_ = n_prompt - 1;
        f->result_.n_reused = n_prompt - 1;
    }
    r.forks_.clear();
}

const sampling::TokenMask& Engine::token_mask() {
    std::call_once(mask_once_, [this] {
        const tokenizer::Tokenizer& tok = *model_.tokenizer;
        const int32_t n_vocab = model_.model->hparams().n_vocab;
        std::vector<std::string> pieces(static_cast<size_t>(n_vocab));
        std::vector<bool> eog(static_cast<size_t>(n_vocab), false);
        for (int32_t i = 0; i < n_vocab; ++i) {
            pieces[static_cast<size_t>(i)] = tok.token_to_piece(i);
            eog[static_cast<size_t>(i)] = tok.is_eog(i);
        }
        token_mask_ = std::make_unique<const sampling::TokenMask>(pieces, eog);
    });
    return *token_mask_;
}

void Engine::finish(Request& r, FinishReason why, Error err) {
    if (r.done()) return;
    if (r.fork_parent_) {
        std::erase(r.fork_parent_->forks_, &r);  // its reserved cells go back with the parent's
        r.fork_parent_ = nullptr;
    }
    if (!r.forks_.empty()) {
        // Ended before its prompt was computed: the waiting forks have nothing to share.
        const std::vector<Request*> forks = std::move(r.forks_);
        r.forks_.clear();
        for (Request* f : forks) {
            f->fork_parent_ = nullptr;
            if (why == FinishReason::cancelled) {
                finish(*f, FinishReason::cancelled);
            } else {
                finish(*f, FinishReason::error, Error{err.code == Errc::ok ? Errc::engine_internal : err.code,
                                                      "the first choice ended before its prompt was computed: " + err.message});
            }
        }
    }
    if (why == FinishReason::stop || why == FinishReason::length || why == FinishReason::cancelled) {
        // Release text held back for a possible stop string or an unfinished UTF-8 character.
        const auto tail = feed_stops(r, r.decoder_.flush());
        std::string rest = tail.emit;
        if (!tail.stopped) rest += r.stops_.flush();
        if (!rest.empty()) {
            r.result_.text += rest;
            if (r.on_text_ && why != FinishReason::cancelled) r.on_text_(rest, -1);
        }
    }
    r.result_.finish = why;
    r.result_.error = std::move(err);
    if (r.opt_.keep_for_followup && (why == FinishReason::stop || why == FinishReason::length) && r.seq_.valid() &&
        !r.prefilling()) {
        cache_->publish_continuation(r.seq_);
    }
    r.seq_.release();  // the cells go back now, whatever the reason
}

sampling::StopStringMatcher::Step Engine::feed_stops(Request& r, std::string_view text) {
    if (!r.stop_grammar_) return r.stops_.feed(text);
    // Under a grammar a stop string ends the answer only where the text before it is a
    // complete sentence of the grammar: a stop string inside the JSON (a space, a newline the
    // grammar allows between tokens) would cut it into something invalid.
    const sampling::GrammarMatcher& released = *r.stop_grammar_;
    auto step = r.stops_.feed(text, [&released](std::string_view before) {
        sampling::GrammarMatcher m = released;
        return m.advance(before) && m.accepting();
    });
    if (!step.stopped) r.stop_grammar_->advance(step.emit);
    return step;
}

bool Engine::emit_token(Request& r, int32_t id) {
    r.result_.tokens.push_back(id);
    const auto step = feed_stops(r, r.decoder_.feed(id));
    if (!step.emit.empty()) {
        r.result_.text += step.emit;
        if (r.on_text_) {
            // A failing consumer ends its own request, never the step the others share.
            try {
                if (!r.on_text_(step.emit, id)) r.cancel();
            } catch (const std::exception& e) {
                finish(r, FinishReason::error, Error{Errc::engine_internal, std::string("text callback threw: ") + e.what()});
                return false;
            }
        }
    }
    if (step.stopped) {
        // A stop string ended the text: nothing after it is shown.
        r.result_.finish = FinishReason::stop;
        r.seq_.release();
        return false;
    }
    return true;
}

void Engine::step(std::span<Request* const> active) {
    std::lock_guard<std::mutex> lock(run_mu_);
    const auto t0 = Clock::now();
    batch_.clear();
    batch_owner_.clear();
    int32_t n_decode = 0;
    // 1. Decode tokens first: one per decoding request, so running requests never stall.
    for (Request* r : active) {
        if (r->done()) continue;
        if (r->cancel_.load(std::memory_order_relaxed)) {
            finish(*r, FinishReason::cancelled);
            continue;
        }
        if (r->prefilling() || r->waiting_for_fork()) continue;
        if (r->opt_.policy == ContextPolicy::shift && r->seq_.n_tokens() >= r->limit_) {
            const int32_t n = r->seq_.n_tokens();
            const int32_t n_discard = std::max(1, (n - r->n_keep_) / 2);
            if (!cache_->shift(r->seq_, r->n_keep_, n_discard)) {
                finish(*r, FinishReason::error, Error{Errc::kv_no_space, "context shift found no free cells to copy shared keys into"});
                continue;
            }
            ++r->result_.n_shifts;
        }
        const int32_t tok = r->next_token_;
        if (!cache_->append(r->seq_, std::span<const int32_t>(&tok, 1))) {
            finish(*r, FinishReason::error, Error{Errc::kv_no_space, "no KV cell for the next token (sequence holds " +
                                                                        std::to_string(r->seq_.n_tokens()) + ")"});
            continue;
        }
        batch_.push_back({tok, r->seq_.n_tokens() - 1, r->seq_.cells().back(), nullptr, r->seq_.n_tokens(), true});
        batch_owner_.push_back(r);
        ++n_decode;
    }
    // 2. Prefill chunks with the remaining budget (at least one token so prefill always advances).
    int32_t budget = std::max(1, config_.n_batch - n_decode);
    std::vector<std::pair<Request*, int32_t>> prefills;  // request, first batch index
    for (Request* r : active) {
        if (r->done() || !r->prefilling() || r->waiting_for_fork() || budget <= 0) continue;
        const int32_t n_prompt = static_cast<int32_t>(r->result_.prompt_tokens.size());
        const int32_t n = std::min(budget, n_prompt - r->n_prefilled_);
        const std::span<const int32_t> toks(r->result_.prompt_tokens.data() + r->n_prefilled_, static_cast<size_t>(n));
        if (!cache_->append(r->seq_, toks)) {
            finish(*r, FinishReason::error, Error{Errc::kv_no_space, "no KV cells for the prompt"});
            continue;
        }
        prefills.emplace_back(r, static_cast<int32_t>(batch_.size()));
        for (int32_t i = 0; i < n; ++i) {
            const int32_t pos = r->n_prefilled_ + i;
            const bool last = pos + 1 == n_prompt;
            batch_.push_back({toks[i], pos, r->seq_.cells()[pos], nullptr, pos + 1, last});
            if (last) batch_owner_.push_back(r);
        }
        budget -= n;
    }
    if (batch_.empty()) return;
    // Cell lists are final for this step now: point each token at its sequence's list.
    {
        size_t at = 0;
        for (size_t i = 0; i < static_cast<size_t>(n_decode); ++i, ++at) batch_[at].visible = batch_owner_[i]->seq_.cells().data();
        for (auto& [r, first] : prefills) {
            const int32_t n = r->seq_.n_tokens() - r->n_prefilled_;
            for (int32_t i = 0; i < n; ++i) batch_[first + i].visible = r->seq_.cells().data();
        }
        if (cache_->split_local()) {  // sliding-window cache only: the local layers' cells
            at = 0;
            for (size_t i = 0; i < static_cast<size_t>(n_decode); ++i, ++at) batch_owner_[i]->seq_.fill_local(batch_[at]);
            for (auto& [r, first] : prefills) {
                const int32_t n = r->seq_.n_tokens() - r->n_prefilled_;
                for (int32_t i = 0; i < n; ++i) r->seq_.fill_local(batch_[first + i]);
            }
        }
    }
    // batch_owner_ lists the logit-bearing tokens' requests in batch order (decode tokens, then
    // the last token of each completed prefill): the order ForwardPass returns logits in.
    const std::vector<Request*>& owners = batch_owner_;

    Result<void> ran = Error{Errc::engine_internal, "forward pass did not run"};
    try {
        ran = forward_->run(batch_, cache_->view(), *pool_, logits_);
    } catch (const std::exception& e) {
        ran = Error{Errc::engine_internal, std::string("forward pass failed: ") + e.what()};
    }
    const auto t1 = Clock::now();
    steps_.fetch_add(1, std::memory_order_relaxed);
    if (!ran) {
        for (Request* r : active) {
            if (!r->done()) finish(*r, FinishReason::error, ran.error());
        }
        return;
    }
    for (auto& [r, first] : prefills) {
        const int32_t n = r->seq_.n_tokens() - r->n_prefilled_;
        r->n_prefilled_ += n;
        prompt_tokens_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
        r->result_.prefill_ms += ms_between(t0, t1);
        if (!r->prefilling()) {
            cache_->publish_prefix(r->seq_, static_cast<int32_t>(r->result_.prompt_tokens.size()));
            hand_out_forks(*r);  // before r samples, so r ending at its first token shares anyway
        }
    }
    if (n_decode > 0) {
        decode_micros_.fetch_add(static_cast<uint64_t>(ms_between(t0, t1) * 1000.0), std::memory_order_relaxed);
        decode_tokens_.fetch_add(static_cast<uint64_t>(n_decode), std::memory_order_relaxed);
    }
    const int32_t n_vocab = model_.model->hparams().n_vocab;
    for (size_t k = 0; k < owners.size(); ++k) {
        Request& r = *owners[k];
        if (r.done()) continue;
        if (k < static_cast<size_t>(n_decode)) r.result_.decode_ms += ms_between(t0, t1);
        float* logits = logits_.data() + k * static_cast<size_t>(n_vocab);
        for (const auto& [t, bias] : r.opt_.logit_bias) logits[t] += bias;
        // Under a grammar the drawn token is tried first and the full mask (a walk of the
        // vocabulary's trie) is computed only when it is needed: Sampler::sample_constrained,
        // exact for greedy and for every filter (docs/grammar.md). logprobs report the masked
        // distribution, so those requests always mask.
        int32_t id = -1;
        if (r.grammar_) {
            ConstrainedDraw drawn;
            if (r.opt_.n_logprobs < 0) {
                GrammarConstraint gc(*r.grammar_, *token_mask_);
                drawn = r.sampler_.sample_constrained(logits, gc);
            } else {
                drawn.masked = true;
                if (token_mask_->apply(*r.grammar_, logits) > 0) drawn.token = r.sampler_.sample(logits);
            }
            if (drawn.masked) ++r.result_.n_grammar_masked;
            if (drawn.token < 0) {
                if (r.grammar_->accepting()) {
                    finish(r, FinishReason::stop);
                } else {
                    finish(r, FinishReason::error, Error{Errc::request_invalid, "no token of the vocabulary can continue the grammar after " +
                                                                                    std::to_string(r.result_.tokens.size()) + " generated tokens"});
                }
                continue;
            }
            id = drawn.token;
        } else {
            id = r.sampler_.sample(logits);
        }
        if ((r.opt_.stop_at_eog || r.grammar_) && model_.tokenizer->is_eog(id)) {
            finish(r, FinishReason::stop);
            continue;
        }
        if (r.grammar_ && !r.grammar_->advance(token_mask_->piece(id))) {
            // The mask allowed it, so this is a bug, not bad input.
            finish(r, FinishReason::error, Error{Errc::engine_internal, "sampled token " + std::to_string(id) + " does not continue the grammar"});
            continue;
        }
        if (r.opt_.n_logprobs >= 0) {
            // The sampler left the penalised (biased, masked) logits in `logits`.
            r.result_.logprobs.push_back(sampling::compute_logprobs(logits, n_vocab, r.opt_.sampling.temperature, id, r.opt_.n_logprobs));
            if (r.on_logprobs_) r.on_logprobs_(r.result_.logprobs.back());
        }
        r.sampler_.accept(id);
        generated_tokens_.fetch_add(1, std::memory_order_relaxed);
        if (!emit_token(r, id)) continue;
        if (r.grammar_ && r.grammar_->finished()) {
            finish(r, FinishReason::stop);
            continue;
        }
        if (r.cancel_.load(std::memory_order_relaxed)) {
            finish(r, FinishReason::cancelled);
            continue;
        }
        if (static_cast<int32_t>(r.result_.tokens.size()) >= r.opt_.max_tokens) {
            finish(r, FinishReason::length);
            continue;
        }
        r.next_token_ = id;
    }
}

Result<Pooling> parse_pooling(std::string_view name) {
    if (name == "mean") return Pooling::mean;
    if (name == "last") return Pooling::last;
    return Error{Errc::request_invalid, "pooling '" + std::string(name) + "' is not one of mean, last"};
}

Result<std::vector<float>> Engine::embed(std::string_view text, Pooling pooling) {
    GenerateOptions o;
    return embed_tokens(tokenize(text, o), pooling);
}

Result<std::vector<float>> Engine::embed_tokens(std::span<const int32_t> tokens, Pooling pooling) {
    const int32_t n = static_cast<int32_t>(tokens.size());
    if (n == 0) return Error{Errc::request_invalid, "cannot embed an empty input (0 tokens)"};
    if (n > config_.n_ctx_seq) {
        return Error{Errc::request_too_long, "input " + std::to_string(n) + " tokens > context " + std::to_string(config_.n_ctx_seq) +
                                                 "; split the text into smaller chunks or raise --ctx"};
    }
    const int32_t n_vocab = model_.model->hparams().n_vocab;
    for (int32_t t : tokens) {
        if (t < 0 || t >= n_vocab) {
            return Error{Errc::tokenizer_bad_token, "token " + std::to_string(t) + " is outside the vocabulary [0, " + std::to_string(n_vocab) + ")"};
        }
    }
    auto seq = cache_->admit(tokens, n, /*reuse_prefix=*/false);
    if (!seq) {
        return Error{Errc::kv_no_space, "KV cache busy: embedding needs " + std::to_string(n) + " cells; retry later"};
    }
    const int32_t dim = embedding_dim();
    std::vector<double> acc(static_cast<size_t>(dim), 0.0);
    std::vector<model::BatchToken> batch;
    for (int32_t at = 0; at < n; at += config_.n_batch) {
        const int32_t m = std::min(config_.n_batch, n - at);
        if (!cache_->append(*seq, tokens.subspan(static_cast<size_t>(at), static_cast<size_t>(m)))) {
            return Error{Errc::kv_no_space, "no KV cells for the embedding input"};
        }
        batch.clear();
        for (int32_t i = 0; i < m; ++i) {
            const int32_t pos = at + i;
            batch.push_back({tokens[pos], pos, seq->cells()[pos], seq->cells().data(), pos + 1, true});
            if (cache_->split_local()) seq->fill_local(batch.back());
        }
        // The forward-pass lock is taken per chunk, so a long embedding does not stall the
        // running requests' decode steps for its whole length.
        std::lock_guard<std::mutex> lock(run_mu_);
        std::vector<float> unused;
        if (auto r = forward_->run(batch, cache_->view(), *pool_, unused, &hidden_, false); !r) return r.error();
        for (int32_t i = 0; i < m; ++i) {
            if (pooling == Pooling::last && at + i != n - 1) continue;
            for (int32_t d = 0; d < dim; ++d) acc[d] += hidden_[static_cast<size_t>(i) * dim + d];
        }
    }
    double norm = 0.0;
    for (double v : acc) norm += v * v;
    norm = std::sqrt(norm);
    std::vector<float> out(static_cast<size_t>(dim));
    // Mean pooling divides by n, which the L2 normalisation cancels; only the direction matters.
    for (int32_t d = 0; d < dim; ++d) out[d] = norm > 0.0 ? static_cast<float>(acc[d] / norm) : 0.0f;
    return out;
}

Result<GenerateResult> Engine::generate(std::string_view prompt, const GenerateOptions& options, const TextCallback& on_text) {
    return generate_tokens(tokenize(prompt, options), options, on_text);
}

Result<GenerateResult> Engine::generate_tokens(std::vector<int32_t> prompt, const GenerateOptions& options, const TextCallback& on_text) {
    auto r = start(std::move(prompt), options, on_text);
    if (!r) return r.error();
    Request* active[1] = {r->get()};
    while (!(*r)->done()) step(active);
    if ((*r)->result().finish == FinishReason::error) return (*r)->result().error;
    return (*r)->result();
}

Engine::Totals Engine::totals() const {
    Totals t;
    t.prompt_tokens = prompt_tokens_.load();
    t.generated_tokens = generated_tokens_.load();
    t.steps = steps_.load();
    t.decode_tokens = decode_tokens_.load();
    t.decode_seconds = static_cast<double>(decode_micros_.load()) / 1e6;
    return t;
}

}  // namespace kvrag::engine
