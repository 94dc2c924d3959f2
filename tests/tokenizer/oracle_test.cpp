// The reference engine's greedy runs (shared/data/oracle) also pin down the tokenizer: the
// prompt ids with BOS, llama_token_to_piece of each generated id, llama_detokenize of the
// whole generation, and which ids are end-of-generation.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "gguf/gguf_file.h"
#include "test_paths.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer.h"

namespace kvrag::tokenizer {
namespace {

std::string from_hex(const std::string& hex) {
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    return out;
}

class OracleTokens : public ::testing::TestWithParam<std::string> {};

TEST_P(OracleTokens, MatchesReferenceEngine) {
    KVRAG_REQUIRE_SHARED_DATA(data);
    std::ifstream in(data + "/oracle/" + GetParam());
    KVRAG_SKIP_UNLESS_SHARED(in) << GetParam() << " not present";
    const auto runs = nlohmann::json::parse(in);
    ASSERT_FALSE(runs.empty());

    // Every run of one file uses the same model; "model" is relative to the checkout's parent.
    std::string model = runs[0]["model"].get<std::string>();
    const std::string prefix = "shared/data/";
    if (model.rfind(prefix, 0) == 0) model = data + "/" + model.substr(prefix.size());
    auto file = gguf::GgufFile::open(model);
    ASSERT_TRUE(file.ok()) << file.error().what();
    auto tok = Tokenizer::from_gguf(**file);
    ASSERT_TRUE(tok.ok()) << tok.error().what();
    const Tokenizer& t = **tok;

    for (const auto& run : runs) {
        const std::string prompt = run["prompt"];
        const auto want_prompt = run["prompt_tokens"].get<std::vector<int32_t>>();
        EXPECT_EQ(t.encode(prompt, run["add_bos"].get<bool>(), false), want_prompt) << prompt;

        const auto ids = run["greedy_tokens"].get<std::vector<int32_t>>();
        const auto pieces = run["greedy_pieces"].get<std::vector<std::string>>();
        const auto eog = run["greedy_is_eog"].get<std::vector<bool>>();
        ASSERT_EQ(ids.size(), pieces.size());
        for (size_t i = 0; i < ids.size(); ++i) {
            EXPECT_EQ(t.token_to_piece(ids[i]), pieces[i]) << "id " << ids[i];
            EXPECT_EQ(t.is_eog(ids[i]), eog[i]) << "id " << ids[i];
        }
        const std::string want_text = from_hex(run["greedy_text_hex"]);
        EXPECT_EQ(t.decode(ids), want_text) << prompt;

        // SPM vocabularies need no space clean-up, so streaming gives the same text (ids that
        // begin a text, as decode assumes).
        StreamDecoder sd(t, /*special=*/false, /*starts_text=*/true);
        std::string streamed;
        for (int32_t id : ids) streamed += sd.feed(id);
        streamed += sd.flush();
        EXPECT_EQ(streamed, want_text) << prompt;
    }
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, OracleTokens, ::testing::Values("tiny-greedy.json", "stories260K-greedy.json"),
                         [](const auto& info) { return info.param.substr(0, info.param.find('-')); });

}  // namespace
}  // namespace kvrag::tokenizer
