#include "tools/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "gguf/gguf_writer.h"
#include "kernels/quant.h"
#include "tools/normal_rng.h"

namespace kvrag::tools {
namespace {

using Normal = NormalRng;  // tools/normal_rng.h

const char* const kWords[] = {
    "the", "and", "a", "to", "of", "in", "is", "was", "it", "for", "on", "that", "with", "as", "he", "she",
    "they", "you", "we", "at", "be", "this", "from", "by", "or", "have", "not", "are", "but", "his", "her",
    "one", "all", "there", "what", "so", "up", "out", "if", "about", "who", "get", "which", "go", "me",
    "when", "make", "can", "like", "time", "no", "just", "him", "know", "take", "people", "into", "year",
    "your", "good", "some", "could", "them", "see", "other", "than", "then", "now", "look", "only", "come",
    "its", "over", "think", "also", "back", "after", "use", "two", "how", "our", "work", "first", "well",
    "way", "even", "new", "want", "because", "any", "these", "give", "day", "most", "us", "once", "upon",
    "little", "girl", "boy", "dog", "cat", "play", "happy", "sun", "tree", "park", "friend", "said",
    "cache", "model", "token", "context", "memory", "request", "answer", "question", "document", "search",
};

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
    std::vector<uint8_t> out(v.size() * sizeof(float));
    std::memcpy(out.data(), v.data(), out.size());
    return out;
}

struct LongRopeParams {
    int32_t n_ctx_orig = 0;
    float attn_factor = 1.0f;
};

// The LongRoPE keys of a spec, checked: what is wrong is named with its numbers.
Result<LongRopeParams> longrope_params(const SyntheticSpec& s, int32_t n_rot) {
    LongRopeParams p;
    if (!s.longrope) {
        if (!s.rope_factors_long.empty() || !s.rope_factors_short.empty() || s.rope_attn_factor || s.n_ctx_orig != 0) {
            return Error{Errc::model_bad_hparams, "synthetic spec: LongRoPE factors, attn_factor or original context given "
                                                  "without longrope"};
        }
        return p;
    }
    if (s.arch != "phi3") {
        return Error{Errc::model_bad_hparams, "synthetic " + s.arch + ": LongRoPE (rope_factors_long/short) is written "
                                                  "for arch phi3 only"};
    }
    p.n_ctx_orig = s.n_ctx_orig != 0 ? s.n_ctx_orig : std::max(1, s.n_ctx_train / 4);
    if (p.n_ctx_orig < 1 || p.n_ctx_orig > s.n_ctx_train) {
        return Error{Errc::model_bad_hparams, "synthetic phi3: original context " + std::to_string(p.n_ctx_orig) +
                                                  " must be in 1.." + std::to_string(s.n_ctx_train) + " (the trained context)"};
    }
    // convert_hf_to_gguf.py's attention factor for LongRoPE: sqrt(1 + ln(s) / ln(original)).
    const double scale = static_cast<double>(s.n_ctx_train) / p.n_ctx_orig;
    p.attn_factor = scale > 1.0 && p.n_ctx_orig > 1
                        ? static_cast<float>(std::sqrt(1.0 + std::log(scale) / std::log(static_cast<double>(p.n_ctx_orig))))
                        : 1.0f;
    if (s.rope_attn_factor) p.attn_factor = *s.rope_attn_factor;
    if (!(p.attn_factor > 0.0f) || !std::isfinite(p.attn_factor)) {
        return Error{Errc::model_bad_hparams, "synthetic phi3: attn_factor " + std::to_string(p.attn_factor) + " must be > 0"};
    }
    for (const auto* f : {&s.rope_factors_long, &s.rope_factors_short}) {
        if (f->empty()) continue;
        if (f->size() != static_cast<size_t>(n_rot / 2)) {
            return Error{Errc::model_bad_hparams, "synthetic phi3: " + std::to_string(f->size()) + " rope factors given, "
                                                      "need n_rot / 2 = " + std::to_string(n_rot / 2)};
        }
        for (float v : *f) {
            if (!(v > 0.0f) || !std::isfinite(v)) {
                return Error{Errc::model_bad_hparams, "synthetic phi3: rope factor " + std::to_string(v) + " must be > 0"};
            }
        }
    }
    return p;
}

}  // namespace

