#include "server/server.h"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <random>
#include <thread>

#include "server/client_connection.h"
#include "server/metrics.h"
#include "server/openai_api.h"
#include "server/scheduler.h"

namespace kvrag::server {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kPoll{50};  // how often waiting handlers look at their client

enum class Health { loading, ok, error };

// Per-request log fields. A request is handled start to end on one httplib worker thread
// (routing, handler, then the response write, streaming included), so a thread_local carries
// them from the pre-routing hook to the logger.
struct RequestLog {
    Clock::time_point start{};
    bool started = false;
    int64_t tokens = -1;
};
thread_local RequestLog t_log;

// Compares in time that depends only on the lengths, not on where the texts differ.
bool constant_time_equal(std::string_view a, std::string_view b) {
    const size_t n = std::max(a.size(), b.size());
    unsigned char diff = a.size() == b.size() ? 0 : 1;
    for (size_t i = 0; i < n; ++i) {
        const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
        const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
        diff |= static_cast<unsigned char>(x ^ y);
    }
    return diff == 0;
}

void set_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(dump(body), "application/json");
}

void set_error(httplib::Response& res, const ApiError& e) {
    if (e.retry_after_s > 0) res.set_header("Retry-After", std::to_string(e.retry_after_s));
    set_json(res, e.status, e.to_json());
}

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

// The HTTP status for a job that did not finish normally.
ApiError job_error(const Job& job) {
    const Error& err = job.error();
    ApiError e = api_error_from(err);
    switch (job.end()) {
        case JobEnd::invalid: break;
        case JobEnd::too_long:
            e.status = 400;
            e.code = "context_length_exceeded";
            break;
        case JobEnd::queue_timeout:
            e.status = 503;
            e.type = "server_error";
            e.code = "kv_cache_busy";
            e.retry_after_s = 1;
            break;
        case JobEnd::timed_out:
            e.status = 504;
            e.type = "timeout_error";
            e.code = "request_timeout";
            e.retry_after_s = 0;
            break;
        case JobEnd::cancelled:
            e.status = 499;  // nginx's "client closed request"; nobody reads it
            e.type = "cancelled";
            break;
        case JobEnd::shutdown:
            e.status = 503;
            e.type = "server_error";
            e.code = "shutting_down";
            e.retry_after_s = 0;
            break;
        case JobEnd::failed:
        default:
            e.status = 500;
            e.type = "server_error";
            break;
    }
    return e;
}

class Server final : public ServerContext {
public:
    explicit Server(const ServeConfig& cfg) : cfg_(cfg) {
        std::random_device rd;
        id_salt_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
        model_id_ = std::filesystem::path(cfg.model_path).filename().string();
        if (model_id_.size() > 5 && model_id_.ends_with(".gguf")) model_id_.resize(model_id_.size() - 5);
    }

    int run();

    // ---- ServerContext ----
    httplib::Server& http() override { return http_; }
    engine::Engine& engine() override { return *engine_; }
    const std::string& model_id() const override { return model_id_; }
    Result<engine::GenerateResult> submit(std::vector<int32_t> prompt, const engine::GenerateOptions& options,
                                          const std::function<bool()>& alive) override {
        return scheduler_->run(std::move(prompt), options, alive);
    }
    Result<std::vector<float>> embed(std::span<const int32_t> tokens, engine::Pooling pooling,
                                     const std::function<bool()>& alive) override;
    Result<std::vector<int32_t>> chat_prompt(std::span<const chat::Message> messages, std::vector<std::string>* stop) override;
    std::function<bool()> client_alive(const httplib::Request& req) override {
        auto conn = std::make_shared<ClientConnection>(req);
        return [conn] { return conn->alive(); };
    }
    void send_error(httplib::Response& res, const Error& err) override { set_error(res, api_error_from(err)); }
    void send_error(httplib::Response& res, int status, const std::string& message, const std::string& type) override {
        ApiError e;
        e.status = status;
        e.message = message;
        e.type = type;
        set_error(res, e);
    }
    void log_tokens(int64_t n) override { t_log.tokens = n; }

private:
    void setup_http();
    Result<void> load();
    std::string new_id(const char* prefix);
    ApiLimits limits() const { return limits_; }

