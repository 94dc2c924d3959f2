// A unit of work for the scheduler, shared between the thread that submitted it and the
// scheduler: a generation (prompt -> tokens), an embedding by the chat model (tokens -> one
// vector), or an encode job for an encoder model (token lists -> one vector or score each).
//
// How a job ended is its error code: Errc::ok when it finished (generation: stop or length),
// otherwise the one code of the error taxonomy (core/error.h) that says why: request_invalid,
// request_too_long, request_queue_timeout, request_timed_out, request_cancelled,
// server_shutting_down, or an engine error. job_outcome() derives the label /metrics counts.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "engine/embedder.h"
#include "engine/engine.h"

namespace kvrag::engine {

using Clock = std::chrono::steady_clock;

// generate and embed run on the chat Engine (embed: its mean-pooled hidden state, in a
// short-lived KV sequence); encode runs on an Encoder and holds no KV cells.
enum class JobKind { generate, embed, encode };

enum class JobState { queued, running, done };

// The outcome labels of kvrag_requests_ended_total, in a fixed order (index = job_outcome()).
inline constexpr std::array<std::string_view, 8> kJobOutcomeNames = {
    "finished", "invalid", "too_long", "queue_timeout", "timed_out", "cancelled", "shutdown", "failed"};
// Index into kJobOutcomeNames for a job that ended with `code` (ok = finished).
size_t job_outcome(Errc code);

class Job {
public:
    // ---- set before submit, read-only afterwards ----
    int64_t id = 0;                         // scheduler-wide, for /v1/kv (set by submit)
    std::string label;                      // the API's id (e.g. "chatcmpl-..."), for /v1/kv
    JobKind kind = JobKind::generate;
    std::vector<int32_t> prompt;            // generate: the prompt; embed: the input tokens
    GenerateOptions options;                // generate only
    Pooling pooling = Pooling::mean;        // embed only
    Encoder* encoder = nullptr;             // encode only: must outlive the job
    std::vector<std::vector<int32_t>> inputs;  // encode only: each input's token ids
    EmbedOptions encode_options;            // encode only
    bool keep_pieces = false;               // buffer text pieces for take() (streaming)
    // generate only: further choices of this prompt (n > 1). Submitted with this job, not on
    // their own: they are admitted with it and fork its sequence once its prompt is computed
    // (Engine::fork), so the prompt is computed once. Each has its own options (seed) and
    // ends like any job; its prompt is this job's.
    std::vector<std::shared_ptr<Job>> forks;
    Clock::time_point submitted{};          // set by submit

    // ---- for the submitting thread (all thread-safe) ----
    // Asks the scheduler to stop this job (client gone). Idempotent.
    void cancel() {
        cancel_.store(true, std::memory_order_relaxed);
        cv_.notify_all();
    }
    bool cancel_requested() const { return cancel_.load(std::memory_order_relaxed); }
    // Waits until the job left the queue (admitted or ended) or `wait` passed; returns the state.
    JobState wait_admitted(std::chrono::milliseconds wait);
    // Waits until the job ended or `wait` passed; true when ended.
    bool wait_done(std::chrono::milliseconds wait);
    // Text pieces produced since the last call (keep_pieces only). Waits up to `wait` when there
    // are none yet and the job runs. `done` tells whether the job has ended (no more pieces).
    struct Update {
        std::vector<std::string> pieces;
        std::vector<sampling::TokenLogprobs> logprobs;  // options.n_logprobs >= 0: tokens sampled since
        // (pieces) how many of `logprobs` had been sampled when each piece was released: piece
        // i's text is that of logprobs [logprobs_end[i - 1], logprobs_end[i]) (from 0 for the
        // first), plus any taken earlier with no piece of their own (their text was held back:
        // an unfinished UTF-8 character, a possible stop string). Entries past the last piece's
        // end have no text out yet.
        std::vector<size_t> logprobs_end;
        bool done = false;
    };
    Update take(std::chrono::milliseconds wait);

    JobState state() const;
    // Once done: code ok when the job finished, else why it ended (with the numbers).
    const Error& error() const { return error_; }
    bool finished() const { return state() == JobState::done && error_.code == Errc::ok; }
    // Once done: generated tokens and text (also what a cancelled generation had produced).
    const GenerateResult& result() const { return result_; }
    // Once done (embed jobs that finished): the pooled, normalised vector.
    const std::vector<float>& embedding() const { return embedding_; }
    // Once done (encode jobs that finished): one row per input, in input order.
    const std::vector<std::vector<float>>& vectors() const { return vectors_; }
    int32_t n_generated() const;
    double ttft_ms() const;  // submit to first generated token; negative when none yet

    // ---- for whoever drives a SchedulerCore ----
    // Publishes the end the core decided (state done, error) and wakes the waiters. Called once
    // per job handed out by SchedulerCore::take_ended(), after the snapshot that no longer lists
    // the job has been published.
    void mark_done();

private:
    friend class SchedulerCore;

    std::atomic<bool> cancel_{false};
    mutable std::mutex mu_;
    std::condition_variable cv_;
    // Guarded by mu_ (written by the scheduler, read by the submitter).
    JobState state_ = JobState::queued;
    std::vector<std::string> pieces_;
    std::vector<sampling::TokenLogprobs> logprobs_;
    std::vector<size_t> logprobs_end_;      // (pieces_) logprobs_.size() when each piece came
    int32_t n_generated_ = 0;
    double ttft_ms_ = -1.0;
    // Written by the scheduler before mark_done(); read by the submitter after it saw done.
    Error error_;
    Error pending_error_;                   // the end decided, not yet published
    GenerateResult result_;
    std::vector<float> embedding_;
    std::vector<std::vector<float>> vectors_;
    // Scheduler only.
    std::string busy_message_;              // why the last admission attempt had to wait
};

}  // namespace kvrag::engine
