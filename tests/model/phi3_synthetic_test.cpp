// phi3 from the synthetic writer (make-model --arch phi3), without ../shared:
//   - the fused attn_qkv / ffn_up are the separate matrices stacked (Q, K, V; gate, up), and a
//     model built from their split rows gives the same logits, so the loader splits them the
//     way the writer (and the reference engine) stacks them;
//   - LongRoPE: factors of 1 with attn_factor 1 change nothing; real factors are chosen by the
//     per-sequence context (short up to the original context, long above it, after rounding the
//     context up to 256 as the reference engine does) and change the logits.
// tests/model/reference_forward_test.cpp checks phi3's logits against the independent numpy
// reference; tests/engine/phi3_engine_test.cpp runs greedy generation through the engine.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf_writer.h"
#include "kvcache/kv_store.h"
#include "model/forward.h"
#include "model/model.h"
#include "tools/synthetic.h"

namespace kvrag::model {
namespace {

using tools::SyntheticSpec;

// head dim 16: the phi3 forward multiplies Q by 1/sqrt(16) = 0.25 before Q.K, the others scale
// the products by it; a power of two makes the two orders give the same bits, so models that
// should agree are compared exactly.
SyntheticSpec phi3_spec(GgmlType type) {
    SyntheticSpec s;
    s.arch = "phi3";
    s.n_embd = 64;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_layer = 2;
    s.n_ff = 96;
    s.n_ctx_train = 4096;
    s.n_rot = 12;  // partial rotary, as Phi-4-mini
    s.weight_type = s.embd_type = s.output_type = type;
    s.seed = 11;
    return s;
}

std::shared_ptr<Model> phi3_load_bytes(Result<std::vector<uint8_t>> bytes) {
    EXPECT_TRUE(bytes.ok()) << bytes.error().what();
    if (!bytes) return nullptr;
    auto f = gguf::GgufFile::from_bytes(std::move(*bytes));
    EXPECT_TRUE(f.ok()) << f.error().what();
    if (!f) return nullptr;
    auto m = Model::from_file(*f);
    EXPECT_TRUE(m.ok()) << m.error().what();
    return m ? *m : nullptr;
}

std::shared_ptr<Model> phi3_load_spec(const SyntheticSpec& s) { return phi3_load_bytes(tools::synthetic_model_bytes(s)); }

const std::vector<int32_t> kPhi3Prompt = {1, 17, 260, 301, 5, 99, 412, 33, 7, 250, 128, 64};

// Logits (n, n_vocab) of every position of kPhi3Prompt, one prefill batch, F32 KV cache (it adds no
// rounding); n_ctx_seq selects LongRoPE's factor set (0: the trained context).
std::vector<float> phi3_prompt_logits(const Model& m, int32_t n_ctx_seq = 0) {
    const int n = static_cast<int>(kPhi3Prompt.size());
    auto geo = kvcache::make_geometry(m.hparams(), GgmlType::F32);
    EXPECT_TRUE(geo.ok()) << geo.error().what();
    if (!geo) return {};
    kvcache::KvStore kv(*geo, n);
    ThreadPool pool(2);
    ForwardPass fwd(m.hparams(), m.weights(), n_ctx_seq);
    std::vector<int32_t> cells(n);
    std::vector<BatchToken> batch(n);
    for (int i = 0; i < n; ++i) {
        cells[i] = i;
        batch[i].token = kPhi3Prompt[i];
        batch[i].pos = i;
        batch[i].cell = i;
        batch[i].visible = cells.data();
        batch[i].n_visible = i + 1;
        batch[i].want_logits = true;
    }
    std::vector<float> out;
    auto r = fwd.run(batch, kv, pool, out);
    EXPECT_TRUE(r.ok()) << r.error().what();
    return out;
}

double phi3_max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    double d = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::abs(static_cast<double>(a[i]) - b[i]));
    return d;
}

std::vector<uint8_t> phi3_tensor_bytes(const gguf::TensorInfo& t, int64_t row0, int64_t n_rows) {
    const size_t rb = ggml_row_size(t.type, t.ne[0]);
    return std::vector<uint8_t>(t.data + row0 * rb, t.data + (row0 + n_rows) * rb);
}

