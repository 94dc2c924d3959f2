// Lifecycle of `kvrag serve`: bind, load, serve until a signal, drain, stop. The parts it
// wires together: middleware.cpp (auth, readiness, error bodies, log), openai_routes.cpp (the
// endpoints), streaming.cpp (server-sent events), the engine's Scheduler, and the extensions
// (ServerContext) that add routes of their own.
#include "server/server.h"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <random>
#include <future>
#include <thread>

#include "engine/context_size.h"
#include "server/client_connection.h"
#include "server/encoder_routes.h"
#include "server/tokenize_routes.h"
#include "server/middleware.h"
#include "server/openai_routes.h"
#include "server/server_state.h"
#include "server/web_routes.h"

namespace kvrag::server {

namespace {

std::string model_id_from_path(const std::string& path) {
    std::string id = std::filesystem::path(path).filename().string();
    if (id.size() > 5 && id.ends_with(".gguf")) id.resize(id.size() - 5);
    return id;
}

}  // namespace

bool EncoderModel::answers_to(const std::string& name) const {
    return name == id || std::find(aliases.begin(), aliases.end(), name) != aliases.end();
}

ServerState::ServerState(const ServeConfig& config) : cfg(config), created(std::time(nullptr)) {
    std::random_device rd;
    id_salt_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    if (!config.model_path.empty()) model_id = model_id_from_path(config.model_path);
}

std::string ServerState::new_id(const char* prefix) {
    const uint64_t n = id_counter_.fetch_add(1) + 1;
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%s-%08" PRIx64 "%08" PRIx64, prefix, (id_salt_ >> 16) & 0xffffffffu, n);
    return buf;
}

namespace {

using std::chrono::milliseconds;

class Server final : public ServerContext {
public:
    explicit Server(const ServeConfig& cfg) : st_(cfg) {}

    int run();

    // ---- ServerContext ----
    httplib::Server& http() override { return http_; }
    engine::Engine* engine() override { return st_.engine.get(); }
    const std::string& model_id() const override { return st_.model_id; }
    const engine::Embedder* embedding_model() const override { return st_.embed_model ? st_.embed_model->embedder.get() : nullptr; }
    const engine::Embedder* rerank_model() const override { return st_.rerank_model ? st_.rerank_model->embedder.get() : nullptr; }
    Result<std::vector<std::vector<float>>> embed_texts(std::span<const std::string> texts, const std::function<bool()>& alive) override {
        return server::embed_texts(st_, texts, alive);
    }
    Result<std::vector<float>> rerank(std::string_view query, std::span<const std::string> documents, const std::function<bool()>& alive) override {
        return server::rerank_documents(st_, query, documents, alive);
    }
    Result<engine::GenerateResult> submit(std::vector<int32_t> prompt, const engine::GenerateOptions& options,
                                          const std::function<bool()>& alive) override {
        return st_.scheduler->run(std::move(prompt), options, alive);
    }
    Result<engine::GenerateResult> submit_streaming(std::vector<int32_t> prompt, const engine::GenerateOptions& options,
                                                    const engine::TextCallback& on_piece, const std::function<bool()>& alive) override {
        auto job = std::make_shared<engine::Job>();
        job->prompt = std::move(prompt);
        job->options = options;
        job->label = "internal";
        job->keep_pieces = true;
        if (auto s = st_.scheduler->submit(job); !s) return s.error();
        for (;;) {
            auto u = job->take(std::chrono::milliseconds(50));
            for (const auto& p : u.pieces) {
                if (!job->cancel_requested() && on_piece && !on_piece(p, -1)) job->cancel();
            }
            if (u.done) break;
            if (alive && !alive()) job->cancel();
        }
        while (!job->wait_done(std::chrono::milliseconds(50))) {
        }
        if (job->error().code == Errc::ok) return job->result();
        return job->error();
    }
    Result<std::vector<float>> embed(std::span<const int32_t> tokens, engine::Pooling pooling, const std::function<bool()>& alive) override {
        return st_.scheduler->embed(tokens, pooling, alive);
    }
    Result<std::vector<int32_t>> chat_prompt(std::span<const chat::Message> messages, std::vector<std::string>* stop) override {
        return server::chat_prompt(st_, messages, stop);
    }
    std::function<bool()> client_alive(const httplib::Request& req) override {
        auto conn = std::make_shared<ClientConnection>(req);
        return [conn] { return conn->alive(); };
    }
    void log_tokens(int64_t n) override { server::log_tokens(n); }

private:
    Result<void> load();
    Result<void> load_chat(engine::LoadedModel loaded);
    Result<void> load_encoders();
    int bind();

