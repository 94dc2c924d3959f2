// Tokenizer behaviour on tiny vocabularies built in the test (no shared data needed).
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"
#include "tokenizer/stream_decoder.h"

namespace kvrag::tokenizer {
namespace {

constexpr const char* kSp = "\xE2\x96\x81";  // "▁"

// SPM: <unk> <s> </s>, 256 byte tokens, then a few scored pieces.
VocabData tiny_spm() {
    VocabData d;
    d.model = "llama";
    auto add = [&](std::string text, float score, TokenType type) {
        d.tokens.push_back(std::move(text));
        d.scores.push_back(score);
        d.token_types.push_back(static_cast<int32_t>(type));
    };
    add("<unk>", 0, TokenType::unknown);
    add("<s>", 0, TokenType::control);
    add("</s>", 0, TokenType::control);
    for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", b);
        add(name, 0, TokenType::byte);
    }
    add(kSp, -1, TokenType::normal);                     // 259
    add("a", -1, TokenType::normal);                     // 260
    add("b", -1, TokenType::normal);                     // 261
    add("c", -1, TokenType::normal);                     // 262
    add("ab", -2, TokenType::normal);                    // 263
    add(std::string(kSp) + "ab", -3, TokenType::normal); // 264
    add("bc", -0.5f, TokenType::normal);                 // 265
    add("<|user|>", 0, TokenType::control);              // 266
    add("<|end|>", 0, TokenType::control);               // 267
    return d;
}

constexpr int32_t kByte0 = 3;  // id of <0x00>
constexpr int32_t kSpId = 259, kA = 260, kBc = 265, kAb = 263, kSpAb = 264, kUser = 266, kEnd = 267;

// Byte-level BPE ("gpt2", pre gpt-2) with enough merges to build "hello" and "Ġworld".
VocabData tiny_bpe() {
    VocabData d;
    d.model = "gpt2";
    d.pre = "gpt-2";
    d.tokens = {"<|endoftext|>", "h", "e", "l", "o", "\xC4\xA0" /* Ġ */, "w", "r", "d", "!", "he", "ll", "hell",
                "hello", "\xC4\xA0w", "or", "\xC4\xA0wor", "ld", "\xC4\xA0world", "<|im_start|>", "\xC3\xB0" /* ð */,
                "\xC5\x81" /* Ł */, "\xC4\xBA" /* ĺ */, "\xC4\xA2" /* Ģ */, "\xC4\x8A" /* Ċ */, "  ", ","};
    d.token_types.assign(d.tokens.size(), 1);
    d.token_types[0] = 3;   // control
    d.token_types[19] = 3;  // control
    d.token_types[25] = 4;  // user-defined "  " (as gpt-neox/mpt ship)
    d.merges = {"h e", "l l", "he ll", "hell o", "\xC4\xA0 w", "o r", "\xC4\xA0w or", "l d", "\xC4\xA0wor ld"};
    return d;
}

std::shared_ptr<const Tokenizer> make(const VocabData& d) {
    auto t = Tokenizer::from_vocab_data(d);
    EXPECT_TRUE(t.ok()) << t.error().what();
    return t.ok() ? *t : nullptr;
}

using Ids = std::vector<int32_t>;

TEST(TokenizerSpm, MergesByScoreWithSpacePrefix) {
    auto tok = make(tiny_spm());
    ASSERT_TRUE(tok);
    EXPECT_EQ(tok->model_name(), "llama");
    EXPECT_EQ(tok->pre_name(), "default");
    // "▁ab": "ab" merges first, then "▁ab".
    EXPECT_EQ(tok->encode("ab", false, false), (Ids{kSpAb}));
    // "▁abc": "bc" (score -0.5) beats "ab" (-2), after which "ab" is gone.
    EXPECT_EQ(tok->encode("abc", false, false), (Ids{kSpId, kA, kBc}));
    // BOS by default (add_bos_token defaults to true for SPM), never EOS.
    EXPECT_EQ(tok->encode("ab", true, false), (Ids{1, kSpAb}));
    EXPECT_TRUE(tok->encode("", false, false).empty());
    EXPECT_EQ(tok->encode("", true, false), (Ids{1}));
}

TEST(TokenizerSpm, ByteFallback) {
    auto tok = make(tiny_spm());
    ASSERT_TRUE(tok);
    // "é" is not in the vocabulary: its two UTF-8 bytes come out as <0xC3> <0xA9>.
    EXPECT_EQ(tok->encode("\xC3\xA9", false, false), (Ids{kSpId, kByte0 + 0xC3, kByte0 + 0xA9}));
    EXPECT_EQ(tok->token_to_piece(kByte0 + 0xC3), "\xC3");
    EXPECT_EQ(tok->decode(tok->encode("a\xC3\xA9 bc", false, false)), "a\xC3\xA9 bc");
}

TEST(TokenizerSpm, SpecialTokensAndPieces) {
    auto tok = make(tiny_spm());
    ASSERT_TRUE(tok);
    // parse_special: the control text is one token; the text after it gets a space prefix.
    EXPECT_EQ(tok->encode("<|user|>ab", false, true), (Ids{kUser, kSpAb}));
    // Without it the text is tokenised as characters (here: byte fallback for '<', '|', ...).
    const Ids plain = tok->encode("<|user|>", false, false);
    EXPECT_EQ(std::find(plain.begin(), plain.end(), kUser), plain.end());
    EXPECT_EQ(tok->token_to_piece(kSpAb), " ab");
    EXPECT_EQ(tok->token_to_piece(kUser), "");
    EXPECT_EQ(tok->token_to_piece(kUser, true), "<|user|>");
    EXPECT_EQ(tok->token_to_piece(-1), "");
    EXPECT_EQ(tok->token_to_piece(100000), "");
    EXPECT_TRUE(tok->is_control(kUser));
    // "<|end|>" is recognised by its text as end of turn, as is EOS.
    EXPECT_TRUE(tok->is_eog(kEnd));
    EXPECT_TRUE(tok->is_eog(2));
    EXPECT_FALSE(tok->is_eog(kA));
    EXPECT_EQ(tok->find_token("ab"), kAb);
    EXPECT_EQ(tok->find_token("zz"), std::nullopt);
}

TEST(TokenizerSpm, RoundTrip) {
    auto tok = make(tiny_spm());
    ASSERT_TRUE(tok);
    for (std::string s : {"ab", " ab abc", "cab\tba\n", "\xF0\x9F\x98\x80 emoji", "  two  spaces"}) {
        EXPECT_EQ(tok->decode(tok->encode(s, false, false)), s) << s;
        // llama_detokenize strips the prefix space from the first token only, and with a
        // leading BOS that first token is the (empty) BOS: the space stays.
        EXPECT_EQ(tok->decode(tok->encode(s, true, false)), " " + s) << s;
    }
}

TEST(TokenizerBpe, MergesByRank) {
    auto tok = make(tiny_bpe());
    ASSERT_TRUE(tok);
    EXPECT_EQ(tok->model_name(), "gpt2");
    EXPECT_EQ(tok->pre_name(), "gpt-2");
    EXPECT_EQ(tok->encode("hello world!", false, false), (Ids{13, 18, 9}));
    EXPECT_EQ(tok->decode(Ids{13, 18, 9}), "hello world!");
    EXPECT_FALSE(tok->add_bos());  // gpt2 family: no BOS unless the metadata asks for it
    EXPECT_EQ(tok->encode("hello", true, false), (Ids{13}));
}

TEST(TokenizerBpe, UserDefinedTokensAreAlwaysSplitOut) {
    auto tok = make(tiny_bpe());
    ASSERT_TRUE(tok);
    // "  " is a user-defined token: it is cut out before the regex sees the text.
    EXPECT_EQ(tok->encode("he  he", false, false), (Ids{10, 25, 10}));
    // Control tokens only with parse_special.
    EXPECT_EQ(tok->encode("<|im_start|>hello", false, true), (Ids{19, 13}));
    const Ids plain = tok->encode("<|im_start|>hello", false, false);
    EXPECT_EQ(std::find(plain.begin(), plain.end(), 19), plain.end());
}

TEST(TokenizerBpe, ByteLevelPieces) {
    auto tok = make(tiny_bpe());
    ASSERT_TRUE(tok);
    // "ð" (U+00F0) is the stand-in of byte 0xF0, "Ł" of 0x9F, "ĺ" of 0x98, "Ģ" of 0x80.
    EXPECT_EQ(tok->encode("\xF0\x9F\x98\x80", false, false), (Ids{20, 21, 22, 23}));
    EXPECT_EQ(tok->token_to_piece(20), "\xF0");
    EXPECT_EQ(tok->token_to_piece(24), "\n");  // "Ċ"
    EXPECT_EQ(tok->decode(Ids{20, 21, 22, 23}), "\xF0\x9F\x98\x80");
}

TEST(TokenizerBpe, CleanSpacesOnDecode) {
    auto tok = make(tiny_bpe());
    ASSERT_TRUE(tok);
    // gpt-2 asks for llama.cpp's clean-up: " ," loses its space.
    EXPECT_EQ(tok->decode(Ids{13, 5, 26}), "hello,");
}

TEST(StreamDecoder, HoldsBackSplitCharacters) {
    auto tok = make(tiny_spm());
    ASSERT_TRUE(tok);
    // "a😀": ▁ a <0xF0> <0x9F> <0x98> <0x80>
    const Ids ids = tok->encode("a\xF0\x9F\x98\x80", false, false);
    ASSERT_EQ(ids, (Ids{kSpId, kA, kByte0 + 0xF0, kByte0 + 0x9F, kByte0 + 0x98, kByte0 + 0x80}));
    StreamDecoder sd(*tok, /*special=*/false, /*starts_text=*/true);
    EXPECT_EQ(sd.feed(ids[0]), "");  // the prefix space is dropped, as decode() does
    EXPECT_EQ(sd.feed(ids[1]), "a");
    EXPECT_EQ(sd.feed(ids[2]), "");
    EXPECT_EQ(sd.feed(ids[3]), "");
    EXPECT_EQ(sd.feed(ids[4]), "");
    EXPECT_EQ(sd.feed(ids[5]), "\xF0\x9F\x98\x80");
    EXPECT_EQ(sd.flush(), "");
}

// Generated text continues its prompt: the first piece keeps its space (" Paris" after "The
// capital of France is", as llama.cpp's server streams it), also after a flush.
TEST(StreamDecoder, AContinuationKeepsTheFirstPiecesSpace) {
    auto tok = make(tiny_spm());
    ASSERT_TRUE(tok);
    const Ids ids = tok->encode("a a", false, false);
    ASSERT_EQ(ids, (Ids{kSpId, kA, kSpId, kA}));
    StreamDecoder sd(*tok);
    std::string text;
    for (int32_t id : ids) text += sd.feed(id);
    text += sd.flush();
    EXPECT_EQ(text, " a a");
    EXPECT_EQ(tok->decode(ids), "a a");  // decode begins a text: the prefix space goes
    std::string again = sd.feed(kSpId);
    again += sd.feed(kA);
    EXPECT_EQ(again, " a");
    StreamDecoder starts(*tok, /*special=*/false, /*starts_text=*/true);
    std::string started = starts.feed(kSpId);
    started += starts.feed(kA);
    EXPECT_EQ(started, "a");
}

TEST(StreamDecoder, ReplacesInvalidBytes) {
    auto tok = make(tiny_spm());
    ASSERT_TRUE(tok);
    StreamDecoder sd(*tok);
    EXPECT_EQ(sd.feed(kA), "a");
    EXPECT_EQ(sd.feed(kByte0 + 0xF0), "");
    EXPECT_EQ(sd.feed(kByte0 + 0x9F), "");
    // 'a' cannot continue the sequence: one U+FFFD for the broken prefix, then the text.
    EXPECT_EQ(sd.feed(kA), "\xEF\xBF\xBD" "a");
    EXPECT_EQ(sd.feed(kByte0 + 0xE2), "");
    EXPECT_EQ(sd.flush(), "\xEF\xBF\xBD");  // unfinished at the end
    EXPECT_EQ(sd.feed(kByte0 + 0x80), "\xEF\xBF\xBD");  // a lone continuation byte
}

TEST(TokenizerErrors, UnknownModelAndPre) {
    VocabData d = tiny_bpe();
    d.model = "t5";
    auto r = Tokenizer::from_vocab_data(d);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::tokenizer_unsupported);
    EXPECT_NE(r.error().message.find("'t5'"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("gpt2"), std::string::npos) << r.error().message;

    d = tiny_bpe();
    d.pre = "made-up";
    r = Tokenizer::from_vocab_data(d);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::tokenizer_unsupported);
    EXPECT_NE(r.error().message.find("made-up"), std::string::npos);
    EXPECT_NE(r.error().message.find("llama-bpe"), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().what().substr(0, 6), "E2001 ");
}