// The phi3 model's weights as a qwen2 file: attn_qkv split into attn_q/k/v by rows (Q, K, V),
// ffn_up into ffn_gate and ffn_up (gate rows first), q/k/v biases of zero (qwen2 needs them;
// adding 0 changes no bit). qwen2 is the architecture with the same NEOX RoPE and nothing else.
// swap_gate_up: the halves of ffn_up the wrong way round (a split the test must tell apart).
std::vector<uint8_t> phi3_as_qwen2(const gguf::GgufFile& f, const SyntheticSpec& s, bool swap_gate_up = false) {
    gguf::GgufWriter w;
    w.set_string("general.architecture", "qwen2");
    w.set_string("general.name", "phi3-split");
    w.set_u32("qwen2.context_length", s.n_ctx_train);
    w.set_u32("qwen2.embedding_length", s.n_embd);
    w.set_u32("qwen2.block_count", s.n_layer);
    w.set_u32("qwen2.feed_forward_length", s.n_ff);
    w.set_u32("qwen2.attention.head_count", s.n_head);
    w.set_u32("qwen2.attention.head_count_kv", s.n_head_kv);
    w.set_u32("qwen2.rope.dimension_count", s.n_rot);
    w.set_f32("qwen2.rope.freq_base", s.rope_freq_base);
    w.set_f32("qwen2.attention.layer_norm_rms_epsilon", s.rms_eps);
    w.copy_keys_with_prefix(f, "tokenizer.");
    const int64_t hd = s.n_embd / s.n_head, n_q = s.n_embd, n_kv = hd * s.n_head_kv;
    auto copy = [&](const std::string& from, const std::string& to, int64_t row0, int64_t n_rows) {
        const gguf::TensorInfo* t = f.find_tensor(from);
        ASSERT_NE(t, nullptr) << from;
        std::vector<int64_t> ne = t->ne;
        if (ne.size() == 2) ne[1] = n_rows;
        auto r = w.add_tensor(to, t->type, ne, phi3_tensor_bytes(*t, row0, n_rows));
        ASSERT_TRUE(r.ok()) << r.error().what();
    };
    auto zeros = [&](const std::string& name, int64_t n) {
        auto r = w.add_tensor(name, GgmlType::F32, {n}, std::vector<uint8_t>(static_cast<size_t>(n) * 4, 0));
        ASSERT_TRUE(r.ok()) << r.error().what();
    };
    for (const auto& t : f.tensors()) {
        if (t.name.find("attn_qkv") != std::string::npos || t.name.find("ffn_up") != std::string::npos) continue;
        copy(t.name, t.name, 0, t.ne.size() == 2 ? t.ne[1] : 1);
    }
    for (int il = 0; il < s.n_layer; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        copy(p + "attn_qkv.weight", p + "attn_q.weight", 0, n_q);
        copy(p + "attn_qkv.weight", p + "attn_k.weight", n_q, n_kv);
        copy(p + "attn_qkv.weight", p + "attn_v.weight", n_q + n_kv, n_kv);
        copy(p + "ffn_up.weight", p + "ffn_gate.weight", swap_gate_up ? s.n_ff : 0, s.n_ff);
        copy(p + "ffn_up.weight", p + "ffn_up.weight", swap_gate_up ? 0 : s.n_ff, s.n_ff);
        zeros(p + "attn_q.bias", n_q);
        zeros(p + "attn_k.bias", n_kv);
        zeros(p + "attn_v.bias", n_kv);
    }
    return w.to_bytes();
}

