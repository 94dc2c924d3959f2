// The Embedder against the reference engine's outputs for the shared BERT-family models
// (../shared/data/oracle/bert-embeddings.json, made by llama.cpp; the README beside it lists
// the conventions). Case by case: tokens exactly, embeddings within 2e-4 per component (both
// the L2-normalised and the raw pooled vector), rerank scores within 5e-4, for both pair
// layouts. F16 copies of the same models, written here, stay within 3e-3 of the F32 oracle;
// Q8_0 copies are held to the same weights in F32 (see below), and to llama.cpp's own outputs
// on Q8_0 files in embedder_reference_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "engine/embedder.h"
#include "engine/engine_test_util.h"
#include "gguf/gguf_writer.h"
#include "kernels/fp16.h"
#include "kernels/quant.h"
#include "test_paths.h"

namespace kvrag::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json load_oracle(const std::string& dir) {
    std::ifstream in(dir + "/oracle/bert-embeddings.json");
    return json::parse(in);
}

std::unique_ptr<Embedder> make_embedder(const std::string& path, int n_threads = 2, int32_t max_pass = 2048) {
    auto m = LoadedModel::load(path);
    EXPECT_TRUE(m.ok()) << m.error().what();
    if (!m) return nullptr;
    EmbedderConfig cfg;
    cfg.n_threads = n_threads;
    cfg.max_pass_tokens = max_pass;
    auto e = Embedder::create(std::move(*m), cfg);
    EXPECT_TRUE(e.ok()) << e.error().what();
    return e ? std::move(*e) : nullptr;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float m = 0.0f;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

struct MaxDiffs {
    float embedding = 0.0f, raw = 0.0f, score = 0.0f, score_cli = 0.0f;
};

// Runs every case of one model file against the oracle: all its texts in one embed() call (so
// the batching path is what is checked), then every rerank pair in one rerank() call per layout.
MaxDiffs check_model(Embedder& e, const json& cases, float tol_embd, float tol_score, bool check_tokens,
                     bool assert_within = true) {
    MaxDiffs md;
    std::vector<std::string> texts;
    std::vector<const json*> text_cases;
    std::string pooling;
    for (const auto& c : cases) {
        if (!c.contains("text")) continue;
        texts.push_back(c["text"].get<std::string>());
        text_cases.push_back(&c);
        pooling = c["pooling"].get<std::string>();
        if (check_tokens) {
            EXPECT_EQ(e.tokenize(texts.back()), c["tokens"].get<std::vector<int32_t>>()) << texts.back();
        }
    }
    auto pool = model::parse_pooling_type(pooling);
    EXPECT_TRUE(pool.ok());
    EmbedOptions norm{*pool, true}, raw{*pool, false};
    auto got = e.embed(texts, norm);
    auto got_raw = e.embed(texts, raw);
    EXPECT_TRUE(got.ok()) << got.error().what();
    EXPECT_TRUE(got_raw.ok()) << got_raw.error().what();
    if (!got || !got_raw) return md;
    for (size_t i = 0; i < texts.size(); ++i) {
        const json& c = *text_cases[i];
        const float d = max_abs_diff(got->vectors[i], c["embedding"].get<std::vector<float>>());
        const float dr = max_abs_diff(got_raw->vectors[i], c["embedding_raw"].get<std::vector<float>>());
        if (assert_within) {
            EXPECT_LE(d, tol_embd) << "embedding of: " << texts[i];
            EXPECT_LE(dr, tol_embd) << "embedding_raw of: " << texts[i];
        }
        EXPECT_EQ(got->n_tokens[i], static_cast<int32_t>(c["tokens"].size()));
        md.embedding = std::max(md.embedding, d);
        md.raw = std::max(md.raw, dr);
    }

    // Rerank pairs: group by query, one call per query (the documents of a call are batched).
    for (const auto& c : cases) {
        if (!c.contains("query")) continue;
        const std::string q = c["query"].get<std::string>();
        const std::vector<std::string> docs = {c["document"].get<std::string>()};
        if (check_tokens) {
            EXPECT_EQ(e.tokenize_pair(q, docs[0], PairLayout::server), c["tokens"].get<std::vector<int32_t>>()) << q;
            EXPECT_EQ(e.tokenize_pair(q, docs[0], PairLayout::hf), c["tokens_cli"].get<std::vector<int32_t>>()) << q;
        }
        auto s = e.rerank(q, docs, PairLayout::server);
        auto s_cli = e.rerank(q, docs, PairLayout::hf);
        EXPECT_TRUE(s.ok()) << s.error().what();
        EXPECT_TRUE(s_cli.ok()) << s_cli.error().what();
        if (!s || !s_cli) continue;
        const float d = std::fabs(s->scores[0] - c["score"].get<float>());
        const float dc = std::fabs(s_cli->scores[0] - c["score_cli"].get<float>());
        if (assert_within) {
            EXPECT_LE(d, tol_score) << q << " / " << docs[0];
            EXPECT_LE(dc, tol_score) << q << " / " << docs[0] << " (hf layout)";
        }
        EXPECT_EQ(s->n_tokens[0], static_cast<int32_t>(c["tokens"].size()));
        md.score = std::max(md.score, d);
        md.score_cli = std::max(md.score_cli, dc);
    }
    return md;
}

void report(const std::string& model, const MaxDiffs& md) {
    std::printf("[ oracle   ] %s: max |diff| embedding %.3g, embedding_raw %.3g, score %.3g, score_cli %.3g\n", model.c_str(),
                md.embedding, md.raw, md.score, md.score_cli);
}

constexpr const char* kModels[] = {"synth-bert-f32.gguf", "synth-nomic-bert-f32.gguf", "synth-bert-rerank-f32.gguf"};

TEST(EmbedderOracle, F32ModelsMatchTheReferenceCaseByCase) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const json oracle = load_oracle(dir);
    for (const char* name : kModels) {
        SCOPED_TRACE(name);
        ASSERT_TRUE(oracle.contains(name));
        auto e = make_embedder(dir + "/models/" + name);
        ASSERT_TRUE(e);
        const MaxDiffs md = check_model(*e, oracle[name], 2e-4f, 5e-4f, true);
        report(name, md);
    }
}