    void handle_generation(const httplib::Request& req, httplib::Response& res, bool chat);
    void handle_embeddings(const httplib::Request& req, httplib::Response& res);
    void handle_models(const httplib::Request& req, httplib::Response& res);
    void handle_health(httplib::Response& res);

    ServeConfig cfg_;
    httplib::Server http_;
    std::string model_id_;
    std::vector<std::string> aliases_;
    uint64_t id_salt_ = 0;
    std::atomic<uint64_t> id_counter_{0};
    std::atomic<Health> health_{Health::loading};
    std::string health_message_;
    std::atomic<bool> draining_{false};
    std::atomic<int> open_streams_{0};
    int64_t created_ = std::time(nullptr);

    std::unique_ptr<engine::Engine> engine_;
    std::unique_ptr<Scheduler> scheduler_;
    std::optional<chat::ChatTemplate> template_;
    ApiLimits limits_;
};

std::string Server::new_id(const char* prefix) {
    const uint64_t n = id_counter_.fetch_add(1) + 1;
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%s-%08" PRIx64 "%08" PRIx64, prefix, (id_salt_ >> 16) & 0xffffffffu, n);
    return buf;
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing: auth, readiness, errors, logging

void Server::setup_http() {
    const size_t n_http_threads = static_cast<size_t>(std::clamp(cfg_.parallel + cfg_.max_queue + 8, 8, 512));
    http_.new_task_queue = [n_http_threads] { return new httplib::ThreadPool(n_http_threads); };
    http_.set_payload_max_length(cfg_.max_body_bytes);
    http_.set_keep_alive_timeout(2);
    http_.set_read_timeout(30);
    http_.set_write_timeout(30);

    http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
        t_log = RequestLog{Clock::now(), true, -1};
        if (req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
        if (!cfg_.api_key.empty()) {
            const std::string auth = req.get_header_value("Authorization");
            const std::string want = "Bearer " + cfg_.api_key;
            if (!constant_time_equal(auth, want)) {
                ApiError e;
                e.status = 401;
                e.message = auth.empty() ? "missing API key: send 'Authorization: Bearer KEY'" : "invalid API key";
                e.type = "invalid_request_error";
                e.code = "invalid_api_key";
                res.set_header("WWW-Authenticate", "Bearer");
                set_error(res, e);
                return httplib::Server::HandlerResponse::Handled;
            }
        }
        const Health h = health_.load();
        if (h != Health::ok) {
            ApiError e;
            e.status = 503;
            e.type = "server_error";
            e.message = h == Health::loading ? "the model is loading; retry shortly" : "the server failed: " + health_message_;
            e.code = h == Health::loading ? "model_loading" : "server_failed";
            e.retry_after_s = h == Health::loading ? 1 : 0;
            set_error(res, e);
            return httplib::Server::HandlerResponse::Handled;
        }
        if (draining_.load() && req.method == "POST") {
            ApiError e;
            e.status = 503;
            e.type = "server_error";
            e.message = "the server is shutting down";
            e.code = "shutting_down";
            set_error(res, e);
            return httplib::Server::HandlerResponse::Handled;
        }
        return httplib::Server::HandlerResponse::Unhandled;
    });

    // Every 4xx/5xx without a body of our own gets an OpenAI-shaped one (404 no route, 413 too
    // large, 400 malformed request line, ...).
    http_.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        ApiError e;
        e.status = res.status;
        switch (res.status) {
            case 404:
                e.message = "no route for " + req.method + " " + req.path;
                e.code = "not_found";
                break;
            case 413:
                e.message = "the request body exceeds the limit of " + std::to_string(cfg_.max_body_bytes) + " bytes";
                e.code = "payload_too_large";
                break;
            default:
                e.message = "HTTP " + std::to_string(res.status) + " for " + req.method + " " + req.path;
                if (res.status >= 500) e.type = "server_error";
                break;
        }
        set_error(res, e);
        return httplib::Server::HandlerResponse::Handled;
    }));

    http_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
            if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
            what = e.what();
        } catch (...) {
        }
        ApiError e;
        e.status = 500;
        e.type = "server_error";
        e.message = "internal error: " + what;
        set_error(res, e);
    });

    http_.set_logger([](const httplib::Request& req, const httplib::Response& res) {
        const double ms = t_log.started ? std::chrono::duration<double, std::milli>(Clock::now() - t_log.start).count() : 0.0;
        char tokens[32] = "-";
        if (t_log.tokens >= 0) std::snprintf(tokens, sizeof(tokens), "%" PRId64, t_log.tokens);
        std::fprintf(stderr, "%s %s %d tokens=%s ms=%.1f\n", req.method.c_str(), req.path.c_str(), res.status, tokens, ms);
        t_log = RequestLog{};
    });

    http_.Get("/health", [this](const httplib::Request&, httplib::Response& res) { handle_health(res); });
    http_.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) { handle_models(req, res); });
    http_.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) { handle_models(req, res); });
    http_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { handle_generation(req, res, false); });
    http_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { handle_generation(req, res, true); });
    http_.Post("/v1/embeddings", [this](const httplib::Request& req, httplib::Response& res) { handle_embeddings(req, res); });
    http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
        res.set_content(render_metrics(engine_->cache().stats(), engine_->totals(), scheduler_->snapshot()),
                        "text/plain; version=0.0.4; charset=utf-8");
    });
    http_.Get("/v1/kv", [this](const httplib::Request&, httplib::Response& res) {
        const auto snap = scheduler_->snapshot();  // before the stats: a sequence it lists is live
        set_json(res, 200, render_kv(engine_->cache().stats(), snap));
    });
}

