#include "tokenizer/unicode.h"

#include <array>

namespace kvrag::tokenizer::detail {

uint32_t decode_lenient(std::string_view s, size_t* pos) {
    const size_t i = *pos;
    const auto b0 = static_cast<uint8_t>(s[i]);
    auto cont = [&](size_t k) { return i + k < s.size() && (static_cast<uint8_t>(s[i + k]) & 0xC0) == 0x80; };
    auto bits = [&](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(s[i + k]) & 0x3F); };
    if (b0 < 0x80) {
        *pos = i + 1;
        return b0;
    }
    if ((b0 & 0x40) == 0) {  // continuation byte where a lead byte was expected
        *pos = i + 1;
        return kReplacementChar;
    }
    if ((b0 & 0x20) == 0) {
        if (!cont(1)) { *pos = i + 1; return kReplacementChar; }
        *pos = i + 2;
        return ((b0 & 0x1Fu) << 6) | bits(1);
    }
    if ((b0 & 0x10) == 0) {
        if (!cont(1) || !cont(2)) { *pos = i + 1; return kReplacementChar; }
        *pos = i + 3;
        return ((b0 & 0x0Fu) << 12) | (bits(1) << 6) | bits(2);
    }
    if ((b0 & 0x08) == 0) {
        if (!cont(1) || !cont(2) || !cont(3)) { *pos = i + 1; return kReplacementChar; }
        *pos = i + 4;
        return ((b0 & 0x07u) << 18) | (bits(1) << 12) | (bits(2) << 6) | bits(3);
    }
    *pos = i + 1;
    return kReplacementChar;
}

void append_utf8(std::string& out, uint32_t cpt) {
    if (cpt > 0x10FFFF) cpt = kReplacementChar;
    if (cpt < 0x80) {
        out.push_back(static_cast<char>(cpt));
    } else if (cpt < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cpt >> 6)));
        out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
    } else if (cpt < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cpt >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cpt >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
    }
}

size_t valid_utf8_prefix(std::string_view s, size_t* invalid_at) {
    *invalid_at = std::string_view::npos;
    size_t i = 0;
    while (i < s.size()) {
        const auto b0 = static_cast<uint8_t>(s[i]);
        size_t n = 0;
        uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte (RFC 3629 table)
        if (b0 < 0x80) {
            ++i;
            continue;
        } else if (b0 >= 0xC2 && b0 <= 0xDF) {
            n = 2;
        } else if (b0 >= 0xE0 && b0 <= 0xEF) {
            n = 3;
            if (b0 == 0xE0) lo = 0xA0;
            if (b0 == 0xED) hi = 0x9F;
        } else if (b0 >= 0xF0 && b0 <= 0xF4) {
            n = 4;
            if (b0 == 0xF0) lo = 0x90;
            if (b0 == 0xF4) hi = 0x8F;
        } else {
            *invalid_at = i;
            return i;
        }
        for (size_t k = 1; k < n; ++k) {
            if (i + k >= s.size()) return i;  // incomplete: may be finished by later bytes
            const auto b = static_cast<uint8_t>(s[i + k]);
            const bool ok = k == 1 ? (b >= lo && b <= hi) : (b & 0xC0) == 0x80;
            if (!ok) {
                *invalid_at = i;
                return i;
            }
        }
        i += n;
    }
    return i;
}

Sanitized sanitize_utf8(std::string_view raw) {
    Sanitized out;
    out.subject.reserve(raw.size());
    out.text.reserve(raw.size());
    size_t pos = 0;
    while (pos < raw.size()) {
        const size_t start = pos;
        const uint32_t cpt = decode_lenient(raw, &pos);
        const bool canonical_len = (cpt < 0x80 ? 1 : cpt < 0x800 ? 2 : cpt < 0x10000 ? 3 : 4) == pos - start;
        const bool scalar = cpt <= 0x10FFFF && (cpt < 0xD800 || cpt > 0xDFFF);
        if (scalar && canonical_len && cpt != kReplacementChar) {
            // Well-formed: both views keep the original bytes.
            out.subject.append(raw.substr(start, pos - start));
            out.text.append(raw.substr(start, pos - start));
        } else if (cpt >= 0xD800 && cpt <= 0xDFFF) {
            // PCRE2 rejects surrogates; U+FFFD has the same width and the same regex classes.
            append_utf8(out.subject, kReplacementChar);
            append_utf8(out.text, cpt);
        } else {
            append_utf8(out.subject, cpt);
            append_utf8(out.text, cpt);
        }
    }
    return out;
}

namespace {

struct ByteTables {
    std::array<std::string, 256> to_unicode;
    std::array<int16_t, 0x144> to_byte;
    ByteTables() {
        to_byte.fill(-1);
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            const uint32_t cpt = printable ? static_cast<uint32_t>(b) : 0x100u + static_cast<uint32_t>(n++);
            append_utf8(to_unicode[b], cpt);
            to_byte[cpt] = static_cast<int16_t>(b);
        }
    }
};

const ByteTables& tables() {
    static const ByteTables t;
    return t;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t b) { return tables().to_unicode[b]; }

int unicode_to_byte(uint32_t cpt) {
    return cpt < tables().to_byte.size() ? tables().to_byte[cpt] : -1;
}

std::string byte_encode(std::string_view text) {
    std::string out;
    out.reserve(text.size() * 2);
    for (char c : text) out += byte_to_unicode(static_cast<uint8_t>(c));
    return out;
}

}  // namespace kvrag::tokenizer::detail