TEST(EmbedderOracle, KindDimAndLimitsComeFromTheMetadata) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    auto e = make_embedder(dir + "/models/synth-bert-f32.gguf");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->kind(), EmbedderKind::embedding);
    EXPECT_EQ(e->dim(), 64);
    EXPECT_EQ(e->max_tokens(), 512);
    EXPECT_EQ(e->default_pooling(), PoolingType::mean);
    auto r = make_embedder(dir + "/models/synth-bert-rerank-f32.gguf");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->kind(), EmbedderKind::reranker);
    EXPECT_EQ(r->default_pooling(), PoolingType::rank);
    // An embedding model has no head to rerank with: a clear request error, not a crash.
    const std::vector<std::string> docs = {"a"};
    auto s = e->rerank("q", docs);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, Errc::request_invalid);
    EXPECT_NE(s.error().message.find("without a classifier head"), std::string::npos) << s.error().message;
}

// Every 2-D weight matrix converted to `type` (the tables the reference keeps in F32 stay F32:
// token_types, position_embd, norms and biases), metadata copied. With dequantized, the
// converted matrices are widened back to F32: a model with the same rounded weights whose
// matmuls do not round their inputs.
void write_converted(const std::string& src, const std::string& dst, GgmlType type, bool dequantized = false) {
    auto f = gguf::GgufFile::open(src);
    ASSERT_TRUE(f.ok()) << f.error().what();
    gguf::GgufWriter w;
    for (const auto& [key, value] : (*f)->metadata()) w.copy_key(**f, key);
    for (const auto& t : (*f)->tensors()) {
        ASSERT_EQ(t.type, GgmlType::F32) << t.name;
        const bool convert = t.ne.size() == 2 && t.name != "token_types.weight" && t.name != "position_embd.weight" &&
                             t.ne[0] % ggml_type_traits(type).block_size == 0;
        const float* src_f = reinterpret_cast<const float*>(t.data);
        if (!convert) {
            ASSERT_TRUE(w.add_tensor(t.name, t.type, t.ne, std::vector<uint8_t>(t.data, t.data + t.n_bytes)).ok());
            continue;
        }
        const int64_t n_cols = t.ne[0], n_rows = t.ne[1];
        const size_t row_bytes = ggml_row_size(type, n_cols);
        std::vector<uint8_t> data(row_bytes * n_rows);
        for (int64_t r = 0; r < n_rows; ++r) kernels::quantize_row(type, src_f + r * n_cols, data.data() + r * row_bytes, n_cols);
        if (dequantized) {  // the F32 twin: the same rounded weights, computed in F32
            std::vector<uint8_t> f(static_cast<size_t>(n_cols * n_rows) * 4);
            for (int64_t r = 0; r < n_rows; ++r) {
                kernels::dequantize_row(type, data.data() + r * row_bytes, reinterpret_cast<float*>(f.data()) + r * n_cols, n_cols);
            }
            ASSERT_TRUE(w.add_tensor(t.name, GgmlType::F32, t.ne, std::move(f)).ok());
            continue;
        }
        ASSERT_TRUE(w.add_tensor(t.name, type, t.ne, std::move(data)).ok());
    }
    auto r = w.write(dst);
    ASSERT_TRUE(r.ok()) << r.error().what();
}

