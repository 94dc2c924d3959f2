#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <unistd.h>

#include "cli/commands.h"
#include "engine/engine.h"
#include "tools/synthetic.h"
#include "tools/synthetic_encoder.h"
#include "tools/rag_demo.h"

namespace kvrag::cli {
namespace {

struct MakeModelArgs {
    std::string out;
    std::string arch = "llama";
    std::string type = "f32";
    std::string output_type;
    std::string embd_type;
    std::string vocab_from;
    int32_t dim = 64, layers = 2, heads = 4, kv_heads = 2, ff = 256, ctx = 2048;
    bool tied = false;
    uint64_t seed = 0;
    int32_t swa_window = 32, swa_pattern = 4;
    int32_t rope_dim = 0;
    bool longrope = false;
    int32_t orig_ctx = 0;
};

Result<void> make_model(const MakeModelArgs& a) {
    tools::SyntheticSpec s;
    s.arch = a.arch;
    s.n_embd = a.dim;
    s.n_layer = a.layers;
    s.n_head = a.heads;
    s.n_head_kv = a.kv_heads;
    s.n_ff = a.ff;
    s.n_swa = a.swa_window;
    s.swa_pattern = a.swa_pattern;
    s.n_rot = a.rope_dim;
    s.longrope = a.longrope;
    s.n_ctx_orig = a.orig_ctx;
    if (a.orig_ctx != 0 && !a.longrope) {
        return Error{Errc::cli_usage, "--orig-ctx " + std::to_string(a.orig_ctx) + " is LongRoPE's original context: add --longrope"};
    }
    s.n_ctx_train = a.ctx;
    s.tied_output = a.tied;
    s.seed = a.seed;
    auto parse = [](const std::string& name, GgmlType& out) -> Result<void> {
        auto t = ggml_type_from_name(name);
        if (!t || !ggml_type_traits(*t).supported) {
            return Error{Errc::cli_usage, "type '" + name + "' is not one of f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q5_k q6_k (q4_k_m for --type)"};
        }
        out = *t;
        return {};
    };
    if (a.type == "q4_k_m") {
        // llama-quantize's Q4_K_M mix: Q4_K, with Q6_K for attn_v and ffn_down of the layers
        // that get more bits and for output.weight.
        s.weight_type = GgmlType::Q4_K;
        s.more_bits_type = GgmlType::Q6_K;
        s.output_type = GgmlType::Q6_K;
        s.embd_type = GgmlType::Q4_K;
    } else {
        if (auto r = parse(a.type, s.weight_type); !r) return r;
        s.output_type = s.weight_type;
        s.embd_type = s.weight_type;
    }
    if (!a.output_type.empty()) if (auto r = parse(a.output_type, s.output_type); !r) return r;
    if (!a.embd_type.empty()) if (auto r = parse(a.embd_type, s.embd_type); !r) return r;
    std::shared_ptr<gguf::GgufFile> vocab;
    if (!a.vocab_from.empty()) {
        auto f = gguf::GgufFile::open(a.vocab_from);
        if (!f) return f.error();
        vocab = *f;
        s.vocab_from = vocab.get();
    }
    if (a.arch == "bert" || a.arch == "nomic-bert" || a.arch == "bert-rerank") {
        // Encoder-only models (kvrag embed / rerank): see tools/synthetic_encoder.h.
        if (a.longrope || a.rope_dim != 0) {
            return Error{Errc::cli_usage, "--longrope and --rope-dim are for decoder models, not --arch " + a.arch};
        }
        tools::SyntheticEncoderSpec e;
        e.arch = a.arch == "bert-rerank" ? "bert" : a.arch;
        e.rank_head = a.arch == "bert-rerank";
        e.n_embd = a.dim;
        e.n_layer = a.layers;
        e.n_head = a.heads;
        e.n_ff = a.ff;
        e.n_ctx_train = std::min(a.ctx, 512);  // position_embd rows; BERT models train at 512
        e.weight_type = s.weight_type;
        e.embd_type = s.embd_type;
        e.seed = a.seed;
        e.vocab_from = s.vocab_from;
        return tools::write_synthetic_encoder(e, a.out);
    }
    return tools::write_synthetic_model(s, a.out);
}

}  // namespace

Runner add_make_model(CLI::App& app) {
    auto a = std::make_shared<MakeModelArgs>();
    app.add_option("-o,--out", a->out, "output GGUF path")->required();
    app.add_option("--arch", a->arch, "llama, qwen2, qwen3, gemma3, phi3, bert, nomic-bert or bert-rerank (bert with a classifier head)");
    app.add_option("--swa-window", a->swa_window, "gemma3: sliding window of the local layers (default 32)")->check(CLI::Range(1, 1 << 20));
    app.add_option("--swa-pattern", a->swa_pattern, "gemma3: every Nth layer is global, the others local (default 4)")->check(CLI::Range(1, 4096));
    app.add_option("--rope-dim", a->rope_dim, "dims of each head that RoPE rotates (even; default: the whole head)")->check(CLI::Range(2, 1024));
    app.add_flag("--longrope", a->longrope, "phi3: LongRoPE factors (random long and short sets), original context and attn_factor");
    app.add_option("--orig-ctx", a->orig_ctx, "phi3 --longrope: original context length; a larger per-sequence context takes the "
                                              "long factors (default: --ctx / 4)")->check(CLI::Range(1, 1 << 22));
    app.add_option("--type", a->type, "weight type of the matrices (f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q5_k q6_k, or q4_k_m: llama-quantize's Q4_K_M mix)");
    app.add_option("--output-type", a->output_type, "type of output.weight (default: --type)");
    app.add_option("--embd-type", a->embd_type, "type of token_embd.weight (default: --type)");
    app.add_option("--vocab-from", a->vocab_from, "copy the tokenizer from this GGUF (default: built-in 600-token SPM vocabulary)");
    app.add_option("--dim", a->dim, "embedding width")->check(CLI::Range(1, 1 << 16));
    app.add_option("--layers", a->layers, "layers")->check(CLI::Range(1, 512));
    app.add_option("--heads", a->heads, "attention heads")->check(CLI::Range(1, 1024));
    app.add_option("--kv-heads", a->kv_heads, "key/value heads")->check(CLI::Range(1, 1024));
    app.add_option("--ff", a->ff, "feed-forward width")->check(CLI::Range(1, 1 << 18));
    app.add_option("--ctx", a->ctx, "trained context length")->check(CLI::Range(1, 1 << 22));
    app.add_flag("--tied", a->tied, "tie output.weight to token_embd");
    app.add_option("--seed", a->seed, "random seed");
    return [a] {
        if (auto r = make_model(*a); !r) return fail(r.error());
        std::printf("wrote %s\n", a->out.c_str());
        return 0;
    };
}

namespace {

const char* phase_name(tools::RagDemoPhase p) {
    switch (p) {
    case tools::RagDemoPhase::models: return "models";
    case tools::RagDemoPhase::ingest: return "ingest";
    case tools::RagDemoPhase::ask: return "ask";
    case tools::RagDemoPhase::chat: return "chat";
    case tools::RagDemoPhase::done: return "done";
    }
    return "?";
}

// The live line: on a terminal one line redrawn in place; otherwise a plain line per phase
// change and every 10% of its work, so logs stay short.
class DemoLine {
public:
    explicit DemoLine(bool tty) : tty_(tty) {}
    void update(const tools::RagDemoProgress& p) {
        char buf[256];
        if (p.phase == tools::RagDemoPhase::ingest) {
            std::snprintf(buf, sizeof buf, "ingest  files %d/%d  chunks %d", p.files_done, p.files_total, p.chunks);
        } else {
            std::snprintf(buf, sizeof buf, "%-6s  asks %d/%d  chat turns %d/%d  failures %d  KV cells used %d (peak %d, baseline %d) of %d",
                          phase_name(p.phase), p.asks_done, p.asks_total, p.turns_done, p.turns_total, p.failures, p.used_cells,
                          p.peak_cells, p.baseline_cells, p.total_cells);
        }
        if (tty_) {
            std::fprintf(stdout, "\r\033[K%s", buf);
            std::fflush(stdout);
            return;
        }
        const int done = p.files_done + p.asks_done + p.turns_done;
        const int total = p.files_total + p.asks_total + p.turns_total;
        const int tenth = total > 0 ? 10 * done / total : 0;
        if (p.phase != last_phase_ || tenth != last_tenth_) {
            std::printf("%s\n", buf);
            std::fflush(stdout);
        }
        last_phase_ = p.phase;
        last_tenth_ = tenth;
    }
    void end() {
        if (tty_) std::printf("\n");
    }

private:
    bool tty_;
    tools::RagDemoPhase last_phase_ = tools::RagDemoPhase::models;
    int last_tenth_ = -1;
};

// The corpus when --docs is not given: docs/ under the working directory (scripts/demo.sh
// runs from the source tree), else the source tree's docs/ this binary was built from.
std::string default_demo_docs() {
    std::error_code ec;
    if (std::filesystem::is_directory("docs", ec)) return "docs";
#ifdef KVRAG_SOURCE_DOCS
    return KVRAG_SOURCE_DOCS;
#else
    return "docs";
#endif
}

}  // namespace

Runner add_demo(CLI::App& app) {
    struct Args {
        std::string dir;
        std::string docs;
        tools::RagDemoConfig cfg;
        bool quick = false;
    };
    auto a = std::make_shared<Args>();
    app.add_option("--dir", a->dir, "where the demo writes its models and memory store (default: a temporary directory)");
    app.add_option("--docs", a->docs, "the folder of documents to ingest (default: the project's docs/)");
    app.add_option("--asks", a->cfg.n_asks, "RAG questions")->check(CLI::Range(0, 1000000));
    app.add_option("--turns", a->cfg.n_turns, "chat turns")->check(CLI::Range(0, 1000000));
    app.add_option("--ctx", a->cfg.n_ctx, "context (KV cells)")->check(CLI::Range(128, 1 << 20));
    app.add_option("-n,--max-tokens", a->cfg.max_tokens, "answer length")->check(CLI::Range(1, 4096));
    app.add_option("-t,--threads", a->cfg.n_threads, "threads");
    app.add_flag("--short", a->quick, "a short run (20 asks, 50 chat turns, 16-token answers) for tests");
    return [a] {
        warn_threads(a->cfg.n_threads);
        namespace fs = std::filesystem;
        tools::RagDemoConfig cfg = a->cfg;
        if (a->quick) {
            cfg.n_asks = std::min(cfg.n_asks, 20);
            cfg.n_turns = std::min(cfg.n_turns, 50);
            cfg.max_tokens = std::min(cfg.max_tokens, 16);
        }
        cfg.dir = a->dir.empty() ? fs::temp_directory_path() / "kvrag-demo" : fs::path(a->dir);
        cfg.docs = a->docs.empty() ? default_demo_docs() : a->docs;
        std::printf(
            "kvrag demo: the job kvrag exists for, on this machine.\n"
            "  It writes two small models with RANDOM weights (a chat llama and a BERT embedder; nothing is\n"
            "  downloaded), ingests %s into a fresh memory store, then runs %d RAG asks and a %d-turn chat on a\n"
            "  %d-token context, watching the KV cache. Random weights mean the answers are not language:\n"
            "  the point is the runtime. Models and store: %s\n\n",
            cfg.docs.string().c_str(), cfg.n_asks, cfg.n_turns, cfg.n_ctx, cfg.dir.string().c_str());
        DemoLine line(isatty(STDOUT_FILENO) != 0);
        auto rep = tools::run_rag_demo(cfg, [&](const tools::RagDemoProgress& p) { line.update(p); });
        line.end();
        if (!rep) return fail(rep.error());
        const auto& r = *rep;
        std::printf("\ningested %d files (%d skipped: not text) into %d chunks, %lld tokens, in %.1f s\n", r.files, r.files_failed,
                    r.chunks, static_cast<long long>(r.doc_tokens), r.ingest_seconds);
        for (const auto& s : r.skipped) std::printf("  skipped %s\n", s.c_str());
        std::printf("asks %d, chat turns %d, failures %d%s%s\n", r.asks, r.turns, r.failures, r.first_error.empty() ? "" : ": ",
                    r.first_error.c_str());
        std::printf("KV cells back at baseline (%d) after %d of %d requests; most between requests %d; peak %d of %d cells\n",
                    r.baseline_cells, r.requests_at_baseline, r.requests(), r.max_cells_between, r.peak_cells, r.total_cells);
        std::printf("chat: the oldest messages left the prompt in %d of %d turns (up to %d at once) so that every turn fit in %d tokens "
                    "with room for its answer (longest prompt %d)\n",
                    r.turns_dropping, r.turns, r.max_dropped, cfg.n_ctx, r.max_chat_prompt);
        std::printf("time to first token: median %.1f ms, p95 %.1f ms; decode %.1f tokens/s; %lld of %lld prompt tokens reused from "
                    "the prefix cache\n",
                    r.ttft_ms_median, r.ttft_ms_p95, r.decode_tokens_per_s, static_cast<long long>(r.reused_tokens),
                    static_cast<long long>(r.prompt_tokens));
        std::printf("%s\n\n", r.summary().c_str());
        std::printf(
            "With a real model (any llama/qwen2 GGUF chat model and a BERT-family embedding GGUF):\n"
            "    kvrag serve -m MODEL.gguf --embed-model EMBED.gguf --memory DIR\n"
            "then open http://127.0.0.1:8080/ for the web page, or point an OpenAI or Kernel Memory client at it.\n");
        const bool ok = r.failures == 0 && r.requests_at_baseline == r.requests();
        return ok ? 0 : 1;
    };
}

}  // namespace kvrag::cli
