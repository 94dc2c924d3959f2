#include <unistd.h>

#include <cstdio>

#include "cli/commands.h"
#include "tools/soak.h"

namespace kvrag::cli {

Runner add_soak(CLI::App& app) {
    struct Args {
        std::string model_path;
        int32_t ctx = 1024, requests = 1000, max_tokens = 16, threads = 0;
        std::string policy = "error";
        uint64_t seed = 1;
    };
    auto a = std::make_shared<Args>();
    app.add_option("-m,--model", a->model_path, "GGUF model file")->required();
    app.add_option("-c,--ctx", a->ctx, "context size (KV cells)")->check(CLI::Range(64, 1 << 20));
    app.add_option("--requests", a->requests, "sequential requests")->check(CLI::Range(1, 10000000));
    app.add_option("--max-tokens", a->max_tokens, "tokens generated per request")->check(CLI::Range(1, 4096));
    app.add_option("-t,--threads", a->threads, "threads")->check(CLI::Range(0, 1024));
    app.add_option("--context-policy", a->policy, "error, truncate or shift");
    app.add_option("--seed", a->seed, "workload seed");
    return [a] {
        warn_threads(a->threads);
        auto policy = engine::parse_context_policy(a->policy);
        if (!policy) return fail(policy.error());
        auto loaded = engine::LoadedModel::load(a->model_path, terminal_progress("loading"));
        if (!loaded) return fail(loaded.error());
        engine::EngineConfig cfg;
        cfg.n_ctx = a->ctx;
        cfg.n_threads = a->threads;
        auto eng = engine::Engine::create(std::move(*loaded), cfg);
        if (!eng) return fail(eng.error());
        if (a->max_tokens + 64 >= a->ctx) {
            return fail(Error{Errc::cli_usage, "--max-tokens " + std::to_string(a->max_tokens) + " leaves no room for prompts in --ctx " +
                                                   std::to_string(a->ctx)});
        }
        tools::SoakConfig sc;
        sc.n_requests = a->requests;
        sc.max_tokens = a->max_tokens;
        sc.seed = a->seed;
        sc.policy = *policy;
        const bool tty = isatty(STDERR_FILENO);
        const auto rep = tools::run_soak(**eng, sc, [&](int32_t done) {
            if (tty && (done % 50 == 0 || done == a->requests)) {
                const auto st = (*eng)->cache().stats();
                std::fprintf(stderr, "\rsoak %d/%d  used cells %d/%d", done, a->requests, st.used, st.total);
                if (done == a->requests) std::fprintf(stderr, "\n");
            }
            return true;
        });
        if (!rep.first_error.empty()) std::fprintf(stderr, "first failure: %s\n", rep.first_error.c_str());
        std::printf("kv: %s\n", (*eng)->cache().stats().summary().c_str());
        std::printf("%s\n", rep.summary().c_str());
        return rep.failures == 0 && rep.max_cells_between == rep.baseline_cells ? 0 : 1;
    };
}

}  // namespace kvrag::cli
