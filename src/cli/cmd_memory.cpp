// Memory (RAG) subcommands: ingest, search, ask, docs, memory eval; memory-bench runs tools/memory_bench.
// See docs/memory.md.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "engine/context_size.h"
#include "engine/embedder.h"
#include "engine/engine.h"
#include "gguf/gguf_file.h"
#include "model/hparams.h"
#include "memory/extract.h"
#include "memory/ingest_worker.h"
#include "memory/memory.h"
#include "memory/retrieval_eval.h"
#include "tools/memory_bench.h"

namespace kvrag::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The defaults of the flags below are the library's (memory/chunker.h, memory/memory.h), read
// from default-constructed option structs so each is written once; help texts print them.
const memory::ChunkOptions kChunkDefaults;
const memory::SearchOptions kSearchDefaults;
const memory::AskOptions kAskDefaults;

std::string dflt(int32_t v) { return " (default " + std::to_string(v) + ")"; }

// Options shared by the commands that load a model.
struct ModelArgs {
    std::string model_path;
    std::string embed_model_path;  // empty = the -m model embeds too
    std::string rerank_model_path; // empty = no rerank stage
    std::string memory_dir;
    std::string index = kSearchDefaults.index;
    int32_t ctx = 0;
    int32_t threads = 0;
    int32_t chunk_tokens = kChunkDefaults.max_tokens;
    int32_t chunk_overlap = kChunkDefaults.overlap;
    std::string chat_template;
};

// with_store: the command works on a --memory store (eval makes a temporary one instead).
void add_model_options(CLI::App& app, ModelArgs& a, bool with_store = true) {
    app.add_option("-m,--model", a.model_path, "GGUF model (tokenizer, embeddings and answers)")->required();
    app.add_option("--embed-model", a.embed_model_path, "separate GGUF model for the embeddings");
    app.add_option("--rerank-model", a.rerank_model_path, "GGUF reranking model (cross-encoder) for search and ask");
    if (with_store) app.add_option("--memory,--store", a.memory_dir,
                                 "store directory, or a PostgreSQL URI postgresql://... shared by several replicas (ingest creates "
                                 "it; search and ask need it)")
                      ->required();
    app.add_option("--index", a.index, "index name (default: default)");
    app.add_option("-c,--ctx", a.ctx, "context size; default min(" + std::to_string(engine::kDefaultMaxCtx) + ", trained context)")
        ->check(CLI::Range(0, 1 << 22));
    app.add_option("-t,--threads", a.threads, "threads; default: physical cores")->check(CLI::Range(0, 1024));
    app.add_option("--chunk-tokens", a.chunk_tokens, "max tokens per chunk" + dflt(kChunkDefaults.max_tokens))->check(CLI::Range(8, 1 << 20));
    app.add_option("--chunk-overlap", a.chunk_overlap, "tokens of overlap between chunks" + dflt(kChunkDefaults.overlap))->check(CLI::Range(0, 1 << 19));
    app.add_option("--chat-template", a.chat_template, "chat template name (default: the model's, else chatml)");
}

// The engines and the Memory over them; owns everything so the hooks' references stay valid.
struct Session {
    std::unique_ptr<engine::Engine> gen;
    std::unique_ptr<engine::Engine> embed;          // a decoder --embed-model; null: gen or embedder embeds
    std::unique_ptr<engine::Embedder> embedder;     // an encoder --embed-model (bert, nomic-bert)
    std::unique_ptr<engine::Embedder> reranker;     // --rerank-model
    std::unique_ptr<memory::Memory> mem;
};

Result<std::unique_ptr<engine::Engine>> make_engine(const std::string& path, const ModelArgs& a) {
    auto loaded = engine::LoadedModel::load(path, terminal_progress("loading " + path));
    if (!loaded) return loaded.error();
    engine::EngineConfig cfg;
    cfg.n_threads = a.threads;
    // One request at a time: n_ctx only, n_ctx_seq stays 0 = all of it (see engine/context_size.h).
    cfg.n_ctx = engine::default_context_size(loaded->model->hparams(), a.ctx).n_ctx;
    return engine::Engine::create(std::move(*loaded), cfg);
}

Result<std::unique_ptr<engine::Embedder>> make_embedder(const std::string& path, const ModelArgs& a) {
    auto loaded = engine::LoadedModel::load(path, terminal_progress("loading " + path));
    if (!loaded) return loaded.error();
    engine::EmbedderConfig cfg;
    cfg.n_threads = a.threads;
    return engine::Embedder::create(std::move(*loaded), cfg);
}

