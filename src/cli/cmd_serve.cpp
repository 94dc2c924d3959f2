// `kvrag serve`: the OpenAI-compatible HTTP server (src/server, docs/server.md).
#include <algorithm>
#include <cctype>

#include "cli/commands.h"
#include "engine/engine.h"
#include "memory_service/memory_routes.h"
#include "server/middleware.h"
#include "server/server.h"

namespace kvrag::cli {
namespace {

struct ServeArgs {
    server::ServeConfig cfg;
    std::string kv_type = "f16";
    std::string policy = "error";
    std::string chat_history = "drop";
    std::string cors = "*";
    std::string memory_dir;
    int32_t chunk_tokens = 256;
    int32_t chunk_overlap = 32;
};

int run_serve(ServeArgs& a) {
    if (a.cfg.model_path.empty() && a.cfg.embed_model_path.empty() && a.cfg.rerank_model_path.empty()) {
        return fail(Error{Errc::cli_usage, "serve needs a model: -m MODEL.gguf (and/or --embed-model EMBED.gguf, --rerank-model RERANK.gguf)"});
    }
    warn_threads(a.cfg.threads);
    // The name goes into a response header: keep it to characters no client or proxy mangles.
    for (const char ch : a.cfg.replica_name) {
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.') {
            return fail(Error{Errc::cli_usage, "--replica-name '" + a.cfg.replica_name +
                                                   "' may hold only letters, digits, '-', '_' and '.' (it is sent as the X-Kvrag-Replica header)"});
        }
    }
    if (a.cfg.replica_name.size() > 64) {
        return fail(Error{Errc::cli_usage, "--replica-name is " + std::to_string(a.cfg.replica_name.size()) + " characters; at most 64"});
    }
    auto kv_type = parse_kv_type(a.kv_type);
    if (!kv_type) return fail(kv_type.error());
    a.cfg.kv_type = *kv_type;
    auto policy = engine::parse_context_policy(a.policy);
    if (!policy) return fail(Error{Errc::cli_usage, policy.error().message});
    a.cfg.policy = *policy;
    auto history = server::parse_history_policy(a.chat_history);
    if (!history) return fail(Error{Errc::cli_usage, "--chat-history: " + history.error().message});
    a.cfg.chat_history = *history;
    a.cfg.cors_origins.clear();
    if (a.cors != "none") {
        size_t at = 0;
        while (at <= a.cors.size()) {
            const size_t comma = std::min(a.cors.find(',', at), a.cors.size());
            std::string origin = a.cors.substr(at, comma - at);
            while (!origin.empty() && origin.front() == ' ') origin.erase(origin.begin());
            while (!origin.empty() && origin.back() == ' ') origin.pop_back();
            if (!origin.empty() && !server::valid_cors_origin(origin)) {
                return fail(Error{Errc::cli_usage, "--cors: '" + origin + "' is not an origin; give scheme://host[:port] (e.g. http://localhost:3000), "
                                                   "several separated by commas, * or none"});
            }
            if (!origin.empty()) a.cfg.cors_origins.push_back(origin);
            at = comma + 1;
        }
        if (a.cfg.cors_origins.empty()) return fail(Error{Errc::cli_usage, "--cors '" + a.cors + "' names no origin (use *, a comma-separated list, or none)"});
    }
    if (!a.memory_dir.empty()) {
        memory_service::HttpMemoryConfig mc;
        mc.dir = a.memory_dir;
        mc.chunking = {a.chunk_tokens, a.chunk_overlap};
        mc.chat_template = a.cfg.chat_template;
        a.cfg.extensions.push_back(memory_service::memory_extension(mc));
    }
    return server::run_server(a.cfg);
}

}  // namespace

