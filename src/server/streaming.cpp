#include "server/streaming.h"

#include <httplib.h>

#include <algorithm>
#include <optional>

#include "server/middleware.h"
#include "server/openai_api.h"
#include "server/openai_structured.h"

namespace kvrag::server {
namespace {

constexpr std::chrono::milliseconds kStreamPoll{50};  // how often a stream looks at its client
// n > 1: the wait on the first running choice, before the others are looked at without waiting.
constexpr std::chrono::milliseconds kChoicePoll{5};

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

// One choice of the stream.
struct ChoiceStream {
    std::shared_ptr<engine::Job> job;
    size_t index = 0;
    bool started = false;   // chat: the role chunk; completions: the echoed prompt
    bool finished = false;  // its finish_reason chunk went out
    // Logprobs taken whose text has not gone out yet (held back: an unfinished UTF-8
    // character, a possible stop string, text the tool parser holds).
    std::vector<sampling::TokenLogprobs> carry;
    size_t text_chars = 0;  // completions' text_offset: characters before the next token
    // Tools offered: the answer's pieces go through the parser, which sends content and tool
    // calls as soon as it can tell them apart.
    std::unique_ptr<chat::ToolCallParser> tool_parser;
    std::vector<std::string> call_ids;   // per call index
    std::vector<chat::ToolCallEvent> events;
};

struct StreamProgress {
    std::shared_ptr<ClientConnection> conn;
    StreamHeader h;
    std::vector<ChoiceStream> choices;
    bool finished = false;  // [DONE] went out