// ---------------------------------------------------------------------------------------------
// Endpoints

void Server::handle_health(httplib::Response& res) {
    Health h = health_.load();
    if (h == Health::ok && scheduler_ && scheduler_->unhealthy()) h = Health::error;
    switch (h) {
        case Health::ok: set_json(res, 200, json{{"status", "ok"}}); break;
        case Health::loading: set_json(res, 503, json{{"status", "loading"}}); break;
        case Health::error:
            set_json(res, 500, json{{"status", "error"}, {"message", health_message_.empty() ? "scheduler error (see the log)" : health_message_}});
            break;
    }
}

void Server::handle_models(const httplib::Request& req, httplib::Response& res) {
    const auto& hp = engine_->model().model->hparams();
    json model{{"id", model_id_},
               {"object", "model"},
               {"created", created_},
               {"owned_by", "kvrag"},
               {"meta",
                json{{"architecture", hp.arch_name},
                     {"name", hp.name},
                     {"n_ctx", engine_->config().n_ctx},
                     {"n_ctx_seq", engine_->config().n_ctx_seq},
                     {"n_ctx_train", hp.n_ctx_train},
                     {"n_embd", hp.n_embd},
                     {"n_vocab", hp.n_vocab},
                     {"chat_template", template_ ? std::string(template_->name()) : std::string()}}}};
    if (req.matches.size() > 1) {
        const std::string want = req.matches[1];
        if (want != model_id_ && std::find(aliases_.begin(), aliases_.end(), want) == aliases_.end()) {
            ApiError e;
            e.status = 404;
            e.message = "The model '" + want + "' does not exist; this server serves '" + model_id_ + "'";
            e.param = "model";
            e.code = "model_not_found";
            set_error(res, e);
            return;
        }
        set_json(res, 200, model);
        return;
    }
    set_json(res, 200, json{{"object", "list"}, {"data", json::array({model})}});
}

Result<std::vector<int32_t>> Server::chat_prompt(std::span<const chat::Message> messages, std::vector<std::string>* stop) {
    auto text = template_->render(messages, /*add_generation_prompt=*/true);
    if (!text) return text.error();
    if (stop) {
        for (auto& s : template_->end_of_turn_strings()) {
            if (std::find(stop->begin(), stop->end(), s) == stop->end()) stop->push_back(s);
        }
    }
    return engine_->model().tokenizer->encode(*text, /*add_special=*/true, /*parse_special=*/true);
}

