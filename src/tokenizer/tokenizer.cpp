// Vocabulary loading, special-token splitting, and encode/decode dispatch.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "gguf/gguf_file.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace kvrag::tokenizer {

using detail::VocabKind;

namespace detail {

void SpecialMatcher::add(std::string_view text, int32_t id) {
    if (text.empty()) return;
    auto new_node = [&] {
        ends_.emplace_back();
        return static_cast<int32_t>(ends_.size() - 1);
    };
    int32_t& first = root_[static_cast<uint8_t>(text[0])];
    if (first < 0) first = new_node();
    int32_t node = first;
    for (size_t j = 1; j < text.size(); ++j) {
        const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(text[j]);
        auto it = edges_.find(key);
        if (it == edges_.end()) {
            const int32_t n = new_node();
            it = edges_.emplace(key, n).first;
        }
        node = it->second;
    }
    ends_[node].push_back(id);
}

}  // namespace detail

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

void replace_all(std::string& s, std::string_view from, std::string_view to) {
    std::string out;
    out.reserve(s.size());
    size_t pos = 0;
    while (true) {
        const size_t hit = s.find(from, pos);
        if (hit == std::string::npos) break;
        out.append(s, pos, hit - pos);
        out += to;
        pos = hit + from.size();
    }
    out.append(s, pos, std::string::npos);
    s.swap(out);
}

// llama_decode_text: undo the byte-level mapping; characters that are no byte's stand-in are
// kept visible in llama.cpp's "[UNK_BYTE_0x..]" form.
std::string byte_decode(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    size_t pos = 0;
    while (pos < text.size()) {
        const uint32_t cpt = detail::decode_lenient(text, &pos);
        const int b = detail::unicode_to_byte(cpt);
        if (b >= 0) {
            out.push_back(static_cast<char>(b));
            continue;
        }
        std::string utf8;
        detail::append_utf8(utf8, cpt);
        out += "[UNK_BYTE_0x";
        for (char c : utf8) {
            static constexpr char kHex[] = "0123456789abcdef";
            out += kHex[static_cast<uint8_t>(c) >> 4];
            out += kHex[static_cast<uint8_t>(c) & 15];
        }
        out.append(text);
        out += ']';
    }
    return out;
}

// Piece for one token with special=true (the llama.cpp token-to-piece cache).
std::string compute_piece(const detail::Vocab& v, const detail::TokenData& t) {
    switch (t.type) {
        case TokenType::control:
        case TokenType::unknown:
        case TokenType::user_defined:
            return t.text;
        case TokenType::normal:
            if (v.kind == VocabKind::bpe) return byte_decode(t.text);
            {
                std::string s = t.text;
                replace_all(s, kSpace, " ");
                return s;
            }
        case TokenType::byte:
            if (v.kind == VocabKind::bpe) return {};
            {
                // "<0xXX>": llama.cpp reads the two hex digits with strtol (0 when malformed).
                const std::string hex = t.text.size() > 3 ? t.text.substr(3, 2) : std::string();
                return std::string(1, static_cast<char>(std::strtol(hex.c_str(), nullptr, 16)));
            }
        default:
            return {};
    }
}

struct Fragment {
    int32_t token = -1;  // -1: raw text [off, off + len)
    size_t off = 0;
    size_t len = 0;
};

bool is_c_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

// ---- loading ----

