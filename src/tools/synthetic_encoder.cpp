#include "tools/synthetic_encoder.h"

#include <cmath>
#include <random>
#include <set>

#include "gguf/gguf_writer.h"
#include "kernels/quant.h"
#include "tools/normal_rng.h"

namespace kvrag::tools {
namespace {

const char* const kEncoderWords[] = {"the", "and", "a", "to", "of", "in", "is", "it", "for", "on", "with", "cache", "model",
                              "token", "context", "memory", "request", "answer", "question", "document", "search",
                              "hello", "world", "what", "panda", "bear", "capital", "city", "france", "paris"};

using Normal = NormalRng;  // tools/normal_rng.h

}  // namespace

std::vector<std::string> builtin_wpm_vocab_tokens() {
    std::vector<std::string> toks = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    std::set<std::string> seen(toks.begin(), toks.end());
    auto add = [&](const std::string& s) {
        if (seen.insert(s).second) toks.push_back(s);
    };
    const std::string sp = "\xe2\x96\x81";  // llama.cpp's converter marks word starts with "▁"
    for (char c = 33; c < 127; ++c) {
        if (c >= 'A' && c <= 'Z') continue;  // WordPiece lower-cases its input
        add(sp + std::string(1, c));
        add(std::string(1, c));
    }
    for (const char* w : kEncoderWords) add(sp + w);
    return toks;
}

Result<std::vector<uint8_t>> synthetic_encoder_bytes(const SyntheticEncoderSpec& s) {
    const bool nomic = s.arch == "nomic-bert";
    if (s.arch != "bert" && !nomic) {
        return Error{Errc::model_unsupported_arch, "synthetic encoder arch '" + s.arch + "'; supported: bert, nomic-bert"};
    }
    if (s.n_head <= 0 || s.n_embd % s.n_head != 0 || (nomic && (s.n_embd / s.n_head) % 2 != 0)) {
        return Error{Errc::model_bad_hparams, "synthetic spec: n_head " + std::to_string(s.n_head) + " must divide n_embd " +
                                                  std::to_string(s.n_embd) + " (into even head widths for nomic-bert)"};
    }
    gguf::GgufWriter w;
    const std::string a = s.arch + ".";
    w.set_string("general.architecture", s.arch);
    w.set_string("general.name", s.name);
    w.set_u32(a + "context_length", s.n_ctx_train);
    w.set_u32(a + "embedding_length", s.n_embd);
    w.set_u32(a + "feed_forward_length", s.n_ff);
    w.set_u32(a + "block_count", s.n_layer);
    w.set_u32(a + "attention.head_count", s.n_head);
    w.set_f32(a + "attention.layer_norm_epsilon", 1e-12f);
    w.set_bool(a + "attention.causal", false);
    w.set_u32(a + "pooling_type", s.rank_head ? 4u : static_cast<uint32_t>(s.pooling));
    if (nomic) w.set_f32(a + "rope.freq_base", 1000.0f);

    int64_t n_vocab = 0;
    if (s.vocab_from) {
        w.copy_keys_with_prefix(*s.vocab_from, "tokenizer.");
        auto toks = s.vocab_from->get_array("tokenizer.ggml.tokens");
        if (!toks || !*toks) return Error{Errc::tokenizer_bad_vocab, s.vocab_from->path() + ": no tokenizer.ggml.tokens to copy"};
        n_vocab = static_cast<int64_t>((*toks)->n);
    } else {
        const auto toks = builtin_wpm_vocab_tokens();
        n_vocab = static_cast<int64_t>(toks.size());
        std::vector<int32_t> types(toks.size(), 1);
        for (int i = 0; i < 5; ++i) types[i] = 3;  // control
        types[1] = 2;                              // [UNK]
        w.set_string("tokenizer.ggml.model", "bert");
        w.set_string_array("tokenizer.ggml.tokens", toks);
        w.set_i32_array("tokenizer.ggml.token_type", types);
        w.set_u32("tokenizer.ggml.padding_token_id", 0);
        w.set_u32("tokenizer.ggml.unknown_token_id", 1);
        w.set_u32("tokenizer.ggml.cls_token_id", 2);
        w.set_u32("tokenizer.ggml.seperator_token_id", 3);
        w.set_u32("tokenizer.ggml.mask_token_id", 4);
    }

    Normal rng(s.seed);
    auto add = [&](const std::string& name, GgmlType type, std::vector<int64_t> ne, float scale, float offset) {
        const int64_t n_cols = ne[0], n_rows = ne.size() > 1 ? ne[1] : 1;
        const int64_t block = ggml_type_traits(type).block_size;
        if (n_cols % block != 0) {
            throw_error(Errc::model_bad_hparams, "synthetic tensor '" + name + "' row length " + std::to_string(n_cols) +
                                                     " is not a multiple of the " + std::string(ggml_type_name(type)) +
                                                     " block size " + std::to_string(block));
        }
        std::vector<float> row(static_cast<size_t>(n_cols));
        const size_t rb = ggml_row_size(type, n_cols);
        std::vector<uint8_t> data(rb * static_cast<size_t>(n_rows));
        for (int64_t r = 0; r < n_rows; ++r) {
            for (auto& v : row) v = offset + scale * rng.next();
            kernels::quantize_row(type, row.data(), data.data() + r * rb, n_cols);
        }
        if (auto res = w.add_tensor(name, type, std::move(ne), std::move(data)); !res) throw Exception(res.error());
    };
    const int64_t d = s.n_embd, ff = s.n_ff;
    const float in_d = 1.0f / std::sqrt(static_cast<float>(d)), in_ff = 1.0f / std::sqrt(static_cast<float>(ff));
    const auto F32 = GgmlType::F32, W = s.weight_type;
    return catch_errors([&]() {
        add("token_embd.weight", s.embd_type, {d, n_vocab}, 1.0f, 0.0f);
        add("token_types.weight", F32, {d, 2}, 1.0f, 0.0f);
        if (!nomic) add("position_embd.weight", F32, {d, s.n_ctx_train}, 1.0f, 0.0f);
        add("token_embd_norm.weight", F32, {d}, 0.1f, 1.0f);
        add("token_embd_norm.bias", F32, {d}, 0.1f, 0.0f);
        for (int il = 0; il < s.n_layer; ++il) {
            const std::string p = "blk." + std::to_string(il) + ".";
            if (nomic) {
                add(p + "attn_qkv.weight", W, {d, 3 * d}, in_d, 0.0f);
                add(p + "attn_output.weight", W, {d, d}, in_d, 0.0f);
            } else {
                for (const char* m : {"attn_q", "attn_k", "attn_v", "attn_output"}) {
                    add(p + m + ".weight", W, {d, d}, in_d, 0.0f);
                    add(p + m + ".bias", F32, {d}, 0.1f, 0.0f);
                }
            }
            add(p + "attn_output_norm.weight", F32, {d}, 0.1f, 1.0f);
            add(p + "attn_output_norm.bias", F32, {d}, 0.1f, 0.0f);
            add(p + "ffn_up.weight", W, {d, ff}, in_d, 0.0f);
            if (nomic) {
                add(p + "ffn_gate.weight", W, {d, ff}, in_d, 0.0f);
            } else {
                add(p + "ffn_up.bias", F32, {ff}, 0.1f, 0.0f);
            }
            add(p + "ffn_down.weight", W, {ff, d}, in_ff, 0.0f);
            if (!nomic) add(p + "ffn_down.bias", F32, {d}, 0.1f, 0.0f);
            add(p + "layer_output_norm.weight", F32, {d}, 0.1f, 1.0f);
            add(p + "layer_output_norm.bias", F32, {d}, 0.1f, 0.0f);
        }
        if (s.rank_head) {
            add("cls.weight", W, {d, d}, in_d, 0.0f);
            add("cls.bias", F32, {d}, 0.1f, 0.0f);
            // One output: ne {d, 1}, as the converter writes it (a 2-D tensor with one row).
            add("cls.output.weight", F32, {d, 1}, in_d, 0.0f);
            add("cls.output.bias", F32, {1}, 0.1f, 0.0f);
        }
        return w.to_bytes();
    });
}

Result<void> write_synthetic_encoder(const SyntheticEncoderSpec& spec, const std::string& path) {
    auto bytes = synthetic_encoder_bytes(spec);
    if (!bytes) return bytes.error();
    return gguf::write_file_atomic(path, *bytes);
}

}  // namespace kvrag::tools