    ServerState st_;
    httplib::Server http_;
};

// An encoder model for `role` ("--embed-model", "--rerank-model" or "-m"), which must be of
// kind `want` when given.
Result<std::unique_ptr<EncoderModel>> make_encoder(engine::LoadedModel loaded, const std::string& path, const char* role,
                                                   std::optional<engine::EmbedderKind> want, int32_t threads) {
    const auto& hp = loaded.model->hparams();
    if (!model::is_encoder(hp.arch)) {
        return Error{Errc::model_unsupported_arch, std::string(role) + " " + path + ": architecture '" + hp.arch_name +
                                                       "' is a chat (decoder) model; " + role +
                                                       " takes a BERT-family model (bert, nomic-bert); give the chat model with -m"};
    }
    engine::EmbedderConfig ec;
    ec.n_threads = threads;
    auto emb = engine::Embedder::create(std::move(loaded), ec);
    if (!emb) return emb.error();
    if (want && (*emb)->kind() != *want) {
        return Error{Errc::model_unsupported_arch,
                     std::string(role) + " " + path + " is " + ((*emb)->kind() == engine::EmbedderKind::reranker ? "a reranker (pooling rank)" : "an embedding model") +
                         "; give it with " + ((*emb)->kind() == engine::EmbedderKind::reranker ? "--rerank-model" : "--embed-model")};
    }
    auto m = std::make_unique<EncoderModel>();
    m->id = model_id_from_path(path);
    m->path = path;
    const std::string& name = (*emb)->model().model->hparams().name;
    if (!name.empty() && name != m->id) m->aliases.push_back(name);
    m->embedder = std::move(*emb);
    return m;
}

Result<void> Server::load_encoders() {
    const ServeConfig& cfg = st_.cfg;
    const struct {
        const std::string& path;
        const char* role;
        engine::EmbedderKind kind;
        std::unique_ptr<EncoderModel>& slot;
    } wanted[] = {{cfg.embed_model_path, "--embed-model", engine::EmbedderKind::embedding, st_.embed_model},
                  {cfg.rerank_model_path, "--rerank-model", engine::EmbedderKind::reranker, st_.rerank_model}};
    for (const auto& w : wanted) {
        if (w.path.empty()) continue;
        if (w.slot) {
            return Error{Errc::cli_usage, std::string("-m ") + cfg.model_path + " is already the server's " +
                                              (w.kind == engine::EmbedderKind::reranker ? "reranker" : "embedding model") + "; " + w.role +
                                              " cannot add another"};
        }
        auto loaded = engine::LoadedModel::load(w.path);
        if (!loaded) return loaded.error();
        auto m = make_encoder(std::move(*loaded), w.path, w.role, w.kind, cfg.threads);
        if (!m) return m.error();
        w.slot = std::move(*m);
    }
    return {};
}

Result<void> Server::load() {
    const ServeConfig& cfg = st_.cfg;
    if (!cfg.model_path.empty()) {
        auto loaded = engine::LoadedModel::load(cfg.model_path);
        if (!loaded) return loaded.error();
        if (model::is_encoder(loaded->model->hparams().arch)) {
            // `-m` of an encoder serves it alone: the embedding model or the reranker.
            auto m = make_encoder(std::move(*loaded), cfg.model_path, "-m", std::nullopt, cfg.threads);
            if (!m) return m.error();
            const bool rerank = (*m)->embedder->kind() == engine::EmbedderKind::reranker;
            (rerank ? st_.rerank_model : st_.embed_model) = std::move(*m);
            st_.model_id.clear();
        } else if (auto ok = load_chat(std::move(*loaded)); !ok) {
            return ok;
        }
    }
    if (auto ok = load_encoders(); !ok) return ok;

    engine::SchedulerConfig sc;
    sc.max_running = cfg.parallel;
    sc.max_queued = cfg.max_queue;
    sc.queue_timeout_s = cfg.queue_timeout_s;
    sc.request_timeout_s = cfg.timeout_s;
    st_.scheduler = std::make_unique<engine::Scheduler>(st_.engine.get(), sc);
    for (const EncoderModel* m : {st_.embed_model.get(), st_.rerank_model.get()}) {
        if (!m) continue;
        const auto& hp = m->embedder->model().model->hparams();
        std::fprintf(stderr, "kvrag serve: %s model %s (%s, %d layers, n_embd %d, pooling %s, max %d tokens per input); threads %d\n",
                     engine::embedder_kind_name(m->embedder->kind()), m->id.c_str(), hp.arch_name.c_str(), hp.n_layer, hp.n_embd,
                     model::pooling_type_name(m->embedder->default_pooling()), m->embedder->max_tokens(), m->embedder->n_threads());
    }
    return {};
}

Result<void> Server::load_chat(engine::LoadedModel loaded_model) {
    const ServeConfig& cfg = st_.cfg;
    auto* loaded = &loaded_model;
    const auto& hp = loaded->model->hparams();
    engine::EngineConfig ec;
    // One request may use the whole cache, up to the trained context; admission reserves each
    // request's worst case, so concurrent requests share the cells without overfilling them.
    const engine::ContextSize cs = engine::default_context_size(hp, cfg.ctx);
    ec.n_ctx = cs.n_ctx;
    ec.n_ctx_seq = cs.n_ctx_seq;
    ec.n_threads = cfg.threads;
    ec.n_batch = cfg.batch;
    ec.kv_type = cfg.kv_type;
    ec.n_seq_window = std::max(1, cfg.parallel) + 1;  // sliding-window models: windows of the running requests and one embedding
    auto tmpl = chat::ChatTemplate::for_model(loaded->model->file(), cfg.chat_template);
    if (!tmpl) return tmpl.error();
    st_.chat_template = *tmpl;
    if (!hp.name.empty() && hp.name != st_.model_id) st_.aliases.push_back(hp.name);
    for (const auto& a : cfg.aliases) {
        if (a != st_.model_id && std::find(st_.aliases.begin(), st_.aliases.end(), a) == st_.aliases.end()) st_.aliases.push_back(a);
    }
    auto eng = engine::Engine::create(std::move(*loaded), ec);
    if (!eng) return eng.error();
    st_.engine = std::move(*eng);

    st_.limits.model_id = st_.model_id;
    st_.limits.model_aliases = st_.aliases;
    st_.limits.n_ctx_seq = st_.engine->config().n_ctx_seq;
    st_.limits.n_cache_cells = st_.engine->cache().n_cells();
    st_.limits.default_max_tokens = cfg.default_max_tokens;
    st_.limits.policy = cfg.policy;
    st_.limits.history = cfg.chat_history;
    st_.limits.strict_model_names = cfg.strict_model_names;

    const auto kv = st_.engine->cache().stats();
    std::fprintf(stderr,
                 "kvrag serve: model %s (%s, %d layers, n_embd %d); kv cache: %s (%s); "
                 "per-request context %d; parallel %d; queue %d; threads %d; chat template %s%s%s\n",
                 st_.model_id.c_str(), hp.arch_name.c_str(), hp.n_layer, hp.n_embd, kv.size_line().c_str(),
                 std::string(ggml_type_name(cfg.kv_type)).c_str(), st_.engine->config().n_ctx_seq, cfg.parallel, cfg.max_queue,
                 st_.engine->n_threads(), std::string(st_.chat_template->name()).c_str(), st_.chat_template->note().empty() ? "" : " - ",
                 st_.chat_template->note().c_str());
    return {};
}

// The bound port, or 0 when the address cannot be bound.
int Server::bind() {
    const ServeConfig& cfg = st_.cfg;
    // cpp-httplib's default socket options add SO_REUSEPORT, with which a second server binds
    // the same port and the kernel splits connections between the two. SO_REUSEADDR alone
    // still allows a restart while old connections sit in TIME_WAIT, and a taken port fails.
    http_.set_socket_options([](socket_t sock) {
        int yes = 1;
        setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const void*>(&yes), sizeof(yes));
    });
    if (cfg.port == 0) return std::max(0, http_.bind_to_any_port(cfg.host));
    return http_.bind_to_port(cfg.host, cfg.port) ? cfg.port : 0;
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

