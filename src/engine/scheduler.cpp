#include "engine/scheduler.h"

#include <cstdio>
#include <exception>

namespace kvrag::engine {

Scheduler::Scheduler(Engine* engine, SchedulerConfig config) : core_(engine, config) {
    thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { stop(); }

Result<void> Scheduler::submit(const std::shared_ptr<Job>& job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto s = core_.submit(job, Clock::now()); !s) return s;
    cv_.notify_all();
    return {};
}

void Scheduler::wait(Job& job, const std::function<bool()>& alive) {
    do {
        if (alive && !alive()) job.cancel();
    } while (!job.wait_done(std::chrono::milliseconds(50)));
}

Result<GenerateResult> Scheduler::run(std::vector<int32_t> prompt, const GenerateOptions& options, const std::function<bool()>& alive) {
    auto job = std::make_shared<Job>();
    job->prompt = std::move(prompt);
    job->options = options;
    job->label = "internal";
    if (auto s = submit(job); !s) return s.error();
    wait(*job, alive);
    if (job->error().code == Errc::ok) return job->result();
    return job->error();
}

Result<std::vector<float>> Scheduler::embed(std::span<const int32_t> tokens, Pooling pooling, const std::function<bool()>& alive) {
    auto job = std::make_shared<Job>();
    job->kind = JobKind::embed;
    job->prompt.assign(tokens.begin(), tokens.end());
    job->pooling = pooling;
    job->label = "embedding";
    if (auto s = submit(job); !s) return s.error();
    wait(*job, alive);
    if (job->error().code == Errc::ok) return job->embedding();
    return job->error();
}

Result<std::vector<std::vector<float>>> Scheduler::encode(Encoder& encoder, std::vector<std::vector<int32_t>> inputs,
                                                          const EmbedOptions& options, const std::string& label,
                                                          const std::function<bool()>& alive) {
    auto job = std::make_shared<Job>();
    job->kind = JobKind::encode;
    job->encoder = &encoder;
    job->inputs = std::move(inputs);
    job->encode_options = options;
    job->label = label;
    if (auto s = submit(job); !s) return s.error();
    wait(*job, alive);
    if (job->error().code == Errc::ok) return job->vectors();
    return job->error();
}

void Scheduler::drain(std::chrono::milliseconds grace) {
    std::unique_lock<std::mutex> lock(mu_);
    core_.drain(Clock::now() + grace);
    cv_.notify_all();
    cv_.wait(lock, [&] { return loop_done_ || core_.idle(); });
}

void Scheduler::stop() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_requested_ = true;
        core_.stop();
        cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
}

SchedulerSnapshot Scheduler::snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return snapshot_;
}

void Scheduler::loop() {
    while (true) {
        std::vector<std::shared_ptr<Job>> ended;
        try {
            StepPlan plan;
            {
                std::lock_guard<std::mutex> lock(mu_);
                plan = core_.plan(Clock::now());
            }
            core_.execute(plan);
            std::lock_guard<std::mutex> lock(mu_);
            core_.complete(plan, Clock::now());
            ended = core_.take_ended();
            // Publish before waking the waiters: once a client has its answer, /v1/kv and
            // /metrics already show its request gone and its cells free.
            snapshot_ = core_.snapshot(Clock::now());
        } catch (const std::exception& e) {
            // Not attributable to one request (the engine catches per-request failures itself):
            // end what runs, keep serving, and report it on /health.
            std::fprintf(stderr, "kvrag serve: scheduler error: %s\n", e.what());
            unhealthy_.store(true);
            std::lock_guard<std::mutex> lock(mu_);
            core_.fail_running(e.what());
            ended = core_.take_ended();
            snapshot_ = core_.snapshot(Clock::now());
        }
        for (auto& job : ended) job->mark_done();
        std::unique_lock<std::mutex> lock(mu_);
        cv_.notify_all();  // drain() waits on idleness
        if (stop_requested_ && core_.idle()) break;
        if (!core_.has_running()) {
            const bool blocked = core_.head_blocked();
            const bool was_draining = core_.draining();
            cv_.wait_for(lock, blocked ? std::chrono::milliseconds(5) : std::chrono::milliseconds(50), [&] {
                return stop_requested_ || (!blocked && !core_.idle()) || (core_.draining() && !was_draining);
            });
        }
    }
    std::lock_guard<std::mutex> lock(mu_);
    loop_done_ = true;
    cv_.notify_all();
}

}  // namespace kvrag::engine
