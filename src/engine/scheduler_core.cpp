#include "engine/scheduler_core.h"

#include <algorithm>
#include <cstdio>

#include "core/elapsed.h"

namespace kvrag::engine {
namespace {

std::string seconds_text(double s) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", s);
    return buf;
}

Clock::duration seconds(double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); }

}  // namespace

size_t job_outcome(Errc code) {
    switch (code) {
        case Errc::ok: return 0;
        case Errc::request_invalid:
        case Errc::tokenizer_bad_token:
        case Errc::tokenizer_bad_input: return 1;
        case Errc::request_too_long: return 2;
        case Errc::request_queue_timeout: return 3;
        case Errc::request_timed_out: return 4;
        case Errc::request_cancelled: return 5;
        case Errc::server_shutting_down: return 6;
        default: return 7;
    }
}

SchedulerCore::SchedulerCore(Engine* engine, SchedulerConfig config) : engine_(engine), config_(config) {
    config_.max_running = std::max(1, config_.max_running);
    config_.max_queued = std::max(1, config_.max_queued);
    queue_timeout_ = seconds(config_.queue_timeout_s);
    request_timeout_ = config_.request_timeout_s > 0.0 ? seconds(config_.request_timeout_s) : Clock::duration::zero();
}

Result<void> SchedulerCore::submit(const std::shared_ptr<Job>& job, Clock::time_point now) {
    if (draining_ || stopping_) return Error{Errc::server_shutting_down, "the server is shutting down"};
    if (static_cast<int32_t>(queue_.size()) >= config_.max_queued) {
        ++n_refused_full_;
        note_rejection(kvcache::RejectReason::busy);
        return Error{Errc::request_queue_full, "server busy: " + std::to_string(queue_.size()) + " requests are already queued (limit " +
                                                   std::to_string(config_.max_queued) + ") behind " + std::to_string(running_.size()) +
                                                   " running; retry later"};
    }
    job->id = next_job_id_++;
    job->submitted = now;
    for (const auto& f : job->forks) {
        f->id = next_job_id_++;
        f->submitted = now;
    }
    queue_.push_back(job);
    ++n_submitted_;
    return {};
}

void SchedulerCore::note_rejection(kvcache::RejectReason why) {
    if (engine_) engine_->cache().note_rejection(why);
}

void SchedulerCore::end(const std::shared_ptr<Job>& job, Error err) {
    ++ends_[job_outcome(err.code)];
    job->pending_error_ = std::move(err);
    ended_.push_back(job);
}

std::vector<std::shared_ptr<Job>> SchedulerCore::take_ended() {
    std::vector<std::shared_ptr<Job>> out;
    out.swap(ended_);
    return out;
}

void SchedulerCore::drain(Clock::time_point deadline) {
    if (draining_) return;
    draining_ = true;
    drain_deadline_ = deadline;
}

void SchedulerCore::stop() { stopping_ = true; }

// ---------------------------------------------------------------------------------------------
// plan: queue upkeep, admission, cancellation

void SchedulerCore::drop_from_queue(Clock::time_point now) {
    for (auto it = queue_.begin(); it != queue_.end();) {
        const std::shared_ptr<Job> job = *it;
        Error err;
        if (job->cancel_requested()) {
            err = {Errc::request_cancelled, "the client disconnected while queued"};
        } else if (stopping_ || draining_) {
            err = {Errc::server_shutting_down, "the server is shutting down"};
        } else if (request_timeout_ != Clock::duration::zero() && now - job->submitted >= request_timeout_) {
            err = {Errc::request_timed_out, "request timed out after " + seconds_text(config_.request_timeout_s) +
                                                " s while waiting for KV cells (--timeout)"};
            note_rejection(kvcache::RejectReason::timeout);
        } else if (now - job->submitted >= queue_timeout_) {
            err = {Errc::request_queue_timeout,
                   "no KV room came within the queue timeout of " + seconds_text(config_.queue_timeout_s) + " s: " +
                       (job->busy_message_.empty() ? "all " + std::to_string(config_.max_running) + " request slots (--parallel) stayed busy"
                                                   : job->busy_message_)};
            note_rejection(kvcache::RejectReason::timeout);
        } else {
            ++it;
            continue;
        }
        it = queue_.erase(it);
        for (const auto& f : job->forks) end(f, err);
        end(job, std::move(err));
    }
}

