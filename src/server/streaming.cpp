#include "server/streaming.h"

#include <httplib.h>

#include "server/middleware.h"
#include "server/openai_api.h"

namespace kvrag::server {
namespace {

constexpr std::chrono::milliseconds kPoll{50};  // how often a stream looks at its client

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

struct StreamProgress {
    std::shared_ptr<engine::Job> job;
    std::shared_ptr<ClientConnection> conn;
    StreamHeader h;
    bool sent_role = false;
    bool finished = false;
};

}  // namespace

void stream_job(httplib::Response& res, ServerState& state, std::shared_ptr<engine::Job> job, std::shared_ptr<ClientConnection> conn,
                StreamHeader header) {
    auto st = std::make_shared<StreamProgress>(StreamProgress{std::move(job), std::move(conn), std::move(header)});
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    state.open_streams.fetch_add(1);
    res.set_chunked_content_provider(
        "text/event-stream",
        [st](size_t, httplib::DataSink& sink) {
            if (st->finished) {
                sink.done();
                return true;
            }
            const StreamHeader& h = st->h;
            auto u = st->job->take(kPoll);
            std::string out;
            if (h.chat && !st->sent_role) {
                out += sse(stream_chunk(h.id, h.created, h.model, h.chat, "", true, nullptr, nullptr));
                st->sent_role = true;
            }
            for (const auto& piece : u.pieces) out += sse(stream_chunk(h.id, h.created, h.model, h.chat, piece, false, nullptr, nullptr));
            if (u.done) {
                const auto& r = st->job->result();
                log_tokens(static_cast<int64_t>(r.tokens.size()));
                if (st->job->error().code == Errc::ok) {
                    const Usage usage{static_cast<int64_t>(r.prompt_tokens.size()), static_cast<int64_t>(r.tokens.size())};
                    out += sse(stream_chunk(h.id, h.created, h.model, h.chat, "", false, openai_finish_reason(r), &usage));
                } else {
                    out += sse(api_error_from(st->job->error()).to_json());
                }
                out += "data: [DONE]\n\n";
            }
            if (!out.empty() && !sink.write(out.data(), out.size())) {
                st->job->cancel();
                log_tokens(st->job->n_generated());
                return false;
            }
            if (u.done) {
                st->finished = true;
                sink.done();
                return true;
            }
            if (!st->conn->alive()) {
                st->job->cancel();
                log_tokens(st->job->n_generated());
                return false;
            }
            return true;
        },
        [&state, st](bool success) {
            if (!success || !st->finished) st->job->cancel();
            state.open_streams.fetch_sub(1);
        });
}

}  // namespace kvrag::server
