// The Embedder against the reference engine on the same Q8_0 and F16 weights: llama.cpp's
// llama-embedding outputs for two synthetic bert models that `kvrag make-model` writes
// deterministically, recorded in tests/data/embeddings/llama-embedding-q8_0-f16.json by
// scripts/llama_embedding_oracle.py (the command is in that file). The bound: within
// 3e-3 per component of the L2-normalised embedding. (Against the F32 oracle of
// ../shared/data, Q8_0 weights cannot meet it on any engine: see embedder_oracle_test.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "cli/run_kvrag.h"
#include "engine/embedder.h"
#include "memory/sha256.h"
#include "test_paths.h"

namespace kvrag::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

TEST(EmbedderReference, Q8_0AndF16WeightsMatchLlamaEmbeddingOnTheSameFiles) {
    KVRAG_REQUIRE_SHARED_DATA(shared);
    std::ifstream in(kvrag::testing::source_dir() + "/tests/data/embeddings/llama-embedding-q8_0-f16.json");
    ASSERT_TRUE(in.good());
    const json ref = json::parse(in);
    const fs::path dir = fs::temp_directory_path() / ("kvrag-embed-ref-" + std::to_string(getpid()));
    fs::create_directories(dir);
    const std::vector<std::string> texts = ref["texts"].get<std::vector<std::string>>();
    for (const char* type : {"q8_0", "f16"}) {
        const std::string path = (dir / (std::string(type) + ".gguf")).string();
        std::string args = "make-model -o " + path + " --vocab-from " + shared + "/vocab/" + ref["vocab"].get<std::string>() + " --type " + type;
        for (const auto& a : ref["make_model_args"]) args += " " + a.get<std::string>();
        ASSERT_EQ(kvrag::testing::run_kvrag(args).exit_code, 0) << args;
        std::ifstream f(path, std::ios::binary);
        const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        const json& m = ref["models"][type];
        // The same file the reference engine read (make-model is deterministic).
        ASSERT_EQ(memory::sha256_hex(bytes), m["sha256"].get<std::string>()) << type;

        auto loaded = LoadedModel::load(path);
        ASSERT_TRUE(loaded.ok()) << loaded.error().what();
        auto e = Embedder::create(std::move(*loaded), EmbedderConfig{});
        ASSERT_TRUE(e.ok()) << e.error().what();
        auto got = (*e)->embed(texts);
        ASSERT_TRUE(got.ok()) << got.error().what();
        double worst = 0.0;
        for (size_t i = 0; i < texts.size(); ++i) {
            const auto want = m["embeddings"][i].get<std::vector<float>>();
            ASSERT_EQ(got->vectors[i].size(), want.size());
            for (size_t k = 0; k < want.size(); ++k) {
                const double d = std::fabs(static_cast<double>(got->vectors[i][k]) - want[k]);
                worst = std::max(worst, d);
                EXPECT_LE(d, 3e-3) << type << " text " << i << " component " << k;
            }
        }
        std::printf("[ reference ] %s: max |kvrag - llama-embedding| = %.3g\n", type, worst);
    }
    fs::remove_all(dir);
}

}  // namespace
}  // namespace kvrag::engine
