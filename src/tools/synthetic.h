// Synthetic llama/qwen2/qwen3/gemma3 GGUF models with random weights: for tests, benchmarks and the demo,
// so nothing has to be downloaded. Weights ~ N(0, 1/fan_in), norms ~ 1 + 0.1 N(0, 1), stored
// in any supported type; the vocabulary is copied from another GGUF or is a small built-in
// SPM vocabulary (byte fallback + common English pieces).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ggml_type.h"
#include "gguf/gguf_file.h"

namespace kvrag::tools {

struct SyntheticSpec {
    std::string arch = "llama";     // "llama", "qwen2" (adds q/k/v biases), "qwen3" (per-head q/k
                                    // norms) or "gemma3" (q/k norms, post-attention/-FFN norms,
                                    // sliding window on the local layers)
    int32_t n_embd = 64;
    int32_t n_layer = 2;
    int32_t n_head = 4;
    int32_t n_head_kv = 2;
    int32_t n_ff = 172;
    int32_t n_ctx_train = 2048;
    float rope_freq_base = 10000.0f;
    float rms_eps = 1e-5f;
    GgmlType weight_type = GgmlType::F32;   // attention and FFN matrices
    GgmlType embd_type = GgmlType::F32;     // token_embd
    GgmlType output_type = GgmlType::F32;   // output.weight
    // When set, attn_v and ffn_down of the layers llama-quantize's "_M" mixes give more bits
    // (the first and last eighth of the layers and every third one between) take this type:
    // Q4_K_M is weight_type Q4_K with Q6_K here (and a Q6_K output.weight).
    std::optional<GgmlType> more_bits_type;
    bool tied_output = false;               // omit output.weight
    uint64_t seed = 0;
    const gguf::GgufFile* vocab_from = nullptr;  // copy tokenizer.* keys from here; null = built-in
    std::string name = "kvrag-synthetic";
    // gemma3 only: attention.sliding_window / sliding_window_pattern / rope.freq_base_swa.
    int32_t n_swa = 32;
    int32_t swa_pattern = 4;
    float rope_freq_base_swa = 10000.0f;
};

// The built-in vocabulary's tokens (used when vocab_from is null).
std::vector<std::string> builtin_vocab_tokens();

Result<std::vector<uint8_t>> synthetic_model_bytes(const SyntheticSpec& spec);
Result<void> write_synthetic_model(const SyntheticSpec& spec, const std::string& path);

}  // namespace kvrag::tools