// The same texts and pairs through two embedders: the largest differences (normalised, raw,
// score) and the smallest cosine between their embeddings, asserted at least min_cosine.
struct Comparison {
    MaxDiffs max;
    double min_cosine = 1.0;
};

Comparison compare_embedders(Embedder& a, Embedder& b, const json& cases, double min_cosine) {
    Comparison cmp;
    std::vector<std::string> texts;
    for (const auto& c : cases) {
        if (c.contains("text")) texts.push_back(c["text"].get<std::string>());
    }
    for (bool normalize : {true, false}) {
        // The reranker's text cases use cls pooling (its own pooling is rank).
        const EmbedOptions o{a.kind() == EmbedderKind::reranker ? PoolingType::cls : a.default_pooling(), normalize};
        auto x = a.embed(texts, o), y = b.embed(texts, o);
        EXPECT_TRUE(x.ok() && y.ok());
        if (!x || !y) return cmp;
        for (size_t i = 0; i < texts.size(); ++i) {
            const float d = max_abs_diff(x->vectors[i], y->vectors[i]);
            float& m = normalize ? cmp.max.embedding : cmp.max.raw;
            m = std::max(m, d);
            const double cs = testing::cosine(x->vectors[i], y->vectors[i]);
            EXPECT_GE(cs, min_cosine) << texts[i];
            cmp.min_cosine = std::min(cmp.min_cosine, cs);
        }
    }
    for (const auto& c : cases) {
        if (!c.contains("query")) continue;
        const std::vector<std::string> docs = {c["document"].get<std::string>()};
        for (PairLayout layout : {PairLayout::server, PairLayout::hf}) {
            auto x = a.rerank(c["query"].get<std::string>(), docs, layout), y = b.rerank(c["query"].get<std::string>(), docs, layout);
            EXPECT_TRUE(x.ok() && y.ok());
            if (!x || !y) continue;
            float& m = layout == PairLayout::server ? cmp.max.score : cmp.max.score_cli;
            m = std::max(m, std::fabs(x->scores[0] - y->scores[0]));
        }
    }
    return cmp;
}

TEST(EmbedderOracle, F16WeightsStayWithin3e3) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const json oracle = load_oracle(dir);
    const fs::path tmp = fs::temp_directory_path() / ("kvrag-embedder-f16-" + std::to_string(getpid()));
    fs::create_directories(tmp);
    for (const char* name : kModels) {
        SCOPED_TRACE(name);
        const std::string path = (tmp / name).string();
        write_converted(dir + "/models/" + name, path, GgmlType::F16);
        auto e = make_embedder(path);
        ASSERT_TRUE(e);
        report(std::string("F16 ") + name, check_model(*e, oracle[name], 3e-3f, 3e-3f, false));
    }
    fs::remove_all(tmp);
}

