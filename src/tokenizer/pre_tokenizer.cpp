#include "tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>

#include "tokenizer/unicode.h"

namespace kvrag::tokenizer::detail {

namespace {

// ---- regex sets (llama.cpp's llm_tokenizer_bpe, one per pre-type family) ----
// Non-ASCII characters are written as \x{...} so that no editor or tool can normalise them
// (deepseek-llm's letter class contains canonical singletons such as U+2126 OHM SIGN).

constexpr std::string_view kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr std::string_view kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kDeepseekLlmLetters =
    R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)";
constexpr std::string_view kDeepseekLlmPunct = R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)";
constexpr std::string_view kDeepseekCjk = R"([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";
constexpr std::string_view kBloom = R"( ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C})]+)";
constexpr std::string_view kTekken =
    R"([^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kDeepseek3 =
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct NamedSpec {
    std::vector<std::string_view> names;  // tokenizer.ggml.pre values
    PreTokenizerSpec spec;
};

const std::vector<NamedSpec>& registry() {
    static const std::vector<NamedSpec> r = {
        {{"default"}, {"default", {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"}}},
        {{"llama3", "llama-v3", "llama-bpe", "falcon3"}, {"llama3", {kLlama3}, true, true, true}},
        {{"dbrx"}, {"dbrx", {kLlama3}}},
        {{"smaug-bpe"}, {"smaug", {kLlama3}}},
        {{"deepseek-llm"},
         {"deepseek-llm", {"[\r\n]", kDeepseekLlmLetters, kDeepseekLlmPunct, R"(\s+$)", kDeepseekCjk, R"(\p{N}+)"}, false}},
        {{"deepseek-coder"},
         {"deepseek-coder", {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, R"(\p{N})"}, false}},
        {{"deepseek-v3"},
         {"deepseek-v3", {R"(\p{N}{1,3})", R"([\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+)", kDeepseek3}, false}},
        {{"falcon"}, {"falcon", {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, "[0-9][0-9][0-9]"}}},
        {{"mpt"}, {"mpt", {kGpt2}}},
        {{"starcoder"}, {"starcoder", {R"(\p{N})", kGpt2}}},
        {{"refact"}, {"refact", {R"(\p{N})", kGpt2}}},
        {{"command-r"}, {"command-r", {R"(\p{N})", kGpt2}, false}},
        {{"smollm"}, {"smollm", {R"(\p{N})", kGpt2}, false}},
        {{"codeshell"}, {"codeshell", {R"(\p{N})", kGpt2}}},
        {{"exaone"}, {"exaone", {R"(\p{N})", kGpt2}}},
        {{"minerva-7b"}, {"minerva", {R"(\p{N})", kGpt2}}},
        {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en", "jina-v2-es", "jina-v2-de",
          "jina-v2-code", "roberta-bpe"},
         {"gpt2", {kGpt2}}},
        {{"olmo"}, {"olmo", {kGpt2}}},
        {{"jais"}, {"jais", {kGpt2}}},
        {{"qwen2", "deepseek-r1-qwen"}, {"qwen2", {kQwen2}, false}},
        {{"megrez"}, {"qwen2", {kQwen2}}},
        {{"stablelm2"}, {"stablelm2", {kQwen2}}},
        {{"chatglm-bpe"}, {"chatglm4", {kLlama3}}},
        {{"poro-chat"}, {"poro", {kBloom}, false}},
        {{"bloom"}, {"bloom", {kBloom}}},
        {{"gpt3-finnish"}, {"gpt3-finnish", {kBloom}}},
        {{"viking"}, {"viking", {kBloom, R"(\p{N})"}, false}},
        {{"tekken"}, {"tekken", {kTekken}, false, true, true}},
        {{"chameleon"},
         {"chameleon",
          {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", R"(([\t\n]|    |  ))", R"(\p{N})",
           R"([\p{P}!-/:-@\[-`{-~])", kGpt2},
          false, false, true}},
    };
    return r;
}

// llama.cpp's \s is the Unicode White_Space property (its own table, or std::regex's isspace
// plus a remap of non-ASCII spaces); PCRE2's UCP \s also admits U+180E, so spell it out.
std::string translate_whitespace(std::string_view re) {
    std::string out;
    out.reserve(re.size() + 32);
    for (size_t i = 0; i < re.size(); ++i) {
        if (re[i] == '\\' && i + 1 < re.size()) {
            const char c = re[i + 1];
            if (c == 's') {
                out += "\\p{White_Space}";
            } else if (c == 'S') {
                out += "\\P{White_Space}";
            } else {
                out += re[i];
                out += c;
            }
            ++i;
        } else {
            out += re[i];
        }
    }
    return out;
}

}  // namespace

const PreTokenizerSpec* find_pre_tokenizer(std::string_view name) {
    if (name.empty()) name = "default";
    for (const auto& entry : registry()) {
        for (auto n : entry.names) {
            if (n == name) return &entry.spec;
        }
    }
    return nullptr;
}

std::string supported_pre_tokenizers() {
    std::string out;
    for (const auto& entry : registry()) {
        for (auto n : entry.names) {
            if (!out.empty()) out += ", ";
            out += n;
        }
    }
    return out;
}

struct PreTokenizer::Regex {
    pcre2_code* code = nullptr;
    ~Regex() { pcre2_code_free(code); }
};

PreTokenizer::~PreTokenizer() = default;

Result<std::unique_ptr<PreTokenizer>> PreTokenizer::create(const std::vector<std::string_view>& regexes) {
    std::unique_ptr<PreTokenizer> pre(new PreTokenizer());
    for (auto re : regexes) {
        const std::string pattern = translate_whitespace(re);
        int err = 0;
        PCRE2_SIZE err_off = 0;
        pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                         PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &err, &err_off, nullptr);
        if (code == nullptr) {
            std::array<PCRE2_UCHAR, 256> msg{};
            pcre2_get_error_message(err, msg.data(), msg.size());
            return Error{Errc::tokenizer_unsupported,
                         "pre-tokenizer regex does not compile at offset " + std::to_string(err_off) + ": " +
                             reinterpret_cast<const char*>(msg.data()) + " in '" + pattern + "'"};
        }
        // JIT is an optimisation only; the interpreter is used when it is unavailable.
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
        auto r = std::make_unique<Regex>();
        r->code = code;
        pre->regexes_.push_back(std::move(r));
    }
    return pre;
}

