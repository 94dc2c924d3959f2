// Synthetic BERT-family GGUF models (bert, nomic-bert, bert rerankers) with random weights, for
// tests and `kvrag make-model --arch bert`: the same tensor names, shapes and metadata keys as
// llama.cpp's converter writes, so nothing has to be downloaded. Weights ~ N(0, 1/fan_in),
// embeddings N(0, 1), LayerNorm weights 1 + 0.1 N(0, 1), biases 0.1 N(0, 1) (the recipe of the
// shared synth-bert models). token_types, position_embd, norms and biases stay F32; the
// matrices take weight_type, token_embd embd_type.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ggml_type.h"
#include "gguf/gguf_file.h"

namespace kvrag::tools {

struct SyntheticEncoderSpec {
    std::string arch = "bert";     // "bert" (GELU, biases, positions) or "nomic-bert" (RoPE, SwiGLU, no biases)
    int32_t n_embd = 64;
    int32_t n_layer = 2;
    int32_t n_head = 4;
    int32_t n_ff = 128;
    int32_t n_ctx_train = 512;
    int32_t pooling = 1;           // <arch>.pooling_type; forced to 4 (rank) by rank_head
    bool rank_head = false;        // add cls (dense + tanh) and a one-output cls.output
    GgmlType weight_type = GgmlType::F32;
    GgmlType embd_type = GgmlType::F32;
    uint64_t seed = 0;
    const gguf::GgufFile* vocab_from = nullptr;  // copy tokenizer.* keys; null = built-in WordPiece
    std::string name = "kvrag-synthetic-encoder";
};

// The built-in WordPiece vocabulary: [PAD] [UNK] [CLS] [SEP] [MASK], every printable ASCII
// character as a word start ("▁x") and a continuation ("x"), and a list of whole words.
std::vector<std::string> builtin_wpm_vocab_tokens();

Result<std::vector<uint8_t>> synthetic_encoder_bytes(const SyntheticEncoderSpec& spec);
Result<void> write_synthetic_encoder(const SyntheticEncoderSpec& spec, const std::string& path);

}  // namespace kvrag::tools
