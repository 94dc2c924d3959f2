#include "server/openai_routes.h"

#include <httplib.h>

#include <algorithm>
#include <ctime>
#include <random>

#include "server/client_connection.h"
#include "server/http_io.h"
#include "server/metrics.h"
#include "server/middleware.h"
#include "server/openai_api.h"
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

void handle_models(ServerState& st, const httplib::Request& req, httplib::Response& res) {
    const auto& hp = st.engine->model().model->hparams();
    json model{{"id", st.model_id},
               {"object", "model"},
               {"created", st.created},
               {"owned_by", "kvrag"},
               {"meta",
                json{{"architecture", hp.arch_name},
                     {"name", hp.name},
                     {"n_ctx", st.engine->config().n_ctx},
                     {"n_ctx_seq", st.engine->config().n_ctx_seq},
                     {"n_ctx_train", hp.n_ctx_train},
                     {"n_embd", hp.n_embd},
                     {"n_vocab", hp.n_vocab},
                     {"chat_template", st.chat_template ? std::string(st.chat_template->name()) : std::string()}}}};
    if (req.matches.size() > 1) {
        const std::string want = req.matches[1];
        if (want != st.model_id && std::find(st.aliases.begin(), st.aliases.end(), want) == st.aliases.end()) {
            return send_error(res, Error{Errc::request_model_not_found, "The model '" + want + "' does not exist; this server serves '" + st.model_id + "'"},
                              "model");
        }
        return send_json(res, 200, model);
    }
    send_json(res, 200, json{{"object", "list"}, {"data", json::array({model})}});
}

void handle_generation(ServerState& st, const httplib::Request& req, httplib::Response& res, bool chat) {
    json body;
    if (auto e = parse_body(req.body, body)) return send_error(res, *e);
    GenerationRequest gr;
    if (auto e = parse_generation_request(body, chat, st.limits, gr)) return send_error(res, *e);
    if (!gr.seed_given) gr.options.sampling.seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();

    // Prompt tokens: chat through the template; text prompts as the model's tokenizer says.
    std::vector<int32_t> prompt;
    if (chat) {
        gr.options.parse_special = true;
        auto p = chat_prompt(st, gr.messages, &gr.options.stop);
        if (!p) return send_error(res, p.error(), "messages");
        prompt = std::move(*p);
    } else if (gr.has_token_prompt) {
        prompt = std::move(gr.prompt_tokens);
    } else {
        prompt = st.engine->tokenize(gr.prompt_text, gr.options);
    }
    if (auto e = resolve_max_tokens(gr, static_cast<int32_t>(prompt.size()), st.limits)) return send_error(res, *e);

    auto job = std::make_shared<Job>();
    job->label = st.new_id(chat ? "chatcmpl" : "cmpl");
    job->prompt = std::move(prompt);
    job->options = gr.options;
    job->keep_pieces = gr.stream;
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

    StreamHeader header{job->label, gr.model.empty() ? st.model_id : gr.model, static_cast<int64_t>(std::time(nullptr)), chat};
    if (gr.stream) return stream_job(res, st, job, conn, std::move(header));
    while (!job->wait_done(kPoll)) {
        if (!conn->alive()) job->cancel();  // the scheduler frees its cells at the next step
    }
    log_tokens(static_cast<int64_t>(job->result().tokens.size()));
    if (job->error().code != Errc::ok) return send_error(res, job->error());
    send_json(res, 200, completion_response(header.id, header.created, header.model, chat, job->result()));
}

void handle_embeddings(ServerState& st, const httplib::Request& req, httplib::Response& res) {
    json body;
    if (auto e = parse_body(req.body, body)) return send_error(res, *e);
    EmbeddingRequest er;
    if (auto e = parse_embedding_request(body, st.limits, er)) return send_error(res, *e);
    std::vector<std::vector<int32_t>> inputs = std::move(er.token_inputs);
    engine::GenerateOptions tok_opt;  // BOS as the model says, special texts as plain text
    for (const auto& t : er.texts) inputs.push_back(st.engine->tokenize(t, tok_opt));
    auto conn = std::make_shared<ClientConnection>(req);
    const auto alive = [conn] { return conn->alive(); };
    std::vector<std::vector<float>> vectors;
    int64_t n_tokens = 0;
    for (const auto& input : inputs) {
        auto v = st.scheduler->embed(input, er.pooling, alive);
        if (!v) return send_error(res, v.error(), "input");
        vectors.push_back(std::move(*v));
        n_tokens += static_cast<int64_t>(input.size());
    }
    log_tokens(n_tokens);
    send_json(res, 200, embedding_response(er.model.empty() ? st.model_id : er.model, vectors, er.base64, n_tokens));
}

}  // namespace

Result<std::vector<int32_t>> chat_prompt(ServerState& st, std::span<const chat::Message> messages, std::vector<std::string>* stop) {
    auto text = st.chat_template->render(messages, /*add_generation_prompt=*/true);
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
    http.Post("/v1/embeddings", [&st](Req req, Res res) { handle_embeddings(st, req, res); });
    http.Get("/metrics", [&st](Req, Res res) {
        res.set_content(render_metrics(st.engine->cache().stats(), st.engine->totals(), st.scheduler->snapshot()),
                        "text/plain; version=0.0.4; charset=utf-8");
    });
    http.Get("/v1/kv", [&st](Req, Res res) {
        const auto snap = st.scheduler->snapshot();  // before the stats: a sequence it lists is live
        send_json(res, 200, render_kv(st.engine->cache().stats(), snap));
    });
}

}  // namespace kvrag::server
