// The engine: admission, context policies and the step loop that drives requests through the
// forward pass over one shared KV cache.
//
// A request is admitted only if its worst case fits (prompt + max_tokens, less the prefix it
// reuses), so once running it can never hit a full cache. Each step batches the decode token of
// every decoding request with chunks of prefill for new ones (chunked prefill, within n_batch
// tokens); a request that finishes, fails or is cancelled releases its cells in that same step.
// The single-request CLI path and the server's continuous batching both run on step().
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/loaded_model.h"
#include "kvcache/kv_cache.h"
#include "model/forward.h"
#include "sampling/grammar.h"
#include "sampling/logprobs.h"
#include "sampling/sampler.h"
#include "sampling/stop_strings.h"
#include "tokenizer/stream_decoder.h"

namespace kvrag::engine {

// What happens when a request does not fit its context.
enum class ContextPolicy {
    error,     // refuse with the numbers (default)
    truncate,  // before decoding, drop the oldest prompt tokens after the first n_keep
    shift,     // while generating, drop the older half after n_keep and re-rotate the rest
};
Result<ContextPolicy> parse_context_policy(std::string_view name);
const char* context_policy_name(ContextPolicy p);

struct EngineConfig {
    int32_t n_ctx = 2048;        // cells in the shared KV cache
    int32_t n_ctx_seq = 0;       // max positions one sequence may hold; 0 = n_ctx
    int32_t n_threads = 0;       // 0 = physical cores
    int32_t n_batch = 256;       // max tokens per forward step (prefill chunk budget)
    GgmlType kv_type = GgmlType::F16;
    int32_t prefix_block = 16;   // tokens per shared prefix block
    bool prefix_reuse = true;
    // Sliding-window models (gemma3): keep the local layers' K/V only for each sequence's last
    // n_swa positions, in a pool sized for n_seq_window sequences at once (never more than
    // n_ctx cells). swa_split false: every cell holds all layers (as for other models).
    bool swa_split = true;
    int32_t n_seq_window = 4;
};

struct GenerateOptions {
    int32_t max_tokens = 128;
    sampling::SamplingParams sampling;
    std::vector<std::string> stop;   // stop strings (not included in the output)
    bool stop_at_eog = true;         // end at the model's end-of-generation tokens
    bool add_special = true;         // BOS/EOS as the model's metadata says
    bool parse_special = false;      // recognise special-token texts in the prompt
    ContextPolicy policy = ContextPolicy::error;
    int32_t n_keep = 0;              // prompt tokens truncate/shift never drop (besides BOS)
    // The generated text begins a text of its own (a chat message) rather than continuing the
    // prompt's: the space an SPM vocabulary's first piece starts with is dropped, as
    // Tokenizer::decode does. false (completions): kept, " Paris" after "The capital of France
    // is", as llama.cpp's server and OpenAI give it (tokenizer/stream_decoder.h).
    bool begins_text = false;
    // Constrained decoding: when set, every sampled token keeps the output inside this grammar
    // (tokens that cannot continue it are masked before sampling; end-of-generation tokens
    // only once it is complete, whatever stop_at_eog says). The request ends with "stop" when
    // the grammar is complete and nothing more can follow, or when an eog token is chosen.
    std::shared_ptr<const sampling::Grammar> grammar;
    // (token id, value) pairs added to those logits before the grammar mask and the penalties
    // (OpenAI's logit_bias; -100 in practice bans a token). Ids outside the vocabulary are
    // refused by start().
    std::vector<std::pair<int32_t, float>> logit_bias;
    // -1: none. n >= 0: every generated token's logprob and its n likeliest alternatives
    // (n <= sampling::kMaxTopLogprobs; see sampling/logprobs.h for the distribution) go to
    // GenerateResult::logprobs and to the LogprobCallback.
    int32_t n_logprobs = -1;
    // A chat turn: when it ends (stop or length), its prompt and generated tokens stay in the
    // prefix cache even on first sight, with the local cells of its last window on a
    // sliding-window model, so the next turn (which extends them) reuses all of it
    // (KvCache::publish_continuation). Off: only prompts seen twice are kept.
    bool keep_for_followup = false;
};

enum class FinishReason { none, stop, length, cancelled, error };

// How an embedding pools the final (normed) hidden states of a text's tokens.
enum class Pooling { mean, last };
Result<Pooling> parse_pooling(std::string_view name);
const char* finish_reason_name(FinishReason r);

struct GenerateResult {
    std::vector<int32_t> prompt_tokens;  // as decoded (after truncation)
    std::vector<int32_t> tokens;         // generated ids (an end-of-generation token is not included)
    std::string text;                    // generated text, stop string excluded
    std::vector<sampling::TokenLogprobs> logprobs;  // (tokens.size()) when n_logprobs >= 0
    FinishReason finish = FinishReason::none;
    Error error;                         // when finish == error
    int32_t n_reused = 0;                // prompt tokens taken from the prefix cache
    int32_t n_truncated = 0;             // prompt tokens dropped by the truncate policy
    int32_t n_shifts = 0;                // context shifts during generation
    int32_t n_grammar_masked = 0;        // steps whose token needed the full grammar mask (see Engine::step)
    double prefill_ms = 0.0;
    double decode_ms = 0.0;
    std::string finish_reason() const { return finish_reason_name(finish); }
};

// Receives each piece of text as it becomes safe to show, with the id that completed it.
// Returning false cancels the request.
using TextCallback = std::function<bool(std::string_view piece, int32_t token)>;
// Receives each generated token's logprobs (n_logprobs >= 0) as soon as it is sampled, before
// its text is released (streams send them with the next text).
using LogprobCallback = std::function<void(const sampling::TokenLogprobs&)>;

class Engine;

// One admitted request. Created by Engine::start, driven by Engine::step; holds its KV
// sequence until it finishes (cells are released at that step, not when this object dies).
class Request {
public:
    int64_t id() const { return id_; }
    bool done() const { return result_.finish != FinishReason::none; }
    const GenerateResult& result() const { return result_; }
    // Thread-safe: the request ends at the next step, with its cells released there.
    void cancel() { cancel_.store(true, std::memory_order_relaxed); }
    int32_t n_cells() const { return seq_.n_tokens(); }
    int64_t seq_id() const { return seq_.id(); }
    bool prefilling() const { return n_prefilled_ < static_cast<int32_t>(result_.prompt_tokens.size()); }
    // A fork (Engine::fork) whose parent has not finished its prompt yet: it holds no cells
    // and is skipped by step() until the parent's prefill completes.
    bool waiting_for_fork() const { return fork_parent_ != nullptr; }
    ~Request();
    Request(const Request&) = delete;
    Request& operator=(const Request&) = delete;

private:
    friend class Engine;
    Request(const tokenizer::Tokenizer& tok, const GenerateOptions& opt, int32_t n_vocab);

