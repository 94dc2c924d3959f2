#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "engine/engine.h"
#include "tools/synthetic.h"
#include "tools/synthetic_encoder.h"

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
};

Result<void> make_model(const MakeModelArgs& a) {
    tools::SyntheticSpec s;
    s.arch = a.arch;
    s.n_embd = a.dim;
    s.n_layer = a.layers;
    s.n_head = a.heads;
    s.n_head_kv = a.kv_heads;
    s.n_ff = a.ff;
    s.n_ctx_train = a.ctx;
    s.tied_output = a.tied;
    s.seed = a.seed;
    auto parse = [](const std::string& name, GgmlType& out) -> Result<void> {
        auto t = ggml_type_from_name(name);
        if (!t || !ggml_type_traits(*t).supported) {
            return Error{Errc::cli_usage, "type '" + name + "' is not one of f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q5_k q6_k"};
        }
        out = *t;
        return {};
    };
    if (auto r = parse(a.type, s.weight_type); !r) return r;
    s.output_type = s.weight_type;
    s.embd_type = s.weight_type;
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
    app.add_option("--arch", a->arch, "llama, qwen2, bert, nomic-bert or bert-rerank (bert with a classifier head)");
    app.add_option("--type", a->type, "weight type of the matrices (f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q5_k q6_k)");
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

Runner add_demo(CLI::App& app) {
    struct Args {
        std::string dir;
        std::string prompt = "Once upon a time";
        int32_t n = 48;
        int32_t threads = 0;
    };
    auto a = std::make_shared<Args>();
    app.add_option("--dir", a->dir, "where to write the demo model (default: a temporary directory)");
    app.add_option("-p,--prompt", a->prompt, "prompt");
    app.add_option("-n", a->n, "tokens to generate")->check(CLI::Range(1, 4096));
    app.add_option("-t,--threads", a->threads, "threads");
    return [a] {
        warn_threads(a->threads);
        namespace fs = std::filesystem;
        const fs::path dir = a->dir.empty() ? fs::temp_directory_path() / "kvrag-demo" : fs::path(a->dir);
        std::error_code ec;
        fs::create_directories(dir, ec);
        if (ec) return fail(Error{Errc::cli_usage, "cannot create " + dir.string() + ": " + ec.message()});
        const std::string path = (dir / "demo-q8_0.gguf").string();
        // A small llama with random weights and the built-in vocabulary: no download needed.
        // Random weights make fluent-looking gibberish; the point is the runtime, end to end.
        MakeModelArgs m;
        m.out = path;
        m.type = "q8_0";
        m.dim = 256;
        m.layers = 4;
        m.heads = 8;
        m.kv_heads = 4;
        m.ff = 704;
        m.seed = 42;
        std::printf("kvrag demo: writing a synthetic llama model (dim 256, 4 layers, Q8_0) to %s\n", path.c_str());
        if (auto r = make_model(m); !r) return fail(r.error());
        auto loaded = engine::LoadedModel::load(path, terminal_progress("loading"));
        if (!loaded) return fail(loaded.error());
        const auto& hp = loaded->model->hparams();
        std::printf("loaded: %s, %d layers, n_embd %d, vocab %d, %.2f M params\n", hp.arch_name.c_str(), hp.n_layer, hp.n_embd,
                    hp.n_vocab, static_cast<double>(loaded->model->n_params()) / 1e6);
        engine::EngineConfig cfg;
        cfg.n_ctx = 512;
        cfg.n_threads = a->threads;
        auto gen = engine::Engine::create(std::move(*loaded), cfg);
        if (!gen) return fail(gen.error());
        engine::GenerateOptions opt;
        opt.max_tokens = a->n;
        opt.sampling.temperature = 0.0f;
        opt.stop_at_eog = false;
        std::printf("prompt: %s\ngreedy continuation: ", a->prompt.c_str());
        auto res = (*gen)->generate(a->prompt, opt, [](std::string_view piece, int32_t) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
            return true;
        });
        if (!res) return fail(res.error());
        std::printf("\n%zu prompt tokens in %.1f ms, %zu generated in %.1f ms (%.1f tok/s), KV cache %.2f MiB (%d cells f16)\n",
                    res->prompt_tokens.size(), res->prefill_ms, res->tokens.size(), res->decode_ms,
                    res->decode_ms > 0 ? 1000.0 * res->tokens.size() / res->decode_ms : 0.0,
                    static_cast<double>((*gen)->cache().stats().bytes) / 1048576.0, cfg.n_ctx);
        return 0;
    };
}

}  // namespace kvrag::cli