void Server::handle_generation(const httplib::Request& req, httplib::Response& res, bool chat) {
    json body;
    if (auto e = parse_body(req.body, body)) return set_error(res, *e);
    GenerationRequest gr;
    if (auto e = parse_generation_request(body, chat, limits(), gr)) return set_error(res, *e);
    if (!gr.seed_given) gr.options.sampling.seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();

    // Prompt tokens: chat through the template; text prompts as the model's tokenizer says.
    std::vector<int32_t> prompt;
    if (chat) {
        gr.options.parse_special = true;
        auto p = chat_prompt(gr.messages, &gr.options.stop);
        if (!p) return set_error(res, api_error_from(p.error(), "messages"));
        prompt = std::move(*p);
    } else if (gr.has_token_prompt) {
        prompt = std::move(gr.prompt_tokens);
    } else {
        prompt = engine_->tokenize(gr.prompt_text, gr.options);
    }
    if (auto e = resolve_max_tokens(gr, static_cast<int32_t>(prompt.size()), limits())) return set_error(res, *e);

    auto job = std::make_shared<Job>();
    job->label = new_id(chat ? "chatcmpl" : "cmpl");
    job->prompt = std::move(prompt);
    job->options = gr.options;
    job->keep_pieces = gr.stream;
    if (auto s = scheduler_->submit(job); !s) {
        ApiError e = api_error_from(s.error());
        if (s.error().code == Errc::kv_no_space) {
            e.status = 429;
            e.type = "rate_limit_error";
            e.code = "queue_full";
            e.retry_after_s = 1;
        } else {
            e.status = 503;
            e.type = "server_error";
            e.code = "shutting_down";
        }
        return set_error(res, e);
    }

    // Wait for admission (or an early end), watching the client.
    auto conn = std::make_shared<ClientConnection>(req);
    while (job->wait_admitted(kPoll) == JobState::queued) {
        if (!conn->alive()) {
            job->cancel();
            job->wait_done(milliseconds(2000));
            return set_error(res, job_error(*job));
        }
    }
    if (job->state() == JobState::done && job->end() != JobEnd::finished) return set_error(res, job_error(*job));

    const std::string id = job->label;
    const std::string model = gr.model.empty() ? model_id_ : gr.model;
    const int64_t created = std::time(nullptr);

    if (!gr.stream) {
        while (!job->wait_done(kPoll)) {
            if (!conn->alive()) job->cancel();  // the loop frees its cells at the next step
        }
        t_log.tokens = static_cast<int64_t>(job->result().tokens.size());
        if (job->end() != JobEnd::finished) return set_error(res, job_error(*job));
        return set_json(res, 200, completion_response(id, created, model, chat, job->result()));
    }

    // Streaming: server-sent events, one chunk per text piece, a final chunk with finish_reason
    // and usage, then [DONE]. A failed write or a closed connection cancels the job.
    struct StreamState {
        std::shared_ptr<Job> job;
        std::shared_ptr<ClientConnection> conn;
        bool sent_role = false;
        bool finished = false;
    };
    auto st = std::make_shared<StreamState>(StreamState{job, conn});
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    open_streams_.fetch_add(1);
    res.set_chunked_content_provider(
        "text/event-stream",
        [st, id, model, created, chat](size_t, httplib::DataSink& sink) {
            if (st->finished) {
                sink.done();
                return true;
            }
            auto u = st->job->take(kPoll);
            std::string out;
            if (chat && !st->sent_role) {
                out += sse(stream_chunk(id, created, model, chat, "", true, nullptr, nullptr));
                st->sent_role = true;
            }
            for (const auto& piece : u.pieces) out += sse(stream_chunk(id, created, model, chat, piece, false, nullptr, nullptr));
            if (u.done) {
                const auto& r = st->job->result();
                t_log.tokens = static_cast<int64_t>(r.tokens.size());
                if (st->job->end() == JobEnd::finished) {
                    const Usage usage{static_cast<int64_t>(r.prompt_tokens.size()), static_cast<int64_t>(r.tokens.size())};
                    out += sse(stream_chunk(id, created, model, chat, "", false, openai_finish_reason(r), &usage));
                } else {
                    out += sse(job_error(*st->job).to_json());
                }
                out += "data: [DONE]\n\n";
            }
            if (!out.empty() && !sink.write(out.data(), out.size())) {
                st->job->cancel();
                t_log.tokens = st->job->n_generated();
                return false;
            }
            if (u.done) {
                st->finished = true;
                sink.done();
                return true;
            }
            if (!st->conn->alive()) {
                st->job->cancel();
                t_log.tokens = st->job->n_generated();
                return false;
            }
            return true;
        },
        [this, st](bool success) {
            if (!success || !st->finished) st->job->cancel();
            open_streams_.fetch_sub(1);
        });
}

