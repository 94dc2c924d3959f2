#include "model/hparams.h"

#include <cmath>

namespace kvrag::model {
namespace {

// Reads an integer key that must be present and inside [lo, hi].
int32_t need_int(const gguf::GgufFile& f, const std::string& key, int64_t lo, int64_t hi) {
    auto r = f.require_int(key);
    if (!r) throw Exception(r.error());
    if (*r < lo || *r > hi) {
        throw_error(Errc::model_bad_hparams, f.path() + ": " + key + " is " + std::to_string(*r) +
                                                 ", expected " + std::to_string(lo) + ".." + std::to_string(hi));
    }
    return static_cast<int32_t>(*r);
}

std::optional<int64_t> opt_int(const gguf::GgufFile& f, const std::string& key) {
    auto r = f.get_int(key);
    if (!r) throw Exception(r.error());
    return *r;
}

std::optional<double> opt_float(const gguf::GgufFile& f, const std::string& key) {
    auto r = f.get_float(key);
    if (!r) throw Exception(r.error());
    return *r;
}

// LayerNorm eps, pooling and the rank head of BERT-family models. Bidirectional attention is
// all kvrag runs for them, so a file that asks for causal attention is refused.
void read_encoder_hparams(const gguf::GgufFile& f, ModelHParams& hp) {
    const std::string a = hp.arch_name + ".";
    if (auto eps = opt_float(f, a + "attention.layer_norm_epsilon")) hp.norm_eps = static_cast<float>(*eps);
    if (!(hp.norm_eps > 0.0f) || hp.norm_eps > 1.0f) {
        throw_error(Errc::model_bad_hparams, f.path() + ": " + a + "attention.layer_norm_epsilon " +
                                                 std::to_string(hp.norm_eps) + " must be in (0, 1]");
    }
    if (auto c = f.get_bool(a + "attention.causal"); c && *c && **c) {
        throw_error(Errc::model_bad_hparams, f.path() + ": " + a + "attention.causal is true; kvrag runs " + hp.arch_name +
                                                 " models with bidirectional attention only");
    }
    if (auto p = opt_int(f, a + "pooling_type")) {
        if (*p < 0 || *p > 4) {
            throw_error(Errc::model_bad_hparams, f.path() + ": " + a + "pooling_type " + std::to_string(*p) +
                                                     " is not one of 0 (none), 1 (mean), 2 (cls), 3 (last), 4 (rank)");
        }
        hp.pooling = static_cast<PoolingType>(*p);
    }
    // llama.cpp assumes one output label when the key is absent; a file without cls.output has
    // no rank head at all (checked when the weights are bound).
    hp.n_cls_out = 1;
    if (auto arr = f.get_array(a + "classifier.output_labels"); arr && *arr) {
        hp.n_cls_out = static_cast<int32_t>((*arr)->n);
    }
}

// Sliding window, its layer pattern and the local layers' RoPE base; the query scale; the
// optional final soft-capping. Defaults are llama.cpp's where a converted file has no key.
void read_gemma3_hparams(const gguf::GgufFile& f, ModelHParams& hp) {
    const std::string a = hp.arch_name + ".";
    if (auto w = opt_int(f, a + "attention.sliding_window")) {
        if (*w < 0 || *w > (1 << 24)) {
            throw_error(Errc::model_bad_hparams, f.path() + ": " + a + "attention.sliding_window " + std::to_string(*w) +
                                                     " is outside 0..16777216");
        }
        hp.n_swa = static_cast<int32_t>(*w);
    }
    hp.swa_pattern = 6;
    // An array value of the pattern key is ignored, as the reference engine does.
    if (const gguf::Value* v = f.find(a + "attention.sliding_window_pattern"); v && v->type != gguf::ValueType::ARRAY) {
        auto p = opt_int(f, a + "attention.sliding_window_pattern");
        if (!p || *p < 1 || *p > 4096) {
            throw_error(Errc::model_bad_hparams, f.path() + ": " + a + "attention.sliding_window_pattern must be in 1..4096");
        }
        hp.swa_pattern = static_cast<int32_t>(*p);
    }
    if (auto b = opt_float(f, a + "rope.freq_base_swa")) hp.rope_freq_base_swa = static_cast<float>(*b);
    if (!(hp.rope_freq_base_swa > 0.0f)) {
        throw_error(Errc::model_bad_hparams, f.path() + ": " + a + "rope.freq_base_swa must be > 0");
    }
    if (auto c = opt_float(f, a + "final_logit_softcapping")) hp.final_logit_softcap = static_cast<float>(*c);
    if (hp.final_logit_softcap < 0.0f) {
        throw_error(Errc::model_bad_hparams, f.path() + ": " + a + "final_logit_softcapping must be >= 0");
    }
    // Gemma 3 27B (62 layers) scales queries by 1/sqrt(n_embd / n_head), the others by
    // 1/sqrt(head_dim) (the reference engine's rule).
    const float d = hp.n_layer == 62 ? static_cast<float>(hp.n_embd) / static_cast<float>(hp.n_head)
                                     : static_cast<float>(hp.head_dim);
    hp.q_prescale = 1.0f / std::sqrt(d);
}

// LongRoPE's original context and attention factor; phi3 needs n_head * head_dim == n_embd
// (its attn_output is square). attention.sliding_window is read by nobody: the reference
// engine disables Phi's window, so every layer is global.
void read_phi3_hparams(const gguf::GgufFile& f, ModelHParams& hp) {
    const std::string a = hp.arch_name + ".";
    if (hp.n_embd_q() != hp.n_embd) {
        throw_error(Errc::model_bad_hparams, f.path() + ": phi3 needs head_count * head_dim == embedding_length; got " +
                                                 std::to_string(hp.n_head) + " * " + std::to_string(hp.head_dim) +
                                                 " != " + std::to_string(hp.n_embd));
    }
    // As the reference engine: the trained context when the key is absent; 0 as given (every
    // context then exceeds it, so LongRoPE's long factors always apply).
    hp.n_ctx_orig = hp.n_ctx_train;
    if (auto o = opt_int(f, a + "rope.scaling.original_context_length")) {
        if (*o < 0 || *o > (1 << 24)) {
            throw_error(Errc::model_bad_hparams, f.path() + ": " + a + "rope.scaling.original_context_length " +
                                                     std::to_string(*o) + " is outside 0..16777216");
        }
        hp.n_ctx_orig = static_cast<int32_t>(*o);
    }
    if (auto af = opt_float(f, a + "rope.scaling.attn_factor")) hp.rope_attn_factor = static_cast<float>(*af);
    if (!(hp.rope_attn_factor > 0.0f)) {
        throw_error(Errc::model_bad_hparams, f.path() + ": " + a + "rope.scaling.attn_factor must be > 0");
    }
    hp.q_prescale = 1.0f / std::sqrt(static_cast<float>(hp.head_dim));
}

}  // namespace

const char* pooling_type_name(PoolingType p) {
    switch (p) {
        case PoolingType::none: return "none";
        case PoolingType::mean: return "mean";
        case PoolingType::cls: return "cls";
        case PoolingType::last: return "last";
        case PoolingType::rank: return "rank";
    }
    return "?";
}

Result<PoolingType> parse_pooling_type(std::string_view name) {
    for (PoolingType p : {PoolingType::none, PoolingType::mean, PoolingType::cls, PoolingType::last, PoolingType::rank}) {
        if (name == pooling_type_name(p)) return p;
    }
    return Error{Errc::request_invalid, "pooling '" + std::string(name) + "' is not one of none, mean, cls, last, rank"};
}

std::string arch_name(Arch arch) {
    switch (arch) {
        case Arch::llama: return "llama";
        case Arch::qwen2: return "qwen2";
        case Arch::qwen3: return "qwen3";
        case Arch::gemma3: return "gemma3";
        case Arch::phi3: return "phi3";
        case Arch::bert: return "bert";
        case Arch::nomic_bert: return "nomic-bert";
    }
    return "?";
}

Result<ModelHParams> read_hparams(const gguf::GgufFile& f) {
    return catch_errors([&]() {
        ModelHParams hp;
        auto arch = f.require_string("general.architecture");
        if (!arch) throw Exception(arch.error());
        hp.arch_name = std::string(*arch);
        if (hp.arch_name == "llama") {
            hp.arch = Arch::llama;
        } else if (hp.arch_name == "qwen2") {
            hp.arch = Arch::qwen2;
            hp.rope_neox = true;
        } else if (hp.arch_name == "qwen3") {
            hp.arch = Arch::qwen3;
            hp.rope_neox = true;
            hp.qk_norm = true;
        } else if (hp.arch_name == "gemma3") {
            hp.arch = Arch::gemma3;
            hp.rope_neox = true;
            hp.qk_norm = true;
        } else if (hp.arch_name == "phi3") {
            hp.arch = Arch::phi3;
            hp.rope_neox = true;
        } else if (hp.arch_name == "bert") {
            hp.arch = Arch::bert;
        } else if (hp.arch_name == "nomic-bert") {
            hp.arch = Arch::nomic_bert;
            hp.rope_neox = true;  // NEOX rotation over the whole head
        } else {
            throw_error(Errc::model_unsupported_arch, f.path() + ": architecture '" + hp.arch_name +
                                                          "' is not supported; supported: " + kSupportedArchs);
        }
        if (auto n = f.get_string("general.name"); n && *n) hp.name = std::string(**n);
        const std::string a = hp.arch_name + ".";
        constexpr int64_t kBig = 1 << 24;
        hp.n_embd = need_int(f, a + "embedding_length", 1, kBig);
        hp.n_layer = need_int(f, a + "block_count", 1, 4096);
        hp.n_ff = need_int(f, a + "feed_forward_length", 1, kBig);
        hp.n_head = need_int(f, a + "attention.head_count", 1, 4096);
        hp.n_ctx_train = need_int(f, a + "context_length", 1, 1 << 24);
        hp.n_head_kv = hp.n_head;
        if (auto kv = opt_int(f, a + "attention.head_count_kv")) hp.n_head_kv = static_cast<int32_t>(*kv);
        if (hp.n_head_kv < 1 || hp.n_head % hp.n_head_kv != 0) {
            throw_error(Errc::model_bad_hparams, f.path() + ": " + a + "attention.head_count_kv " +
                                                     std::to_string(hp.n_head_kv) + " must be >= 1 and divide head_count " +
                                                     std::to_string(hp.n_head));
        }
        if (auto kl = opt_int(f, a + "attention.key_length")) {
            hp.head_dim = static_cast<int32_t>(*kl);
            auto vl = opt_int(f, a + "attention.value_length");
            if (vl && *vl != *kl) {
                throw_error(Errc::model_bad_hparams, f.path() + ": key_length " + std::to_string(*kl) + " != value_length " +
                                                         std::to_string(*vl) + " is not supported");
            }
        } else {
            if (hp.n_embd % hp.n_head != 0) {
                throw_error(Errc::model_bad_hparams, f.path() + ": " + a + "attention.head_count " + std::to_string(hp.n_head) +
                                                         " does not divide embedding_length " + std::to_string(hp.n_embd));
            }
            hp.head_dim = hp.n_embd / hp.n_head;
        }
        if (hp.head_dim < 1 || hp.head_dim > 1024) {
            throw_error(Errc::model_bad_hparams, f.path() + ": head dimension " + std::to_string(hp.head_dim) + " is outside 1..1024");
        }
        hp.n_rot = hp.head_dim;
        if (auto r = opt_int(f, a + "rope.dimension_count")) hp.n_rot = static_cast<int32_t>(*r);
        if (hp.n_rot < 2 || hp.n_rot > hp.head_dim || hp.n_rot % 2 != 0) {
            throw_error(Errc::model_bad_hparams, f.path() + ": " + a + "rope.dimension_count " + std::to_string(hp.n_rot) +
                                                     " must be even and in 2.." + std::to_string(hp.head_dim));
        }
        if (auto b = opt_float(f, a + "rope.freq_base")) hp.rope_freq_base = static_cast<float>(*b);
        if (!(hp.rope_freq_base > 0.0f)) {
            throw_error(Errc::model_bad_hparams, f.path() + ": rope.freq_base " + std::to_string(hp.rope_freq_base) + " must be > 0");
        }
        if (auto st = f.get_string(a + "rope.scaling.type"); st && *st) hp.rope_scaling_type = std::string(**st);
        double factor = 0.0;
        if (auto fac = opt_float(f, a + "rope.scaling.factor")) factor = *fac;
        if (auto lin = opt_float(f, a + "rope.scale_linear")) factor = *lin;  // older key
        if (hp.rope_scaling_type == "linear" || (hp.rope_scaling_type == "none" && factor > 0.0)) {
            if (factor > 0.0 && factor != 1.0) {
                hp.rope_freq_scale = static_cast<float>(1.0 / factor);
                hp.rope_scaling_type = "linear";
            }
        } else if (hp.rope_scaling_type != "none") {
            throw_error(Errc::model_bad_hparams, f.path() + ": rope scaling type '" + hp.rope_scaling_type +
                                                     "' is not supported (supported: none, linear; llama3-style "
                                                     "rope_freqs factors are applied when present)");
        }
        if (auto eps = opt_float(f, a + "attention.layer_norm_rms_epsilon")) hp.rms_eps = static_cast<float>(*eps);
        if (!(hp.rms_eps > 0.0f) || hp.rms_eps > 1.0f) {
            throw_error(Errc::model_bad_hparams, f.path() + ": layer_norm_rms_epsilon " + std::to_string(hp.rms_eps) + " must be in (0, 1]");
        }
        if (hp.arch == Arch::gemma3) read_gemma3_hparams(f, hp);
        if (hp.arch == Arch::phi3) read_phi3_hparams(f, hp);
        if (is_encoder(hp.arch)) read_encoder_hparams(f, hp);
        // The vocabulary size comes from the embedding matrix, checked when weights are bound.
        if (const auto* t = f.find_tensor("token_embd.weight"); t && t->ne.size() == 2) {
            hp.n_vocab = static_cast<int32_t>(t->ne[1]);
        } else if (auto nv = opt_int(f, a + "vocab_size")) {
            hp.n_vocab = static_cast<int32_t>(*nv);
        }
        return hp;
    });
}

}  // namespace kvrag::model
