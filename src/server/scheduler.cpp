#include "server/scheduler.h"

#include <algorithm>
#include <cstdio>
#include <exception>

namespace kvrag::server {
namespace {

double ms_since(Clock::time_point t0, Clock::time_point t1) {
    return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

std::string seconds_text(double s) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", s);
    return buf;
}

}  // namespace

const char* job_end_name(JobEnd e) {
    switch (e) {
        case JobEnd::none: return "none";
        case JobEnd::finished: return "finished";
        case JobEnd::invalid: return "invalid";
        case JobEnd::too_long: return "too_long";
        case JobEnd::queue_timeout: return "queue_timeout";
        case JobEnd::timed_out: return "timed_out";
        case JobEnd::cancelled: return "cancelled";
        case JobEnd::shutdown: return "shutdown";
        case JobEnd::failed: return "failed";
    }
    return "?";
}

// ---------------------------------------------------------------------------------------------
// Job: the submitting thread's side

JobState Job::wait_admitted(std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, wait, [&] { return state_ != JobState::queued; });
    return state_;
}

bool Job::wait_done(std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, wait, [&] { return state_ == JobState::done; });
}

Job::Update Job::take(std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, wait, [&] { return !pieces_.empty() || state_ == JobState::done; });
    Update u;
    u.pieces.swap(pieces_);
    u.done = state_ == JobState::done;
    return u;
}

JobState Job::state() const {
    std::lock_guard<std::mutex> lock(mu_);
    return state_;
}

JobEnd Job::end() const {
    std::lock_guard<std::mutex> lock(mu_);
    return end_;
}

int32_t Job::n_generated() const {
    std::lock_guard<std::mutex> lock(mu_);
    return n_generated_;
}

double Job::ttft_ms() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ttft_ms_;
}

// ---------------------------------------------------------------------------------------------
// Scheduler: submission side

Scheduler::Scheduler(engine::Engine& engine, SchedulerConfig config) : engine_(engine), config_(config) {
    config_.max_running = std::max(1, config_.max_running);
    config_.max_queued = std::max(1, config_.max_queued);
    thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { stop(); }

Result<void> Scheduler::submit(const std::shared_ptr<Job>& job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_ || stop_) return Error{Errc::request_invalid, "the server is shutting down"};
    if (static_cast<int32_t>(queue_.size()) >= config_.max_queued) {
        ++n_refused_full_;
        engine_.cache().note_rejection(kvcache::RejectReason::busy);
        return Error{Errc::kv_no_space, "server busy: " + std::to_string(queue_.size()) + " requests are already queued (limit " +
                                            std::to_string(config_.max_queued) + ") behind " +
                                            std::to_string(snapshot_.n_running) + " running; retry later"};
    }
    job->id = next_job_id_++;
    job->submitted = Clock::now();
    queue_.push_back(job);
    ++n_submitted_;
    cv_.notify_all();
    return {};
}

Result<engine::GenerateResult> Scheduler::run(std::vector<int32_t> prompt, const engine::GenerateOptions& options,
                                              const std::function<bool()>& alive) {
    auto job = std::make_shared<Job>();
    job->prompt = std::move(prompt);
    job->options = options;
    job->label = "internal";
    if (auto s = submit(job); !s) return s.error();
    do {
        if (alive && !alive()) job->cancel();
    } while (!job->wait_done(std::chrono::milliseconds(50)));
    if (job->end() == JobEnd::finished) return job->result();
    return job->error();
}

void Scheduler::drain(std::chrono::milliseconds grace) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!draining_) {
        draining_ = true;
        drain_deadline_ = Clock::now() + grace;
    }
    cv_.notify_all();
    cv_.wait(lock, [&] { return stop_ || (queue_.empty() && snapshot_.n_running == 0 && snapshot_.n_queued == 0); });
}

void Scheduler::stop() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
        cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
}

SchedulerSnapshot Scheduler::snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return snapshot_;
}

// ---------------------------------------------------------------------------------------------
// Scheduler: the loop thread

void Scheduler::end_job(std::shared_ptr<Job> job, JobEnd end, Error err) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        ++ends_[static_cast<int>(end)];
    }
    ending_.push_back(Ending{std::move(job), end, std::move(err)});
}

void Scheduler::notify_ended() {
    for (Ending& e : ending_) {
        {
            std::lock_guard<std::mutex> lock(e.job->mu_);
            e.job->state_ = JobState::done;
            e.job->end_ = e.end;
            e.job->error_ = std::move(e.error);
        }
        e.job->cv_.notify_all();
    }
    ending_.clear();
}