void SchedulerCore::take_encode_group(StepPlan& plan) {
    const Job& first = *queue_.front();
    int64_t n_tokens = 0;
    while (!queue_.empty()) {
        const std::shared_ptr<Job> job = queue_.front();
        if (job->kind != JobKind::encode || job->encoder != first.encoder || job->encode_options.pooling != first.encode_options.pooling ||
            job->encode_options.normalize != first.encode_options.normalize) {
            break;
        }
        int64_t n = 0;
        for (const auto& in : job->inputs) n += static_cast<int64_t>(in.size());
        if (!plan.encode.empty() && n_tokens + n > kEncodeGroupTokens) break;
        n_tokens += n;
        queue_.pop_front();
        {
            std::lock_guard<std::mutex> lock(job->mu_);
            job->state_ = JobState::running;
        }
        job->cv_.notify_all();
        plan.encode.push_back(job);
    }
    encoding_ = plan.encode;
}

void SchedulerCore::admit(StepPlan& plan) {
    if (draining_ || stopping_) return;
    while (!queue_.empty()) {
        const std::shared_ptr<Job> head = queue_.front();
        if (head->kind == JobKind::encode) {
            if (!head->encoder) {
                queue_.pop_front();
                end(head, Error{Errc::request_invalid, "an encode job without an encoder model"});
                continue;
            }
            // Nothing behind the group is admitted in this iteration, so FIFO order holds.
            take_encode_group(plan);
            return;
        }
        if (!engine_) {
            queue_.pop_front();
            end(head, Error{Errc::request_invalid, "this server has no chat model loaded (only encoder models), so it cannot " +
                                                       std::string(head->kind == JobKind::embed ? "embed with one" : "generate text")});
            continue;
        }
        if (head->kind == JobKind::embed) {
            // Runs in execute(); a busy cache sends it back to the head in complete(). Nothing
            // behind it is admitted in this iteration, so FIFO order holds either way.
            queue_.pop_front();
            plan.embed = head;
            embedding_ = head;
            return;
        }
        // A job with forks (n > 1 choices) takes a slot per choice; when there are fewer slots
        // than choices in all it runs once nothing else does.
        const auto group = static_cast<int32_t>(1 + head->forks.size());
        if (static_cast<int32_t>(running_.size()) + group > config_.max_running && !(running_.empty() && group > config_.max_running)) return;
        auto started = start_job(*head);
        if (!started && started.error().code == Errc::kv_no_space) {
            head->busy_message_ = started.error().message;  // fits, but not now: keeps its place
            return;
        }
        queue_.pop_front();
        if (!started) {
            for (const auto& f : head->forks) end(f, started.error());
            end(head, started.error());
            continue;
        }
        Request& parent = **started;
        running_.push_back(Running{head, std::move(*started), Errc::ok});
        mark_running(*head);
        for (const auto& f : head->forks) {
            auto forked = engine_->fork(parent, f->options, text_callback(*f), logprob_callback(*f));
            if (!forked) {
                end(f, forked.error());
                continue;
            }
            running_.push_back(Running{f, std::move(*forked), Errc::ok});
            mark_running(*f);
        }
    }
}

void SchedulerCore::mark_running(Job& job) {
    {
        std::lock_guard<std::mutex> lock(job.mu_);
        job.state_ = JobState::running;
    }
    job.cv_.notify_all();
}

Result<std::unique_ptr<Request>> SchedulerCore::start_job(Job& job) {
    return engine_->start(job.prompt, job.options, text_callback(job), logprob_callback(job), static_cast<int32_t>(job.forks.size()));
}