// Whether the GGUF at `path` is an encoder (bert, nomic-bert), read from its metadata only.
Result<bool> is_encoder_file(const std::string& path) {
    auto file = gguf::GgufFile::open(path);
    if (!file) return file.error();
    auto hp = model::read_hparams(**file);
    if (!hp) return hp.error();
    return model::is_encoder(hp->arch);
}
// mode: search, ask and docs need an existing store (a typo'd path is an error naming it,
// found before any model loads); ingest and eval create one.
Result<Session> open_session(const ModelArgs& a, memory::OpenMode mode = memory::OpenMode::create) {
    warn_threads(a.threads);
    auto store = memory::Store::open(a.memory_dir, mode);
    if (!store) return store.error();
    Session s;
    auto gen = make_engine(a.model_path, a);
    if (!gen) return gen.error();
    s.gen = std::move(*gen);
    if (!a.embed_model_path.empty()) {
        auto encoder = is_encoder_file(a.embed_model_path);
        if (!encoder) return encoder.error();
        if (*encoder) {
            auto emb = make_embedder(a.embed_model_path, a);
            if (!emb) return emb.error();
            if ((*emb)->kind() != engine::EmbedderKind::embedding) {
                return Error{Errc::model_unsupported_arch, "--embed-model " + a.embed_model_path + " is a reranker (pooling rank); give it with --rerank-model"};
            }
            s.embedder = std::move(*emb);
        } else {
            auto emb = make_engine(a.embed_model_path, a);
            if (!emb) return emb.error();
            s.embed = std::move(*emb);
        }
    }
    auto hooks = s.embedder ? memory::engine_hooks(*s.gen, *s.embedder, a.chat_template)
                            : memory::engine_hooks(*s.gen, s.embed ? *s.embed : *s.gen, a.chat_template);
    if (!hooks) return hooks.error();
    if (!a.rerank_model_path.empty()) {
        auto rr = make_embedder(a.rerank_model_path, a);
        if (!rr) return rr.error();
        if ((*rr)->kind() != engine::EmbedderKind::reranker) {
            return Error{Errc::model_unsupported_arch, "--rerank-model " + a.rerank_model_path +
                                                           " has no classifier head (pooling rank): it is an embedding model; give it with --embed-model"};
        }
        s.reranker = std::move(*rr);
        hooks->rerank = memory::embedder_rerank_hook(*s.reranker);
    }
    memory::ChunkOptions co;
    co.max_tokens = a.chunk_tokens;
    co.overlap = a.chunk_overlap;
    if (auto v = memory::validate(co); !v) return v.error();
    // A chunk is embedded with BOS (or [CLS] and [SEP]) in one sequence: it must fit the
    // embedding context. An encoder counts its own (WordPiece) tokens, usually within 1.3x of
    // the chat model's; a chunk it cannot hold fails at ingestion with the numbers.
    const int32_t emb_ctx = s.embedder ? s.embedder->max_tokens() : (s.embed ? *s.embed : *s.gen).config().n_ctx;
    if (co.max_tokens + 2 > emb_ctx) {
        return Error{Errc::memory_bad_input, "--chunk-tokens " + std::to_string(co.max_tokens) + " does not fit the embedding context " +
                                                 std::to_string(emb_ctx) + " (needs chunk + 2)"};
    }
    s.mem = std::make_unique<memory::Memory>(std::shared_ptr<memory::Store>(std::move(*store)), std::move(*hooks), co);
    return s;
}

std::string one_line(const std::string& s, size_t max) {
    std::string out;
    for (char c : s) {
        out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
        if (out.size() >= max) {
            out += "...";
            break;
        }
    }
    return out;
}

json hit_json(const memory::SearchHit& h) {
    json tags = json::object();
    for (const auto& [k, v] : h.chunk.tags) tags[k].push_back(v);
    return json{{"index", h.chunk.index}, {"documentId", h.chunk.doc_id}, {"name", h.chunk.doc_name},
                {"source", h.chunk.source}, {"partitionNumber", h.chunk.position}, {"chunkId", h.chunk.chunk_id},
                {"relevance", h.relevance}, {"score", h.score}, {"vectorRank", h.vector_rank},
                {"lexicalRank", h.lexical_rank}, {"exactTerms", h.n_exact}, {"tokens", h.chunk.n_tokens}, {"text", h.chunk.text},
                {"tags", tags}, {"rerankScore", h.reranked ? json(h.rerank_score) : json(nullptr)}};
}