Result<std::vector<float>> Server::embed(std::span<const int32_t> tokens, engine::Pooling pooling, const std::function<bool()>& alive) {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg_.queue_timeout_s));
    while (true) {
        auto r = engine_->embed_tokens(tokens, pooling);
        if (r || r.error().code != Errc::kv_no_space) return r;
        if (Clock::now() >= deadline) {
            return Error{Errc::kv_no_space, "no KV room for the embedding within the queue timeout: " + r.error().message};
        }
        if (alive && !alive()) return Error{Errc::request_invalid, "the client disconnected"};
        std::this_thread::sleep_for(milliseconds(10));
    }
}

void Server::handle_embeddings(const httplib::Request& req, httplib::Response& res) {
    json body;
    if (auto e = parse_body(req.body, body)) return set_error(res, *e);
    EmbeddingRequest er;
    if (auto e = parse_embedding_request(body, limits(), er)) return set_error(res, *e);
    std::vector<std::vector<int32_t>> inputs = std::move(er.token_inputs);
    engine::GenerateOptions tok_opt;  // BOS as the model says, special texts as plain text
    for (const auto& t : er.texts) inputs.push_back(engine_->tokenize(t, tok_opt));
    auto alive = client_alive(req);
    std::vector<std::vector<float>> vectors;
    int64_t n_tokens = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
        auto v = embed(inputs[i], er.pooling, alive);
        if (!v) return set_error(res, api_error_from(v.error(), "input"));
        vectors.push_back(std::move(*v));
        n_tokens += static_cast<int64_t>(inputs[i].size());
    }
    t_log.tokens = n_tokens;
    set_json(res, 200, embedding_response(er.model.empty() ? model_id_ : er.model, vectors, er.base64, n_tokens));
}

// ---------------------------------------------------------------------------------------------
// Start-up and shutdown

Result<void> Server::load() {
    auto loaded = engine::LoadedModel::load(cfg_.model_path);
    if (!loaded) return loaded.error();
    const auto& hp = loaded->model->hparams();
    engine::EngineConfig ec;
    ec.n_ctx = cfg_.ctx > 0 ? cfg_.ctx : std::min<int32_t>(4096, hp.n_ctx_train > 0 ? hp.n_ctx_train : 4096);
    // One request may use the whole cache, up to the trained context; admission reserves each
    // request's worst case, so concurrent requests share the cells without overfilling them.
    ec.n_ctx_seq = hp.n_ctx_train > 0 ? std::min(ec.n_ctx, hp.n_ctx_train) : ec.n_ctx;
    ec.n_threads = cfg_.threads;
    ec.n_batch = cfg_.batch;
    ec.kv_type = cfg_.kv_type;
    auto tmpl = chat::ChatTemplate::for_model(loaded->model->file(), cfg_.chat_template);
    if (!tmpl) return tmpl.error();
    template_ = *tmpl;
    if (!hp.name.empty() && hp.name != model_id_) aliases_.push_back(hp.name);
    auto eng = engine::Engine::create(std::move(*loaded), ec);
    if (!eng) return eng.error();
    engine_ = std::move(*eng);

    limits_.model_id = model_id_;
    limits_.model_aliases = aliases_;
    limits_.n_ctx_seq = engine_->config().n_ctx_seq;
    limits_.default_max_tokens = cfg_.default_max_tokens;
    limits_.policy = cfg_.policy;

    SchedulerConfig sc;
    sc.max_running = cfg_.parallel;
    sc.max_queued = cfg_.max_queue;
    sc.queue_timeout_s = cfg_.queue_timeout_s;
    sc.request_timeout_s = cfg_.timeout_s;
    scheduler_ = std::make_unique<Scheduler>(*engine_, sc);

    const auto st = engine_->cache().stats();
    std::fprintf(stderr,
                 "kvrag serve: model %s (%s, %d layers, n_embd %d); kv cache: %d cells x %zu bytes = %zu bytes (%s); "
                 "per-request context %d; parallel %d; queue %d; threads %d; chat template %s%s%s\n",
                 model_id_.c_str(), hp.arch_name.c_str(), hp.n_layer, hp.n_embd, st.total, st.bytes_per_cell, st.bytes,
                 std::string(ggml_type_name(cfg_.kv_type)).c_str(), engine_->config().n_ctx_seq, cfg_.parallel, cfg_.max_queue, engine_->n_threads(),
                 std::string(template_->name()).c_str(), template_->note().empty() ? "" : " - ", template_->note().c_str());
    return {};
}