std::vector<std::string> builtin_vocab_tokens() {
    std::vector<std::string> toks = {"<unk>", "<s>", "</s>"};
    for (int b = 0; b < 256; ++b) {
        char buf[8];
        std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
        toks.emplace_back(buf);
    }
    // Printable ASCII characters and "▁" (SPM's space); then every prefix of "▁word" so the
    // SPM bigram merges can reach each whole word.
    std::set<std::string> seen(toks.begin(), toks.end());
    auto add = [&](const std::string& s) { if (seen.insert(s).second) toks.push_back(s); };
    const std::string sp = "\xe2\x96\x81";
    add(sp);
    for (char c = 33; c < 127; ++c) add(std::string(1, c));
    for (const char* w : kWords) {
        const std::string full = sp + w;
        for (size_t n = sp.size() + 1; n <= full.size(); ++n) add(full.substr(0, n));
    }
    return toks;
}

Result<std::vector<uint8_t>> synthetic_model_bytes(const SyntheticSpec& s) {
    if (s.arch != "llama" && s.arch != "qwen2" && s.arch != "qwen3" && s.arch != "gemma3" && s.arch != "phi3") {
        return Error{Errc::model_unsupported_arch, "synthetic arch '" + s.arch + "'; supported: llama, qwen2, qwen3, gemma3, phi3"};
    }
    const bool gemma3 = s.arch == "gemma3", phi3 = s.arch == "phi3";
    if (gemma3 && (s.n_swa < 1 || s.swa_pattern < 1)) {
        return Error{Errc::model_bad_hparams, "synthetic gemma3: sliding window " + std::to_string(s.n_swa) + " and pattern " +
                                                  std::to_string(s.swa_pattern) + " must be >= 1"};
    }
    if (s.n_head <= 0 || s.n_head_kv <= 0 || s.n_embd % s.n_head != 0 || s.n_head % s.n_head_kv != 0) {
        return Error{Errc::model_bad_hparams, "synthetic spec: n_embd " + std::to_string(s.n_embd) + ", n_head " +
                                                  std::to_string(s.n_head) + ", n_head_kv " + std::to_string(s.n_head_kv) +
                                                  " must divide evenly"};
    }
    const int32_t head_dim = s.n_embd / s.n_head;
    const int32_t n_rot = s.n_rot == 0 ? head_dim : s.n_rot;
    if (n_rot < 2 || n_rot > head_dim || n_rot % 2 != 0) {
        return Error{Errc::model_bad_hparams, "synthetic spec: rope dims " + std::to_string(n_rot) +
                                                  " must be even and in 2.." + std::to_string(head_dim) + " (the head dim)"};
    }
    auto longrope = longrope_params(s, n_rot);
    if (!longrope) return longrope.error();
    gguf::GgufWriter w;
    const std::string a = s.arch + ".";
    w.set_string("general.architecture", s.arch);
    w.set_string("general.name", s.name);
    w.set_u32(a + "context_length", s.n_ctx_train);
    w.set_u32(a + "embedding_length", s.n_embd);
    w.set_u32(a + "block_count", s.n_layer);
    w.set_u32(a + "feed_forward_length", s.n_ff);
    w.set_u32(a + "attention.head_count", s.n_head);
    w.set_u32(a + "attention.head_count_kv", s.n_head_kv);
    w.set_u32(a + "rope.dimension_count", n_rot);
    w.set_f32(a + "rope.freq_base", s.rope_freq_base);
    w.set_f32(a + "attention.layer_norm_rms_epsilon", s.rms_eps);
    if (gemma3) {
        w.set_u32(a + "attention.sliding_window", s.n_swa);
        w.set_u32(a + "attention.sliding_window_pattern", s.swa_pattern);
        w.set_f32(a + "rope.freq_base_swa", s.rope_freq_base_swa);
    }
    if (s.longrope) {
        w.set_u32(a + "rope.scaling.original_context_length", longrope->n_ctx_orig);
        w.set_f32(a + "rope.scaling.attn_factor", longrope->attn_factor);
    }

    int64_t n_vocab = 0;
    if (s.vocab_from) {
        w.copy_keys_with_prefix(*s.vocab_from, "tokenizer.");
        auto toks = s.vocab_from->get_array("tokenizer.ggml.tokens");
        if (!toks || !*toks) return Error{Errc::tokenizer_bad_vocab, s.vocab_from->path() + ": no tokenizer.ggml.tokens to copy"};
        n_vocab = static_cast<int64_t>((*toks)->n);
    } else {
        const auto toks = builtin_vocab_tokens();
        n_vocab = static_cast<int64_t>(toks.size());
        std::vector<float> scores(toks.size());
        std::vector<int32_t> types(toks.size(), 1);
        types[0] = 2;
        types[1] = types[2] = 3;
        for (int b = 0; b < 256; ++b) types[3 + b] = 6;
        // Longer pieces score higher so SPM prefers whole words; ties broken by list order.
        for (size_t i = 0; i < toks.size(); ++i) scores[i] = types[i] == 1 ? -static_cast<float>(i) / 1000.0f + static_cast<float>(toks[i].size()) : 0.0f;
        w.set_string("tokenizer.ggml.model", "llama");
        w.set_string_array("tokenizer.ggml.tokens", toks);
        w.set_f32_array("tokenizer.ggml.scores", scores);
        w.set_i32_array("tokenizer.ggml.token_type", types);
        w.set_u32("tokenizer.ggml.bos_token_id", 1);
        w.set_u32("tokenizer.ggml.eos_token_id", 2);
        w.set_u32("tokenizer.ggml.unknown_token_id", 0);
        w.set_bool("tokenizer.ggml.add_bos_token", true);
        w.set_bool("tokenizer.ggml.add_eos_token", false);
    }

    Normal rng(s.seed);
    auto add = [&](const std::string& name, GgmlType type, int64_t n_cols, int64_t n_rows, float scale, float offset) -> Result<void> {
        const int64_t block = ggml_type_traits(type).block_size;
        if (n_cols % block != 0) {
            return Error{Errc::model_bad_hparams, "synthetic tensor '" + name + "' row length " + std::to_string(n_cols) +
                                                      " is not a multiple of the " + std::string(ggml_type_name(type)) +
                                                      " block size " + std::to_string(block)};
        }
        std::vector<float> row(static_cast<size_t>(n_cols));
        const size_t rb = ggml_row_size(type, n_cols);
        std::vector<uint8_t> data(rb * static_cast<size_t>(n_rows));
        for (int64_t r = 0; r < n_rows; ++r) {
            for (auto& v : row) v = offset + scale * rng.next();
            kernels::quantize_row(type, row.data(), data.data() + r * rb, n_cols);
        }
        std::vector<int64_t> ne = n_rows == 1 ? std::vector<int64_t>{n_cols} : std::vector<int64_t>{n_cols, n_rows};
        return w.add_tensor(name, type, std::move(ne), std::move(data));
    };
    const int64_t hd = s.n_embd / s.n_head, n_q = s.n_embd, n_kv = hd * s.n_head_kv;
    auto check = [](Result<void> r) { if (!r) throw Exception(r.error()); };
    return catch_errors([&]() {
        check(add("token_embd.weight", s.embd_type, s.n_embd, n_vocab, 1.0f, 0.0f));
        check(add("output_norm.weight", GgmlType::F32, s.n_embd, 1, 0.1f, 1.0f));
        if (!s.tied_output) check(add("output.weight", s.output_type, s.n_embd, n_vocab, 1.0f / std::sqrt(float(s.n_embd)), 0.0f));
        for (int il = 0; il < s.n_layer; ++il) {
            const std::string p = "blk." + std::to_string(il) + ".";
            const int n8 = s.n_layer / 8;
            const bool more_bits = il < n8 || il >= 7 * s.n_layer / 8 || (il - n8) % 3 == 2;
            const GgmlType mixed_type = s.more_bits_type && more_bits ? *s.more_bits_type : s.weight_type;
            const float in_scale = 1.0f / std::sqrt(static_cast<float>(s.n_embd));
            check(add(p + "attn_norm.weight", GgmlType::F32, s.n_embd, 1, 0.1f, 1.0f));
            if (phi3) {
                // Fused: the Q rows, then K, then V, drawn as the separate matrices are.
                check(add(p + "attn_qkv.weight", s.weight_type, s.n_embd, n_q + 2 * n_kv, in_scale, 0.0f));
            } else {
                check(add(p + "attn_q.weight", s.weight_type, s.n_embd, n_q, in_scale, 0.0f));
                check(add(p + "attn_k.weight", s.weight_type, s.n_embd, n_kv, in_scale, 0.0f));
                check(add(p + "attn_v.weight", mixed_type, s.n_embd, n_kv, in_scale, 0.0f));
            }
            if (s.arch == "qwen2") {
                check(add(p + "attn_q.bias", GgmlType::F32, n_q, 1, 0.1f, 0.0f));
                check(add(p + "attn_k.bias", GgmlType::F32, n_kv, 1, 0.1f, 0.0f));
                check(add(p + "attn_v.bias", GgmlType::F32, n_kv, 1, 0.1f, 0.0f));
            }
            if (s.arch == "qwen3" || gemma3) {
                check(add(p + "attn_q_norm.weight", GgmlType::F32, hd, 1, 0.1f, 1.0f));
                check(add(p + "attn_k_norm.weight", GgmlType::F32, hd, 1, 0.1f, 1.0f));
            }
            check(add(p + "attn_output.weight", s.weight_type, n_q, s.n_embd, 1.0f / std::sqrt(float(n_q)), 0.0f));
            if (gemma3) {
                check(add(p + "post_attention_norm.weight", GgmlType::F32, s.n_embd, 1, 0.1f, 1.0f));
                check(add(p + "post_ffw_norm.weight", GgmlType::F32, s.n_embd, 1, 0.1f, 1.0f));
            }
            check(add(p + "ffn_norm.weight", GgmlType::F32, s.n_embd, 1, 0.1f, 1.0f));
            if (phi3) {
                // Fused: the gate rows, then up.
                check(add(p + "ffn_up.weight", s.weight_type, s.n_embd, 2 * s.n_ff, in_scale, 0.0f));
            } else {
                check(add(p + "ffn_gate.weight", s.weight_type, s.n_embd, s.n_ff, in_scale, 0.0f));
                check(add(p + "ffn_up.weight", s.weight_type, s.n_embd, s.n_ff, in_scale, 0.0f));
            }
            check(add(p + "ffn_down.weight", mixed_type, s.n_ff, s.n_embd, 1.0f / std::sqrt(float(s.n_ff)), 0.0f));
        }
        if (s.longrope) {
            // Last, so the weights above are those of the same spec without LongRoPE.
            std::vector<float> f_long = s.rope_factors_long, f_short = s.rope_factors_short;
            const int32_t n_half = n_rot / 2;
            if (f_long.empty()) {
                for (int32_t i = 0; i < n_half; ++i) {
                    const double ramp = n_half > 1 ? static_cast<double>(i) / (n_half - 1) : 0.0;
                    f_long.push_back(static_cast<float>(1.5 * std::pow(16.0, ramp) * std::exp(0.1 * rng.next())));
                }
            }
            if (f_short.empty()) {
                for (int32_t i = 0; i < n_half; ++i) f_short.push_back(1.0f + 0.25f * std::abs(rng.next()));
            }
            check(w.add_tensor("rope_factors_long.weight", GgmlType::F32, {n_half}, f32_bytes(f_long)));
            check(w.add_tensor("rope_factors_short.weight", GgmlType::F32, {n_half}, f32_bytes(f_short)));
        }
        return w.to_bytes();
    });
}

Result<void> write_synthetic_model(const SyntheticSpec& spec, const std::string& path) {
    auto bytes = synthetic_model_bytes(spec);
    if (!bytes) return bytes.error();
    return gguf::write_file_atomic(path, *bytes);
}

}  // namespace kvrag::tools
