// Shared fixtures for engine tests: synthetic models written to a temp directory and loaded.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "tools/synthetic.h"

namespace kvrag::engine::testing {

// Writes (once per process and spec) and loads a synthetic llama with the built-in vocabulary.
inline LoadedModel load_synthetic(const std::string& tag, int32_t dim = 64, int32_t layers = 2, int32_t ff = 128,
                                  GgmlType type = GgmlType::F32) {
    const auto dir = std::filesystem::temp_directory_path() / ("kvrag-engine-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    const std::string path = (dir / (tag + ".gguf")).string();
    if (!std::filesystem::exists(path)) {
        tools::SyntheticSpec s;
        s.n_embd = dim;
        s.n_layer = layers;
        s.n_head = 4;
        s.n_head_kv = 2;
        s.n_ff = ff;
        s.weight_type = s.embd_type = s.output_type = type;
        s.seed = 7;
        auto w = tools::write_synthetic_model(s, path);
        EXPECT_TRUE(w.ok()) << w.error().what();
    }
    auto m = LoadedModel::load(path);
    EXPECT_TRUE(m.ok()) << m.error().what();
    return std::move(*m);
}

// A synthetic gemma3 for the sliding-window tests: window 8, every 3rd layer global (3 layers,
// dim 64), written once per process by the project's own writer. Its path; empty (and a test
// failure) when it cannot be written.
inline std::string synthetic_gemma3_path() {
    static const std::string path = [] {
        const auto dir = std::filesystem::temp_directory_path() / ("kvrag-engine-test-" + std::to_string(getpid()));
        std::filesystem::create_directories(dir);
        const std::string p = (dir / "gemma3-swa8.gguf").string();
        tools::SyntheticSpec spec;
        spec.arch = "gemma3";
        spec.n_embd = 64;
        spec.n_layer = 3;
        spec.n_head = 4;
        spec.n_head_kv = 2;
        spec.n_ff = 128;
        spec.n_swa = 8;
        spec.swa_pattern = 3;
        spec.tied_output = true;
        spec.seed = 11;
        auto w = tools::write_synthetic_model(spec, p);
        EXPECT_TRUE(w.ok()) << w.error().what();
        return w.ok() ? p : std::string();
    }();
    return path;
}

// An engine on synthetic_gemma3_path() that prefills 4 tokens a step (a prompt's window moves
// while it prefills) with prefix blocks of 4; split/reuse/n_seq_window as EngineConfig's
// swa_split/prefix_reuse/n_seq_window. Null (and a test failure) when it cannot be made.
inline std::unique_ptr<Engine> synthetic_gemma3_engine(int32_t n_ctx, bool split, bool reuse, int32_t n_seq_window = 4) {
    auto m = LoadedModel::load(synthetic_gemma3_path());
    EXPECT_TRUE(m.ok()) << m.error().what();
    if (!m.ok()) return nullptr;
    EngineConfig cfg;
    cfg.n_ctx = n_ctx;
    cfg.n_threads = 2;
    cfg.n_batch = 4;
    cfg.prefix_block = 4;
    cfg.prefix_reuse = reuse;
    cfg.swa_split = split;
    cfg.n_seq_window = n_seq_window;
    auto e = Engine::create(std::move(*m), cfg);
    EXPECT_TRUE(e.ok()) << e.error().what();
    if (!e.ok()) return nullptr;
    return std::move(*e);
}

inline std::unique_ptr<Engine> make_engine(LoadedModel m, int32_t n_ctx, int n_threads = 2, int32_t n_batch = 64,
                                           GgmlType kv_type = GgmlType::F16) {
    EngineConfig cfg;
    cfg.kv_type = kv_type;
    cfg.n_ctx = n_ctx;
    cfg.n_threads = n_threads;
    cfg.n_batch = n_batch;
    auto e = Engine::create(std::move(m), cfg);
    EXPECT_TRUE(e.ok()) << e.error().what();
    return std::move(*e);
}

// The cosine of the angle between two embeddings (over their common length), in double.
inline double cosine(const std::vector<float>& a, const std::vector<float>& b) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
        ab += double(a[i]) * b[i];
        aa += double(a[i]) * a[i];
        bb += double(b[i]) * b[i];
    }
    return ab / std::sqrt(aa * bb);
}

inline GenerateOptions greedy(int32_t max_tokens) {
    GenerateOptions o;
    o.max_tokens = max_tokens;
    o.sampling.temperature = 0.0f;
    o.stop_at_eog = false;
    return o;
}

}  // namespace kvrag::engine::testing