// The writer stacks the rows the llama spec of the same seed draws for q, k, v and gate, up.
TEST(Phi3Synthetic, FusedMatricesAreTheSeparateOnesStacked) {
    SyntheticSpec s = phi3_spec(GgmlType::Q8_0);
    auto phi3 = tools::synthetic_model_bytes(s);
    s.arch = "llama";
    auto llama = tools::synthetic_model_bytes(s);
    ASSERT_TRUE(phi3.ok() && llama.ok());
    auto fp = gguf::GgufFile::from_bytes(std::move(*phi3));
    auto fl = gguf::GgufFile::from_bytes(std::move(*llama));
    ASSERT_TRUE(fp.ok() && fl.ok());
    auto bytes_of = [](const gguf::GgufFile& f, const std::string& name) {
        const gguf::TensorInfo* t = f.find_tensor(name);
        EXPECT_NE(t, nullptr) << name;
        return t ? std::vector<uint8_t>(t->data, t->data + t->n_bytes) : std::vector<uint8_t>{};
    };
    auto cat = [&](std::initializer_list<const char*> names, const std::string& p) {
        std::vector<uint8_t> out;
        for (const char* n : names) {
            const auto b = bytes_of(**fl, p + n);
            out.insert(out.end(), b.begin(), b.end());
        }
        return out;
    };
    for (int il = 0; il < s.n_layer; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        EXPECT_EQ(bytes_of(**fp, p + "attn_qkv.weight"), cat({"attn_q.weight", "attn_k.weight", "attn_v.weight"}, p)) << il;
        EXPECT_EQ(bytes_of(**fp, p + "ffn_up.weight"), cat({"ffn_gate.weight", "ffn_up.weight"}, p)) << il;
        EXPECT_EQ(bytes_of(**fp, p + "ffn_down.weight"), bytes_of(**fl, p + "ffn_down.weight")) << il;
        EXPECT_EQ((*fp)->find_tensor(p + "attn_q.weight"), nullptr);
        EXPECT_EQ((*fp)->find_tensor(p + "ffn_gate.weight"), nullptr);
    }
    EXPECT_EQ((*fp)->get_int("phi3.rope.dimension_count")->value_or(0), 12);
    EXPECT_EQ((*fp)->find_tensor("rope_factors_long.weight"), nullptr);  // no --longrope
}

// Both weight types: rows of a quantised fused matrix are quantised one by one, so a row range
// is the separate matrix.
TEST(Phi3Synthetic, FusedSplitGivesTheLogitsOfTheSeparateMatrices) {
    for (GgmlType type : {GgmlType::F32, GgmlType::Q8_0}) {
        SCOPED_TRACE(ggml_type_name(type));
        const SyntheticSpec s = phi3_spec(type);
        auto phi3 = phi3_load_spec(s);
        ASSERT_TRUE(phi3);
        ASSERT_EQ(phi3->hparams().arch, Arch::phi3);
        auto split = phi3_load_bytes(phi3_as_qwen2(phi3->file(), s));
        ASSERT_TRUE(split);
        const auto a = phi3_prompt_logits(*phi3), b = phi3_prompt_logits(*split);
        ASSERT_EQ(a.size(), kPhi3Prompt.size() * static_cast<size_t>(phi3->hparams().n_vocab));
        EXPECT_EQ(phi3_max_abs_diff(a, b), 0.0);
        // The comparison can tell: swapping gate and up (a wrong split) moves the logits.
        auto swapped = phi3_load_bytes(phi3_as_qwen2(phi3->file(), s, /*swap_gate_up=*/true));
        ASSERT_TRUE(swapped);
        EXPECT_GT(phi3_max_abs_diff(a, phi3_prompt_logits(*swapped)), 1e-2);
    }
}

// Factors of 1 divide nothing and attn_factor 1 scales nothing: the plain model's logits, bit for
// bit, at both sets (the factors are drawn after every other tensor, so the weights agree).
TEST(Phi3LongRope, FactorsOfOneGiveThePlainModel) {
    const SyntheticSpec plain_spec = phi3_spec(GgmlType::F32);
    SyntheticSpec ones_spec = plain_spec;
    ones_spec.longrope = true;
    ones_spec.n_ctx_orig = 1024;
    ones_spec.rope_attn_factor = 1.0f;
    ones_spec.rope_factors_long.assign(6, 1.0f);
    ones_spec.rope_factors_short.assign(6, 1.0f);
    auto plain = phi3_load_spec(plain_spec), ones = phi3_load_spec(ones_spec);
    ASSERT_TRUE(plain && ones);
    ASSERT_EQ(ones->weights().rope_factors_long.size(), 6u);  // bound, not ignored
    EXPECT_EQ(ones->hparams().n_ctx_orig, 1024);
    const auto want = phi3_prompt_logits(*plain);
    EXPECT_EQ(phi3_max_abs_diff(want, phi3_prompt_logits(*ones, 4096)), 0.0);
    EXPECT_EQ(phi3_max_abs_diff(want, phi3_prompt_logits(*ones, 512)), 0.0);
}