namespace {

// One pcre2_match call; falls back to the interpreter when the JIT stack runs out (a very
// long run of one class can need more than the default 32 KiB JIT stack).
int match_at(const pcre2_code* code, std::string_view s, size_t pos, uint32_t opts, pcre2_match_data* md) {
    const auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    int rc = pcre2_match(code, subject, s.size(), pos, opts | PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        rc = pcre2_match(code, subject, s.size(), pos, opts | PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
    }
    return rc;
}

size_t next_char(std::string_view s, size_t pos) {
    return std::min(s.size(), pos + utf8_len(static_cast<uint8_t>(s[pos])));
}

}  // namespace

std::vector<size_t> PreTokenizer::split(std::string_view subject) const {
    std::vector<size_t> ends;
    if (subject.empty()) return ends;
    ends.push_back(subject.size());

    std::vector<size_t> next;
    for (const auto& re : regexes_) {
        pcre2_match_data* md = pcre2_match_data_create_from_pattern(re->code, nullptr);
        next.clear();
        next.reserve(ends.size() * 2);
        size_t start = 0;
        for (size_t end : ends) {
            // Each piece is matched as a subject of its own, so lookarounds stop at its edges.
            const std::string_view piece = subject.substr(start, end - start);
            size_t pos = 0;   // where the next search starts
            size_t last = 0;  // end of the previous piece emitted inside this one
            bool after_empty = false;
            while (pos <= piece.size()) {
                // After an empty match, std::regex first retries at the same place for a
                // non-empty match, then moves on one character; mirror that.
                int rc = after_empty ? match_at(re->code, piece, pos, PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED, md)
                                     : match_at(re->code, piece, pos, 0, md);
                if (rc < 0 && after_empty) {
                    after_empty = false;
                    if (pos >= piece.size()) break;
                    pos = next_char(piece, pos);
                    continue;
                }
                if (rc < 0) break;  // no match (or a resource limit): the rest is one gap
                const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
                const size_t ms = ov[0];
                const size_t me = ov[1];
                if (ms > last) next.push_back(start + ms);  // the gap before the match
                if (me > ms) next.push_back(start + me);
                last = std::max(last, me);
                after_empty = me == ms;
                pos = me;
                if (!after_empty && pos >= piece.size()) break;
            }
            if (last < piece.size()) next.push_back(end);
            start = end;
        }
        pcre2_match_data_free(md);
        ends.swap(next);
    }
    return ends;
}

}  // namespace kvrag::tokenizer::detail