int Server::run() {
    // Signals are taken synchronously by this thread (sigwait); every thread started from here
    // on inherits the mask. SIGPIPE is ignored: a vanished client is a failed write, not a kill.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    signal(SIGPIPE, SIG_IGN);

    setup_http();
    for (auto& ext : cfg_.extensions) {
        if (ext.add_routes) ext.add_routes(*this);
    }
    int port = cfg_.port;
    if (port == 0) {
        port = http_.bind_to_any_port(cfg_.host);
        if (port < 0) port = 0;
    } else if (!http_.bind_to_port(cfg_.host, port)) {
        port = 0;
    }
    if (port <= 0) {
        std::fprintf(stderr, "kvrag: E9001 cannot listen on %s:%d (in use, or not a local address)\n", cfg_.host.c_str(), cfg_.port);
        return 1;
    }
    std::thread listener([this] { http_.listen_after_bind(); });
    // stop() is a no-op until the listener runs; wait for it (bounded) so shutdown cannot hang.
    for (int i = 0; i < 200 && !http_.is_running(); ++i) std::this_thread::sleep_for(milliseconds(5));
    std::fprintf(stderr, "kvrag serve: listening on http://%s:%d\n", cfg_.host.c_str(), port);

    int exit_code = 0;
    if (auto ok = load(); !ok) {
        health_message_ = ok.error().what();
        health_.store(Health::error);
        std::fprintf(stderr, "kvrag: %s\n", ok.error().what().c_str());
        exit_code = 1;
    } else {
        for (auto& ext : cfg_.extensions) {
            if (!ext.on_ready) continue;
            if (auto r = ext.on_ready(*this); !r) {
                health_message_ = ext.name + ": " + r.error().what();
                health_.store(Health::error);
                std::fprintf(stderr, "kvrag: %s: %s\n", ext.name.c_str(), r.error().what().c_str());
                exit_code = 1;
                break;
            }
        }
    }
    if (exit_code == 0) {
        health_.store(Health::ok);
        std::fprintf(stderr, "kvrag serve: ready\n");
        int sig = 0;
        sigwait(&stop_signals, &sig);
        std::fprintf(stderr, "kvrag serve: %s received; finishing running requests (up to %g s), then exiting\n",
                     sig == SIGINT ? "SIGINT" : "SIGTERM", cfg_.shutdown_grace_s);
        draining_.store(true);
        scheduler_->drain(std::chrono::duration_cast<milliseconds>(std::chrono::duration<double>(cfg_.shutdown_grace_s)));
        // Let streams write their last event and [DONE] before the listener closes.
        for (int i = 0; i < 100 && open_streams_.load() > 0; ++i) std::this_thread::sleep_for(milliseconds(20));
    }
    http_.stop();
    listener.join();
    if (scheduler_) scheduler_->stop();
    if (exit_code == 0) {
        const auto st = engine_->cache().stats();
        std::fprintf(stderr, "kvrag serve: stopped; kv: %s\n", st.summary().c_str());
    }
    return exit_code;
}

}  // namespace

int run_server(const ServeConfig& config) {
    Server server(config);
    return server.run();
}

}  // namespace kvrag::server