// The reference engine's rule: the long set when the per-sequence context rounded up to a
// multiple of 256 exceeds the original context, else the short set. Original context 1000
// (not a multiple of 256): 768 takes the short set, 1000 (-> 1024) already the long one.
TEST(Phi3LongRope, TheContextSelectsTheFactorSet) {
    SyntheticSpec spec = phi3_spec(GgmlType::F32);
    spec.longrope = true;
    spec.n_ctx_orig = 1000;
    auto model = phi3_load_spec(spec);  // random long and short sets
    ASSERT_TRUE(model);
    const ModelWeights& w = model->weights();
    ASSERT_EQ(w.rope_factors_long.size(), 6u);
    ASSERT_EQ(w.rope_factors_short.size(), 6u);
    EXPECT_NE(w.rope_factors_long, w.rope_factors_short);
    // attn_factor as convert_hf_to_gguf.py computes it: sqrt(1 + ln(4096 / 1000) / ln(1000)).
    EXPECT_FLOAT_EQ(model->hparams().rope_attn_factor, static_cast<float>(std::sqrt(1.0 + std::log(4.096) / std::log(1000.0))));

    // Models whose two sets are both the long (or both the short) set of `model`.
    SyntheticSpec long_spec = spec, short_spec = spec;
    long_spec.rope_factors_long = long_spec.rope_factors_short = w.rope_factors_long;
    short_spec.rope_factors_long = short_spec.rope_factors_short = w.rope_factors_short;
    auto all_long = phi3_load_spec(long_spec), all_short = phi3_load_spec(short_spec);
    ASSERT_TRUE(all_long && all_short);
    const auto want_long = phi3_prompt_logits(*all_long), want_short = phi3_prompt_logits(*all_short);

    EXPECT_EQ(phi3_max_abs_diff(phi3_prompt_logits(*model, 768), want_short), 0.0);
    EXPECT_EQ(phi3_max_abs_diff(phi3_prompt_logits(*model, 1000), want_long), 0.0);
    EXPECT_EQ(phi3_max_abs_diff(phi3_prompt_logits(*model, 4096), want_long), 0.0);
    // The sets matter: each differs from the other and from no factors at all.
    EXPECT_GT(phi3_max_abs_diff(want_long, want_short), 1e-2);
    spec.longrope = false;
    spec.n_ctx_orig = 0;
    auto plain = phi3_load_spec(spec);
    ASSERT_TRUE(plain);
    EXPECT_GT(phi3_max_abs_diff(phi3_prompt_logits(*plain), want_short), 1e-2);
}

// A copy of a phi3 file without one metadata key and one tensor ("" for none), and with the
// original context set to orig_ctx when it is >= 0.
std::vector<uint8_t> phi3_edited(const gguf::GgufFile& f, const std::string& drop_key, const std::string& drop_tensor, int64_t orig_ctx = -1) {
    gguf::GgufWriter w;
    for (const auto& [key, value] : f.metadata()) {
        if (key != drop_key) w.copy_key(f, key);
    }
    if (orig_ctx >= 0) w.set_u32("phi3.rope.scaling.original_context_length", static_cast<uint32_t>(orig_ctx));
    for (const auto& t : f.tensors()) {
        if (t.name == drop_tensor) continue;
        auto r = w.add_tensor(t.name, t.type, t.ne, phi3_tensor_bytes(t, 0, t.ne.size() == 2 ? t.ne[1] : 1));
        EXPECT_TRUE(r.ok()) << r.error().what();
    }
    return w.to_bytes();
}