TEST(TokenizerErrors, BadVocab) {
    VocabData d = tiny_spm();
    d.scores.pop_back();
    auto r = Tokenizer::from_vocab_data(d);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::tokenizer_bad_vocab);
    EXPECT_NE(r.error().message.find("267"), std::string::npos) << r.error().message;

    d = tiny_spm();
    d.tokens.clear(), d.scores.clear(), d.token_types.clear();
    EXPECT_EQ(Tokenizer::from_vocab_data(d).error().code, Errc::tokenizer_bad_vocab);
}

TEST(TokenizerWpm, GreedyLongestMatch) {
    VocabData d;
    d.model = "bert";
    d.tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", std::string(kSp) + "play", "ing", std::string(kSp) + "!",
                std::string(kSp) + "cafe"};
    d.token_types = {3, 3, 3, 3, 1, 1, 1, 1};
    d.unk_id = 1, d.bos_id = 2, d.sep_id = 3, d.pad_id = 0;
    auto tok = make(d);
    ASSERT_TRUE(tok);
    // Lower-cased, accents stripped, punctuation split off, unknown words become [UNK].
    EXPECT_EQ(tok->encode("PLAYING Caf\xC3\xA9! xyz", false, false), (Ids{4, 5, 7, 6, 1}));
    EXPECT_EQ(tok->encode("playing", true, false), (Ids{2, 4, 5, 3}));
}