LogprobCallback SchedulerCore::logprob_callback(Job& job) {
    Job* raw = &job;
    if (!raw->keep_pieces || raw->options.n_logprobs < 0) return nullptr;
    // Not notified: the text piece that follows wakes the reader.
    return [raw](const sampling::TokenLogprobs& lp) {
        std::lock_guard<std::mutex> lock(raw->mu_);
        raw->logprobs_.push_back(lp);
    };
}

TextCallback SchedulerCore::text_callback(Job& job) {
    Job* raw = &job;
    // Runs inside Engine::step (on the thread that executes the plan). Returning false cancels
    // the request.
    return [raw](std::string_view piece, int32_t) {
        if (raw->keep_pieces && !piece.empty()) {
            {
                std::lock_guard<std::mutex> lock(raw->mu_);
                raw->pieces_.emplace_back(piece);
                raw->logprobs_end_.push_back(raw->logprobs_.size());
            }
            raw->cv_.notify_all();
        }
        return !raw->cancel_requested();
    };
}

void SchedulerCore::ask_to_stop(Clock::time_point now) {
    const bool drain_expired = draining_ && now >= drain_deadline_;
    for (Running& r : running_) {
        if (r.req->done() || r.forced != Errc::ok) continue;
        if (stopping_ || drain_expired) r.forced = Errc::server_shutting_down;
        else if (r.job->cancel_requested()) r.forced = Errc::request_cancelled;
        else if (request_timeout_ != Clock::duration::zero() && now - r.job->submitted >= request_timeout_) r.forced = Errc::request_timed_out;
        if (r.forced != Errc::ok) r.req->cancel();
    }
}

StepPlan SchedulerCore::plan(Clock::time_point now) {
    StepPlan plan;
    drop_from_queue(now);
    admit(plan);
    ask_to_stop(now);
    for (Running& r : running_) {
        if (!r.req->done()) plan.step.push_back(r.req.get());
    }
    return plan;
}

// ---------------------------------------------------------------------------------------------
// execute: the computation

void SchedulerCore::execute(StepPlan& plan) {
    if (!plan.step.empty()) engine_->step(plan.step);
    if (plan.embed) plan.embed_result = engine_->embed_tokens(plan.embed->prompt, plan.embed->pooling);
    if (plan.encode.empty()) return;
    plan.encode_results.clear();
    const Job& first = *plan.encode.front();
    if (plan.encode.size() > 1) {
        std::vector<std::vector<int32_t>> all;
        for (const auto& job : plan.encode) all.insert(all.end(), job->inputs.begin(), job->inputs.end());
        auto r = first.encoder->encode(all, first.encode_options);
        if (r && r->vectors.size() == all.size()) {
            size_t at = 0;
            for (const auto& job : plan.encode) {
                EmbedResult part;
                for (size_t i = 0; i < job->inputs.size(); ++i, ++at) {
                    part.vectors.push_back(std::move(r->vectors[at]));
                    if (at < r->n_tokens.size()) part.n_tokens.push_back(r->n_tokens[at]);
                }
                plan.encode_results.emplace_back(std::move(part));
            }
            return;
        }
        // One job's bad input fails the whole call: run each alone so only that job fails.
    }
    for (const auto& job : plan.encode) plan.encode_results.push_back(job->encoder->encode(job->inputs, job->encode_options));
}

// ---------------------------------------------------------------------------------------------
// complete: consume the results

Error SchedulerCore::forced_error(Errc why, int32_t n_generated) const {
    switch (why) {
        case Errc::request_timed_out:
            return {why, "request timed out after " + seconds_text(config_.request_timeout_s) + " s (--timeout) with " +
                             std::to_string(n_generated) + " tokens generated; its KV cells were freed"};
        case Errc::server_shutting_down:
            return {why, "the server is shutting down; the request was cancelled after " + std::to_string(n_generated) + " tokens"};
        default: return {Errc::request_cancelled, "the client disconnected"};
    }
}