void Scheduler::admit(std::vector<Running>& running, Clock::time_point now) {
    while (static_cast<int32_t>(running.size()) < config_.max_running) {
        std::shared_ptr<Job> head;
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (queue_.empty() || draining_ || stop_) return;
            head = queue_.front();
        }
        Job* raw = head.get();
        // Runs on this thread, inside Engine::step. Returning false cancels the request.
        engine::TextCallback on_text = [raw](std::string_view piece, int32_t) {
            if (raw->keep_pieces && !piece.empty()) {
                {
                    std::lock_guard<std::mutex> lock(raw->mu_);
                    raw->pieces_.emplace_back(piece);
                }
                raw->cv_.notify_all();
            }
            return !raw->cancel_requested();
        };
        auto started = engine_.start(head->prompt, head->options, std::move(on_text));
        if (!started && started.error().code == Errc::kv_no_space) {
            // Fits, but not now: it keeps its place at the head of the queue.
            head->busy_message_ = started.error().message;
            return;
        }
        {
            std::lock_guard<std::mutex> lock(mu_);
            queue_.pop_front();
        }
        if (!started) {
            const JobEnd why = started.error().code == Errc::request_too_long ? JobEnd::too_long : JobEnd::invalid;
            end_job(head, why, started.error());
            continue;
        }
        {
            std::lock_guard<std::mutex> lock(head->mu_);
            head->state_ = JobState::running;
        }
        head->cv_.notify_all();
        running.push_back(Running{std::move(head), std::move(*started), JobEnd::none});
        (void)now;
    }
}

void Scheduler::publish(const std::vector<Running>& running, Clock::time_point now) {
    std::lock_guard<std::mutex> lock(mu_);
    SchedulerSnapshot s;
    for (const Running& r : running) {
        SchedulerSnapshot::Entry e;
        e.job_id = r.job->id;
        e.label = r.job->label;
        e.seq_id = r.req->seq_id();
        e.state = r.req->prefilling() ? "prefilling" : "decoding";
        e.n_prompt = static_cast<int32_t>(r.req->result().prompt_tokens.size());
        e.n_generated = static_cast<int32_t>(r.req->result().tokens.size());
        e.n_cells = r.req->n_cells();
        e.age_ms = ms_since(r.job->submitted, now);
        s.entries.push_back(std::move(e));
    }
    for (const auto& j : queue_) {
        SchedulerSnapshot::Entry e;
        e.job_id = j->id;
        e.label = j->label;
        e.state = "queued";
        e.n_prompt = static_cast<int32_t>(j->prompt.size());
        e.age_ms = ms_since(j->submitted, now);
        s.entries.push_back(std::move(e));
    }
    s.n_running = static_cast<int32_t>(running.size());
    s.n_queued = static_cast<int32_t>(queue_.size());
    s.n_submitted = n_submitted_;
    s.n_refused_full = n_refused_full_;
    std::copy(std::begin(ends_), std::end(ends_), std::begin(s.ends));
    snapshot_ = std::move(s);
    cv_.notify_all();  // drain() waits on the snapshot
}

