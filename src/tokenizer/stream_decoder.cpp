#include "tokenizer/stream_decoder.h"

#include "tokenizer/unicode.h"

namespace kvrag::tokenizer {

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Moves the complete, valid prefix of pending into out (ill-formed bytes as U+FFFD) and
// leaves only an unfinished trailing character in pending.
void drain(std::string& pending, std::string& out) {
    std::string_view rest = pending;
    while (!rest.empty()) {
        size_t bad = std::string_view::npos;
        const size_t ok = detail::valid_utf8_prefix(rest, &bad);
        out.append(rest.substr(0, ok));
        rest.remove_prefix(ok);
        if (bad == std::string_view::npos) break;  // only an unfinished character is left
        // Skip the maximal ill-formed subpart: the lead byte plus any continuation bytes
        // that still fit a well-formed sequence, i.e. at least one byte.
        out += kReplacement;
        size_t skip = 1;
        const size_t want = detail::utf8_len(static_cast<uint8_t>(rest[0]));
        while (want > 1 && skip < want && skip < rest.size() &&
               (static_cast<uint8_t>(rest[skip]) & 0xC0) == 0x80) {
            size_t probe_bad = std::string_view::npos;
            // Stop before a continuation byte that makes the prefix ill-formed.
            detail::valid_utf8_prefix(rest.substr(0, skip + 1), &probe_bad);
            if (probe_bad != std::string_view::npos) break;
            ++skip;
        }
        rest.remove_prefix(skip);
    }
    pending.assign(rest);
}

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool special, bool starts_text)
    : tok_(tok), special_(special), starts_text_(starts_text), first_(starts_text) {}

std::string StreamDecoder::feed(int32_t id) {
    std::string piece = tok_.token_to_piece(id, special_);
    if (first_) {
        // decode() drops the space the SPM prefix added, from the first token only (whatever
        // that token is, as llama_detokenize: a BOS first takes the strip with it).
        if (tok_.add_space_prefix() && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
        first_ = false;
    }
    pending_ += piece;
    std::string out;
    drain(pending_, out);
    return out;
}

std::string StreamDecoder::flush() {
    std::string out;
    drain(pending_, out);
    if (!pending_.empty()) out += kReplacement;
    pending_.clear();
    first_ = starts_text_;
    return out;
}

}  // namespace kvrag::tokenizer