// ---- ingest ----------------------------------------------------------------------------------

struct IngestArgs {
    ModelArgs m;
    std::string tags;
    std::string doc_id;
    std::vector<std::string> inputs;
};

// Set by SIGINT/SIGTERM during `kvrag ingest`: the queue stops and resumes at the next start.
std::atomic<bool> g_ingest_interrupted{false};
void on_ingest_signal(int) { g_ingest_interrupted.store(true); }

struct InputFile {
    std::string path;     // absolute, normalised (the document's source)
    std::string shown;    // as found from the inputs given
    std::string doc_id;
};

// Files named and found under folders named (sorted, recursive, hidden entries skipped), each
// once, with ids by memory::file_doc_id; two different files whose ids collide (only possible
// through sanitising or cutting to 128 characters) get disambiguated ids, with a warning.
std::vector<InputFile> expand_inputs(const std::vector<std::string>& inputs, const std::string& forced_id) {
    const std::string cwd = fs::current_path().string();
    std::vector<InputFile> out;
    std::map<std::string, std::string> path_of_id;  // id -> absolute path
    std::map<std::string, bool> seen;
    auto add = [&](const std::string& shown) {
        const std::string abs = (fs::path(cwd) / shown).lexically_normal().string();
        if (seen[abs]) return;
        seen[abs] = true;
        std::string id = forced_id.empty() ? memory::file_doc_id(shown, cwd) : forced_id;
        if (auto it = path_of_id.find(id); it != path_of_id.end() && it->second != abs) {
            const std::string other = memory::disambiguated_id(id, abs);
            std::fprintf(stderr, "kvrag: warning: %s would get id %s, which %s has; it gets %s\n", shown.c_str(), id.c_str(),
                         it->second.c_str(), other.c_str());
            id = other;
        }
        path_of_id[id] = abs;
        out.push_back(InputFile{abs, shown, id});
    };
    for (const auto& in : inputs) {
        std::error_code ec;
        if (fs::is_directory(in, ec)) {
            std::vector<std::string> found;
            for (auto it = fs::recursive_directory_iterator(in, fs::directory_options::skip_permission_denied, ec);
                 !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
                const auto name = it->path().filename().string();
                if (!name.empty() && name[0] == '.') {
                    if (it->is_directory()) it.disable_recursion_pending();
                    continue;
                }
                if (it->is_regular_file()) found.push_back(it->path().string());
            }
            std::sort(found.begin(), found.end());
            for (const auto& f : found) add(f);
        } else {
            add(in);
        }
    }
    return out;
}

Result<std::string> read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return Error{Errc::memory_extract, "cannot open '" + path + "'"};
    // A binary file is refused from its head, before the rest is read.
    std::string head(memory::kSniffBytes, '\0');
    f.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(f.gcount()));
    if (auto b = memory::sniff_binary(head, fs::path(path).filename().string()); !b) return b.error();
    std::ostringstream ss;
    ss << head << f.rdbuf();
    return ss.str();
}

