// Hyperparameters of a llama-family model, read from GGUF metadata.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"
#include "gguf/gguf_file.h"

namespace kvrag::model {

enum class Arch { llama, qwen2, qwen3, gemma3, phi3, bert, nomic_bert };

inline constexpr const char* kSupportedArchs = "llama, qwen2, qwen3, gemma3, phi3, bert, nomic-bert";

// Encoder-only (BERT-family) models embed or rerank; they cannot generate text. Their weights
// are bound by model/encoder_weights.h and run by model/encoder_forward.h.
inline bool is_encoder(Arch arch) { return arch == Arch::bert || arch == Arch::nomic_bert; }

// How an encoder turns its per-token hidden states into one output per sequence; the numbers
// are the values of `<arch>.pooling_type` (llama.cpp's enum).
enum class PoolingType : int32_t { none = 0, mean = 1, cls = 2, last = 3, rank = 4 };

struct ModelHParams {
    Arch arch = Arch::llama;
    std::string arch_name;       // general.architecture as written in the file
    std::string name;            // general.name, may be empty
    int32_t n_vocab = 0;
    int32_t n_ctx_train = 0;
    int32_t n_embd = 0;
    int32_t n_layer = 0;
    int32_t n_head = 0;
    int32_t n_head_kv = 0;
    int32_t n_ff = 0;
    int32_t head_dim = 0;        // per-head key/value width (attention.key_length or n_embd / n_head)
    int32_t n_rot = 0;           // rotated dims per head (rope.dimension_count)
    float rope_freq_base = 10000.0f;
    float rope_freq_scale = 1.0f;  // 1 / rope.scaling.factor for linear scaling
    std::string rope_scaling_type = "none";
    bool rope_neox = false;      // qwen2 rotates (i, i + n_rot/2) pairs; llama (2i, 2i+1)
    float rms_eps = 1e-5f;
    // qwen3 and gemma3: RMSNorm of each q and k head (attn_q_norm / attn_k_norm) before RoPE.
    bool qk_norm = false;
    // Sliding-window attention (gemma3). With n_swa > 0, layer il is local when
    // il % swa_pattern < swa_pattern - 1: a query at position p then sees positions
    // (p - n_swa, p] only, and its RoPE uses rope_freq_base_swa without frequency scaling.
    int32_t n_swa = 0;            // attention.sliding_window; 0: every layer global
    int32_t swa_pattern = 0;      // attention.sliding_window_pattern (6 when absent, as llama.cpp)
    float rope_freq_base_swa = 10000.0f;
    // gemma3: final logits c * tanh(logits / c) when final_logit_softcapping is present; 0: none.
    float final_logit_softcap = 0.0f;
    // phi3 LongRoPE (rope_factors_long / _short tensors): the context length that selects the
    // set, and the factor both cos and sin are multiplied by (rope.scaling.attn_factor).
    int32_t n_ctx_orig = 0;       // phi3: rope.scaling.original_context_length (n_ctx_train when absent)
    float rope_attn_factor = 1.0f;
    // Q is multiplied by this before the Q.K product (gemma3, phi3); 0: the products are scaled by
    // 1 / sqrt(head_dim) inside the softmax instead (llama, qwen2, qwen3).
    float q_prescale = 0.0f;
    // Encoder-only models (is_encoder(arch)); unused by decoders.
    float norm_eps = 1e-12f;     // LayerNorm epsilon (attention.layer_norm_epsilon)
    PoolingType pooling = PoolingType::none;  // <arch>.pooling_type; none when absent
    int32_t n_cls_out = 0;       // rank head outputs (classifier.output_labels, else 1 with cls.output)

    int32_t n_embd_kv() const { return n_head_kv * head_dim; }  // K (or V) row width per cell
    int32_t n_embd_q() const { return n_head * head_dim; }
    bool is_swa(int il) const { return n_swa > 0 && swa_pattern > 0 && il % swa_pattern < swa_pattern - 1; }
    bool has_swa() const { return n_swa > 0 && swa_pattern > 1; }
    // RoPE base and frequency scale of layer il (local layers: their own base, no scaling).
    float rope_base(int il) const { return is_swa(il) ? rope_freq_base_swa : rope_freq_base; }
    float rope_scale(int il) const { return is_swa(il) ? 1.0f : rope_freq_scale; }
};

// Reads and checks the hyperparameters. Errors name the key and the values (for example
// "llama.attention.head_count 7 does not divide llama.embedding_length 4096").
Result<ModelHParams> read_hparams(const gguf::GgufFile& file);

std::string arch_name(Arch arch);

// "none", "mean", "cls", "last", "rank"; parse_pooling_type is its inverse (request_invalid
// naming the value and the choices otherwise).
const char* pooling_type_name(PoolingType p);
Result<PoolingType> parse_pooling_type(std::string_view name);

}  // namespace kvrag::model
