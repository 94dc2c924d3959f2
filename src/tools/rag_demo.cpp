#include "tools/rag_demo.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "chat/chat_template.h"
#include "engine/embedder.h"
#include "engine/engine.h"
#include "memory/memory.h"
#include "server/chat_history.h"
#include "tools/synthetic.h"
#include "tools/synthetic_encoder.h"

namespace kvrag::tools {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The chat model: a small llama (dim 256, 4 layers, Q8_0) with the built-in 600-token
// vocabulary; its context is trained to 2048 so the demo's 1024 is within it.
Result<void> write_chat_model(const std::string& path) {
    SyntheticSpec s;
    s.n_embd = 256;
    s.n_layer = 4;
    s.n_head = 8;
    s.n_head_kv = 4;
    s.n_ff = 704;
    s.n_ctx_train = 2048;
    s.seed = 42;
    s.weight_type = s.output_type = s.embd_type = GgmlType::Q8_0;
    return write_synthetic_model(s, path);
}

// The embedding model: a small BERT (dim 128, 2 layers) with the built-in WordPiece vocabulary.
Result<void> write_embed_model(const std::string& path) {
    SyntheticEncoderSpec e;
    e.arch = "bert";
    e.n_embd = 128;
    e.n_layer = 2;
    e.n_head = 4;
    e.n_ff = 512;
    e.n_ctx_train = 512;
    e.seed = 43;
    e.weight_type = e.embd_type = GgmlType::F16;
    return write_synthetic_encoder(e, path);
}

std::string read_file(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

// Phrases to ask about: runs of 4 to 10 words from the corpus's prose lines (not code or
// tables), so the questions share terms with some chunks and retrieval has something to find.
std::vector<std::string> question_phrases(const std::vector<std::string>& texts) {
    std::vector<std::string> out;
    for (const auto& text : texts) {
        std::istringstream lines(text);
        std::string line;
        while (std::getline(lines, line)) {
            if (line.empty() || line[0] == '|' || line[0] == '#' || line.rfind("    ", 0) == 0 || line.rfind("```", 0) == 0) continue;
            std::istringstream ws(line);
            std::vector<std::string> words;
            for (std::string w; ws >> w;) {
                w.erase(std::remove_if(w.begin(), w.end(), [](unsigned char c) { return c == '`' || c == '*' || c == '"'; }), w.end());
                if (!w.empty()) words.push_back(w);
            }
            if (words.size() < 6) continue;
            const size_t n = std::min<size_t>(words.size(), 4 + words.size() % 7);
            std::string phrase;
            for (size_t i = 0; i < n; ++i) phrase += (i ? " " : "") + words[i];
            while (!phrase.empty() && std::ispunct(static_cast<unsigned char>(phrase.back()))) phrase.pop_back();
            out.push_back(std::move(phrase));
        }
    }
    return out;
}

double percentile(std::vector<double> v, double q) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5));
    return v[i];
}

}  // namespace

std::string RagDemoReport::summary() const {
    char buf[1024];
    std::snprintf(buf, sizeof buf,
                  "demo files=%d files_failed=%d chunks=%d asks=%d turns=%d failures=%d requests_at_baseline=%d/%d baseline_cells=%d "
                  "max_cells_between=%d peak_cells=%d total_cells=%d turns_dropping=%d max_dropped=%d max_chat_prompt=%d ttft_ms_median=%.1f "
                  "ttft_ms_p95=%.1f decode_tok_s=%.1f prompt_tokens=%lld reused_tokens=%lld generated_tokens=%lld seconds=%.1f",
                  files, files_failed, chunks, asks, turns, failures, requests_at_baseline, requests(), baseline_cells, max_cells_between,
                  peak_cells, total_cells, turns_dropping, max_dropped, max_chat_prompt, ttft_ms_median, ttft_ms_p95, decode_tokens_per_s,
                  static_cast<long long>(prompt_tokens), static_cast<long long>(reused_tokens), static_cast<long long>(generated_tokens),
                  seconds);
    return buf;
}

