// Hyperparameters and weight binding: everything read from metadata, bad files named clearly.
#include <gtest/gtest.h>

#include <cmath>

#include "gguf/gguf_writer.h"
#include "model/hparams.h"
#include "model/model.h"
#include "tools/synthetic.h"

namespace kvrag::model {
namespace {

using tools::SyntheticSpec;
using tools::synthetic_model_bytes;

std::shared_ptr<gguf::GgufFile> file_from(const gguf::GgufWriter& w) {
    auto f = gguf::GgufFile::from_bytes(w.to_bytes(), "test.gguf");
    EXPECT_TRUE(f.ok()) << f.error().what();
    return *f;
}

gguf::GgufWriter llama_meta() {
    gguf::GgufWriter w;
    w.set_string("general.architecture", "llama");
    w.set_u32("llama.context_length", 4096);
    w.set_u32("llama.embedding_length", 64);
    w.set_u32("llama.block_count", 2);
    w.set_u32("llama.feed_forward_length", 128);
    w.set_u32("llama.attention.head_count", 8);
    w.set_u32("llama.attention.head_count_kv", 2);
    w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
    w.set_f32("llama.rope.freq_base", 500000.0f);
    return w;
}

TEST(ModelHParams, ReadsEveryValueFromMetadata) {
    auto w = llama_meta();
    w.set_string("llama.rope.scaling.type", "linear");
    w.set_f32("llama.rope.scaling.factor", 4.0f);
    auto hp = read_hparams(*file_from(w));
    ASSERT_TRUE(hp.ok()) << hp.error().what();
    EXPECT_EQ(hp->n_ctx_train, 4096);
    EXPECT_EQ(hp->n_head, 8);
    EXPECT_EQ(hp->n_head_kv, 2);
    EXPECT_EQ(hp->head_dim, 8);
    EXPECT_EQ(hp->n_rot, 8);
    EXPECT_FLOAT_EQ(hp->rope_freq_base, 500000.0f);
    EXPECT_FLOAT_EQ(hp->rope_freq_scale, 0.25f);
    EXPECT_FLOAT_EQ(hp->rms_eps, 1e-6f);
    EXPECT_FALSE(hp->rope_neox);
    EXPECT_EQ(hp->n_embd_kv(), 16);
}

// gemma3's layer types follow the reference engine: local when il % P < P - 1; P from
// attention.sliding_window_pattern, 6 when absent (converted Gemma 3 files have no key) or when
// the key is an array; no window (or 0) makes every layer global.
TEST(ModelHParams, Gemma3SlidingWindowPatternAndBases) {
    auto gemma = [](int32_t n_layer) {
        gguf::GgufWriter w;
        w.set_string("general.architecture", "gemma3");
        w.set_u32("gemma3.context_length", 4096);
        w.set_u32("gemma3.embedding_length", 64);
        w.set_u32("gemma3.block_count", static_cast<uint32_t>(n_layer));
        w.set_u32("gemma3.feed_forward_length", 128);
        w.set_u32("gemma3.attention.head_count", 4);
        w.set_u32("gemma3.attention.head_count_kv", 1);
        w.set_u32("gemma3.attention.key_length", 32);
        w.set_u32("gemma3.attention.value_length", 32);
        w.set_f32("gemma3.rope.freq_base", 1e6f);
        return w;
    };
    auto w = gemma(8);
    w.set_u32("gemma3.attention.sliding_window", 512);
    w.set_f32("gemma3.rope.freq_base_swa", 20000.0f);
    auto hp = read_hparams(*file_from(w));
    ASSERT_TRUE(hp.ok()) << hp.error().what();
    EXPECT_TRUE(hp->qk_norm);
    EXPECT_TRUE(hp->rope_neox);
    EXPECT_EQ(hp->n_swa, 512);
    EXPECT_EQ(hp->swa_pattern, 6);  // absent: the reference's default
    for (int il = 0; il < 8; ++il) EXPECT_EQ(hp->is_swa(il), il != 5) << il;
    EXPECT_FLOAT_EQ(hp->rope_base(0), 20000.0f);
    EXPECT_FLOAT_EQ(hp->rope_base(5), 1e6f);
    EXPECT_FLOAT_EQ(hp->q_prescale, 1.0f / std::sqrt(32.0f));  // 1/sqrt(head_dim), not dim/heads

    auto wp = gemma(4);
    wp.set_u32("gemma3.attention.sliding_window", 32);
    wp.set_u32("gemma3.attention.sliding_window_pattern", 4);
    hp = read_hparams(*file_from(wp));
    ASSERT_TRUE(hp.ok()) << hp.error().what();
    EXPECT_EQ(hp->swa_pattern, 4);
    EXPECT_FLOAT_EQ(hp->rope_freq_base_swa, 10000.0f);  // absent: 10000
    for (int il = 0; il < 4; ++il) EXPECT_EQ(hp->is_swa(il), il < 3) << il;

    auto wa = gemma(4);
    wa.set_u32("gemma3.attention.sliding_window", 32);
    wa.set_i32_array("gemma3.attention.sliding_window_pattern", {1, 1, 1, 0});
    hp = read_hparams(*file_from(wa));
    ASSERT_TRUE(hp.ok()) << hp.error().what();
    EXPECT_EQ(hp->swa_pattern, 6);  // an array value is ignored, as the reference does

    hp = read_hparams(*file_from(gemma(4)));  // no window key: every layer global
    ASSERT_TRUE(hp.ok()) << hp.error().what();
    EXPECT_FALSE(hp->has_swa());
    for (int il = 0; il < 4; ++il) EXPECT_FALSE(hp->is_swa(il));
}

TEST(ModelHParams, UnsupportedArchitectureNamesItselfAndTheSupportedList) {
    gguf::GgufWriter w;
    w.set_string("general.architecture", "mamba");
    auto hp = read_hparams(*file_from(w));
    ASSERT_FALSE(hp.ok());
    EXPECT_EQ(hp.error().code, Errc::model_unsupported_arch);
    EXPECT_EQ(hp.error().message, "test.gguf: architecture 'mamba' is not supported; supported: llama, qwen2, qwen3, gemma3, phi3, bert, nomic-bert");
}

TEST(ModelHParams, BadValuesNameKeyAndNumbers) {
    {
        auto w = llama_meta();
        w.set_u32("llama.attention.head_count_kv", 3);
        auto hp = read_hparams(*file_from(w));
        ASSERT_FALSE(hp.ok());
        EXPECT_NE(hp.error().message.find("head_count_kv 3 must be >= 1 and divide head_count 8"), std::string::npos) << hp.error().what();
    }
    {
        gguf::GgufWriter w;
        w.set_string("general.architecture", "qwen2");
        auto hp = read_hparams(*file_from(w));
        ASSERT_FALSE(hp.ok());
        EXPECT_EQ(hp.error().code, Errc::gguf_missing_key);
        EXPECT_NE(hp.error().message.find("qwen2.embedding_length"), std::string::npos) << hp.error().what();
    }
    {
        auto w = llama_meta();
        w.set_string("llama.rope.scaling.type", "yarn");
        auto hp = read_hparams(*file_from(w));
        ASSERT_FALSE(hp.ok());
        EXPECT_NE(hp.error().message.find("'yarn' is not supported"), std::string::npos) << hp.error().what();
    }
    {
        auto w = llama_meta();
        w.set_string("llama.block_count", "two");
        auto hp = read_hparams(*file_from(w));
        ASSERT_FALSE(hp.ok());
        EXPECT_EQ(hp.error().code, Errc::gguf_wrong_key_type);
    }
}

TEST(ModelWeights, MissingOrMisshapenTensorsAreNamed) {
    SyntheticSpec s;
    s.n_ff = 128;
    auto bytes = synthetic_model_bytes(s);
    ASSERT_TRUE(bytes.ok());
    auto f = gguf::GgufFile::from_bytes(*bytes, "m.gguf").value();
    auto hp = read_hparams(*f).value();
    hp.n_ff = 100;  // what a file with inconsistent metadata would say
    auto w = bind_weights(*f, hp);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.error().message, "m.gguf: tensor 'blk.0.ffn_gate.weight' has shape [64, 128]; expected [64, 100]");
    // Tied embeddings: no output.weight means the output head is token_embd.
    s.tied_output = true;
    auto tied = Model::from_file(gguf::GgufFile::from_bytes(*synthetic_model_bytes(s), "t.gguf").value());
    ASSERT_TRUE(tied.ok()) << tied.error().what();
    EXPECT_TRUE((*tied)->weights().tied_output);
    EXPECT_EQ((*tied)->weights().output.data, (*tied)->weights().tok_embd.data);
}

}  // namespace
}  // namespace kvrag::model
