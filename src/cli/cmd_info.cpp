#include <algorithm>
#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "engine/context_size.h"
#include "engine/engine.h"
#include "kvcache/kv_store.h"
#include "model/encoder_weights.h"
#include "model/model.h"

namespace kvrag::cli {

Runner add_info(CLI::App& app) {
    struct Args {
        std::string model_path;
        bool metadata = false;
    };
    auto a = std::make_shared<Args>();
    app.add_option("model", a->model_path, "GGUF model file")->required();
    app.add_flag("--metadata", a->metadata, "also list every metadata key");
    return [a] {
        auto file = gguf::GgufFile::open(a->model_path);
        if (!file) return fail(file.error());
        const gguf::GgufFile& f = **file;
        std::printf("file:          %s\n", f.path().c_str());
        std::printf("file size:     %llu bytes (%.2f MiB)\n", static_cast<unsigned long long>(f.file_size()),
                    static_cast<double>(f.file_size()) / 1048576.0);
        std::printf("gguf version:  %u, %zu metadata keys, %zu tensors\n", f.version(), f.metadata().size(), f.tensors().size());
        std::map<std::string, std::pair<int, uint64_t>> types;
        uint64_t n_params = 0;
        for (const auto& t : f.tensors()) {
            auto& e = types[std::string(ggml_type_name(t.type))];
            e.first += 1;
            e.second += t.n_bytes;
            n_params += t.n_elements;
        }
        std::printf("parameters:    %llu (%.2f M)\n", static_cast<unsigned long long>(n_params), static_cast<double>(n_params) / 1e6);
        std::printf("tensor types: ");
        for (const auto& [name, e] : types) std::printf(" %s x%d (%.2f MiB)", name.c_str(), e.first, static_cast<double>(e.second) / 1048576.0);
        std::printf("\n");
        if (auto tm = f.get_string("tokenizer.ggml.model"); tm && *tm) {
            auto toks = f.get_array("tokenizer.ggml.tokens");
            auto pre = f.get_string("tokenizer.ggml.pre");
            std::printf("tokenizer:     %s, pre %s, %llu tokens\n", std::string(**tm).c_str(),
                        pre && *pre ? std::string(**pre).c_str() : "default",
                        static_cast<unsigned long long>(toks && *toks ? (*toks)->n : 0));
        }
        if (a->metadata) {
            for (const auto& [key, value] : f.metadata()) std::printf("  %s = %s\n", key.c_str(), value.to_display().c_str());
        }
        if (f.tensors().empty()) {
            std::printf("(vocabulary-only file: no tensors)\n");
            return 0;
        }
        auto hp = model::read_hparams(f);
        if (!hp) return fail(hp.error());
        const auto& h = *hp;
        std::printf("architecture:  %s%s%s\n", h.arch_name.c_str(), h.name.empty() ? "" : ", name ", h.name.c_str());
        std::printf("hparams:       n_vocab %d, n_ctx_train %d, n_embd %d, n_layer %d, n_head %d, n_head_kv %d, n_ff %d, head_dim %d\n",
                    h.n_vocab, h.n_ctx_train, h.n_embd, h.n_layer, h.n_head, h.n_head_kv, h.n_ff, h.head_dim);
        if (model::is_encoder(h.arch)) {
            // Embedding / rerank models: no KV cache and no output head; what matters is the
            // pooling, the norm and whether a classifier head is there.
            auto w = model::bind_encoder_weights(f, h);
            if (!w) return fail(w.error());
            std::printf("encoder:       pooling %s, layer_norm_eps %g, %s%s\n", model::pooling_type_name(h.pooling), h.norm_eps,
                        w->has_rank_head() ? "classifier head (reranker)" : "no classifier head (embedding model)",
                        h.arch == model::Arch::nomic_bert ? ", neox rope" : ", absolute positions");
            return 0;
        }
        std::printf("rope:          n_rot %d, freq_base %g, scaling %s (freq_scale %g), %s pairs; rms_eps %g\n", h.n_rot,
                    h.rope_freq_base, h.rope_scaling_type.c_str(), h.rope_freq_scale, h.rope_neox ? "neox" : "normal", h.rms_eps);
        std::printf("kv per token: ");
        for (GgmlType t : {GgmlType::F16, GgmlType::Q8_0, GgmlType::F32}) {
            auto geo = kvcache::make_geometry(h, t);
            if (geo) {
                std::printf(" %s %zu bytes", std::string(ggml_type_name(t)).c_str(), geo->bytes_per_cell());
            } else {
                std::printf(" %s n/a", std::string(ggml_type_name(t)).c_str());
            }
        }
        std::printf("\n");
        if (h.has_swa()) {
            // Local layers need only the last n_swa positions of a sequence; per token beyond
            // that, only the global layers' K/V grow.
            int32_t n_local = 0;
            for (int il = 0; il < h.n_layer; ++il) n_local += h.is_swa(il) ? 1 : 0;
            const size_t layer_bytes = 2 * ggml_row_size(GgmlType::F16, h.n_embd_kv());
            std::printf("sliding window: %d positions on %d of %d layers (pattern %d, local rope base %g); f16 kv per token "
                        "%zu bytes without the window, %zu bytes with it (+ %zu bytes per sequence for the window)\n",
                        h.n_swa, n_local, h.n_layer, h.swa_pattern, h.rope_freq_base_swa, layer_bytes * h.n_layer,
                        layer_bytes * (h.n_layer - n_local), layer_bytes * n_local * static_cast<size_t>(h.n_swa));
            std::printf("                (kvrag's cache keeps the local layers only for each running sequence's window "
                        "plus one batch, in a second pool: /v1/kv \"local\")\n");
        }
        if (auto geo = kvcache::make_geometry(h, GgmlType::F16, /*split_local=*/true)) {
            const int32_t ctx = engine::default_context_size(h, 0).n_ctx;  // kvrag generate's default --ctx
            size_t bytes = geo->bytes_per_cell() * static_cast<size_t>(ctx);
            std::printf("kv cache:      %d cells (default --ctx) x %zu bytes", ctx, geo->bytes_per_cell());
            if (geo->split()) {
                // The engine's local pool with its defaults (kvrag generate's): n_seq_window
                // sequences' windows of n_swa - 1 + (prefix block - 1) + batch local cells each.
                const engine::EngineConfig d;
                const int64_t per_seq = static_cast<int64_t>(h.n_swa) - 1 + (d.prefix_block - 1) + d.n_batch;
                const int64_t n_local = std::min<int64_t>(ctx, d.n_seq_window * per_seq);
                bytes += geo->bytes_per_local_cell() * static_cast<size_t>(n_local);
                std::printf(" + %lld local cells x %zu bytes", static_cast<long long>(n_local), geo->bytes_per_local_cell());
            }
            std::printf(" = %zu bytes (%.2f MiB) in f16\n", bytes, static_cast<double>(bytes) / 1048576.0);
        }
        auto w = model::bind_weights(f, h);
        if (!w) return fail(w.error());
        if (w->has_longrope()) {
            // The set is chosen once per context, from the per-sequence context rounded up to 256
            // (the reference engine's rule), not from a sequence's current length.
            const int32_t ctx_seq = engine::default_context_size(h, 0).n_ctx_seq;
            const std::span<const float> chosen = model::rope_factors(*w, h, ctx_seq);
            const char* which = chosen.empty() ? "none (plain RoPE)" : chosen.data() == w->rope_factors_long.data() ? "long" : "short";
            std::printf("longrope:      rope_factors_long %s, rope_factors_short %s (%d each), original context %d, attn_factor %g; "
                        "long factors when the per-sequence context rounded up to 256 exceeds %d (default --ctx %d: %s)\n",
                        w->rope_factors_long.empty() ? "absent" : "present", w->rope_factors_short.empty() ? "absent" : "present",
                        h.n_rot / 2, h.n_ctx_orig, h.rope_attn_factor, h.n_ctx_orig, ctx_seq, which);
        } else if (h.arch == model::Arch::phi3) {
            std::printf("longrope:      none (no rope_factors_long/short): the same RoPE at every context, attn_factor %g\n",
                        h.rope_attn_factor);
        }
        std::printf("output:        %s\n", w->tied_output ? "tied to token_embd" : "output.weight");
        return 0;
    };
}

}  // namespace kvrag::cli
