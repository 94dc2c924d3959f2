// Text <-> token ids from a GGUF vocabulary, reproducing llama.cpp (c392e509, Feb 2025)
// token for token.
//
// Supported tokenizer.ggml.model values: "llama" (SentencePiece BPE with byte fallback),
// "gpt2" (byte-level BPE; the regex pre-tokenizer is chosen by tokenizer.ggml.pre) and
// "bert" (WordPiece). A Tokenizer is immutable after construction; every method is const and
// safe to call from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace kvrag::gguf {
class GgufFile;
}

namespace kvrag::tokenizer {

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
    undefined = 0,
    normal = 1,
    unknown = 2,
    control = 3,
    user_defined = 4,
    unused = 5,
    byte = 6,
};

// Everything the tokenizer reads from GGUF metadata, so tests and tools can build a
// vocabulary without writing a file. Absent optionals take llama.cpp's per-model defaults.
struct VocabData {
    std::string model;                 // tokenizer.ggml.model
    std::string pre;                   // tokenizer.ggml.pre ("" when absent)
    std::string general_name;          // general.name (llama.cpp keys a few quirks on it)
    std::vector<std::string> tokens;   // tokenizer.ggml.tokens
    std::vector<float> scores;         // tokenizer.ggml.scores; empty = all 0
    std::vector<int32_t> token_types;  // tokenizer.ggml.token_type; empty = all normal
    std::vector<std::string> merges;   // tokenizer.ggml.merges ("left right"), BPE only
    std::optional<int64_t> bos_id, eos_id, eot_id, eom_id, unk_id, sep_id, pad_id, mask_id, cls_id;
    std::optional<int64_t> fim_pre_id, fim_suf_id, fim_mid_id, fim_pad_id, fim_rep_id, fim_sep_id;
    std::optional<bool> add_bos, add_eos, add_space_prefix;
};

namespace detail {
struct Vocab;
class PreTokenizer;
}  // namespace detail

class Tokenizer {
public:
    // Errors: tokenizer_unsupported (unknown model / pre type; the message lists the
    // supported ones), tokenizer_bad_vocab (missing or inconsistent metadata).
    static Result<std::shared_ptr<const Tokenizer>> from_gguf(const gguf::GgufFile& file);
    static Result<std::shared_ptr<const Tokenizer>> from_vocab_data(const VocabData& data);
    // Reads the tokenizer.* metadata of a GGUF file without building anything.
    static Result<VocabData> read_vocab_data(const gguf::GgufFile& file);

    ~Tokenizer();
    Tokenizer(const Tokenizer&) = delete;
    Tokenizer& operator=(const Tokenizer&) = delete;

    // add_special: add BOS/EOS as the metadata says (llama.cpp's per-model defaults when the
    // add_*_token keys are absent). parse_special: recognise control-token texts such as
    // "<|im_start|>" in the text; user-defined tokens are always recognised, as in llama.cpp.
    // Invalid UTF-8 is tokenised as U+FFFD (BPE) or as byte tokens (SPM), never an error.
    std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;

    // Bytes of one token as llama_token_to_piece gives them: SPM "▁" -> " ", byte tokens ->
    // the raw byte, BPE byte-level unmapping. Control and unknown tokens give "" unless
    // special; unused/undefined tokens and ids outside the vocabulary always give "".
    std::string token_to_piece(int32_t id, bool special = false) const;
    // llama_detokenize(remove_special=false): concatenated pieces, minus the leading space
    // the SPM space prefix added, plus llama.cpp's clean-up of " ," " 's" etc. for the
    // vocabularies that ask for it. The result may hold invalid UTF-8 when ids split a
    // character; StreamDecoder repairs that.
    std::string decode(std::span<const int32_t> ids, bool special = false) const;

    int32_t n_vocab() const;
    int32_t bos_id() const;  // -1 when none
    int32_t eos_id() const;  // -1 when none
    int32_t sep_id() const;  // [SEP] of WordPiece vocabularies (tokenizer.ggml.seperator_token_id); -1 when none
    bool add_bos() const;
    bool add_eos() const;
    bool add_space_prefix() const;
    bool is_eog(int32_t id) const;  // eos, eot, eom and the texts llama.cpp treats as end of turn
    bool is_control(int32_t id) const;
    TokenType token_type(int32_t id) const;          // undefined for ids outside the vocabulary
    std::string_view token_text(int32_t id) const;   // raw vocabulary entry ("" when out of range)
    std::string_view model_name() const;  // "llama" (SPM) / "gpt2" (BPE) / "bert" (WPM)
    std::string_view pre_name() const;    // tokenizer.ggml.pre, or "default"
    std::optional<int32_t> find_token(std::string_view text) const;

private:
    Tokenizer();
    std::unique_ptr<detail::Vocab> vocab_;
    std::unique_ptr<detail::PreTokenizer> pre_;
};

}  // namespace kvrag::tokenizer