void Scheduler::loop() {
    std::vector<Running> running;
    std::vector<engine::Request*> active;
    const auto queue_timeout = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(config_.queue_timeout_s));
    const auto request_timeout = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(config_.request_timeout_s));
    const bool has_request_timeout = config_.request_timeout_s > 0.0;
    bool stopping = false;
    while (!stopping) {
        try {
            auto now = Clock::now();
            bool draining = false, drain_expired = false;
            // 1. Queue upkeep: clients that left, deadlines, shutdown.
            std::vector<std::pair<std::shared_ptr<Job>, JobEnd>> dropped;
            {
                std::lock_guard<std::mutex> lock(mu_);
                stopping = stop_;
                draining = draining_;
                drain_expired = draining_ && now >= drain_deadline_;
                for (auto it = queue_.begin(); it != queue_.end();) {
                    Job& j = **it;
                    JobEnd why = JobEnd::none;
                    if (j.cancel_requested()) why = JobEnd::cancelled;
                    else if (stop_ || draining_) why = JobEnd::shutdown;
                    else if (has_request_timeout && now - j.submitted >= request_timeout) why = JobEnd::timed_out;
                    else if (now - j.submitted >= queue_timeout) why = JobEnd::queue_timeout;
                    if (why == JobEnd::none) {
                        ++it;
                        continue;
                    }
                    dropped.emplace_back(*it, why);
                    it = queue_.erase(it);
                }
            }
            for (auto& [job, why] : dropped) {
                Error err;
                switch (why) {
                    case JobEnd::cancelled: err = {Errc::request_invalid, "the client disconnected while queued"}; break;
                    case JobEnd::shutdown: err = {Errc::request_invalid, "the server is shutting down"}; break;
                    case JobEnd::timed_out:
                        err = {Errc::request_invalid, "request timed out after " + seconds_text(config_.request_timeout_s) +
                                                          " s while waiting for KV cells (--timeout)"};
                        engine_.cache().note_rejection(kvcache::RejectReason::timeout);
                        break;
                    default:
                        err = {Errc::kv_no_space, "no KV room came within the queue timeout of " + seconds_text(config_.queue_timeout_s) +
                                                      " s: " + (job->busy_message_.empty() ? "all " + std::to_string(config_.max_running) + " request slots (--parallel) stayed busy" : job->busy_message_)};
                        engine_.cache().note_rejection(kvcache::RejectReason::timeout);
                        break;
                }
                end_job(job, why, std::move(err));
            }

            // 2. Admission (not while draining or stopping).
            admit(running, now);

            // 3. Ask requests to stop: client gone, past their deadline, shutdown.
            for (Running& r : running) {
                if (r.req->done() || r.forced != JobEnd::none) continue;
                if (stopping || drain_expired) r.forced = JobEnd::shutdown;
                else if (r.job->cancel_requested()) r.forced = JobEnd::cancelled;
                else if (has_request_timeout && now - r.job->submitted >= request_timeout) r.forced = JobEnd::timed_out;
                if (r.forced != JobEnd::none) r.req->cancel();
            }

            // 4. One forward step over everything running (cancelled ones are ended and freed in it).
            active.clear();
            for (Running& r : running) {
                if (!r.req->done()) active.push_back(r.req.get());
            }
            if (!active.empty()) engine_.step(active);
            now = Clock::now();

            // 5. Publish progress, end the finished jobs.
            for (auto it = running.begin(); it != running.end();) {
                Job& j = *it->job;
                const engine::Request& req = *it->req;
                const int32_t n_gen = static_cast<int32_t>(req.result().tokens.size());
                {
                    std::lock_guard<std::mutex> lock(j.mu_);
                    if (n_gen > 0 && j.ttft_ms_ < 0) j.ttft_ms_ = ms_since(j.submitted, now);
                    j.n_generated_ = n_gen;
                    if (req.done()) j.result_ = req.result();
                }
                if (!req.done()) {
                    ++it;
                    continue;
                }
                const engine::GenerateResult& res = req.result();
                JobEnd why = JobEnd::finished;
                Error err;
                if (res.finish == engine::FinishReason::error) {
                    why = JobEnd::failed;
                    err = res.error;
                } else if (res.finish == engine::FinishReason::cancelled) {
                    why = it->forced != JobEnd::none ? it->forced : JobEnd::cancelled;
                    if (why == JobEnd::timed_out) {
                        err = {Errc::request_invalid, "request timed out after " + seconds_text(config_.request_timeout_s) + " s (--timeout) with " +
                                                          std::to_string(n_gen) + " tokens generated; its KV cells were freed"};
                    } else if (why == JobEnd::shutdown) {
                        err = {Errc::request_invalid, "the server is shutting down; the request was cancelled after " +
                                                          std::to_string(n_gen) + " tokens"};
                    } else {
                        err = {Errc::request_invalid, "the client disconnected"};
                    }
                }
                end_job(it->job, why, std::move(err));
                it = running.erase(it);  // the Request (already released) goes here
            }
            // Publish before waking the waiters: once a client has its answer, /v1/kv and
            // /metrics already show its request gone and its cells free.
            publish(running, now);
            notify_ended();

            // 6. Nothing to step: sleep until a submission (or a deadline check is due).
            if (running.empty() && !stopping) {
                std::unique_lock<std::mutex> lock(mu_);
                const bool head_blocked = !queue_.empty() && !queue_.front()->busy_message_.empty();
                cv_.wait_for(lock, head_blocked ? std::chrono::milliseconds(5) : std::chrono::milliseconds(50),
                             [&] { return stop_ || (!queue_.empty() && !head_blocked) || (draining_ && !draining); });
            }
        } catch (const std::exception& e) {
            // Not attributable to one request (the engine catches per-request failures itself):
            // end what runs, keep serving, and report it on /health.
            std::fprintf(stderr, "kvrag serve: scheduler error: %s\n", e.what());
            unhealthy_.store(true);
            for (Running& r : running) {
                std::lock_guard<std::mutex> lock(r.job->mu_);
                r.job->result_ = r.req->result();
            }
            for (Running& r : running) end_job(r.job, JobEnd::failed, Error{Errc::engine_internal, e.what()});
            running.clear();
            publish(running, Clock::now());
            notify_ended();
        }
    }
    // Stopping: cancel what still runs; one step frees their cells.
    active.clear();
    for (Running& r : running) {
        r.req->cancel();
        active.push_back(r.req.get());
    }
    if (!active.empty()) engine_.step(active);
    for (Running& r : running) {
        {
            std::lock_guard<std::mutex> lock(r.job->mu_);
            r.job->result_ = r.req->result();
        }
        end_job(r.job, JobEnd::shutdown, Error{Errc::request_invalid, "the server stopped"});
    }
    running.clear();
    std::vector<std::shared_ptr<Job>> left;
    {
        std::lock_guard<std::mutex> lock(mu_);
        left.assign(queue_.begin(), queue_.end());
        queue_.clear();
    }
    for (auto& j : left) end_job(j, JobEnd::shutdown, Error{Errc::request_invalid, "the server stopped"});
    publish(running, Clock::now());
    notify_ended();
}

}  // namespace kvrag::server