std::string fmt_duration(double s) {
    if (!(s >= 0) || s > 360000) return "?";
    char buf[32];
    if (s < 60) std::snprintf(buf, sizeof(buf), "%.0fs", s);
    else if (s < 3600) std::snprintf(buf, sizeof(buf), "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
    else std::snprintf(buf, sizeof(buf), "%dh%02dm", static_cast<int>(s) / 3600, static_cast<int>(s) / 60 % 60);
    return buf;
}

int run_ingest(const IngestArgs& a) {
    auto tags = memory::parse_tags(a.tags);
    if (!tags) return fail(tags.error());
    const std::vector<InputFile> files = expand_inputs(a.inputs, a.doc_id);
    if (files.empty()) return fail(Error{Errc::cli_usage, "no files to ingest"});
    if (!a.doc_id.empty() && files.size() != 1) return fail(Error{Errc::cli_usage, "--id needs exactly one file; got " + std::to_string(files.size())});

    auto s = open_session(a.m);
    if (!s) return fail(s.error());
    memory::Memory& mem = *s->mem;
    memory::Store& store = mem.store();
    const bool tty = isatty(STDERR_FILENO);
    const auto t0 = std::chrono::steady_clock::now();
    int n_ok = 0, n_unchanged = 0, n_failed = 0;
    int64_t n_chunks = 0;

    // 1. Queue every file (durably: an interrupted run resumes them). A document id held by
    //    another file in the store (its source differs) gets a disambiguated id.
    struct Pending {
        std::string shown;
        size_t bytes = 0;
    };
    std::map<int64_t, Pending> pending;  // job id -> file
    size_t total_bytes = 0;
    for (const auto& f : files) {
        auto bytes = read_file(f.path);
        if (!bytes) {
            ++n_failed;
            std::fprintf(stderr, "kvrag: %s: %s\n", f.shown.c_str(), bytes.error().what().c_str());
            continue;
        }
        std::string id = f.doc_id;
        if (a.doc_id.empty()) {
            auto old = store.get_document(a.m.index, id);
            if (!old) return fail(old.error());
            if (*old && !(*old)->source.empty() && (fs::current_path() / (*old)->source).lexically_normal().string() != f.path) {
                const std::string other = memory::disambiguated_id(id, f.path);
                std::fprintf(stderr, "kvrag: warning: %s would get id %s, which %s has in the store; it gets %s\n", f.shown.c_str(),
                             id.c_str(), (*old)->source.c_str(), other.c_str());
                id = other;
            }
        }
        memory::IngestRequest req;
        req.index = a.m.index;
        req.doc_id = id;
        req.name = fs::path(f.path).filename().string();
        req.source = f.path;
        req.bytes = std::move(*bytes);
        req.tags = *tags;
        const size_t n_bytes = req.bytes.size();
        auto q = mem.enqueue(req);
        if (!q) {
            ++n_failed;
            std::fprintf(stderr, "kvrag: %s: %s\n", f.shown.c_str(), q.error().what().c_str());
            continue;
        }
        if (q->job_id == 0) {
            ++n_unchanged;
            n_chunks += q->n_chunks;
            std::printf("%-9s %s  id=%s  chunks=%d  tokens=%lld\n", "unchanged", f.shown.c_str(), q->doc_id.c_str(), q->n_chunks,
                        static_cast<long long>(q->n_tokens));
            continue;
        }
        pending[q->job_id] = Pending{f.shown, n_bytes};
        total_bytes += n_bytes;
    }
    std::fflush(stdout);
    auto queued = store.list_jobs();
    if (!queued) return fail(queued.error());
    const size_t n_jobs = queued->size();  // ours plus any left by an interrupted run
    if (n_jobs > pending.size()) std::fprintf(stderr, "kvrag: resuming %zu document(s) queued by an earlier run\n", n_jobs - pending.size());

    // 2. Run the queue in a worker thread; this one draws the progress and watches for SIGINT.
    std::mutex mu;
    size_t n_done = 0, done_bytes = 0;
    int64_t tokens_done = 0;                     // of finished jobs
    std::map<int64_t, memory::JobProgress> running;
    auto on_progress = [&](const memory::JobProgress& p) {
        std::lock_guard lk(mu);
        running[p.job_id] = p;
    };
    auto on_report = [&](const memory::JobReport& r) {
        std::lock_guard lk(mu);
        running.erase(r.job.job_id);
        if (r.end == memory::JobEnd::interrupted) return;
        ++n_done;
        auto it = pending.find(r.job.job_id);
        const std::string shown = it != pending.end() ? it->second.shown : r.job.source;
        if (it != pending.end()) done_bytes += it->second.bytes;
        if (tty) std::fprintf(stderr, "\r\033[K");
        for (const auto& w : r.result.warnings) std::fprintf(stderr, "kvrag: warning: %s\n", w.c_str());
        if (r.end == memory::JobEnd::done) {
            ++n_ok;
            n_chunks += r.result.n_chunks;
            tokens_done += r.result.n_tokens;
            std::printf("%-9s %s  id=%s  chunks=%d  tokens=%lld\n", memory::write_outcome_name(r.result.outcome), shown.c_str(),
                        r.job.doc_id.c_str(), r.result.n_chunks, static_cast<long long>(r.result.n_tokens));
            std::fflush(stdout);
        } else {
            ++n_failed;
            std::fprintf(stderr, "kvrag: %s: %s\n", shown.c_str(), r.error.what().c_str());
        }
    };
    memory::IngestWorker worker(mem, 1, on_report, on_progress);
    g_ingest_interrupted.store(false);
    struct sigaction sa {}, old_int {}, old_term {};
    sa.sa_handler = on_ingest_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    worker.start();
    bool interrupted = false;
    auto last_line = std::chrono::steady_clock::now();
    while (n_jobs > 0 && !worker.wait_idle(std::chrono::milliseconds(100))) {
        if (g_ingest_interrupted.load()) {
            interrupted = true;
            worker.stop();  // the running job goes back to the queue
            break;
        }
        // Progress: files, chunks of the running document, tokens/s, ETA by bytes.
        std::lock_guard lk(mu);
        const auto now = std::chrono::steady_clock::now();
        const double secs = std::chrono::duration<double>(now - t0).count();
        int64_t tokens = tokens_done;
        double bytes_now = static_cast<double>(done_bytes);
        int32_t c_done = 0, c_total = 0;
        for (const auto& [id, p] : running) {
            tokens += p.n_tokens_done;
            c_done += p.n_chunks_done;
            c_total += p.n_chunks_total;
            if (auto it = pending.find(id); it != pending.end() && p.n_chunks_total > 0) {
                bytes_now += static_cast<double>(it->second.bytes) * p.n_chunks_done / p.n_chunks_total;
            }
        }
        const double tps = secs > 0 ? static_cast<double>(tokens) / secs : 0.0;
        const double eta = bytes_now > 0 ? secs * (static_cast<double>(total_bytes) - bytes_now) / bytes_now : -1.0;
        char line[256];
        std::snprintf(line, sizeof(line), "%zu/%zu files  chunks %d/%d  %.0f tokens/s  ETA %s", n_done, n_jobs, c_done, c_total, tps,
                      fmt_duration(eta).c_str());
        if (tty) {
            const int width = 24;
            const double frac = total_bytes > 0 ? std::min(1.0, bytes_now / static_cast<double>(total_bytes)) : 0.0;
            const int filled = static_cast<int>(width * frac);
            std::fprintf(stderr, "\r\033[K[%s%s] %s", std::string(filled, '#').c_str(), std::string(width - filled, ' ').c_str(), line);
            std::fflush(stderr);
        } else if (now - last_line >= std::chrono::seconds(2)) {
            last_line = now;
            std::fprintf(stderr, "progress: %s\n", line);
        }
    }
    worker.stop();
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    if (tty) std::fprintf(stderr, "\r\033[K");
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (interrupted) {
        auto left = store.list_jobs();
        std::fprintf(stderr, "kvrag: interrupted; %zu document(s) stay queued in %s and resume at the next `kvrag ingest` or `kvrag serve` on it\n",
                     left ? left->size() : size_t{0}, a.m.memory_dir.c_str());
    }
    std::printf("ingested %d, unchanged %d, failed %d of %zu documents (%lld chunks) into index '%s' in %.2f s\n", n_ok, n_unchanged, n_failed,
                files.size() + (n_jobs - pending.size()), static_cast<long long>(n_chunks), a.m.index.c_str(), secs);
    if (interrupted) return 130;
    return n_failed == 0 ? 0 : 1;
}

// ---- search ---------------------------------------------------------------------------------

struct SearchArgs {
    ModelArgs m;
    std::string query;
    std::string doc_id;
    std::string tags;
    std::string mode = "hybrid";
    double min_relevance = kSearchDefaults.min_relevance;
    int32_t limit = kSearchDefaults.limit;
    bool no_rerank = false;
    bool json_out = false;
};

int run_search(const SearchArgs& a) {
    auto tags = memory::parse_tags(a.tags);
    if (!tags) return fail(tags.error());
    auto mode = memory::parse_search_mode(a.mode);
    if (!mode) return fail(mode.error());
    auto s = open_session(a.m, memory::OpenMode::existing);
    if (!s) return fail(s.error());
    memory::SearchOptions o;
    o.index = a.m.index;
    o.filter = {a.doc_id, *tags};
    o.min_relevance = a.min_relevance;
    o.limit = a.limit;
    o.mode = *mode;
    o.rerank = !a.no_rerank;
    auto r = s->mem->search(a.query, o);
    if (!r) return fail(r.error());
    if (a.json_out) {
        json out{{"query", a.query}, {"results", json::array()}, {"embedMs", r->embed_ms}, {"searchMs", r->search_ms},
                 {"rerankMs", r->rerank_ms}, {"reranked", r->n_reranked}};
        for (const auto& h : r->hits) out["results"].push_back(hit_json(h));
        std::printf("%s\n", out.dump(2).c_str());
        return 0;
    }
    if (r->hits.empty()) std::printf("no results\n");
    for (size_t i = 0; i < r->hits.size(); ++i) {
        const auto& h = r->hits[i];
        std::string extra = h.n_exact ? ", exact terms " + std::to_string(h.n_exact) : "";
        if (h.reranked) extra += ", rerank " + std::to_string(h.rerank_score);
        std::printf("%zu. %s #%d  relevance %.3f  score %.4f  (vector rank %d, lexical rank %d%s)\n   %s\n", i + 1, h.chunk.doc_id.c_str(),
                    h.chunk.position, h.relevance, h.score, h.vector_rank, h.lexical_rank, extra.c_str(), one_line(h.chunk.text, 160).c_str());
    }
    std::fprintf(stderr, "search: embed %.1f ms, search %.1f ms, rerank %.1f ms (%d chunks)\n", r->embed_ms, r->search_ms, r->rerank_ms,
                 r->n_reranked);
    return 0;
}

// ---- ask ------------------------------------------------------------------------------------

struct AskArgs {
    ModelArgs m;
    std::string question;
    std::string conversation;
    std::string doc_id;
    std::string tags;
    double min_relevance = kAskDefaults.min_relevance;
    int32_t max_tokens = kAskDefaults.max_tokens;
    int32_t candidates = kAskDefaults.n_candidates;
    float temp = kAskDefaults.sampling.temperature;
    int64_t seed = static_cast<int64_t>(kAskDefaults.sampling.seed);
    bool no_rerank = false;
    bool json_out = false;
    bool verbose = false;
    std::string history = "drop";
};

int run_ask(const AskArgs& a) {
    auto tags = memory::parse_tags(a.tags);
    if (!tags) return fail(tags.error());
    auto s = open_session(a.m, memory::OpenMode::existing);
    if (!s) return fail(s.error());
    memory::AskOptions o;
    o.index = a.m.index;
    o.filter = {a.doc_id, *tags};
    o.min_relevance = a.min_relevance;
    o.max_tokens = a.max_tokens;
    o.n_candidates = a.candidates;
    o.rerank = !a.no_rerank;
    o.conversation_id = a.conversation;
    auto mode = memory::parse_history_mode(a.history);
    if (!mode) return fail(mode.error());
    o.history_mode = *mode;
    o.sampling.temperature = a.temp;
    o.sampling.seed = static_cast<uint64_t>(a.seed);
    auto r = s->mem->ask(a.question, o);
    if (!r) return fail(r.error());
    if (a.json_out) {
        json out{{"question", a.question}, {"text", r->answer}, {"noResult", !r->found}, {"relevantSources", json::array()},
                 {"promptTokens", r->n_prompt_tokens}, {"contextSize", r->n_ctx}, {"maxTokens", r->max_tokens},
                 {"historyUsed", r->n_history_used}, {"historyDropped", r->n_history_dropped},
                 {"questionTruncated", r->question_truncated}, {"finishReason", r->finish_reason}};
        for (const auto& h : r->sources) out["relevantSources"].push_back(hit_json(h));
        std::printf("%s\n", out.dump(2).c_str());
        return 0;
    }
    std::printf("%s\n", r->answer.c_str());
    if (!r->sources.empty()) {
        std::printf("\nSources:\n");
        for (size_t i = 0; i < r->sources.size(); ++i) {
            const auto& h = r->sources[i];
            std::printf("[%zu] %s (%s) part %d  relevance %.3f\n", i + 1, h.chunk.doc_id.c_str(), h.chunk.doc_name.c_str(), h.chunk.position + 1,
                        h.relevance);
        }
    }
    if (a.verbose) {
        std::fprintf(stderr, "prompt %d tokens + max_tokens %d <= context %d; history %d used, %d dropped; reused %d; finish %s\n",
                     r->n_prompt_tokens, r->max_tokens, r->n_ctx, r->n_history_used, r->n_history_dropped, r->n_reused,
                     r->finish_reason.empty() ? "(model not called)" : r->finish_reason.c_str());
        std::fprintf(stderr, "kv stats: %s\n", s->gen->cache().stats().summary().c_str());
    }
    return 0;
}

// ---- docs -----------------------------------------------------------------------------------

struct DocsArgs {
    std::string memory_dir;
    std::string action;
    std::string doc_id;
    std::string index;
    bool json_out = false;
};

int run_docs(const DocsArgs& a) {
    auto store = memory::Store::open(a.memory_dir, memory::OpenMode::existing);
    if (!store) return fail(store.error());
    if (a.action == "list") {
        auto docs = (*store)->list_documents(a.index);
        if (!docs) return fail(docs.error());
        if (a.json_out) {
            json out = json::array();
            for (const auto& d : *docs) {
                out.push_back(json{{"index", d.index}, {"documentId", d.doc_id}, {"name", d.name}, {"source", d.source}, {"state", d.state},
                                   {"error", d.error}, {"tags", memory::format_tags(d.tags)}, {"chunks", d.n_chunks}, {"tokens", d.n_tokens},
                                   {"contentHash", d.content_hash}, {"updatedAt", d.updated_at}});
            }
            std::printf("%s\n", out.dump(2).c_str());
            return 0;
        }
        auto idx = (*store)->list_indexes();
        if (!idx) return fail(idx.error());
        for (const auto& i : *idx) {
            std::printf("index %s: %lld documents, %lld chunks, embedded by %s (%s, dim %d)\n", i.name.c_str(),
                        static_cast<long long>(i.n_documents), static_cast<long long>(i.n_chunks), i.model.name.c_str(),
                        i.model.fingerprint.c_str(), i.model.dim);
        }
        for (const auto& d : *docs) {
            std::printf("%s/%s  %s  chunks=%d tokens=%lld  %s%s%s\n", d.index.c_str(), d.doc_id.c_str(), d.state.c_str(), d.n_chunks,
                        static_cast<long long>(d.n_tokens), d.name.c_str(), d.tags.empty() ? "" : ("  tags=" + memory::format_tags(d.tags)).c_str(),
                        d.error.empty() ? "" : ("  error: " + d.error).c_str());
        }
        if (docs->empty()) std::printf("no documents\n");
        return 0;
    }
    if (a.action == "delete") {
        if (a.doc_id.empty()) return fail(Error{Errc::cli_usage, "docs delete needs a document id"});
        auto n = (*store)->delete_document(a.index, a.doc_id);
        if (!n) return fail(n.error());
        if (*n == 0) return fail(Error{Errc::memory_not_found, "no document '" + a.doc_id + "'" + (a.index.empty() ? "" : " in index '" + a.index + "'")});
        std::printf("deleted %lld document(s) with id %s\n", static_cast<long long>(*n), a.doc_id.c_str());
        return 0;
    }
    return fail(Error{Errc::cli_usage, "docs action '" + a.action + "' is not list or delete"});
}

// ---- memory eval ----------------------------------------------------------------------------

struct EvalArgs {
    ModelArgs m;
    std::string set_dir;
    int32_t depth = memory::EvalOptions{}.depth;
    std::string keep_dir;
};

// Ingests the set into a fresh store (a temporary directory unless --store is given, which
// must not exist yet, so no old documents can leak into the figures) and prints the table,
// then the key=value line.
int run_eval(EvalArgs a) {
    auto set = memory::load_eval_set(a.set_dir);
    if (!set) return fail(set.error());
    std::error_code ec;
    const bool keep = !a.keep_dir.empty();
    if (keep) {
        if (fs::exists(a.keep_dir, ec)) return fail(Error{Errc::cli_usage, "--store '" + a.keep_dir + "' exists; eval needs a new directory"});
        a.m.memory_dir = a.keep_dir;
    } else {
        a.m.memory_dir = (fs::temp_directory_path() / ("kvrag-eval-" + std::to_string(getpid()))).string();
        fs::remove_all(a.m.memory_dir, ec);
    }
    int rc = 0;
    {
        auto s = open_session(a.m);
        if (!s) {
            rc = fail(s.error());
        } else {
            std::fprintf(stderr, "eval: %zu documents, %zu questions\n", set->doc_paths.size(), set->questions.size());
            memory::EvalOptions o;
            o.depth = a.depth;
            auto r = memory::run_eval(*s->mem, *set, o);
            if (!r) {
                rc = fail(r.error());
            } else {
                std::printf("%s\n%s\n", memory::format_eval_table(*r).c_str(), memory::format_eval_summary(*r).c_str());
            }
        }
    }
    if (!keep) fs::remove_all(a.m.memory_dir, ec);
    return rc;
}

}  // namespace

