// Hyperparameters and weight binding: everything read from metadata, bad files named clearly.
#include <gtest/gtest.h>

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

TEST(ModelHParams, UnsupportedArchitectureNamesItselfAndTheSupportedList) {
    gguf::GgufWriter w;
    w.set_string("general.architecture", "mamba");
    auto hp = read_hparams(*file_from(w));
    ASSERT_FALSE(hp.ok());
    EXPECT_EQ(hp.error().code, Errc::model_unsupported_arch);
    EXPECT_EQ(hp.error().message, "test.gguf: architecture 'mamba' is not supported; supported: llama, qwen2, bert, nomic-bert");
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