// Q8_0 against the 3e-3 of the issue: not attainable against the F32 oracle by any engine on
// these random models. Measured here (printed): computed exactly in F32 on the Q8_0-rounded
// weights, the models are already up to 3.9e-3 per normalised component, 0.027 per raw
// component and 0.013 per score from the F32 oracle; the Q8_0 rounding of every matmul input
// (which llama.cpp does too) adds as much again (4.2e-3 / 0.034 / 0.018 between the Q8_0 model
// and that F32 twin). The per-component check at 3e-3 against llama.cpp on the same Q8_0 file
// is embedder_reference_test.cpp (measured 9e-8). What is asserted meanwhile: every
// embedding points the same way as the same weights computed in F32 (cosine >= 0.9999;
// measured >= 0.99994). The differences are printed.
TEST(EmbedderOracle, Q8_0WeightsAgreeWithTheSameWeightsInF32) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const json oracle = load_oracle(dir);
    const fs::path tmp = fs::temp_directory_path() / ("kvrag-embedder-q8-" + std::to_string(getpid()));
    fs::create_directories(tmp);
    for (const char* name : kModels) {
        SCOPED_TRACE(name);
        const std::string q8 = (tmp / ("q8-" + std::string(name))).string(), twin = (tmp / ("twin-" + std::string(name))).string();
        write_converted(dir + "/models/" + name, q8, GgmlType::Q8_0);
        write_converted(dir + "/models/" + name, twin, GgmlType::Q8_0, /*dequantized=*/true);
        auto eq = make_embedder(q8), et = make_embedder(twin);
        ASSERT_TRUE(eq && et);
        const Comparison c = compare_embedders(*eq, *et, oracle[name], 0.9999);
        std::printf("[ oracle   ] Q8_0 %s vs its F32 twin: min cosine %.9f\n", name, c.min_cosine);
        report(std::string("Q8_0 vs its F32 twin ") + name, c.max);
        report(std::string("Q8_0 vs F32 oracle (information) ") + name, check_model(*eq, oracle[name], 0, 0, false, false));
        report(std::string("F32 twin vs F32 oracle (information) ") + name, check_model(*et, oracle[name], 0, 0, false, false));
    }
    fs::remove_all(tmp);
}

// A text gives the same bits alone and in a pass with seven others of other lengths, whatever
// the thread count or the pass budget (so no pass composition can change a stored vector).
TEST(EmbedderOracle, BatchInvariance) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const json oracle = load_oracle(dir);
    for (const char* name : {"synth-bert-f32.gguf", "synth-nomic-bert-f32.gguf"}) {
        SCOPED_TRACE(name);
        std::vector<std::string> texts;
        for (const auto& c : oracle[name]) texts.push_back(c["text"].get<std::string>());
        ASSERT_EQ(texts.size(), 8u);
        auto batched = make_embedder(dir + "/models/" + name, 2, 4096);
        auto alone = make_embedder(dir + "/models/" + name, 1, 1);  // one text per pass, one thread
        ASSERT_TRUE(batched && alone);
        auto all = batched->embed(texts);
        ASSERT_TRUE(all.ok()) << all.error().what();
        for (size_t i = 0; i < texts.size(); ++i) {
            auto one = alone->embed(std::span(&texts[i], 1));
            ASSERT_TRUE(one.ok()) << one.error().what();
            EXPECT_EQ(one->vectors[0], all->vectors[i]) << "text " << i << " differs alone vs in a batch of 8";
        }
    }
}

TEST(EmbedderOracle, TooLongTextNamesTheNumbers) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    auto e = make_embedder(dir + "/models/synth-bert-f32.gguf");
    ASSERT_TRUE(e);
    std::string big;
    for (int i = 0; i < 600; ++i) big += "word ";
    const std::vector<std::string> texts = {"short", big};
    auto r = e->embed(texts);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::request_too_long);
    EXPECT_NE(r.error().what().find("E5002 input 1 has 602 tokens > the model's context 512"), std::string::npos)
        << r.error().what();
}

}  // namespace
}  // namespace kvrag::engine