void SchedulerCore::complete(StepPlan& plan, Clock::time_point now) {
    for (auto it = running_.begin(); it != running_.end();) {
        Job& job = *it->job;
        const Request& req = *it->req;
        const int32_t n_gen = static_cast<int32_t>(req.result().tokens.size());
        {
            std::lock_guard<std::mutex> lock(job.mu_);
            if (n_gen > 0 && job.ttft_ms_ < 0) job.ttft_ms_ = ms_between(job.submitted, now);
            job.n_generated_ = n_gen;
        }
        if (!req.done()) {
            ++it;
            continue;
        }
        job.result_ = req.result();
        Error err;
        if (req.result().finish == FinishReason::error) {
            err = req.result().error;
            if (err.code == Errc::ok) err = {Errc::engine_internal, "the request failed without an error message"};
        } else if (req.result().finish == FinishReason::cancelled) {
            err = forced_error(it->forced, n_gen);
        }
        end(it->job, std::move(err));
        it = running_.erase(it);  // the Request (its cells already released in the step) goes here
    }
    for (size_t i = 0; i < plan.encode.size(); ++i) {
        const std::shared_ptr<Job>& job = plan.encode[i];
        if (i >= plan.encode_results.size()) {
            end(job, Error{Errc::engine_internal, "the encode job was not run"});
        } else if (auto& r = plan.encode_results[i]; !r) {
            end(job, r.error());
        } else {
            job->vectors_ = std::move(r->vectors);
            end(job, Error{});
        }
    }
    encoding_.clear();
    if (plan.embed) {
        std::shared_ptr<Job> job = std::move(plan.embed);
        embedding_.reset();
        auto& r = plan.embed_result;
        if (!r && r.error().code == Errc::kv_no_space && !stopping_) {
            // Fits, but not now: back to the head of the queue, where deadlines still apply.
            job->busy_message_ = r.error().message;
            queue_.push_front(job);
        } else if (!r) {
            end(job, r.error());
        } else {
            job->embedding_ = std::move(*r);
            end(job, Error{});
        }
    }
}

void SchedulerCore::fail_running(const std::string& what) {
    for (Running& r : running_) {
        r.job->result_ = r.req->result();
        end(r.job, Error{Errc::engine_internal, what});
    }
    running_.clear();
    if (embedding_) {
        end(embedding_, Error{Errc::engine_internal, what});
        embedding_.reset();
    }
    for (const auto& job : encoding_) end(job, Error{Errc::engine_internal, what});
    encoding_.clear();
}

SchedulerSnapshot SchedulerCore::snapshot(Clock::time_point now) const {
    SchedulerSnapshot s;
    for (const Running& r : running_) {
        SchedulerSnapshot::Entry e;
        e.job_id = r.job->id;
        e.label = r.job->label;
        e.seq_id = r.req->seq_id();
        e.state = r.req->prefilling() ? "prefilling" : "decoding";
        e.n_prompt = static_cast<int32_t>(r.req->result().prompt_tokens.size());
        e.n_generated = static_cast<int32_t>(r.req->result().tokens.size());
        e.n_cells = r.req->n_cells();
        e.age_ms = ms_between(r.job->submitted, now);
        s.entries.push_back(std::move(e));
    }
    for (const auto& j : encoding_) {
        SchedulerSnapshot::Entry e;
        e.job_id = j->id;
        e.label = j->label;
        e.state = "encoding";
        for (const auto& in : j->inputs) e.n_prompt += static_cast<int32_t>(in.size());
        e.age_ms = ms_between(j->submitted, now);
        s.entries.push_back(std::move(e));
    }
    for (const auto& j : queue_) {
        SchedulerSnapshot::Entry e;
        e.job_id = j->id;
        e.label = j->label;
        e.state = "queued";
        e.n_prompt = static_cast<int32_t>(j->prompt.size());
        for (const auto& in : j->inputs) e.n_prompt += static_cast<int32_t>(in.size());
        e.age_ms = ms_between(j->submitted, now);
        s.entries.push_back(std::move(e));
    }
    s.n_running = static_cast<int32_t>(running_.size());
    s.n_queued = static_cast<int32_t>(queue_.size());
    s.n_submitted = n_submitted_;
    s.n_refused_full = n_refused_full_;
    s.ends = ends_;
    return s;
}

}  // namespace kvrag::engine
