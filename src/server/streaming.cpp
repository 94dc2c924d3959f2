#include "server/streaming.h"

#include <httplib.h>

#include "server/middleware.h"
#include "server/openai_api.h"
#include "server/openai_structured.h"

namespace kvrag::server {
namespace {

constexpr std::chrono::milliseconds kStreamPoll{50};  // how often a stream looks at its client

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

struct StreamProgress {
    std::shared_ptr<engine::Job> job;
    std::shared_ptr<ClientConnection> conn;
    StreamHeader h;
    bool sent_role = false;  // chat: the role chunk; completions: the echoed prompt
    bool finished = false;
    std::vector<sampling::TokenLogprobs> pending_logprobs;  // sampled, not yet sent
    size_t text_bytes = 0;   // completions' text_offset: bytes of the tokens already sent
    // Tools offered: the answer's pieces go through the parser, which sends content and tool
    // calls as soon as it can tell them apart.
    std::unique_ptr<chat::ToolCallParser> tool_parser;
    std::vector<std::string> call_ids;   // per call index
    std::vector<chat::ToolCallEvent> events;
};

// The chunks for the parser's events so far (content deltas and tool_calls deltas).
void tool_event_chunks(StreamProgress& st, std::vector<json>& chunks) {
    const StreamHeader& h = st.h;
    for (const chat::ToolCallEvent& e : st.events) {
        if (e.kind == chat::ToolCallEvent::Kind::content) {
            chunks.push_back(stream_chunk(h.id, h.created, h.model, true, e.text, false, nullptr, nullptr));
            continue;
        }
        if (e.kind == chat::ToolCallEvent::Kind::call_begin) st.call_ids.push_back(new_tool_call_id());
        json chunk = stream_chunk(h.id, h.created, h.model, true, "", false, nullptr, nullptr);
        chunk["choices"][0]["delta"]["tool_calls"] = tool_call_delta_json(e, st.call_ids.at(e.index));
        chunks.push_back(std::move(chunk));
    }
    st.events.clear();
}

}  // namespace

void stream_job(httplib::Response& res, ServerState& state, std::shared_ptr<engine::Job> job, std::shared_ptr<ClientConnection> conn,
                StreamHeader header) {
    auto st = std::make_shared<StreamProgress>();
    st->job = std::move(job);
    st->conn = std::move(conn);
    st->h = std::move(header);
    if (!st->h.tools.empty()) st->tool_parser = std::make_unique<chat::ToolCallParser>(st->h.tool_format, st->h.tools, /*commit_at_name=*/true);
    std::shared_ptr<const tokenizer::Tokenizer> tok_ptr = state.engine->model().tokenizer;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    state.open_streams.fetch_add(1);
    res.set_chunked_content_provider(
        "text/event-stream",
        [st, tok_ptr](size_t, httplib::DataSink& sink) {
            if (st->finished) {
                sink.done();
                return true;
            }
            const StreamHeader& h = st->h;
            auto u = st->job->take(kStreamPoll);
            std::string out;
            const tokenizer::Tokenizer& tok = *tok_ptr;
            if (h.chat && !st->sent_role) {
                out += sse(stream_chunk(h.id, h.created, h.model, h.chat, "", true, nullptr, nullptr));
                st->sent_role = true;
            }
            if (!h.chat && !h.echo_prefix.empty() && !st->sent_role) {
                out += sse(stream_chunk(h.id, h.created, h.model, h.chat, h.echo_prefix, false, nullptr, nullptr));
                st->sent_role = true;
            }
            st->pending_logprobs.insert(st->pending_logprobs.end(), u.logprobs.begin(), u.logprobs.end());
            if (st->tool_parser) {
                // A chunk per piece (token), as plain content streams.
                std::vector<json> chunks;
                for (const auto& piece : u.pieces) {
                    st->tool_parser->feed(piece, st->events);
                    tool_event_chunks(*st, chunks);
                }
                if (u.done && st->job->error().code == Errc::ok) {
                    st->tool_parser->finish(st->events);
                    tool_event_chunks(*st, chunks);
                }
                // The tokens sampled so far go with the last chunk this update sends (held text
                // sends none: they wait for the next one, or the final chunk).
                if (h.logprobs && !chunks.empty() && !st->pending_logprobs.empty()) {
                    chunks.back()["choices"][0]["logprobs"] = logprobs_json(true, st->pending_logprobs, tok);
                    st->pending_logprobs.clear();
                }
                for (const json& c : chunks) out += sse(c);
            } else {
                for (size_t i = 0; i < u.pieces.size(); ++i) {
                    // The tokens sampled since the last chunk go with the update's last piece.
                    json lp = nullptr;
                    if (h.logprobs && i + 1 == u.pieces.size()) {
                        lp = logprobs_json(h.chat, st->pending_logprobs, tok, st->text_bytes);
                        for (const auto& t : st->pending_logprobs) st->text_bytes += tok.token_to_piece(t.token.id).size();
                        st->pending_logprobs.clear();
                    }
                    out += sse(stream_chunk(h.id, h.created, h.model, h.chat, u.pieces[i], false, nullptr, nullptr, lp));
                }
            }
            if (u.done) {
                const auto& r = st->job->result();
                log_tokens(static_cast<int64_t>(r.tokens.size()));
                if (st->job->error().code == Errc::ok) {
                    const char* finish = openai_finish_reason(r);
                    // tool_calls when every call sent is whole. An answer cut by max_tokens keeps
                    // "length", as OpenAI's does, also when the cut fell after the last call's
                    // arguments (the non-streamed response says the same): the deltas already
                    // sent stand, and a call cut in its arguments is left as sent (docs/server.md).
                    if (st->tool_parser && st->tool_parser->n_calls() > 0 && st->tool_parser->calls_complete() &&
                        r.finish != engine::FinishReason::length) {
                        finish = "tool_calls";
                    }
                    json lp = nullptr;
                    if (h.logprobs && !st->pending_logprobs.empty()) lp = logprobs_json(h.chat, st->pending_logprobs, tok, st->text_bytes);
                    const Usage usage{static_cast<int64_t>(r.prompt_tokens.size()), static_cast<int64_t>(r.tokens.size())};
                    out += sse(stream_chunk(h.id, h.created, h.model, h.chat, "", false, finish, &usage, lp));
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
