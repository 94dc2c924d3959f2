// The Embedder on synthetic BERT-family models written here (no shared data needed): every
// weight type against an F32 twin holding the same dequantised weights, batch and thread
// invariance, errors for bad files and for models handed to the wrong class.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "engine/embedder.h"
#include "engine/engine.h"
#include "engine/engine_test_util.h"
#include "gguf/gguf_writer.h"
#include "kernels/quant.h"
#include "tools/synthetic_encoder.h"

namespace kvrag::engine {
namespace {

std::shared_ptr<gguf::GgufFile> open_bytes(std::vector<uint8_t> bytes, const std::string& name) {
    auto f = gguf::GgufFile::from_bytes(std::move(bytes), name);
    EXPECT_TRUE(f.ok()) << f.error().what();
    return f ? *f : nullptr;
}

Result<LoadedModel> load_file(const std::shared_ptr<gguf::GgufFile>& f) {
    auto tok = tokenizer::Tokenizer::from_gguf(*f);
    if (!tok) return tok.error();
    auto m = model::Model::from_file(f);
    if (!m) return m.error();
    return LoadedModel{std::move(*m), std::move(*tok)};
}

std::unique_ptr<Embedder> embedder_for(const std::shared_ptr<gguf::GgufFile>& f, int n_threads = 2, int32_t max_pass = 2048) {
    auto m = load_file(f);
    EXPECT_TRUE(m.ok()) << m.error().what();
    if (!m) return nullptr;
    auto e = Embedder::create(std::move(*m), EmbedderConfig{n_threads, max_pass});
    EXPECT_TRUE(e.ok()) << e.error().what();
    return e ? std::move(*e) : nullptr;
}

// A copy of f with every tensor dequantised to F32 (metadata kept), or with one tensor dropped
// or replaced by a differently shaped one, for the error tests.
std::vector<uint8_t> rewrite(const gguf::GgufFile& f, const std::string& drop = "", const std::string& reshape = "") {
    gguf::GgufWriter w;
    for (const auto& [key, value] : f.metadata()) w.copy_key(f, key);
    for (const auto& t : f.tensors()) {
        if (t.name == drop) continue;
        std::vector<int64_t> ne = t.ne;
        int64_t n = static_cast<int64_t>(t.n_elements);
        if (t.name == reshape) {
            ne[0] /= 2;
            n /= 2;
        }
        std::vector<float> vals(static_cast<size_t>(t.n_elements));
        kernels::dequantize_row(t.type, t.data, vals.data(), static_cast<int64_t>(t.n_elements));
        std::vector<uint8_t> bytes(static_cast<size_t>(n) * 4);
        std::memcpy(bytes.data(), vals.data(), bytes.size());
        auto r = w.add_tensor(t.name, GgmlType::F32, ne, std::move(bytes));
        EXPECT_TRUE(r.ok()) << r.error().what();
    }
    return w.to_bytes();
}

const std::vector<std::string> kTexts = {
    "hello world",
    "what is a panda? a bear.",
    "the cache answer is in the document, and the model is the search",
    "x",
    "Paris is the capital city of France; the question is answered.",
    "memory request token context",
    "a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a",
    "0123456789 !?",
};

struct TypeCase {
    const char* arch;
    GgmlType type;
    double min_cosine;  // against the F32 twin: only the activation rounding differs
};

// Each quantised type against an F32 model holding exactly its dequantised weights, so the
// difference is only the activations' rounding to the vec_dot type (f16, Q8_0 or Q8_K blocks)
// before each matmul: small, but not zero (which would mean the activations were not rounded
// the way the reference rounds them... or the type was silently run as F32).
class EmbedderTypes : public ::testing::TestWithParam<TypeCase> {};

TEST_P(EmbedderTypes, QuantisedWeightsAgreeWithTheirF32Twin) {
    const TypeCase c = GetParam();
    tools::SyntheticEncoderSpec s;
    s.arch = c.arch;
    s.n_embd = 256;  // K-quant blocks are 256 wide
    s.n_ff = 512;
    s.n_layer = 2;
    s.n_head = 4;
    s.weight_type = s.embd_type = c.type;
    s.rank_head = std::string(c.arch) == "bert";
    auto bytes = tools::synthetic_encoder_bytes(s);
    ASSERT_TRUE(bytes.ok()) << bytes.error().what();
    auto fq = open_bytes(std::move(*bytes), "q.gguf");
    auto f32 = open_bytes(rewrite(*fq), "f32.gguf");
    auto eq = embedder_for(fq), ef = embedder_for(f32);
    ASSERT_TRUE(eq && ef);
    EmbedOptions mean{PoolingType::mean, true};
    auto a = eq->embed(kTexts, mean), b = ef->embed(kTexts, mean);
    ASSERT_TRUE(a.ok() && b.ok());
    double worst = 1.0;
    bool any_diff = false;
    for (size_t i = 0; i < kTexts.size(); ++i) {
        worst = std::min(worst, testing::cosine(a->vectors[i], b->vectors[i]));
        any_diff = any_diff || a->vectors[i] != b->vectors[i];
    }
    EXPECT_GE(worst, c.min_cosine);
    if (c.type != GgmlType::F32) {
        EXPECT_TRUE(any_diff) << "activations were not rounded for " << ggml_type_name(c.type);
    }
    std::printf("[ types    ] %s %s: worst cosine vs F32 twin %.9f\n", c.arch, std::string(ggml_type_name(c.type)).c_str(), worst);
    if (s.rank_head) {
        auto sa = eq->rerank("what is a panda?", kTexts), sb = ef->rerank("what is a panda?", kTexts);
        ASSERT_TRUE(sa.ok() && sb.ok());
        for (size_t i = 0; i < kTexts.size(); ++i) EXPECT_NEAR(sa->scores[i], sb->scores[i], 0.02) << i;
    }
}

INSTANTIATE_TEST_SUITE_P(AllWeightTypes, EmbedderTypes,
                         ::testing::Values(TypeCase{"bert", GgmlType::F16, 0.99999}, TypeCase{"bert", GgmlType::BF16, 0.9999},
                                           TypeCase{"bert", GgmlType::Q8_0, 0.9999}, TypeCase{"bert", GgmlType::Q4_0, 0.9999},
                                           TypeCase{"bert", GgmlType::Q4_K, 0.999}, TypeCase{"bert", GgmlType::Q5_K, 0.999},
                                           TypeCase{"bert", GgmlType::Q6_K, 0.999},
                                           TypeCase{"nomic-bert", GgmlType::Q8_0, 0.9999},
                                           TypeCase{"nomic-bert", GgmlType::Q4_K, 0.999}));

// Same bits alone, in one pass of eight, in passes of any budget, on 1 or 3 threads.
TEST(Embedder, BatchAndThreadInvariance) {
    for (const char* arch : {"bert", "nomic-bert"}) {
        SCOPED_TRACE(arch);
        tools::SyntheticEncoderSpec s;
        s.arch = arch;
        s.weight_type = GgmlType::Q8_0;
        auto bytes = tools::synthetic_encoder_bytes(s);
        ASSERT_TRUE(bytes.ok());
        auto f = open_bytes(std::move(*bytes), "m.gguf");
        auto batched = embedder_for(f, 3, 4096), small = embedder_for(f, 2, 20), alone = embedder_for(f, 1, 1);
        ASSERT_TRUE(batched && small && alone);
        auto all = batched->embed(kTexts);
        auto passes = small->embed(kTexts);
        ASSERT_TRUE(all.ok() && passes.ok());
        for (size_t i = 0; i < kTexts.size(); ++i) {
            auto one = alone->embed(std::span(&kTexts[i], 1));
            ASSERT_TRUE(one.ok());
            EXPECT_EQ(one->vectors[0], all->vectors[i]) << kTexts[i];
            EXPECT_EQ(passes->vectors[i], all->vectors[i]) << kTexts[i];
            EXPECT_EQ(all->n_tokens[i], static_cast<int32_t>(alone->tokenize(kTexts[i]).size()));
        }
    }
}

TEST(Embedder, PoolingNoneGivesOneNormalisedRowPerToken) {
    auto bytes = tools::synthetic_encoder_bytes({});
    ASSERT_TRUE(bytes.ok());
    auto e = embedder_for(open_bytes(std::move(*bytes), "m.gguf"));
    ASSERT_TRUE(e);
    const std::vector<std::string> texts = {"hello world"};
    auto none = e->embed(texts, EmbedOptions{PoolingType::none, true});
    auto cls = e->embed(texts, EmbedOptions{PoolingType::cls, true});
    auto last = e->embed(texts, EmbedOptions{PoolingType::last, true});
    ASSERT_TRUE(none.ok() && cls.ok() && last.ok());
    const int32_t n = none->n_tokens[0], d = e->dim();
    ASSERT_EQ(n, 4);  // [CLS] hello world [SEP]
    ASSERT_EQ(none->vectors[0].size(), static_cast<size_t>(n * d));
    // Rows are each token's hidden state: the first is cls pooling, the last is last pooling.
    EXPECT_EQ(std::vector<float>(none->vectors[0].begin(), none->vectors[0].begin() + d), cls->vectors[0]);
    EXPECT_EQ(std::vector<float>(none->vectors[0].end() - d, none->vectors[0].end()), last->vectors[0]);
}

TEST(Embedder, MissingAndMisshapedTensorsNameTheTensorAndShapes) {
    auto bytes = tools::synthetic_encoder_bytes({});
    ASSERT_TRUE(bytes.ok());
    auto f = open_bytes(std::move(*bytes), "m.gguf");
    {
        auto m = load_file(open_bytes(rewrite(*f, "blk.1.ffn_down.weight"), "bad.gguf"));
        ASSERT_FALSE(m.ok());
        EXPECT_EQ(m.error().what(), "E7002 bad.gguf: required tensor 'blk.1.ffn_down.weight' [128, 64] is missing");
    }
    {
        auto m = load_file(open_bytes(rewrite(*f, "", "blk.0.attn_q.weight"), "bad.gguf"));
        ASSERT_FALSE(m.ok());
        EXPECT_EQ(m.error().what(), "E7003 bad.gguf: tensor 'blk.0.attn_q.weight' has shape [32, 64]; expected [64, 64]");
    }
    {
        // A bias that is present must have the right shape too.
        auto m = load_file(open_bytes(rewrite(*f, "", "blk.0.ffn_up.bias"), "bad.gguf"));
        ASSERT_FALSE(m.ok());
        EXPECT_EQ(m.error().what(), "E7003 bad.gguf: tensor 'blk.0.ffn_up.bias' has shape [64]; expected [128]");
    }
}

TEST(Embedder, RankPoolingWithoutAHeadIsABadModel) {
    gguf::GgufWriter w;
    auto bytes = tools::synthetic_encoder_bytes({});
    ASSERT_TRUE(bytes.ok());
    auto f = open_bytes(std::move(*bytes), "m.gguf");
    for (const auto& [key, value] : f->metadata()) w.copy_key(*f, key);
    w.set_u32("bert.pooling_type", 4);
    for (const auto& t : f->tensors()) ASSERT_TRUE(w.add_tensor(t.name, t.type, t.ne, std::vector<uint8_t>(t.data, t.data + t.n_bytes)).ok());
    auto m = load_file(open_bytes(w.to_bytes(), "rank.gguf"));
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.error().code, Errc::model_missing_tensor);
    EXPECT_NE(m.error().message.find("pooling_type is 4 (rank) but the classifier head tensor 'cls.output.weight' [64, 1] is missing"),
              std::string::npos)
        << m.error().message;
}

TEST(Embedder, EachModelKindIsRefusedByTheWrongClass) {
    auto bytes = tools::synthetic_encoder_bytes({});
    ASSERT_TRUE(bytes.ok());
    auto bert = load_file(open_bytes(std::move(*bytes), "bert.gguf"));
    ASSERT_TRUE(bert.ok());
    auto eng = Engine::create(std::move(*bert), EngineConfig{});
    ASSERT_FALSE(eng.ok());
    EXPECT_EQ(eng.error().code, Errc::model_unsupported_arch);
    EXPECT_NE(eng.error().message.find("architecture 'bert' is an embedding/rerank (encoder-only) model and cannot generate text"),
              std::string::npos)
        << eng.error().message;

    auto chat = testing::load_synthetic("embedder-chat");
    auto emb = Embedder::create(std::move(chat), EmbedderConfig{});
    ASSERT_FALSE(emb.ok());
    EXPECT_EQ(emb.error().code, Errc::model_unsupported_arch);
    EXPECT_NE(emb.error().message.find("architecture 'llama' is a text-generation (decoder) model"), std::string::npos)
        << emb.error().message;
}

TEST(Embedder, EmptyTokenListAndBadIdsAreRequestErrors) {
    auto bytes = tools::synthetic_encoder_bytes({});
    ASSERT_TRUE(bytes.ok());
    auto e = embedder_for(open_bytes(std::move(*bytes), "m.gguf"));
    ASSERT_TRUE(e);
    const std::vector<std::vector<int32_t>> empty = {{2, 3}, {}};
    auto r = e->embed_tokens(empty);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), "E5001 input 1 is empty (0 tokens)");
    const std::vector<std::vector<int32_t>> bad = {{2, 99999, 3}};
    auto b = e->embed_tokens(bad);
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.error().code, Errc::tokenizer_bad_token);
}

}  // namespace
}  // namespace kvrag::engine