Result<RagDemoReport> run_rag_demo(const RagDemoConfig& cfg, const std::function<void(const RagDemoProgress&)>& progress) {
    RagDemoProgress pg;
    pg.asks_total = cfg.n_asks;
    pg.turns_total = cfg.n_turns;
    auto report_progress = [&] {
        if (progress) progress(pg);
    };
    std::error_code ec;
    fs::create_directories(cfg.dir, ec);
    if (ec) return Error{Errc::cli_usage, "cannot create " + cfg.dir.string() + ": " + ec.message()};

    // Files to ingest, in a stable order.
    std::vector<fs::path> files;
    if (!fs::is_directory(cfg.docs, ec)) {
        return Error{Errc::cli_usage, "the demo corpus " + cfg.docs.string() + " is not a directory; give one with --docs DIR"};
    }
    for (auto it = fs::recursive_directory_iterator(cfg.docs, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it->is_regular_file()) files.push_back(it->path());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) return Error{Errc::cli_usage, "the demo corpus " + cfg.docs.string() + " holds no files"};

    // Models.
    report_progress();
    const std::string chat_path = (cfg.dir / "demo-chat-q8_0.gguf").string();
    const std::string embed_path = (cfg.dir / "demo-embed-f16.gguf").string();
    if (auto r = write_chat_model(chat_path); !r) return r.error();
    if (auto r = write_embed_model(embed_path); !r) return r.error();
    auto chat_model = engine::LoadedModel::load(chat_path);
    if (!chat_model) return chat_model.error();
    engine::EngineConfig ecfg;
    ecfg.n_ctx = cfg.n_ctx;
    ecfg.n_threads = cfg.n_threads;
    auto gen = engine::Engine::create(std::move(*chat_model), ecfg);
    if (!gen) return gen.error();
    engine::Engine& engine = **gen;
    auto embed_model = engine::LoadedModel::load(embed_path);
    if (!embed_model) return embed_model.error();
    engine::EmbedderConfig mcfg;
    mcfg.n_threads = cfg.n_threads;
    auto embedder = engine::Embedder::create(std::move(*embed_model), mcfg);
    if (!embedder) return embedder.error();

    // A fresh store.
    const fs::path store_dir = cfg.dir / "memory";
    fs::remove_all(store_dir, ec);
    auto store = memory::Store::open(store_dir.string());
    if (!store) return store.error();
    auto hooks = memory::engine_hooks(engine, **embedder);
    if (!hooks) return hooks.error();

    RagDemoReport rep;
    std::vector<double> ttft_ms;
    double decode_ms = 0.0;
    int64_t decode_tokens = 0;  // tokens after the first (the first comes out of the prefill)
    auto last_tick = Clock::now();
    auto tick = [&](bool force) {
        const auto st = engine.cache().stats();
        pg.used_cells = st.used;
        pg.cached_cells = st.cached;
        pg.peak_cells = std::max(pg.peak_cells, st.peak_used);
        pg.total_cells = st.total;
        if (force || std::chrono::duration<double>(Clock::now() - last_tick).count() >= 0.05) {
            last_tick = Clock::now();
            report_progress();
        }
    };
    // Every generation (ask and chat) goes through here: timings, and the live line refreshed
    // while tokens come out, so the cells in use are seen rising and coming back.
    auto generate = [&](std::vector<int32_t> prompt, const engine::GenerateOptions& opt) -> Result<engine::GenerateResult> {
        auto r = engine.generate_tokens(std::move(prompt), opt, [&](std::string_view, int32_t) {
            tick(false);
            return true;
        });
        if (r) {
            ttft_ms.push_back(r->prefill_ms);
            decode_ms += r->decode_ms;
            decode_tokens += std::max<int64_t>(0, static_cast<int64_t>(r->tokens.size()) - 1);
            rep.prompt_tokens += static_cast<int64_t>(r->prompt_tokens.size());
            rep.reused_tokens += r->n_reused;
            rep.generated_tokens += static_cast<int64_t>(r->tokens.size());
        }
        return r;
    };
    hooks->generate = generate;
    memory::Memory mem(std::shared_ptr<memory::Store>(std::move(*store)), *hooks);

    // Ingest.
    pg.phase = RagDemoPhase::ingest;
    pg.files_total = static_cast<int32_t>(files.size());
    const auto t_ingest = Clock::now();
    std::vector<std::string> texts;
    for (const auto& f : files) {
        auto r = mem.ingest_file(f.string(), "default", {});  // the document id comes from the path
        if (r) {
            rep.chunks += r->n_chunks;
            rep.doc_tokens += r->n_tokens;
            texts.push_back(read_file(f));
        } else {
            ++rep.files_failed;  // not text the extractors take (an image, say): skipped
            rep.skipped.push_back(f.string() + ": " + r.error().what());
        }
        ++pg.files_done;
        pg.chunks = rep.chunks;
        tick(true);
    }
    rep.files = static_cast<int32_t>(files.size()) - rep.files_failed;
    rep.ingest_seconds = seconds_since(t_ingest);
    if (rep.chunks == 0) return Error{Errc::cli_usage, "no file under " + cfg.docs.string() + " could be ingested as text"};
    std::vector<std::string> phrases = question_phrases(texts);
    if (phrases.empty()) phrases.push_back("the KV cache");
    std::mt19937_64 rng(cfg.seed);
    auto pick = [&] { return phrases[static_cast<size_t>(rng() % phrases.size())]; };

    rep.total_cells = engine.cache().stats().total;
    rep.baseline_cells = engine.cache().stats().used;
    pg.baseline_cells = rep.baseline_cells;
    auto after_request = [&](const Error* err) {
        if (err) {
            ++rep.failures;
            pg.failures = rep.failures;
            if (rep.first_error.empty()) rep.first_error = err->message;
        }
        const int32_t used = engine.cache().stats().used;
        rep.max_cells_between = std::max(rep.max_cells_between, used);
        if (used == rep.baseline_cells) ++rep.requests_at_baseline;
        tick(true);
    };
    const auto t_run = Clock::now();

    // RAG asks: each a separate request, no conversation (the seeds' Kernel Memory loop).
    pg.phase = RagDemoPhase::ask;
    memory::AskOptions ask;
    ask.max_tokens = cfg.max_tokens;
    for (int32_t i = 0; i < cfg.n_asks; ++i) {
        auto r = mem.ask("What does the documentation say about " + pick() + "?", ask);
        after_request(r ? nullptr : &r.error());
        ++rep.asks;
        pg.asks_done = rep.asks;
    }

    // One long chat on the same small context: the client resends the whole history every
    // turn (as OpenAI clients do) and the history policy drops the oldest turns.
    pg.phase = RagDemoPhase::chat;
    const auto& tmpl = *hooks->chat_template;
    const auto& tok = *engine.model().tokenizer;
    const server::RenderFn render = [&](std::span<const chat::Message> m) -> Result<std::vector<int32_t>> {
        auto text = tmpl.render(m, /*add_generation_prompt=*/true);
        if (!text) return text.error();
        return tok.encode(*text, /*add_special=*/true, /*parse_special=*/true);
    };
    std::vector<chat::Message> chat{{"system", "You are the kvrag demo assistant. Answer briefly."}};
    engine::GenerateOptions gopt;
    gopt.max_tokens = cfg.max_tokens;
    gopt.sampling.temperature = 0.0f;
    gopt.stop = tmpl.end_of_turn_strings();
    const int32_t n_ctx_seq = engine.config().n_ctx_seq > 0 ? engine.config().n_ctx_seq : engine.config().n_ctx;
    for (int32_t t = 0; t < cfg.n_turns; ++t) {
        chat.push_back({"user", "Turn " + std::to_string(t + 1) + ": tell me more about " + pick() + "."});
        auto fit = server::fit_history(chat, cfg.max_tokens, "max_tokens " + std::to_string(cfg.max_tokens), n_ctx_seq,
                                       server::HistoryPolicy::drop, render);
        Result<engine::GenerateResult> r = fit ? generate(fit->prompt, gopt) : Result<engine::GenerateResult>(fit.error());
        if (fit) {
            const auto n_dropped = static_cast<int32_t>(fit->dropped.size());
            rep.turns_dropping += n_dropped > 0 ? 1 : 0;
            rep.max_dropped = std::max(rep.max_dropped, n_dropped);
            rep.max_chat_prompt = std::max(rep.max_chat_prompt, static_cast<int32_t>(fit->prompt.size()));
        }
        after_request(r ? nullptr : &r.error());
        chat.push_back({"assistant", r ? r->text : std::string()});
        ++rep.turns;
        pg.turns_done = rep.turns;
    }
    rep.seconds = seconds_since(t_run);
    rep.peak_cells = engine.cache().stats().peak_used;
    rep.ttft_ms_median = percentile(ttft_ms, 0.5);
    rep.ttft_ms_p95 = percentile(ttft_ms, 0.95);
    rep.decode_tokens_per_s = decode_ms > 0 ? 1000.0 * static_cast<double>(decode_tokens) / decode_ms : 0.0;
    pg.phase = RagDemoPhase::done;
    tick(true);
    return rep;
}

}  // namespace kvrag::tools
