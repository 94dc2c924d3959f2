// llama.cpp's tokenizer test vectors (models/ggml-vocab-*.gguf.inp/.out) replayed against our
// tokenizer, with the same settings as its tests/test-tokenizer-0: add_special=false,
// parse_special=false. One test per vocabulary so the report shows which pass.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gguf/gguf_file.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace kvrag::tokenizer {
namespace {

std::string read_all(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// Inputs are separated by "\n__ggml_vocab_test__\n" (the file ends with one); outputs are
// one line of space-separated ids per input.
struct Vectors {
    std::vector<std::string> inputs;
    std::vector<std::vector<int32_t>> outputs;
};

Vectors load_vectors(const std::string& base) {
    Vectors v;
    const std::string raw = read_all(base + ".inp");
    const std::string sep = "\n__ggml_vocab_test__\n";
    for (size_t pos = 0; pos < raw.size();) {
        const size_t next = raw.find(sep, pos);
        if (next == std::string::npos) {
            v.inputs.push_back(raw.substr(pos));
            break;
        }
        v.inputs.push_back(raw.substr(pos, next - pos));
        pos = next + sep.size();
    }
    std::ifstream out(base + ".out");
    for (std::string line; std::getline(out, line);) {
        std::istringstream ls(line);
        std::vector<int32_t> ids;
        for (int32_t id; ls >> id;) ids.push_back(id);
        v.outputs.push_back(std::move(ids));
    }
    return v;
}

std::string show(const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids) s += std::to_string(id) + " ";
    return s;
}

class GoldenVocab : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenVocab, MatchesLlamaCpp) {
    KVRAG_REQUIRE_SHARED_DATA(data);
    const std::string base = data + "/vocab/ggml-vocab-" + GetParam() + ".gguf";
    KVRAG_SKIP_UNLESS_SHARED(std::filesystem::exists(base + ".inp")) << base << ".inp not present";

    auto file = gguf::GgufFile::open(base);
    ASSERT_TRUE(file.ok()) << file.error().what();
    auto tok = Tokenizer::from_gguf(**file);
    if (!tok.ok() && tok.error().code == Errc::tokenizer_unsupported) {
        GTEST_SKIP() << GetParam() << ": " << tok.error().what();
    }
    ASSERT_TRUE(tok.ok()) << tok.error().what();

    const Vectors v = load_vectors(base);
    ASSERT_EQ(v.inputs.size(), v.outputs.size());
    ASSERT_GT(v.inputs.size(), 0u);
    size_t passed = 0;
    for (size_t i = 0; i < v.inputs.size(); ++i) {
        const auto got = (*tok)->encode(v.inputs[i], /*add_special=*/false, /*parse_special=*/false);
        if (got == v.outputs[i]) {
            ++passed;
        } else {
            ADD_FAILURE() << GetParam() << " vector " << i << " input '" << v.inputs[i] << "'\n  want: "
                          << show(v.outputs[i]) << "\n  got:  " << show(got);
        }
    }
    // Vocabularies without decode-time space clean-up reproduce every input exactly.
    const std::string name = GetParam();
    if (name == "llama-spm" || name == "phi-3" || name == "deepseek-llm" || name == "deepseek-coder") {
        for (const std::string& s : v.inputs) {
            EXPECT_EQ((*tok)->decode((*tok)->encode(s, false, false)), s) << name << " round trip";
        }
    }
    RecordProperty("passed", static_cast<int>(passed));
    std::cout << "[ golden   ] " << GetParam() << ": " << passed << "/" << v.inputs.size() << " vectors match\n";
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, GoldenVocab,
                         ::testing::Values("llama-spm", "phi-3", "gpt-2", "mpt", "starcoder", "refact", "falcon",
                                           "deepseek-llm", "deepseek-coder", "bert-bge"),
                         [](const auto& info) {
                             std::string n = info.param;
                             for (char& c : n) c = (c == '-') ? '_' : c;
                             return n;
                         });

}  // namespace
}  // namespace kvrag::tokenizer