    int64_t id_ = 0;
    GenerateOptions opt_;
    TextCallback on_text_;
    LogprobCallback on_logprobs_;
    kvcache::Sequence seq_;
    sampling::Sampler sampler_;
    sampling::StopStringMatcher stops_;
    std::optional<sampling::GrammarMatcher> grammar_;  // when opt_.grammar is set
    // Under a grammar with stop strings: the grammar's state after the text released so far
    // (result_.text), so that a stop match is honoured only where the text before it is
    // complete (Engine::emit_token, docs/grammar.md).
    std::optional<sampling::GrammarMatcher> stop_grammar_;
    tokenizer::StreamDecoder decoder_;
    GenerateResult result_;
    int32_t n_prefilled_ = 0;            // prompt positions already in the cache
    int32_t next_token_ = -1;            // sampled, not yet fed back
    int32_t n_keep_ = 0;                 // effective keep for shift
    int32_t limit_ = 0;                  // max positions of this sequence
    // n > 1 choices (Engine::start with n_forks, Engine::fork). Parent side: forks not yet
    // given their sequence, the forks start() reserved cells for and not yet handed out, and
    // the cells each fork takes from this sequence's reservation. Fork side: the parent while
    // waiting for it. All touched only by the thread that drives step().
    std::vector<Request*> forks_;
    int32_t n_forks_left_ = 0;
    int32_t fork_reserve_ = 0;
    Request* fork_parent_ = nullptr;
    std::atomic<bool> cancel_{false};
};

class Engine {
public:
    static Result<std::unique_ptr<Engine>> create(LoadedModel model, const EngineConfig& config);

    const LoadedModel& model() const { return model_; }
    const EngineConfig& config() const { return config_; }
    int n_threads() const { return pool_->size(); }
    kvcache::KvCache& cache() { return *cache_; }
    std::shared_ptr<kvcache::KvCache> cache_ptr() { return cache_; }

    std::vector<int32_t> tokenize(std::string_view text, const GenerateOptions& options) const;