TEST(TokenizerGguf, LoadsFromGgufMetadata) {
    const VocabData d = tiny_bpe();
    gguf::GgufWriter w;
    w.set_string("general.name", "tiny");
    w.set_string("tokenizer.ggml.model", d.model);
    w.set_string("tokenizer.ggml.pre", d.pre);
    w.set_string_array("tokenizer.ggml.tokens", d.tokens);
    w.set_i32_array("tokenizer.ggml.token_type", d.token_types);
    w.set_string_array("tokenizer.ggml.merges", d.merges);
    w.set_u32("tokenizer.ggml.bos_token_id", 0);
    w.set_u32("tokenizer.ggml.eos_token_id", 0);
    w.set_bool("tokenizer.ggml.add_bos_token", true);
    auto file = gguf::GgufFile::from_bytes(w.to_bytes(), "tiny.gguf");
    ASSERT_TRUE(file.ok()) << file.error().what();
    auto tok = Tokenizer::from_gguf(**file);
    ASSERT_TRUE(tok.ok()) << tok.error().what();
    EXPECT_EQ((*tok)->n_vocab(), static_cast<int32_t>(d.tokens.size()));
    EXPECT_EQ((*tok)->bos_id(), 0);
    EXPECT_TRUE((*tok)->add_bos());
    EXPECT_EQ((*tok)->encode("hello world!", true, false), (Ids{0, 13, 18, 9}));

    // A gpt2 vocabulary without merges is refused with a message naming the key.
    gguf::GgufWriter bad;
    bad.set_string("tokenizer.ggml.model", "gpt2");
    bad.set_string_array("tokenizer.ggml.tokens", d.tokens);
    auto bad_file = gguf::GgufFile::from_bytes(bad.to_bytes(), "bad.gguf");
    ASSERT_TRUE(bad_file.ok());
    auto r = Tokenizer::from_gguf(**bad_file);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::tokenizer_bad_vocab);
    EXPECT_NE(r.error().message.find("tokenizer.ggml.merges"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace kvrag::tokenizer