Result<VocabData> Tokenizer::read_vocab_data(const gguf::GgufFile& file) {
    return catch_errors([&]() -> VocabData {
        auto unwrap = [&](auto r, std::string_view key) {
            if (!r.ok()) throw_error(Errc::tokenizer_bad_vocab, r.error().what() + " (" + std::string(key) + ")");
            return std::move(r).value();
        };
        VocabData d;
        const auto model = unwrap(file.get_string("tokenizer.ggml.model"), "tokenizer.ggml.model");
        if (!model) throw_error(Errc::tokenizer_bad_vocab, "tokenizer.ggml.model missing in '" + file.path() + "'");
        d.model = std::string(*model);
        if (auto pre = unwrap(file.get_string("tokenizer.ggml.pre"), "tokenizer.ggml.pre")) d.pre = std::string(*pre);
        if (auto name = unwrap(file.get_string("general.name"), "general.name")) d.general_name = std::string(*name);

        const gguf::ArrayValue* tokens = unwrap(file.get_array("tokenizer.ggml.tokens"), "tokenizer.ggml.tokens");
        if (tokens == nullptr) throw_error(Errc::tokenizer_bad_vocab, "tokenizer.ggml.tokens missing in '" + file.path() + "'");
        if (tokens->elem_type != gguf::ValueType::STRING) {
            throw_error(Errc::tokenizer_bad_vocab, "tokenizer.ggml.tokens has element type " +
                                                       std::string(gguf::value_type_name(tokens->elem_type)) + ", expected string");
        }
        d.tokens.assign(tokens->strings.begin(), tokens->strings.end());
        const uint64_t n = d.tokens.size();

        if (const gguf::ArrayValue* a = unwrap(file.get_array("tokenizer.ggml.scores"), "tokenizer.ggml.scores")) {
            if (a->n != n) {
                throw_error(Errc::tokenizer_bad_vocab, "tokenizer.ggml.scores has " + std::to_string(a->n) +
                                                           " entries, expected " + std::to_string(n));
            }
            d.scores.resize(n);
            for (uint64_t i = 0; i < n; ++i) {
                auto f = a->float_at(i);
                if (!f) throw_error(Errc::tokenizer_bad_vocab, "tokenizer.ggml.scores is not a float array");
                d.scores[i] = static_cast<float>(*f);
            }
        }
        if (const gguf::ArrayValue* a = unwrap(file.get_array("tokenizer.ggml.token_type"), "tokenizer.ggml.token_type")) {
            if (a->n != n) {
                throw_error(Errc::tokenizer_bad_vocab, "tokenizer.ggml.token_type has " + std::to_string(a->n) +
                                                           " entries, expected " + std::to_string(n));
            }
            d.token_types.resize(n);
            for (uint64_t i = 0; i < n; ++i) {
                auto v = a->int_at(i);
                if (!v) throw_error(Errc::tokenizer_bad_vocab, "tokenizer.ggml.token_type is not an integer array");
                d.token_types[i] = static_cast<int32_t>(*v);
            }
        }
        if (const gguf::ArrayValue* a = unwrap(file.get_array("tokenizer.ggml.merges"), "tokenizer.ggml.merges")) {
            if (a->elem_type != gguf::ValueType::STRING) {
                throw_error(Errc::tokenizer_bad_vocab, "tokenizer.ggml.merges is not a string array");
            }
            d.merges.assign(a->strings.begin(), a->strings.end());
        } else if (d.model == "gpt2") {
            throw_error(Errc::tokenizer_bad_vocab, "tokenizer.ggml.merges missing in '" + file.path() + "' (required for gpt2)");
        }

        const std::pair<const char*, std::optional<int64_t>*> ids[] = {
            {"tokenizer.ggml.bos_token_id", &d.bos_id},         {"tokenizer.ggml.eos_token_id", &d.eos_id},
            {"tokenizer.ggml.eot_token_id", &d.eot_id},         {"tokenizer.ggml.eom_token_id", &d.eom_id},
            {"tokenizer.ggml.unknown_token_id", &d.unk_id},     {"tokenizer.ggml.seperator_token_id", &d.sep_id},
            {"tokenizer.ggml.padding_token_id", &d.pad_id},     {"tokenizer.ggml.mask_token_id", &d.mask_id},
            {"tokenizer.ggml.cls_token_id", &d.cls_id},         {"tokenizer.ggml.fim_pre_token_id", &d.fim_pre_id},
            {"tokenizer.ggml.fim_suf_token_id", &d.fim_suf_id}, {"tokenizer.ggml.fim_mid_token_id", &d.fim_mid_id},
            {"tokenizer.ggml.fim_pad_token_id", &d.fim_pad_id}, {"tokenizer.ggml.fim_rep_token_id", &d.fim_rep_id},
            {"tokenizer.ggml.fim_sep_token_id", &d.fim_sep_id},
            // deprecated spellings of the FIM ids
            {"tokenizer.ggml.prefix_token_id", &d.fim_pre_id},  {"tokenizer.ggml.suffix_token_id", &d.fim_suf_id},
            {"tokenizer.ggml.middle_token_id", &d.fim_mid_id},
        };
        for (const auto& [key, dst] : ids) {
            if (auto v = unwrap(file.get_int(key), key)) *dst = *v;
        }
        if (auto v = unwrap(file.get_bool("tokenizer.ggml.add_bos_token"), "add_bos_token")) d.add_bos = *v;
        if (auto v = unwrap(file.get_bool("tokenizer.ggml.add_eos_token"), "add_eos_token")) d.add_eos = *v;
        if (auto v = unwrap(file.get_bool("tokenizer.ggml.add_space_prefix"), "add_space_prefix")) d.add_space_prefix = *v;
        return d;
    });
}