    // Applies the context policy and admits the request (thread-safe). Errors:
    //   request_too_long: it can never fit (the message names prompt, max_tokens and context);
    //   kv_no_space: it fits but the cache cannot hold it now (busy; retry later);
    //   request_invalid / tokenizer_bad_token: bad parameters or token ids.
    // n_forks > 0 (n > 1 choices of one prompt): also reserves the cells of n_forks further
    // sequences (each max_tokens + 1: the shared prompt less its last position, which each
    // fork computes for its own logits), for fork() to hand out; on a sliding-window model
    // also a window of local cells per choice (a fork copies the prompt's window into its own).
    // request_too_long when the total can never fit the cache or the local pool (the message
    // names n, prompt, max_tokens and the cache).
    Result<std::unique_ptr<Request>> start(std::vector<int32_t> prompt, const GenerateOptions& options,
                                           TextCallback on_text = nullptr, LogprobCallback on_logprobs = nullptr,
                                           int32_t n_forks = 0);
    // Another choice of parent's prompt, as its own sequence: once parent has computed its
    // prompt (in the same step), the fork takes parent's prompt cells instead of computing
    // them, except the last position, which it computes for its own first logits. So the
    // prompt is prefilled once for all choices, whether or not the prefix cache keeps it.
    // Call right after start(..., n_forks), before any step, at most n_forks times; options
    // may differ from the parent's only in sampling, logprobs and the callbacks (the
    // reservation was sized from max_tokens and the context policy). Errors: request_invalid
    // (bad options, or no fork left / parent already prefilled: a caller bug).
    // If the parent ends before its prompt is computed (cancelled, failed), its waiting forks
    // end with an error in that step too.
    Result<std::unique_ptr<Request>> fork(Request& parent, const GenerateOptions& options, TextCallback on_text = nullptr,
                                          LogprobCallback on_logprobs = nullptr);

    // One forward pass over the unfinished requests in `active` (see the file comment).
    // Requests that finish in this step release their cells before it returns.
    void step(std::span<Request* const> active);

    // Embedding of a text: pooled final hidden state, L2-normalised, (n_embd) floats. Runs in
    // its own short-lived sequence (no prefix reuse: every position is computed). Thread-safe
    // with respect to step(); the server runs it on the scheduler thread as an embed Job. Errors: request_too_long when the text exceeds the per-sequence
    // context (the message names both), kv_no_space when the cache is busy.
    Result<std::vector<float>> embed(std::string_view text, Pooling pooling = Pooling::mean);
    Result<std::vector<float>> embed_tokens(std::span<const int32_t> tokens, Pooling pooling = Pooling::mean);
    int32_t embedding_dim() const { return model_.model->hparams().n_embd; }

    // start + step until done, for one request.
    Result<GenerateResult> generate(std::string_view prompt, const GenerateOptions& options,
                                    const TextCallback& on_text = nullptr);
    Result<GenerateResult> generate_tokens(std::vector<int32_t> prompt, const GenerateOptions& options,
                                           const TextCallback& on_text = nullptr);

    // Totals since start, for metrics.
    struct Totals {
        uint64_t prompt_tokens = 0;     // prompt tokens computed (reused ones excluded)
        uint64_t generated_tokens = 0;
        uint64_t steps = 0;
        double decode_seconds = 0.0;    // wall time of steps that carried decode tokens
        uint64_t decode_tokens = 0;
    };
    Totals totals() const;

private:
    Engine(LoadedModel model, const EngineConfig& config, std::shared_ptr<kvcache::KvCache> cache);
    void finish(Request& r, FinishReason why, Error err = {});
    // The checks start() and fork() share; fills `grammar` when options.grammar is set.
    Result<void> check_options(const GenerateOptions& opt, std::optional<sampling::GrammarMatcher>& grammar);
    // r has computed its prompt: its waiting forks take its cells (step()).
    void hand_out_forks(Request& r);
    // Feeds one sampled token's text through the stop matcher; returns false when it ended r.
    bool emit_token(Request& r, int32_t id);
    // The request's stop strings over `text` (the grammar rule of stop_grammar_ applied).
    sampling::StopStringMatcher::Step feed_stops(Request& r, std::string_view text);
    // The vocabulary's piece trie, built on the first request with a grammar.
    const sampling::TokenMask& token_mask();

    LoadedModel model_;
    EngineConfig config_;
    std::unique_ptr<ThreadPool> pool_;
    std::shared_ptr<kvcache::KvCache> cache_;
    std::unique_ptr<model::ForwardPass> forward_;
    std::vector<model::BatchToken> batch_;
    std::vector<Request*> batch_owner_;      // request of each batch token wanting logits
    std::vector<float> logits_;
    std::vector<float> hidden_;
    std::once_flag mask_once_;
    std::unique_ptr<const sampling::TokenMask> token_mask_;
    std::mutex run_mu_;                      // one forward pass at a time (step, embed)
    std::atomic<int64_t> next_request_id_{1};
    std::atomic<uint64_t> prompt_tokens_{0}, generated_tokens_{0}, steps_{0}, decode_tokens_{0};
    std::atomic<uint64_t> decode_micros_{0};
};

}  // namespace kvrag::engine
