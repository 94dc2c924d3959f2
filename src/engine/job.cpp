#include "engine/job.h"

namespace kvrag::engine {

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
    u.logprobs.swap(logprobs_);
    u.logprobs_end.swap(logprobs_end_);
    u.done = state_ == JobState::done;
    return u;
}

JobState Job::state() const {
    std::lock_guard<std::mutex> lock(mu_);
    return state_;
}

int32_t Job::n_generated() const {
    std::lock_guard<std::mutex> lock(mu_);
    return n_generated_;
}

double Job::ttft_ms() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ttft_ms_;
}

void Job::mark_done() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        error_ = std::move(pending_error_);
        if (result_.tokens.size() > static_cast<size_t>(n_generated_)) n_generated_ = static_cast<int32_t>(result_.tokens.size());
        state_ = JobState::done;
    }
    cv_.notify_all();
}

}  // namespace kvrag::engine