Runner add_memory(CLI::App& app) {
    app.require_subcommand(1);
    CLI::App* eval = app.add_subcommand("eval", "retrieval quality on an evaluation set: recall@1, recall@5 and MRR per search mode");
    auto a = std::make_shared<EvalArgs>();
    add_model_options(*eval, a->m, false);
    eval->add_option("--set", a->set_dir, "evaluation set: DIR/docs/* and DIR/questions.tsv (tests/data/memory/retrieval)")->required();
    eval->add_option("--depth", a->depth, "chunks retrieved per question" + dflt(a->depth))->check(CLI::Range(5, 1000));
    eval->add_option("--store", a->keep_dir, "keep the store in this new directory (default: a temporary one, removed)");
    return [a, eval] { return eval->parsed() ? run_eval(*a) : fail(Error{Errc::cli_usage, "memory needs a subcommand: eval"}); };
}

Runner add_ingest(CLI::App& app) {
    auto a = std::make_shared<IngestArgs>();
    add_model_options(app, a->m);
    app.add_option("--tags", a->tags, "tags for every document: k=v,k2=v2");
    app.add_option("--id", a->doc_id, "document id (one file only; default: the path relative to the current directory, sanitised)");
    app.add_option("inputs", a->inputs, "files or directories (recursive)")->required();
    return [a] { return run_ingest(*a); };
}