    void cancel_all() {
        for (auto& c : choices) c.job->cancel();
    }
    void log_all() {  // the request log's tokens: every choice's
        int64_t n = 0;
        for (auto& c : choices) n += c.job->n_generated();
        log_tokens(n);
    }
};

json chunk_for(const StreamProgress& st, const ChoiceStream& c, const std::string& text, bool with_role, const char* finish,
               const Usage* usage, const json& logprobs = nullptr) {
    const StreamHeader& h = st.h;
    json chunk = stream_chunk(h.id, h.created, h.model, h.chat, text, with_role, finish, usage, logprobs);
    chunk["choices"][0]["index"] = c.index;
    return chunk;
}

// The chunks for the parser's events so far (content deltas and tool_calls deltas). With
// parallel_tool_calls false, the events of calls after the first are not sent.
void tool_event_chunks(const StreamProgress& st, ChoiceStream& c, std::vector<json>& chunks) {
    for (const chat::ToolCallEvent& e : c.events) {
        if (e.kind == chat::ToolCallEvent::Kind::content) {
            chunks.push_back(chunk_for(st, c, e.text, false, nullptr, nullptr));
            continue;
        }
        if (!st.h.parallel_tool_calls && e.index > 0) continue;
        if (e.kind == chat::ToolCallEvent::Kind::call_begin) c.call_ids.push_back(new_tool_call_id());
        json chunk = chunk_for(st, c, "", false, nullptr, nullptr);
        chunk["choices"][0]["delta"]["tool_calls"] = tool_call_delta_json(e, c.call_ids.at(e.index));
        chunks.push_back(std::move(chunk));
    }
    c.events.clear();
}

// The logprobs of `lps` as a chunk's value, advancing the choice's text_offset count.
json chunk_logprobs(const StreamHeader& h, ChoiceStream& c, std::span<const sampling::TokenLogprobs> lps, const tokenizer::Tokenizer& tok) {
    return logprobs_json(h.chat, lps, tok, &c.text_chars);
}

// Sends what one update of a choice holds. Each piece's chunk carries the logprobs of the
// tokens whose text it completes (Job::Update::logprobs_end).
void choice_update(StreamProgress& st, ChoiceStream& c, const engine::Job::Update& u, const tokenizer::Tokenizer& tok, std::string& out) {
    const StreamHeader& h = st.h;
    if (!c.started) {
        if (h.chat) out += sse(chunk_for(st, c, "", true, nullptr, nullptr));
        else if (!h.echo_prefix.empty()) out += sse(chunk_for(st, c, h.echo_prefix, false, nullptr, nullptr));
        c.started = true;
    }
    size_t lp_at = 0;
    // Moves the logprobs of piece i (its range in u.logprobs) into c.carry.
    auto gather = [&](size_t i) {
        const size_t end = i < u.logprobs_end.size() ? std::min(u.logprobs_end[i], u.logprobs.size()) : u.logprobs.size();
        for (; lp_at < end; ++lp_at) c.carry.push_back(u.logprobs[lp_at]);
    };
    for (size_t i = 0; i < u.pieces.size(); ++i) {
        gather(i);
        if (c.tool_parser) {
            std::vector<json> chunks;
            c.tool_parser->feed(u.pieces[i], c.events);
            tool_event_chunks(st, c, chunks);
            // Held text sends no chunk: its tokens wait for the chunk that carries their text.
            if (h.logprobs && !chunks.empty() && !c.carry.empty()) {
                chunks.back()["choices"][0]["logprobs"] = chunk_logprobs(h, c, c.carry, tok);
                c.carry.clear();
            }
            for (const json& ch : chunks) out += sse(ch);
        } else {
            json lp = nullptr;
            if (h.logprobs) {
                lp = chunk_logprobs(h, c, c.carry, tok);
                c.carry.clear();
            }
            out += sse(chunk_for(st, c, u.pieces[i], false, nullptr, nullptr, lp));
        }
    }
    gather(u.pieces.size());  // sampled, text not out yet
    if (u.done && c.tool_parser && c.job->error().code == Errc::ok) {
        std::vector<json> chunks;
        c.tool_parser->finish(c.events);
        tool_event_chunks(st, c, chunks);
        if (h.logprobs && !chunks.empty() && !c.carry.empty()) {
            chunks.back()["choices"][0]["logprobs"] = chunk_logprobs(h, c, c.carry, tok);
            c.carry.clear();
        }
        for (const json& ch : chunks) out += sse(ch);
    }
}

// The finish_reason chunk of a choice that finished (usage when given).
json finish_chunk(StreamProgress& st, ChoiceStream& c, const tokenizer::Tokenizer& tok, const Usage* usage) {
    const auto& r = c.job->result();
    const char* finish = openai_finish_reason(r);
    // tool_calls when every call sent is whole. An answer cut by max_tokens keeps "length", as
    // OpenAI's does, also when the cut fell after the last call's arguments (the non-streamed
    // response says the same): the deltas already sent stand, and a call cut in its arguments
    // is left as sent (docs/server.md).
    if (c.tool_parser && c.tool_parser->n_calls() > 0 && c.tool_parser->calls_complete() && r.finish != engine::FinishReason::length) {
        finish = "tool_calls";
    }
    json lp = nullptr;
    if (st.h.logprobs && !c.carry.empty()) lp = chunk_logprobs(st.h, c, c.carry, tok);
    c.carry.clear();
    c.finished = true;
    return chunk_for(st, c, "", false, finish, usage, lp);
}

}  // namespace

void stream_job(httplib::Response& res, ServerState& state, std::vector<std::shared_ptr<engine::Job>> jobs,
                std::shared_ptr<ClientConnection> conn, StreamHeader header) {
    auto st = std::make_shared<StreamProgress>();
    st->conn = std::move(conn);
    st->h = std::move(header);
    for (size_t i = 0; i < jobs.size(); ++i) {
        ChoiceStream c;
        c.job = std::move(jobs[i]);
        c.index = i;
        c.text_chars = utf8_chars(st->h.echo_prefix);
        if (!st->h.tools.empty()) c.tool_parser = std::make_unique<chat::ToolCallParser>(st->h.tool_format, st->h.tools, /*commit_at_name=*/true);
        st->choices.push_back(std::move(c));
    }
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
            const tokenizer::Tokenizer& tok = *tok_ptr;
            std::string out;
            bool waited = false;
            size_t n_open = 0;
            for (ChoiceStream& c : st->choices) {
                if (c.finished) continue;
                // One choice: wait for its next piece. Several: a short wait on the first
                // running one, then a look at the others without waiting.
                auto wait = waited ? std::chrono::milliseconds(0) : (st->choices.size() == 1 ? kStreamPoll : kChoicePoll);
                waited = true;
                auto u = c.job->take(wait);
                choice_update(*st, c, u, tok, out);
                if (!u.done) {
                    ++n_open;
                    continue;
                }
                if (c.job->error().code != Errc::ok) {
                    out += sse(api_error_from(c.job->error()).to_json());
                    out += "data: [DONE]\n\n";
                    st->cancel_all();
                    st->log_all();
                    st->finished = true;
                    break;
                }
                // The last choice to finish carries the usage of all of them.
                const bool last = std::all_of(st->choices.begin(), st->choices.end(),
                                              [&c](const ChoiceStream& o) { return &o == &c || o.finished; });
                std::optional<Usage> usage;
                if (last && st->h.include_usage) {
                    usage = Usage{static_cast<int64_t>(st->choices[0].job->result().prompt_tokens.size()), 0};
                    for (const ChoiceStream& o : st->choices) usage->completion_tokens += static_cast<int64_t>(o.job->result().tokens.size());
                }
                out += sse(finish_chunk(*st, c, tok, usage ? &*usage : nullptr));
            }
            if (!st->finished && n_open == 0) {
                st->log_all();
                out += "data: [DONE]\n\n";
                st->finished = true;
            }
            if (!out.empty() && !sink.write(out.data(), out.size())) {
                st->cancel_all();
                if (!st->finished) st->log_all();
                return false;
            }
            if (st->finished) {
                sink.done();
                return true;
            }
            if (!st->conn->alive()) {
                st->cancel_all();
                st->log_all();
                return false;
            }
            return true;
        },
        [&state, st](bool success) {
            if (!success || !st->finished) st->cancel_all();
            state.open_streams.fetch_sub(1);
        });
}

}  // namespace kvrag::server