Result<std::shared_ptr<const Tokenizer>> Tokenizer::from_gguf(const gguf::GgufFile& file) {
    auto data = read_vocab_data(file);
    if (!data) return data.error();
    return from_vocab_data(*data);
}

Result<std::shared_ptr<const Tokenizer>> Tokenizer::from_vocab_data(const VocabData& d) {
    return catch_errors([&]() -> std::shared_ptr<const Tokenizer> {
        auto v = std::make_unique<detail::Vocab>();
        const detail::PreTokenizerSpec* spec = nullptr;

        // Model type and llama.cpp's defaults for it.
        v->model_name = d.model;
        if (d.model == "llama") {
            v->kind = VocabKind::spm;
            v->bos = 1, v->eos = 2, v->unk = 0;
            v->add_space_prefix = true, v->clean_spaces = false, v->add_bos = true, v->add_eos = false;
        } else if (d.model == "gpt2") {
            v->kind = VocabKind::bpe;
            v->bos = 11, v->eos = 11;
            spec = detail::find_pre_tokenizer(d.pre);
            if (spec == nullptr) {
                throw_error(Errc::tokenizer_unsupported, "unsupported pre-tokenizer tokenizer.ggml.pre='" + d.pre +
                                                             "' for model 'gpt2'; supported: " +
                                                             detail::supported_pre_tokenizers());
            }
            v->add_space_prefix = false;
            v->clean_spaces = spec->clean_spaces;
            v->ignore_merges = spec->ignore_merges;
            v->add_bos = spec->force_add_bos;
        } else if (d.model == "bert") {
            v->kind = VocabKind::wpm;
            v->bos = 101, v->unk = 100, v->sep = 102, v->pad = 0, v->mask = 103;
            v->add_space_prefix = false, v->clean_spaces = true, v->add_bos = true, v->add_eos = false;
        } else {
            throw_error(Errc::tokenizer_unsupported,
                        "unsupported tokenizer model tokenizer.ggml.model='" + d.model +
                            "'; supported: llama (SentencePiece BPE), gpt2 (byte-level BPE), bert (WordPiece)");
        }
        v->pre_name = d.pre.empty() ? "default" : d.pre;
        if (d.add_space_prefix) v->add_space_prefix = *d.add_space_prefix;

        // Tokens.
        const size_t n = d.tokens.size();
        if (n == 0) throw_error(Errc::tokenizer_bad_vocab, "tokenizer.ggml.tokens is empty");
        if (n > static_cast<size_t>(INT32_MAX)) throw_error(Errc::tokenizer_bad_vocab, "vocabulary too large: " + std::to_string(n));
        if (!d.scores.empty() && d.scores.size() != n) {
            throw_error(Errc::tokenizer_bad_vocab, "tokenizer.ggml.scores has " + std::to_string(d.scores.size()) +
                                                       " entries, expected " + std::to_string(n));
        }
        if (!d.token_types.empty() && d.token_types.size() != n) {
            throw_error(Errc::tokenizer_bad_vocab, "tokenizer.ggml.token_type has " + std::to_string(d.token_types.size()) +
                                                       " entries, expected " + std::to_string(n));
        }
        v->tokens.resize(n);
        v->token_to_id.reserve(n);
        for (size_t i = 0; i < n; ++i) {
            auto& t = v->tokens[i];
            // llama.cpp renames empty entries so that every token has a distinct, non-empty text.
            t.text = d.tokens[i].empty() ? "[EMPTY_" + std::to_string(i) + "]" : d.tokens[i];
            t.score = d.scores.empty() ? 0.0f : d.scores[i];
            const int32_t type = d.token_types.empty() ? 1 : d.token_types[i];
            t.type = type >= 0 && type <= 6 ? static_cast<TokenType>(type) : TokenType::undefined;
            v->token_to_id[t.text] = static_cast<int32_t>(i);
            v->max_token_len = std::max(v->max_token_len, t.text.size());
        }

        if (v->kind == VocabKind::bpe) {
            v->merge_rank.reserve(d.merges.size());
            for (size_t i = 0; i < d.merges.size(); ++i) {
                // A merge without a separating space can never apply (llama.cpp stores it as
                // an empty pair).
                if (d.merges[i].find(' ', 1) == std::string::npos) continue;
                v->merge_rank.try_emplace(d.merges[i], static_cast<int32_t>(i));
            }
        }

        // Special ids from metadata; out-of-range values keep the default, as in llama.cpp.
        auto apply = [&](const std::optional<int64_t>& src, int32_t& dst) {
            if (src && *src >= 0 && static_cast<uint64_t>(*src) < n) dst = static_cast<int32_t>(*src);
        };
        int32_t fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1, fim_rep = -1, fim_sep = -1;
        if (v->kind == VocabKind::wpm && !d.bos_id) apply(d.cls_id, v->bos);  // older BERT conversions
        apply(d.bos_id, v->bos), apply(d.eos_id, v->eos), apply(d.eot_id, v->eot), apply(d.eom_id, v->eom);
        apply(d.unk_id, v->unk), apply(d.sep_id, v->sep), apply(d.pad_id, v->pad), apply(d.mask_id, v->mask);
        apply(d.fim_pre_id, fim_pre), apply(d.fim_suf_id, fim_suf), apply(d.fim_mid_id, fim_mid);
        apply(d.fim_pad_id, fim_pad), apply(d.fim_rep_id, fim_rep), apply(d.fim_sep_id, fim_sep);
        if (spec != nullptr && spec->canonical == "chatglm4") v->bos = -1;  // llama.cpp drops BOS for GLM-4
        for (int32_t* id : {&v->bos, &v->eos, &v->unk, &v->sep, &v->pad, &v->mask}) {
            if (!v->valid(*id)) *id = -1;  // a default beyond a small vocabulary
        }
        if (d.add_bos) v->add_bos = *d.add_bos;
        if (d.add_eos) v->add_eos = *d.add_eos;

        // llama.cpp recognises end-of-turn and FIM tokens by their text and forces them to be
        // control tokens (so they are hidden in output and not split out of plain text).
        auto force_control = [&](int32_t id) {
            if (v->tokens[id].type != TokenType::control) v->tokens[id].type = TokenType::control;
        };
        auto detect = [&](int32_t& slot, std::initializer_list<std::string_view> texts) {
            if (slot >= 0) return;
            for (auto t : texts) {
                if (auto id = v->find(t)) {
                    slot = *id;
                    force_control(*id);
                    return;
                }
            }
        };
        detect(v->eot, {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
                        "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"});
        detect(v->eom, {"<|eom_id|>"});
        detect(fim_pre, {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>", "<PRE>"});
        detect(fim_suf, {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>", "<SUF>"});
        detect(fim_mid, {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", "<MID>"});
        detect(fim_pad, {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>"});
        detect(fim_rep, {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>"});
        detect(fim_sep, {"<|file_sep|>"});

        for (int32_t id : {fim_pad, fim_rep, fim_sep}) {
            if (id >= 0) v->eog.insert(id);
        }
        for (auto t : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>"}) {
            if (auto id = v->find(t)) {
                v->eog.insert(*id);
                force_control(*id);
            }
        }
        for (int32_t id : {v->eos, v->eot, v->eom}) {
            if (id >= 0) v->eog.insert(id);
        }

        // Special tokens in the order llama.cpp splits them out: longest text first.
        for (size_t i = 0; i < n; ++i) {
            const TokenType t = v->tokens[i].type;
            if (t == TokenType::control || t == TokenType::user_defined || t == TokenType::unknown) {
                v->special_tokens.push_back(static_cast<int32_t>(i));
            }
        }
        std::stable_sort(v->special_tokens.begin(), v->special_tokens.end(), [&](int32_t a, int32_t b) {
            return v->tokens[a].text.size() > v->tokens[b].text.size();
        });
        for (int32_t id : v->special_tokens) v->special_matcher.add(v->tokens[id].text, id);

        v->pieces.resize(n);
        for (size_t i = 0; i < n; ++i) v->pieces[i] = compute_piece(*v, v->tokens[i]);

        // Per-model strip attributes llama.cpp sets by name (only matter with parse_special).
        std::string lname = d.general_name;
        std::transform(lname.begin(), lname.end(), lname.begin(), [](unsigned char c) { return std::tolower(c); });
        if (d.pre.find("jina-v2-de") != std::string::npos || d.pre.find("jina-v2-es") != std::string::npos ||
            d.pre.find("jina-v2-code") != std::string::npos) {
            if (auto id = v->find("<mask>")) v->tokens[*id].lstrip = true;
        } else if (lname.find("phi-3") != std::string::npos || lname.find("phi3") != std::string::npos) {
            for (int32_t id : v->special_tokens) v->tokens[id].rstrip = true;
            if (auto id = v->find("</s>")) v->tokens[*id].rstrip = true;
            for (auto t : {"<unk>", "<s>", "<|endoftext|>"}) {
                if (auto id = v->find(t)) v->tokens[*id].rstrip = false;
            }
        }

        std::unique_ptr<detail::PreTokenizer> pre;
        if (v->kind == VocabKind::bpe) {
            auto p = detail::PreTokenizer::create(spec->regexes);
            if (!p) throw Exception(p.error());
            pre = std::move(p.value());
        }

        std::shared_ptr<Tokenizer> tok(new Tokenizer());
        tok->vocab_ = std::move(v);
        tok->pre_ = std::move(pre);
        return tok;
    });
}

// ---- encoding ----

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
    const detail::Vocab& v = *vocab_;

    // 1. Split special-token texts out of the raw text, longest token first, each token
    //    splitting every remaining raw fragment at all of its occurrences (llama.cpp's
    //    tokenizer_st_partition). Control and unknown tokens only count with parse_special.
    std::vector<Fragment> frags;
    if (!text.empty()) frags.push_back({-1, 0, text.size()});
    if (!text.empty() && !v.special_tokens.empty()) {
        std::vector<char> present(v.tokens.size(), 0);
        bool any = false;
        v.special_matcher.scan(text, [&](int32_t id) {
            const TokenType t = v.tokens[id].type;
            if (!parse_special && (t == TokenType::control || t == TokenType::unknown)) return;
            present[id] = 1;
            any = true;
        });
        std::vector<Fragment> next;
        for (size_t k = 0; any && k < v.special_tokens.size(); ++k) {
            const int32_t id = v.special_tokens[k];
            if (!present[id]) continue;
            const detail::TokenData& tok = v.tokens[id];
            next.clear();
            for (const Fragment& f : frags) {
                if (f.token >= 0) {
                    next.push_back(f);
                    continue;
                }
                size_t off = f.off, len = f.len;
                while (len > 0) {
                    const size_t m = text.substr(0, off + len).find(tok.text, off);
                    if (m == std::string_view::npos) {
                        next.push_back({-1, off, len});
                        break;
                    }
                    if (m > off) {
                        size_t left = m - off;
                        if (tok.lstrip) {
                            while (left > 0 && is_c_space(text[off + left - 1])) --left;
                        }
                        if (left > 0) next.push_back({-1, off, left});
                    }
                    next.push_back({id, 0, 0});
                    size_t roff = m + tok.text.size();
                    size_t rlen = off + len - roff;
                    if (tok.rstrip) {
                        while (rlen > 0 && is_c_space(text[roff])) ++roff, --rlen;
                    }
                    off = roff;
                    len = rlen;
                }
            }
            frags.swap(next);
        }
    }

    // 2. Tokenise each raw fragment with the model's algorithm.
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 4);
    switch (v.kind) {
        case VocabKind::spm: {
            if (add_special && v.add_bos && v.bos >= 0) out.push_back(v.bos);
            bool prev_special = true;  // the first fragment gets the space prefix too
            std::string buf;
            for (const Fragment& f : frags) {
                if (f.token >= 0) {
                    out.push_back(f.token);
                    prev_special = true;
                    continue;
                }
                buf.clear();
                if (v.add_space_prefix && prev_special) buf += ' ';
                buf.append(text.substr(f.off, f.len));
                replace_all(buf, " ", kSpace);
                detail::spm_tokenize(v, buf, out);
                prev_special = false;
            }
            if (add_special && v.add_eos && v.eos >= 0) out.push_back(v.eos);
            break;
        }
        case VocabKind::bpe: {
            if (add_special && v.add_bos && v.bos >= 0) out.push_back(v.bos);
            for (const Fragment& f : frags) {
                if (f.token >= 0) {
                    out.push_back(f.token);
                    continue;
                }
                const detail::Sanitized s = detail::sanitize_utf8(text.substr(f.off, f.len));
                size_t start = 0;
                for (size_t end : pre_->split(s.subject)) {
                    const std::string word = detail::byte_encode(std::string_view(s.text).substr(start, end - start));
                    detail::bpe_tokenize_word(v, word, out);
                    start = end;
                }
            }
            if (add_special && v.add_eos && v.eos >= 0) out.push_back(v.eos);
            break;
        }
        case VocabKind::wpm: {
            if (add_special && v.bos >= 0) out.push_back(v.bos);
            for (const Fragment& f : frags) {
                if (f.token >= 0) {
                    out.push_back(f.token);
                    continue;
                }
                detail::wpm_tokenize(v, text.substr(f.off, f.len), out);
            }
            if (add_special && v.sep >= 0) out.push_back(v.sep);
            break;
        }
    }
    return out;
}

// ---- decoding ----

std::string Tokenizer::token_to_piece(int32_t id, bool special) const {
    const detail::Vocab& v = *vocab_;
    if (!v.valid(id)) return {};
    const TokenType t = v.tokens[id].type;
    if (!special && (t == TokenType::control || t == TokenType::unknown)) return {};
    return v.pieces[id];
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool special) const {
    const detail::Vocab& v = *vocab_;
    std::string text;
    bool remove_space = v.add_space_prefix;  // the space the encoder added before the first word
    for (int32_t id : ids) {
        std::string piece = token_to_piece(id, special);
        if (remove_space && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
        remove_space = false;
        text += piece;
    }
    if (!v.clean_spaces || text.empty()) return text;

    // llama.cpp's three clean-up passes, in order (each reads the previous one's output).
    std::string a;
    a.reserve(text.size());
    a += text[0];
    for (size_t i = 1; i < text.size(); ++i) {  // " ?" " !" " ." " ," lose the space
        const char x = text[i];
        if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) a.pop_back();
        a += x;
    }
    std::string b;
    b.reserve(a.size());
    if (!a.empty()) b += a[0];
    for (size_t i = 1; i < a.size(); ++i) {  // " ' " becomes "'"
        const char x = a[i];
        if (x == '\'' && i + 1 < a.size() && a[i - 1] == ' ' && a[i + 1] == ' ') {
            b.pop_back();
            // llama.cpp blanks the skipped space in place, so it no longer counts as the
            // "previous space" of the character after it.
            a[++i] = '\0';
        }
        b += x;
    }
    std::string c;
    c.reserve(b.size());
    if (!b.empty()) c += b[0];
    for (size_t i = 1; i < b.size(); ++i) {  // " 's" " 'm" " 're" " 've" lose the space
        const char x = b[i];
        if (b[i - 1] == ' ' && x == '\'' && i + 1 < b.size()) {
            const char x1 = b[i + 1];
            if (x1 == 's' || x1 == 'm') {
                c.pop_back();
            } else if (x1 != 't' && x1 != 'd' && i + 2 < b.size()) {
                const char x2 = b[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) c.pop_back();
            }
        }
        c += x;
    }
    return c;
}

// ---- properties ----

int32_t Tokenizer::n_vocab() const { return static_cast<int32_t>(vocab_->tokens.size()); }
int32_t Tokenizer::bos_id() const { return vocab_->bos; }
int32_t Tokenizer::eos_id() const { return vocab_->eos; }
int32_t Tokenizer::sep_id() const { return vocab_->sep; }
bool Tokenizer::add_bos() const { return vocab_->add_bos && vocab_->bos >= 0; }
bool Tokenizer::add_eos() const { return vocab_->add_eos && vocab_->eos >= 0; }
bool Tokenizer::add_space_prefix() const { return vocab_->add_space_prefix; }
bool Tokenizer::is_eog(int32_t id) const { return id >= 0 && vocab_->eog.count(id) > 0; }
bool Tokenizer::is_control(int32_t id) const { return vocab_->valid(id) && vocab_->tokens[id].type == TokenType::control; }
TokenType Tokenizer::token_type(int32_t id) const {
    return vocab_->valid(id) ? vocab_->tokens[id].type : TokenType::undefined;
}
std::string_view Tokenizer::token_text(int32_t id) const {
    return vocab_->valid(id) ? std::string_view(vocab_->tokens[id].text) : std::string_view();
}
std::string_view Tokenizer::model_name() const { return vocab_->model_name; }
std::string_view Tokenizer::pre_name() const { return vocab_->pre_name; }
std::optional<int32_t> Tokenizer::find_token(std::string_view text) const { return vocab_->find(text); }

}  // namespace kvrag::tokenizer