Runner add_serve(CLI::App& app) {
    auto a = std::make_shared<ServeArgs>();
    auto& c = a->cfg;
    app.add_option("-m,--model", c.model_path, "GGUF model: a chat model, or an embedding/rerank model served alone");
    app.add_option("--embed-model", c.embed_model_path, "embedding model (bert, nomic-bert) for /v1/embeddings and --memory");
    app.add_option("--rerank-model", c.rerank_model_path, "reranker (bert with a rank head) for /v1/rerank and the memory's rerank stage");
    app.add_option("--host", c.host, "address to bind (default 127.0.0.1: this machine only)");
    app.add_option("--port", c.port, "TCP port; 0 picks a free one (printed at start-up)")->check(CLI::Range(0, 65535));
    app.add_option("-c,--ctx", c.ctx, "KV cache cells shared by all requests; default min(4096, trained context)")->check(CLI::Range(0, 1 << 22));
    app.add_option("--parallel", c.parallel, "requests decoding at once (continuous batching)")->check(CLI::Range(1, 1024));
    app.add_option("-t,--threads", c.threads, "compute threads; default: physical cores")->check(CLI::Range(0, 1024));
    app.add_option("--batch", c.batch, "tokens per forward step (decode tokens + prefill chunks)")->check(CLI::Range(1, 1 << 16));
    app.add_option("--kv-type", a->kv_type, "KV cell type: f16, q8_0, f32");
    app.add_option("--context-policy", a->policy, "when a request does not fit its context: error, truncate, shift");
    app.add_option("--cors", a->cors, "browser origins allowed (CORS): * (default), a comma-separated list such as http://localhost:3000, or none");
    app.add_option("--alias", c.aliases, "another name of the chat model, listed in /v1/models (repeatable)");
    app.add_flag("--strict-model-names", c.strict_model_names,
                 "answer 404 to model names this server does not have (default: the served model answers any name)");
    app.add_option("--chat-history", a->chat_history,
                   "chat requests that do not fit the context: drop (oldest turns first), summarize, error");
    app.add_option("--api-key", c.api_key, "require the key on every endpoint but /health ('Authorization: Bearer KEY', or the bare key)");
    app.add_option("--timeout", c.timeout_s, "per-request limit in seconds (queue + generation); 0 = none")->check(CLI::Range(0.0, 1e7));
    app.add_option("--queue-timeout", c.queue_timeout_s, "longest wait in seconds for KV room before 503")->check(CLI::Range(0.0, 1e7));
    app.add_option("--max-queue", c.max_queue, "requests waiting for admission; beyond it 429")->check(CLI::Range(1, 4096));
    app.add_option("--default-max-tokens", c.default_max_tokens, "max_tokens when a request gives none (capped to the context)")->check(CLI::Range(1, 1 << 22));
    app.add_option("--max-body", c.max_body_bytes, "largest request body in bytes; larger gets 413")->check(CLI::Range(1024, 1 << 30));
    app.add_option("--shutdown-grace", c.shutdown_grace_s, "seconds running requests may finish after SIGINT/SIGTERM")->check(CLI::Range(0.0, 3600.0));
    app.add_option("--memory,--store", a->memory_dir,
                   "memory store directory, or a PostgreSQL URI postgresql://... that several replicas share (docs/scale.md): adds "
                   "/upload, /upload-status, /documents, /search, /ask (docs/api.md)");
    app.add_option("--chunk-tokens", a->chunk_tokens, "memory: max tokens per chunk")->check(CLI::Range(8, 1 << 16));
    app.add_option("--chunk-overlap", a->chunk_overlap, "memory: overlap tokens between chunks")->check(CLI::Range(0, 1 << 15));
    app.add_option("--replica-name", c.replica_name, "name sent as the X-Kvrag-Replica header on every response (replicas behind a proxy, docs/scale.md)");
    app.add_option("--chat-template", c.chat_template, "force a chat template: chatml, llama2, llama3, mistral, gemma, phi3 (or a variant)");
    return [a] { return run_serve(*a); };
}

}  // namespace kvrag::cli