// Files the reference engine loads although a converter would write more: no original context
// (the trained context stands in), an original context of 0 (the long set always applies), one
// factor set only (the other context range runs plain RoPE).
TEST(Phi3LongRope, MissingKeysAndSetsAreReadAsTheReferenceReadsThem) {
    const SyntheticSpec plain_spec = phi3_spec(GgmlType::F32);
    SyntheticSpec spec = plain_spec;
    spec.longrope = true;
    spec.n_ctx_orig = 1000;
    spec.rope_attn_factor = 1.0f;  // so that plain RoPE is the plain model's
    auto model = phi3_load_spec(spec), plain = phi3_load_spec(plain_spec);
    ASSERT_TRUE(model && plain);
    const auto want_short = phi3_prompt_logits(*model, 768), want_long = phi3_prompt_logits(*model, 4096);
    ASSERT_GT(phi3_max_abs_diff(want_long, want_short), 1e-2);
    const int32_t n_train = model->hparams().n_ctx_train;

    auto no_key = phi3_load_bytes(phi3_edited(model->file(), "phi3.rope.scaling.original_context_length", ""));
    ASSERT_TRUE(no_key);
    EXPECT_EQ(no_key->hparams().n_ctx_orig, n_train);
    EXPECT_EQ(phi3_max_abs_diff(phi3_prompt_logits(*no_key, n_train), want_short), 0.0);
    EXPECT_EQ(phi3_max_abs_diff(phi3_prompt_logits(*no_key, n_train + 1), want_long), 0.0);

    auto zero = phi3_load_bytes(phi3_edited(model->file(), "phi3.rope.scaling.original_context_length", "", 0));
    ASSERT_TRUE(zero);
    EXPECT_EQ(zero->hparams().n_ctx_orig, 0);
    EXPECT_EQ(phi3_max_abs_diff(phi3_prompt_logits(*zero, 256), want_long), 0.0);

    auto long_only = phi3_load_bytes(phi3_edited(model->file(), "", "rope_factors_short.weight"));
    ASSERT_TRUE(long_only);
    EXPECT_TRUE(long_only->weights().rope_factors_short.empty());
    EXPECT_EQ(phi3_max_abs_diff(phi3_prompt_logits(*long_only, 4096), want_long), 0.0);
    EXPECT_EQ(phi3_max_abs_diff(phi3_prompt_logits(*long_only, 768), phi3_prompt_logits(*plain)), 0.0);
}

TEST(Phi3Synthetic, BadSpecsAreRefusedWithTheNumbers) {
    SyntheticSpec s = phi3_spec(GgmlType::F32);
    s.longrope = true;
    s.rope_factors_long.assign(5, 1.0f);
    auto r = tools::synthetic_model_bytes(s);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(std::string(r.error().what()).find("5 rope factors given, need n_rot / 2 = 6"), std::string::npos) << r.error().what();

    s = phi3_spec(GgmlType::F32);
    s.longrope = true;
    s.n_ctx_orig = 8192;
    r = tools::synthetic_model_bytes(s);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(std::string(r.error().what()).find("original context 8192 must be in 1..4096"), std::string::npos) << r.error().what();

    s = phi3_spec(GgmlType::F32);
    s.arch = "llama";
    s.longrope = true;
    r = tools::synthetic_model_bytes(s);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(std::string(r.error().what()).find("for arch phi3 only"), std::string::npos) << r.error().what();

    s = phi3_spec(GgmlType::F32);
    s.n_ctx_orig = 1024;  // without longrope: not silently dropped
    r = tools::synthetic_model_bytes(s);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(std::string(r.error().what()).find("without longrope"), std::string::npos) << r.error().what();

    s = phi3_spec(GgmlType::F32);
    s.n_rot = 7;
    r = tools::synthetic_model_bytes(s);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(std::string(r.error().what()).find("rope dims 7 must be even and in 2..16"), std::string::npos) << r.error().what();
}

}  // namespace
}  // namespace kvrag::model