    const ServeConfig& cfg = st_.cfg;
    install_middleware(http_, st_);
    add_openai_routes(http_, st_);
    add_encoder_routes(http_, st_);
    add_tokenize_routes(http_, st_);
    add_web_routes(http_);
    for (auto& ext : cfg.extensions) {
        if (ext.add_routes) ext.add_routes(*this);
    }
    const int port = bind();
    if (port <= 0) {
        std::fprintf(stderr, "kvrag: E9001 cannot listen on %s:%d (in use, or not a local address)\n", cfg.host.c_str(), cfg.port);
        return 1;
    }
    std::promise<void> listener_done;
    std::future<void> listener_finished = listener_done.get_future();
    std::thread listener([this, &listener_done] {
        http_.listen_after_bind();
        listener_done.set_value();
    });
    // stop() is a no-op until the listener runs; wait for it (bounded) so shutdown cannot hang.
    for (int i = 0; i < 200 && !http_.is_running(); ++i) std::this_thread::sleep_for(milliseconds(5));
    std::fprintf(stderr, "kvrag serve: listening on http://%s:%d\n", cfg.host.c_str(), port);

    int exit_code = 0;
    if (auto ok = load(); !ok) {
        st_.health_message = ok.error().what();
        st_.health.store(Health::error);
        std::fprintf(stderr, "kvrag: %s\n", ok.error().what().c_str());
        exit_code = 1;
    } else {
        for (auto& ext : cfg.extensions) {
            if (!ext.on_ready) continue;
            if (auto r = ext.on_ready(*this); !r) {
                st_.health_message = ext.name + ": " + r.error().what();
                st_.health.store(Health::error);
                std::fprintf(stderr, "kvrag: %s: %s\n", ext.name.c_str(), r.error().what().c_str());
                exit_code = 1;
                break;
            }
        }
    }
    if (exit_code == 0) {
        st_.health.store(Health::ok);
        std::fprintf(stderr, "kvrag serve: ready\n");
        int sig = 0;
        sigwait(&stop_signals, &sig);
        std::fprintf(stderr, "kvrag serve: %s received; finishing running requests (up to %g s), then exiting (a second signal exits at once)\n",
                     sig == SIGINT ? "SIGINT" : "SIGTERM", cfg.shutdown_grace_s);
        // A second signal ends the process at once. The memory store stays consistent: SQLite
        // rolls back an unfinished transaction when the store is next opened, so a document is
        // either fully there or absent. Detached: it lives until the process exits.
        std::thread([stop_signals] {
            int again = 0;
            sigwait(&stop_signals, &again);
            std::fprintf(stderr, "kvrag serve: second %s; exiting now\n", again == SIGINT ? "SIGINT" : "SIGTERM");
            std::_Exit(130);
        }).detach();
        st_.draining.store(true);
        for (auto& ext : cfg.extensions) {
            if (ext.on_stop) ext.on_stop();
        }
        st_.scheduler->drain(std::chrono::duration_cast<milliseconds>(std::chrono::duration<double>(cfg.shutdown_grace_s)));
        // Let streams write their last event and [DONE] before the listener closes.
        for (int i = 0; i < 100 && st_.open_streams.load() > 0; ++i) std::this_thread::sleep_for(milliseconds(20));
    }
    http_.stop();
    // The listener returns once every connection's thread has finished. A client that stalls in
    // the middle of sending a request keeps its thread in a read until httplib's read timeout
    // (30 s), so wait only kStalledClientWait for them, then exit without them. Nothing such a
    // request holds is lost: a request is acted on only once its body has fully arrived (an
    // upload's temporary file is unlinked from the start), running requests have drained above,
    // and the memory service's workers stopped in on_stop.
    constexpr auto kStalledClientWait = std::chrono::seconds(2);
    const bool stalled = listener_finished.wait_for(kStalledClientWait) != std::future_status::ready;
    if (stalled) {
        std::fprintf(stderr, "kvrag serve: a client stopped sending in the middle of its request; exiting without waiting for it\n");
        listener.detach();
    } else {
        listener.join();
    }
    if (st_.scheduler) st_.scheduler->stop();
    if (exit_code == 0 && st_.engine) {
        const auto kv = st_.engine->cache().stats();
        std::fprintf(stderr, "kvrag serve: stopped; kv: %s\n", kv.summary().c_str());
    }
    if (stalled) {
        // The detached thread still uses the server's state: end the process here, before any
        // destructor runs under it.
        std::fflush(stdout);
        std::fflush(stderr);
        std::_Exit(exit_code);
    }
    return exit_code;
}

}  // namespace

int run_server(const ServeConfig& config) {
    Server server(config);
    return server.run();
}

}  // namespace kvrag::server
