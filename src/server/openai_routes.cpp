#include "server/openai_routes.h"

#include <httplib.h>

#include <algorithm>
#include <ctime>
#include <random>

#include "server/chat_history.h"
#include "server/client_connection.h"
#include "server/http_io.h"
#include "server/metrics.h"
#include "server/middleware.h"
#include "server/openai_api.h"
#include "server/openai_structured.h"
#include "server/streaming.h"

namespace kvrag::server {
namespace {

using std::chrono::milliseconds;
using engine::Job;
using engine::JobState;

constexpr milliseconds kPoll{50};  // how often waiting handlers look at their client

void handle_health(ServerState& st, httplib::Response& res) {
    Health h = st.health.load();
    if (h == Health::ok && st.scheduler && st.scheduler->unhealthy()) h = Health::error;
    switch (h) {
        case Health::ok: send_json(res, 200, json{{"status", "ok"}}); break;
        case Health::loading: send_json(res, 503, json{{"status", "loading"}}); break;
        case Health::error:
            send_json(res, 500, json{{"status", "error"}, {"message", st.health_message.empty() ? "scheduler error (see the log)" : st.health_message}});
            break;
    }
}

json chat_model_entry(const ServerState& st) {
    const auto& hp = st.engine->model().model->hparams();
    return json{{"id", st.model_id},
                {"object", "model"},
                {"created", st.created},
                {"owned_by", "kvrag"},
                {"meta",
                 json{{"kind", "chat"},
                      {"architecture", hp.arch_name},
                      {"name", hp.name},
                      {"n_ctx", st.engine->config().n_ctx},
                      {"n_ctx_seq", st.engine->config().n_ctx_seq},
                      {"n_ctx_train", hp.n_ctx_train},
                      {"n_embd", hp.n_embd},
                      {"n_vocab", hp.n_vocab},
                      {"chat_template", st.chat_template ? std::string(st.chat_template->name()) : std::string()}}}};
}

json encoder_model_entry(const ServerState& st, const EncoderModel& m) {
    const auto& hp = m.embedder->model().model->hparams();
    return json{{"id", m.id},
                {"object", "model"},
                {"created", st.created},
                {"owned_by", "kvrag"},
                {"meta",
                 json{{"kind", engine::embedder_kind_name(m.embedder->kind())},
                      {"architecture", hp.arch_name},
                      {"name", hp.name},
                      {"n_ctx_train", hp.n_ctx_train},
                      {"n_embd", hp.n_embd},
                      {"n_vocab", hp.n_vocab},
                      {"pooling", model::pooling_type_name(m.embedder->default_pooling())}}}};
}

// The chat model's entry under another name (an --alias or its general.name): id = that name,
// meta.alias_of = the served id.
json alias_entry(const ServerState& st, const std::string& alias) {
    json e = chat_model_entry(st);
    e["id"] = alias;
    e["meta"]["alias_of"] = st.model_id;
    return e;
}

// Every loaded model: the chat model first, then the embedding model and the reranker.
// /v1/models/{id}: that model; an alias gets its own id. A name no model answers to gets the
// chat model's entry, as the chat routes answer such a name (clients look up their own
// defaults, e.g. gpt-4o-mini), or 404 under --strict-model-names or without a chat model.
void handle_models(ServerState& st, const httplib::Request& req, httplib::Response& res) {
    json data = json::array();
    std::vector<std::string> names;
    if (st.engine) {
        data.push_back(chat_model_entry(st));
        names.push_back(st.model_id);
        // --alias names are listed as models of their own (clients pick from the ids), each once.
        for (const auto& a : st.cfg.aliases) {
            if (std::find(names.begin(), names.end(), a) != names.end()) continue;
            data.push_back(alias_entry(st, a));
            names.push_back(a);
        }
    }
    for (const EncoderModel* m : {st.embed_model.get(), st.rerank_model.get()}) {
        if (m) {
            data.push_back(encoder_model_entry(st, *m));
            names.push_back(m->id);
        }
    }
    if (req.matches.size() > 1) {
        const std::string want = req.matches[1];
        if (st.engine && want == st.model_id) return send_json(res, 200, chat_model_entry(st));
        if (st.engine && std::find(st.aliases.begin(), st.aliases.end(), want) != st.aliases.end()) return send_json(res, 200, alias_entry(st, want));
        for (const EncoderModel* m : {st.embed_model.get(), st.rerank_model.get()}) {
            if (m && m->answers_to(want)) return send_json(res, 200, encoder_model_entry(st, *m));
        }
        if (st.engine && !st.cfg.strict_model_names) return send_json(res, 200, chat_model_entry(st));
        std::string list;
        for (const auto& n : names) list += (list.empty() ? "'" : ", '") + n + "'";
        return send_error(res, Error{Errc::request_model_not_found, "The model '" + want + "' does not exist; this server serves " + list}, "model");
    }
    send_json(res, 200, json{{"object", "list"}, {"data", std::move(data)}});
}

std::function<bool()> client_alive_fn(const httplib::Request& req) {
    auto conn = std::make_shared<ClientConnection>(req);
    return [conn] { return conn->alive(); };
}

// What the history policy did to a chat request (reported under "kvrag" and in a header).
struct HistoryOutcome {
    int32_t n_dropped = 0;
    bool summarized = false;
    int32_t budget = 0;  // the answer budget the prompt left room for
    json to_json() const { return json{{"messages_dropped", n_dropped}, {"history_summarized", summarized}}; }
};

// A short summary of dropped turns, written by the chat model through the scheduler (greedy,
// at most 96 tokens; the transcript's oldest text goes first when it is too long).
Result<std::string> summarize_turns(ServerState& st, std::span<const chat::Message> dropped, const std::function<bool()>& alive) {
    const int32_t n_ctx = st.limits.n_ctx_seq;
    engine::GenerateOptions o;
    o.max_tokens = std::max(1, std::min(96, n_ctx / 8));
    o.sampling.temperature = 0.0f;
    o.parse_special = true;
    o.begins_text = true;  // a chat message
    o.policy = engine::ContextPolicy::truncate;  // a transcript too long for the context loses its oldest tokens
    const auto request = summary_request(dropped, static_cast<size_t>(n_ctx) * 3);
    auto prompt = chat_prompt(st, request, &o.stop);
    if (!prompt) return prompt.error();
    auto r = st.scheduler->run(std::move(*prompt), o, alive);
    if (!r) return r.error();
    return r->text;
}

// The chat prompt within the context, as the history policy says (chat_history.h).
Result<std::vector<int32_t>> fit_chat(ServerState& st, GenerationRequest& gr, HistoryOutcome& out, const std::function<bool()>& alive) {
    const int32_t n_ctx = st.limits.n_ctx_seq;
    const HistoryPolicy policy = gr.history.value_or(st.limits.history);
    out.budget = gr.max_tokens ? static_cast<int32_t>(*gr.max_tokens) : default_answer_budget(st.limits.default_max_tokens, n_ctx);
    const std::string budget_what = gr.max_tokens ? "max_tokens " + std::to_string(out.budget)
                                                  : "the default answer budget " + std::to_string(out.budget) + " (min(--default-max-tokens " +
                                                        std::to_string(st.limits.default_max_tokens) + ", context / 4))";
    const bool thinking = gr.enable_thinking.value_or(false);
    const RenderFn render = [&st, &gr, thinking](std::span<const chat::Message> m) { return chat_prompt(st, m, nullptr, gr.tools, thinking); };
    auto fit = fit_history(gr.messages, out.budget, budget_what, n_ctx, policy, render);
    if (!fit) return fit.error();
    out.n_dropped = static_cast<int32_t>(fit->dropped.size());
    if (policy == HistoryPolicy::summarize && !fit->dropped.empty()) {
        auto summary = summarize_turns(st, fit->dropped, alive);
        if (!summary) return summary.error();
        // The summary goes after the leading system messages; fitting again may drop more turns.
        std::vector<chat::Message> with = fit->kept;
        size_t at = 0;
        while (at < with.size() && with[at].role == "system") ++at;
        with.insert(with.begin() + static_cast<std::ptrdiff_t>(at), summary_message(*summary));
        auto refit = fit_history(with, out.budget, budget_what, n_ctx, HistoryPolicy::drop, render);
        if (refit) {
            out.summarized = true;
            out.n_dropped += static_cast<int32_t>(refit->dropped.size());
            fit = std::move(refit);
        }  // else the summary itself does not fit: the prompt without it stands
    }
    // Once more with the stop strings: the template's end-of-turn strings join gr's stop list.
    // Not under a grammar: such a string may be valid inside its JSON, and the grammar ends
    // the answer itself (or lets the end-of-turn token through once it is complete).
    return chat_prompt(st, fit->kept, gr.options.grammar ? nullptr : &gr.options.stop, gr.tools, thinking);
}

void handle_generation(ServerState& st, const httplib::Request& req, httplib::Response& res, bool chat) {
    if (!st.engine) {
        const EncoderModel* m = st.embed_model ? st.embed_model.get() : st.rerank_model.get();
        return send_error(res, Error{Errc::request_model_not_found, "this server has no chat model; it serves the " +
                                                                        std::string(m ? engine::embedder_kind_name(m->embedder->kind()) : "") + " model '" +
                                                                        (m ? m->id : std::string()) + "'. Start it with -m CHAT.gguf to generate text"},
                          "model");
    }
    json body;
    if (auto e = parse_body(req.body, body)) return send_error(res, *e);
    GenerationRequest gr;
    if (auto e = parse_generation_request(body, chat, st.limits, gr, req.body)) return send_error(res, *e);
    if (gr.enable_thinking.value_or(false) && st.chat_template && st.chat_template->kind() != chat::ChatTemplate::Kind::qwen3) {
        // Off is what every other template does anyway; on would be silently ignored.
        return send_error(res, ApiError::bad_request("'chat_template_kwargs.enable_thinking' true needs a template with a thinking switch (qwen3); "
                                                     "this model's chat template is " + std::string(st.chat_template->name()),
                                                     "chat_template_kwargs.enable_thinking"));
    }
    const chat::ToolFormat tool_format = st.chat_template ? chat::tool_format(*st.chat_template) : chat::ToolFormat::hermes;
    if (chat && (gr.tool_choice == ToolChoice::required || gr.tool_choice == ToolChoice::named)) {
        auto g = tool_call_grammar(gr, tool_format);
        if (!g) return send_error(res, g.error(), "tools");
        gr.options.grammar = *g;
    }
    if (!gr.seed_given) gr.options.sampling.seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();

    // Prompt tokens: chat through the template; text prompts as the model's tokenizer says.
    std::vector<int32_t> prompt;
    HistoryOutcome history;
    if (chat) {
        gr.options.parse_special = true;
        gr.options.begins_text = true;  // the assistant's message, not a continuation of the prompt's text
        auto fitted = fit_chat(st, gr, history, client_alive_fn(req));
        if (!fitted) return send_error(res, fitted.error(), "messages");
        prompt = std::move(*fitted);
    } else if (gr.has_token_prompt) {
        prompt = std::move(gr.prompt_tokens);
    } else {
        prompt = st.engine->tokenize(gr.prompt_text, gr.options);
    }
    // chat: the default answer budget is the one the history policy left room for.
    if (auto e = resolve_max_tokens(gr, static_cast<int32_t>(prompt.size()), st.limits, chat ? history.budget : -1)) return send_error(res, *e);
    if (chat) {
        res.set_header("X-Kvrag-Messages-Dropped", std::to_string(history.n_dropped));
    }

    auto job = std::make_shared<Job>();
    job->label = st.new_id(chat ? "chatcmpl" : "cmpl");
    job->prompt = std::move(prompt);
    job->options = gr.options;
    job->keep_pieces = gr.stream;
    // n > 1: the other choices are forks of this job (engine/job.h): admitted with it, they
    // take its prompt's cells once it has computed them, so the prompt is computed once.
    // Each has its own seed and sampler.
    for (int32_t i = 1; i < gr.n; ++i) {
        auto more = std::make_shared<Job>();
        more->label = job->label;
        more->prompt = job->prompt;
        more->options = job->options;
        more->keep_pieces = job->keep_pieces;
        more->options.sampling.seed += static_cast<uint64_t>(i);
        job->forks.push_back(std::move(more));
    }
    if (auto s = st.scheduler->submit(job); !s) return send_error(res, s.error());

    // Wait for admission (or an early end), watching the client.
    auto conn = std::make_shared<ClientConnection>(req);
    while (job->wait_admitted(kPoll) == JobState::queued) {
        if (!conn->alive()) {
            job->cancel();
            job->wait_done(milliseconds(2000));
            return send_error(res, job->error());
        }
    }
    if (job->state() == JobState::done && job->error().code != Errc::ok) return send_error(res, job->error());

    std::string echo_prefix;
    if (gr.echo) echo_prefix = gr.has_token_prompt ? st.engine->model().tokenizer->decode(job->prompt) : gr.prompt_text;
    StreamHeader header;
    header.id = job->label;
    header.model = gr.model.empty() ? st.model_id : gr.model;
    header.created = static_cast<int64_t>(std::time(nullptr));
    header.chat = chat;
    header.logprobs = gr.logprobs;
    header.echo_prefix = echo_prefix;
    header.tools = gr.tools;
    header.tool_format = tool_format;
    header.parallel_tool_calls = gr.parallel_tool_calls;
    header.include_usage = gr.include_usage;
    std::vector<std::shared_ptr<Job>> jobs = {job};
    jobs.insert(jobs.end(), job->forks.begin(), job->forks.end());
    if (gr.stream) return stream_job(res, st, std::move(jobs), conn, std::move(header));
    auto cancel_all = [&jobs] {
        for (auto& j : jobs) j->cancel();
    };
    for (auto& j : jobs) {
        while (!j->wait_done(kPoll)) {
            if (!conn->alive()) cancel_all();  // the scheduler frees their cells at the next step
        }
    }
    json out;
    int64_t completion_tokens = 0;
    for (size_t i = 0; i < jobs.size(); ++i) {
        const Job& j = *jobs[i];
        log_tokens(static_cast<int64_t>(j.result().tokens.size()));
        if (j.error().code != Errc::ok) {
            cancel_all();
            return send_error(res, j.error());
        }
        const engine::GenerateResult& result = j.result();
        std::optional<chat::ParsedToolCalls> calls;
        if (chat && !gr.tools.empty()) {
            calls = chat::parse_tool_calls(tool_format, result.text, gr.tools);
            // parallel_tool_calls false: the first call only (OpenAI's answer has at most one).
            if (!gr.parallel_tool_calls && calls->calls.size() > 1) calls->calls.resize(1);
            for (auto& c : calls->calls) c.id = new_tool_call_id();
        }
        size_t text_chars = utf8_chars(echo_prefix);  // text_offset counts from the echoed prompt's characters
        const json lp = gr.logprobs ? logprobs_json(chat, result.logprobs, *st.engine->model().tokenizer, &text_chars) : json(nullptr);
        json one = completion_response(header.id, header.created, header.model, chat, result, lp, calls ? &*calls : nullptr, echo_prefix);
        completion_tokens += static_cast<int64_t>(result.tokens.size());
        if (i == 0) {
            out = std::move(one);
        } else {
            one["choices"][0]["index"] = i;
            out["choices"].push_back(one["choices"][0]);
        }
    }
    // usage: the prompt once (the choices share it), every choice's tokens.
    out["usage"] = Usage{out["usage"]["prompt_tokens"].get<int64_t>(), completion_tokens}.to_json();
    if (chat) out["kvrag"] = history.to_json();
    send_json(res, 200, out);
}

}  // namespace

Result<std::vector<int32_t>> chat_prompt(ServerState& st, std::span<const chat::Message> messages, std::vector<std::string>* stop,
                                         std::span<const chat::ToolFunction> tools, bool thinking) {
    if (!st.engine || !st.chat_template) return Error{Errc::request_invalid, "this server has no chat model (only encoder models)"};
    const bool tool_turns = std::any_of(messages.begin(), messages.end(), [](const chat::Message& m) { return m.role == "tool" || !m.tool_calls.empty(); });
    chat::ChatTemplate tmpl = *st.chat_template;  // per request: the shared one is read by every thread
    tmpl.set_thinking(thinking);
    auto text = tools.empty() && !tool_turns ? tmpl.render(messages, /*add_generation_prompt=*/true)
                                             : chat::render_with_tools(tmpl, messages, tools, /*add_generation_prompt=*/true);
    if (!text) return text.error();
    if (stop) {
        for (auto& s : st.chat_template->end_of_turn_strings()) {
            if (std::find(stop->begin(), stop->end(), s) == stop->end()) stop->push_back(s);
        }
    }
    return st.engine->model().tokenizer->encode(*text, /*add_special=*/true, /*parse_special=*/true);
}

void add_openai_routes(httplib::Server& http, ServerState& st) {
    using Req = const httplib::Request&;
    using Res = httplib::Response&;
    http.Get("/health", [&st](Req, Res res) { handle_health(st, res); });
    http.Get("/v1/models", [&st](Req req, Res res) { handle_models(st, req, res); });
    http.Get(R"(/v1/models/(.+))", [&st](Req req, Res res) { handle_models(st, req, res); });
    http.Post("/v1/completions", [&st](Req req, Res res) { handle_generation(st, req, res, false); });
    http.Post("/v1/chat/completions", [&st](Req req, Res res) { handle_generation(st, req, res, true); });
    // Without a chat model there is no KV cache: its figures are zero.
    http.Get("/metrics", [&st](Req, Res res) {
        const auto snap = st.scheduler->snapshot();
        res.set_content(render_metrics(st.engine ? st.engine->cache().stats() : kvcache::KvStats{},
                                       st.engine ? st.engine->totals() : engine::Engine::Totals{}, snap),
                        "text/plain; version=0.0.4; charset=utf-8");
    });
    http.Get("/v1/kv", [&st](Req, Res res) {
        const auto snap = st.scheduler->snapshot();  // before the stats: a sequence it lists is live
        send_json(res, 200, render_kv(st.engine ? st.engine->cache().stats() : kvcache::KvStats{}, snap));
    });
}

}  // namespace kvrag::server
