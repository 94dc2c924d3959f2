#include <cstdio>
#include <random>

#include "cli/commands.h"
#include "engine/context_size.h"
#include "engine/engine.h"

namespace kvrag::cli {
namespace {

struct GenerateArgs {
    std::string model_path;
    std::string prompt;
    // The sampling and generation flags are bound straight to the library's options, so their
    // defaults are GenerateOptions' and SamplingParams' own (written once, in engine/engine.h
    // and sampling/sampler.h); tests/cli/cli_defaults_test.cpp checks what --help prints.
    engine::GenerateOptions opt;
    int64_t seed = -1;  // the CLI's own: -1 = a random seed (the library's seed is unsigned)
    int32_t threads = 0;
    int32_t ctx = 0;
    std::string kv_type = "f16";
    std::string policy = engine::context_policy_name(engine::GenerateOptions{}.policy);
    bool ids = false;
    bool ignore_eos = !engine::GenerateOptions{}.stop_at_eog;
    bool verbose = false;
};

int run_generate(const GenerateArgs& a) {
    warn_threads(a.threads);
    auto kv_type = parse_kv_type(a.kv_type);
    if (!kv_type) return fail(kv_type.error());
    auto loaded = engine::LoadedModel::load(a.model_path, terminal_progress("loading " + a.model_path));
    if (!loaded) return fail(loaded.error());
    engine::EngineConfig cfg;
    cfg.n_threads = a.threads;
    cfg.kv_type = *kv_type;
    // One sequence: n_ctx only, n_ctx_seq stays 0 = all of it (see engine/context_size.h).
    cfg.n_ctx = engine::default_context_size(loaded->model->hparams(), a.ctx).n_ctx;
    auto policy = engine::parse_context_policy(a.policy);
    if (!policy) return fail(policy.error());
    auto gen = engine::Engine::create(std::move(*loaded), cfg);
    if (!gen) return fail(gen.error());
    if (a.verbose) {
        const auto st = (*gen)->cache().stats();
        std::fprintf(stderr, "kv cache: %s (%s)\n", st.size_line().c_str(), a.kv_type.c_str());
    }

    engine::GenerateOptions opt = a.opt;
    opt.sampling.seed = a.seed >= 0 ? static_cast<uint64_t>(a.seed) : std::random_device{}();
    opt.stop_at_eog = !a.ignore_eos;
    opt.policy = *policy;

    engine::TextCallback stream = nullptr;
    if (!a.ids) {
        stream = [](std::string_view piece, int32_t) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
            return true;
        };
    }
    auto res = (*gen)->generate(a.prompt, opt, stream);
    if (!res) return fail(res.error());
    if (a.ids) {
        for (size_t i = 0; i < res->tokens.size(); ++i) std::printf("%s%d", i ? " " : "", res->tokens[i]);
    }
    std::printf("\n");
    if (a.verbose) {
        const double pp = res->prefill_ms > 0 ? 1000.0 * res->prompt_tokens.size() / res->prefill_ms : 0.0;
        const double tg = res->decode_ms > 0 ? 1000.0 * res->tokens.size() / res->decode_ms : 0.0;
        std::fprintf(stderr,
                     "prompt: %zu tokens in %.1f ms (%.1f tok/s); generated: %zu tokens in %.1f ms (%.1f tok/s); "
                     "finish: %s; seed: %llu; threads: %d; ctx: %d; truncated %d, shifts %d, reused %d\n",
                     res->prompt_tokens.size(), res->prefill_ms, pp, res->tokens.size(), res->decode_ms, tg,
                     res->finish_reason().c_str(), static_cast<unsigned long long>(opt.sampling.seed), (*gen)->n_threads(),
                     cfg.n_ctx, res->n_truncated, res->n_shifts, res->n_reused);
        std::fprintf(stderr, "kv stats: %s\n", (*gen)->cache().stats().summary().c_str());
    }
    return 0;
}

}  // namespace

Runner add_generate(CLI::App& app) {
    auto a = std::make_shared<GenerateArgs>();
    app.add_option("-m,--model", a->model_path, "GGUF model file")->required();
    app.add_option("-p,--prompt", a->prompt, "prompt text")->required();
    app.add_option("-n,--n-predict", a->opt.max_tokens, "maximum tokens to generate")->capture_default_str()->check(CLI::Range(0, 1 << 22));
    app.add_option("--temp", a->opt.sampling.temperature, "temperature; 0 = greedy")->capture_default_str();
    app.add_option("--top-k", a->opt.sampling.top_k, "keep the k most likely tokens; <= 0 disables")->capture_default_str();
    app.add_option("--top-p", a->opt.sampling.top_p, "nucleus sampling mass; 1 disables")->capture_default_str();
    app.add_option("--min-p", a->opt.sampling.min_p, "drop tokens below min_p * p(best); 0 disables")->capture_default_str();
    app.add_option("--repeat-penalty", a->opt.sampling.repeat_penalty, "penalty for recent tokens; 1 disables")->capture_default_str();
    app.add_option("--presence-penalty", a->opt.sampling.presence_penalty, "OpenAI presence penalty")->capture_default_str();
    app.add_option("--frequency-penalty", a->opt.sampling.frequency_penalty, "OpenAI frequency penalty")->capture_default_str();
    app.add_option("--seed", a->seed, "random seed for reproducible sampling; default random");
    app.add_option("-t,--threads", a->threads, "threads; default: physical cores")->check(CLI::Range(0, 1024));
    app.add_option("-c,--ctx", a->ctx, "context size (KV cells); default min(" + std::to_string(engine::kDefaultMaxCtx) + ", trained context)")
        ->check(CLI::Range(0, 1 << 22));
    app.add_option("--kv-type", a->kv_type, "KV cell type: f16, q8_0, f32");
    app.add_option("--context-policy", a->policy, "when the context is full: error, truncate (drop oldest prompt tokens), shift (drop oldest half while generating)")
        ->capture_default_str();
    app.add_option("--n-keep", a->opt.n_keep, "prompt tokens truncate/shift never drop (BOS is always kept)")
        ->check(CLI::Range(0, 1 << 22))
        ->capture_default_str();
    app.add_option("--stop", a->opt.stop, "stop string (repeatable)");
    app.add_flag("--ids", a->ids, "print the generated token ids instead of text");
    app.add_flag("--ignore-eos", a->ignore_eos, "keep generating past end-of-generation tokens");
    app.add_flag("--special", a->opt.parse_special, "parse special-token texts in the prompt");
    app.add_flag("-v,--verbose", a->verbose, "print timings and settings to stderr");
    return [a] { return run_generate(*a); };
}

}  // namespace kvrag::cli
