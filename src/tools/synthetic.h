// Synthetic llama/qwen2/qwen3/gemma3/phi3 GGUF models with random weights: for tests, benchmarks and
// the demo, so nothing has to be downloaded. Weights ~ N(0, 1/fan_in), norms ~ 1 + 0.1 N(0, 1), stored
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
                                    // norms), "gemma3" (q/k norms, post-attention/-FFN norms,
                                    // sliding window on the local layers) or "phi3" (fused attn_qkv
                                    // and gate+up ffn_up, optional LongRoPE)
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
    // rope.dimension_count: the dims of each head that rotate (even, <= head dim); 0 = the whole
    // head. phi3 models (Phi-4-mini) rotate part of the head.
    int32_t n_rot = 0;
    // phi3 only: LongRoPE, as convert_hf_to_gguf.py writes it for Phi-3.5 / Phi-4-mini:
    // rope_factors_long.weight and rope_factors_short.weight (n_rot / 2 F32 each, global),
    // rope.scaling.original_context_length and rope.scaling.attn_factor.
    bool longrope = false;
    int32_t n_ctx_orig = 0;                 // 0: n_ctx_train / 4 (at least 1)
    // Default: the converter's sqrt(1 + ln(s) / ln(n_ctx_orig)) with s = n_ctx_train / n_ctx_orig,
    // or 1 when s <= 1.
    std::optional<float> rope_attn_factor;
    // Empty: random, drawn after every other tensor (so the other weights equal those of the
    // same spec without LongRoPE): long a geometric ramp 1.5 -> 24 times exp(0.1 N(0, 1)),
    // short 1 + 0.25 |N(0, 1)|, as the shared phi3 model's.
    std::vector<float> rope_factors_long, rope_factors_short;
};

// The built-in vocabulary's tokens (used when vocab_from is null).
std::vector<std::string> builtin_vocab_tokens();

// The model file of a spec; an Error (E7001 / E7004) names a spec field that cannot be written.
// phi3's fused matrices hold the same random values, in the same order, as the separate
// matrices of the same spec with arch "llama" (when weight_type and more_bits_type agree, the
// same bytes): attn_qkv = attn_q, attn_k, attn_v stacked, ffn_up = ffn_gate, ffn_up stacked, the
// layout the reference engine reads. attn_qkv takes weight_type (more_bits_type is for ffn_down).
Result<std::vector<uint8_t>> synthetic_model_bytes(const SyntheticSpec& spec);
Result<void> write_synthetic_model(const SyntheticSpec& spec, const std::string& path);

}  // namespace kvrag::tools