Runner add_search(CLI::App& app) {
    auto a = std::make_shared<SearchArgs>();
    add_model_options(app, a->m);
    app.add_option("query", a->query, "search text")->required();
    app.add_option("--doc", a->doc_id, "only this document id");
    app.add_option("--tags", a->tags, "only documents with every tag: k=v,k2=v2");
    app.add_option("--mode", a->mode, "hybrid (default), vector or lexical");
    app.add_option("--min-relevance", a->min_relevance, "minimum cosine similarity in [0, 1]")->check(CLI::Range(0.0, 1.0));
    app.add_option("-n,--limit", a->limit, "results" + dflt(kSearchDefaults.limit))->check(CLI::Range(1, 1000));
    app.add_flag("--no-rerank", a->no_rerank, "skip the --rerank-model stage for this search");
    app.add_flag("--json", a->json_out, "print JSON");
    return [a] { return run_search(*a); };
}

Runner add_ask(CLI::App& app) {
    auto a = std::make_shared<AskArgs>();
    add_model_options(app, a->m);
    app.add_option("question", a->question, "the question")->required();
    app.add_option("--conversation", a->conversation, "conversation id: history kept in the store");
    app.add_option("--history", a->history, "turns beyond the history budget: drop (oldest first) or summarize (with the model)");
    app.add_option("--doc", a->doc_id, "only this document id");
    app.add_option("--tags", a->tags, "only documents with every tag: k=v,k2=v2");
    app.add_option("--min-relevance", a->min_relevance, "minimum cosine similarity in [0, 1]")->check(CLI::Range(0.0, 1.0));
    app.add_option("-n,--max-tokens", a->max_tokens, "answer length" + dflt(kAskDefaults.max_tokens))->check(CLI::Range(1, 1 << 22));
    app.add_option("--candidates", a->candidates,
                   "chunks retrieved (as many as fit are used; default " + std::to_string(kAskDefaults.n_candidates) + ")")
        ->check(CLI::Range(1, 1000));
    app.add_flag("--no-rerank", a->no_rerank, "skip the --rerank-model stage for this question");
    app.add_option("--temp", a->temp, "temperature (default 0: greedy)");
    app.add_option("--seed", a->seed, "sampling seed");
    app.add_flag("--json", a->json_out, "print JSON");
    app.add_flag("-v,--verbose", a->verbose, "print prompt budget and KV stats to stderr");
    return [a] { return run_ask(*a); };
}

Runner add_docs(CLI::App& app) {
    auto a = std::make_shared<DocsArgs>();
    app.add_option("--memory,--store", a->memory_dir, "store directory or PostgreSQL URI (postgresql://...)")->required();
    app.add_option("action", a->action, "list or delete")->required();
    app.add_option("id", a->doc_id, "document id (delete)");
    app.add_option("--index", a->index, "only this index");
    app.add_flag("--json", a->json_out, "print JSON (list)");
    return [a] { return run_docs(*a); };
}

Runner add_memory_bench(CLI::App& app) {
    auto a = std::make_shared<tools::MemoryBenchConfig>();
    const tools::MemoryBenchConfig d;
    app.add_option("--chunks", a->sizes, "store sizes to measure (default 10000 100000)")->delimiter(',');
    app.add_option("--dim", a->dim, "embedding dimension" + dflt(d.dim))->check(CLI::Range(8, 16384));
    app.add_option("--queries", a->queries, "queries per size" + dflt(d.queries))->check(CLI::Range(1, 10000));
    app.add_option("--dir", a->dir, "keep the stores under this directory");
    return [a] {
        auto r = tools::run_memory_bench(*a);
        return r ? 0 : fail(r.error());
    };
}

}  // namespace kvrag::cli
