#include "memory/extract.h"

#include "core/ascii.h"

#include <cmark.h>
#include <gumbo.h>
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <mutex>

namespace kvrag::memory {
namespace {


// Replaces each byte that does not start a well-formed UTF-8 sequence by U+FFFD so SQLite and
// the tokenizer see valid text. Well-formed is RFC 3629's table: the lead byte's range fixes the
// second byte's range, which rules out overlong forms (C0, C1, E0 80-9F, F0 80-8F), UTF-16
// surrogates (ED A0-BF) and code points past U+10FFFF (F4 90-BF, F5-FF); each of those bytes
// becomes one U+FFFD, as the other invalid ones always have.
std::string valid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        int n = 0;
        unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c < 0x80) n = 1;
        else if (c >= 0xC2 && c <= 0xDF) n = 2;
        else if (c >= 0xE0 && c <= 0xEF) n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4) n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        bool ok = n > 0 && i + n <= s.size();
        for (int k = 1; ok && k < n; ++k) {
            const auto b = static_cast<unsigned char>(s[i + k]);
            ok = k == 1 ? (b >= lo && b <= hi) : (b & 0xC0) == 0x80;
        }
        if (ok) {
            out.append(s.substr(i, n));
            i += n;
        } else {
            out += "\xEF\xBF\xBD";
            ++i;
        }
    }
    return out;
}

bool has_text(std::string_view s) {
    return std::any_of(s.begin(), s.end(), [](unsigned char c) { return !std::isspace(c); });
}

Result<void> check_not_binary(std::string_view bytes, std::string_view name) {
    const size_t nul = bytes.find('\0');
    if (nul != std::string_view::npos) {
        return Error{Errc::memory_extract, "'" + std::string(name) + "' looks binary (NUL byte at offset " + std::to_string(nul) +
                                               "); not a text document"};
    }
    return {};
}

// ---- Markdown: walk cmark's AST; blocks end with a blank line -------------------------------

std::string markdown_to_text(std::string_view md) {
    std::unique_ptr<cmark_node, void (*)(cmark_node*)> doc(cmark_parse_document(md.data(), md.size(), CMARK_OPT_DEFAULT),
                                                            cmark_node_free);
    std::string out;
    if (!doc) return out;
    std::unique_ptr<cmark_iter, void (*)(cmark_iter*)> it(cmark_iter_new(doc.get()), cmark_iter_free);
    cmark_event_type ev;
    while ((ev = cmark_iter_next(it.get())) != CMARK_EVENT_DONE) {
        cmark_node* node = cmark_iter_get_node(it.get());
        const cmark_node_type type = cmark_node_get_type(node);
        if (ev == CMARK_EVENT_ENTER) {
            switch (type) {
                case CMARK_NODE_TEXT:
                case CMARK_NODE_CODE:
                    if (const char* lit = cmark_node_get_literal(node)) out += lit;
                    break;
                case CMARK_NODE_CODE_BLOCK:
                    if (const char* lit = cmark_node_get_literal(node)) out += lit;
                    out += "\n\n";
                    break;
                case CMARK_NODE_SOFTBREAK:
                case CMARK_NODE_LINEBREAK:
                    out += '\n';
                    break;
                case CMARK_NODE_THEMATIC_BREAK:
                    out += "\n\n";
                    break;
                default:
                    break;
            }
        } else if (ev == CMARK_EVENT_EXIT) {
            if (type == CMARK_NODE_PARAGRAPH || type == CMARK_NODE_HEADING || type == CMARK_NODE_BLOCK_QUOTE) out += "\n\n";
        }
    }
    return out;
}

// ---- HTML: walk gumbo's tree, skipping non-content elements -------------------------------

bool is_block(GumboTag t) {
    switch (t) {
        case GUMBO_TAG_P: case GUMBO_TAG_DIV: case GUMBO_TAG_SECTION: case GUMBO_TAG_ARTICLE: case GUMBO_TAG_HEADER:
        case GUMBO_TAG_FOOTER: case GUMBO_TAG_NAV: case GUMBO_TAG_ASIDE: case GUMBO_TAG_MAIN: case GUMBO_TAG_H1:
        case GUMBO_TAG_H2: case GUMBO_TAG_H3: case GUMBO_TAG_H4: case GUMBO_TAG_H5: case GUMBO_TAG_H6: case GUMBO_TAG_UL:
        case GUMBO_TAG_OL: case GUMBO_TAG_TABLE: case GUMBO_TAG_PRE: case GUMBO_TAG_BLOCKQUOTE: case GUMBO_TAG_HR:
        case GUMBO_TAG_TITLE: case GUMBO_TAG_DL: case GUMBO_TAG_FIGURE:
            return true;
        default:
            return false;
    }
}

bool is_line(GumboTag t) {
    return t == GUMBO_TAG_BR || t == GUMBO_TAG_LI || t == GUMBO_TAG_TR || t == GUMBO_TAG_DT || t == GUMBO_TAG_DD;
}

void html_walk(const GumboNode* node, std::string& out, bool pre, int depth) {
    if (depth > 512) return;  // pathological nesting; the text so far is kept
    if (node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_CDATA) {
        const std::string_view t(node->v.text.text);
        if (pre) {
            out += t;
            return;
        }
        // collapse runs of whitespace as a browser does
        for (char c : t) {
            if (std::isspace(static_cast<unsigned char>(c))) {
                if (!out.empty() && !std::isspace(static_cast<unsigned char>(out.back()))) out += ' ';
            } else {
                out += c;
            }
        }
        return;
    }
    if (node->type == GUMBO_NODE_WHITESPACE) {
        if (pre) out += node->v.text.text;
        else if (!out.empty() && !std::isspace(static_cast<unsigned char>(out.back()))) out += ' ';
        return;
    }
    if (node->type != GUMBO_NODE_ELEMENT && node->type != GUMBO_NODE_DOCUMENT && node->type != GUMBO_NODE_TEMPLATE) return;
    const GumboVector* children = node->type == GUMBO_NODE_DOCUMENT ? &node->v.document.children : &node->v.element.children;
    GumboTag tag = GUMBO_TAG_UNKNOWN;
    if (node->type == GUMBO_NODE_ELEMENT) {
        tag = node->v.element.tag;
        if (tag == GUMBO_TAG_SCRIPT || tag == GUMBO_TAG_STYLE || tag == GUMBO_TAG_NOSCRIPT || tag == GUMBO_TAG_TEMPLATE ||
            tag == GUMBO_TAG_SVG || tag == GUMBO_TAG_IFRAME) {
            return;
        }
        if (is_block(tag)) out += "\n\n";
        else if (is_line(tag)) out += "\n";
        else if (tag == GUMBO_TAG_TD || tag == GUMBO_TAG_TH) out += " | ";
    }
    const bool in_pre = pre || tag == GUMBO_TAG_PRE;
    for (unsigned i = 0; i < children->length; ++i) {
        html_walk(static_cast<const GumboNode*>(children->data[i]), out, in_pre, depth + 1);
    }
    if (is_block(tag)) out += "\n\n";
}

std::string html_to_text(std::string_view html) {
    GumboOutput* g = gumbo_parse_with_options(&kGumboDefaultOptions, html.data(), html.size());
    std::string out;
    if (g) {
        html_walk(g->document, out, false, 0);
        gumbo_destroy_output(&kGumboDefaultOptions, g);
    }
    return out;
}

// ---- PDF: poppler's text per page ----------------------------------------------------------

void quiet_poppler(const std::string&, void*) {}

Result<std::string> pdf_to_text(std::string_view bytes, std::string_view name) {
    static std::once_flag once;
    std::call_once(once, [] { poppler::set_debug_error_function(quiet_poppler, nullptr); });
    if (bytes.size() > static_cast<size_t>(INT32_MAX)) {
        std::string msg = "'";
        msg += name;
        msg += "' is " + std::to_string(bytes.size()) + " bytes; PDFs over 2 GiB are not supported";
        return Error{Errc::memory_extract, std::move(msg)};
    }
    if (bytes.size() < 5 || bytes.substr(0, 5) != "%PDF-") {
        return Error{Errc::memory_extract, "'" + std::string(name) + "' is not a PDF (no %PDF- header)"};
    }
    std::unique_ptr<poppler::document> doc(poppler::document::load_from_raw_data(bytes.data(), static_cast<int>(bytes.size())));
    if (!doc) return Error{Errc::memory_extract, "'" + std::string(name) + "' is a broken PDF (poppler cannot open it)"};
    if (doc->is_locked()) return Error{Errc::memory_extract, "'" + std::string(name) + "' is an encrypted PDF; no password given"};
    std::string out;
    const int n_pages = doc->pages();
    for (int i = 0; i < n_pages; ++i) {
        std::unique_ptr<poppler::page> page(doc->create_page(i));
        if (!page) continue;
        const auto utf8 = page->text().to_utf8();
        out.append(utf8.begin(), utf8.end());
        out += "\n\n";
    }
    return out;
}

}  // namespace

const char* doc_type_name(DocType t) {
    switch (t) {
        case DocType::text: return "text";
        case DocType::markdown: return "markdown";
        case DocType::html: return "html";
        case DocType::pdf: return "pdf";
    }
    return "?";
}

Result<DocType> doc_type_for(std::string_view file_name, std::string_view mime_type) {
    const std::string mime = ascii_lower(mime_type.substr(0, mime_type.find(';')));
    if (mime == "text/plain") return DocType::text;
    if (mime == "text/markdown" || mime == "text/x-markdown") return DocType::markdown;
    if (mime == "text/html" || mime == "application/xhtml+xml") return DocType::html;
    if (mime == "application/pdf") return DocType::pdf;
    std::string name = ascii_lower(file_name);
    if (name.size() > 3 && name.ends_with(".gz")) name.resize(name.size() - 3);
    const size_t dot = name.rfind('.');
    const size_t slash = name.find_last_of("/\\");
    const std::string ext = (dot == std::string::npos || (slash != std::string::npos && dot < slash)) ? std::string() : name.substr(dot);
    if (ext == ".md" || ext == ".markdown") return DocType::markdown;
    if (ext == ".html" || ext == ".htm" || ext == ".xhtml") return DocType::html;
    if (ext == ".pdf") return DocType::pdf;
    return DocType::text;
}

namespace {

bool is_gzip(std::string_view b) { return b.size() >= 2 && static_cast<unsigned char>(b[0]) == 0x1f && static_cast<unsigned char>(b[1]) == 0x8b; }
bool is_pdf(std::string_view b) { return b.starts_with("%PDF-"); }

// Control bytes that text does not hold (tab, LF, VT, FF, CR and ESC -- colour codes in logs --
// are text).
bool is_binary_control(unsigned char c) { return (c < 0x20 && c != '\t' && c != '\n' && c != '\v' && c != '\f' && c != '\r' && c != 0x1b) || c == 0x7f; }

std::string hex_byte(unsigned char c) {
    static const char* d = "0123456789abcdef";
    return std::string("0x") + d[c >> 4] + d[c & 15];
}

// True when every byte of s is part of well-formed UTF-8 (see valid_utf8).
bool is_utf8(std::string_view s) { return valid_utf8(s) == s; }

// Windows-1252 -> UTF-8: bytes 80-9F are its printable characters (the five it leaves
// undefined become U+FFFD); A0-FF are Latin-1's.
std::string cp1252_to_utf8(std::string_view s) {
    static const char16_t k80[32] = {0x20AC, 0xFFFD, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
                                     0x2039, 0x0152, 0xFFFD, 0x017D, 0xFFFD, 0xFFFD, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
                                     0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0xFFFD, 0x017E, 0x0178};
    std::string out;
    out.reserve(s.size() + s.size() / 8);
    for (unsigned char c : s) {
        const uint32_t cp = c < 0x80 ? c : c < 0xA0 ? k80[c - 0x80] : c;
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }
    return out;
}

Result<std::string> gunzip(std::string_view bytes, std::string_view name) {
    z_stream zs{};
    if (inflateInit2(&zs, 15 + 32) != Z_OK) return Error{Errc::memory_extract, "zlib cannot start inflating '" + std::string(name) + "'"};
    std::string out;
    char buf[64 * 1024];
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
    zs.avail_in = static_cast<uInt>(std::min<size_t>(bytes.size(), UINT32_MAX));
    int rc = Z_OK;
    for (;;) {
        zs.next_out = reinterpret_cast<Bytef*>(buf);
        zs.avail_out = sizeof(buf);
        rc = inflate(&zs, Z_NO_FLUSH);
        out.append(buf, sizeof(buf) - zs.avail_out);
        if (rc == Z_STREAM_END) break;
        if ((rc == Z_OK || rc == Z_BUF_ERROR) && zs.avail_in == 0 && zs.avail_out != 0) {
            inflateEnd(&zs);
            return Error{Errc::memory_extract, "'" + std::string(name) + "' is a truncated gzip file (" + std::to_string(bytes.size()) + " bytes)"};
        }
        if (rc != Z_OK) {
            inflateEnd(&zs);
            return Error{Errc::memory_extract, "'" + std::string(name) + "' is a broken gzip file (zlib: " +
                                                   (zs.msg ? std::string(zs.msg) : std::to_string(rc)) + " after " +
                                                   std::to_string(zs.total_in) + " of " + std::to_string(bytes.size()) + " bytes)"};
        }
        if (out.size() > kMaxGunzipBytes) {
            inflateEnd(&zs);
            return Error{Errc::memory_extract, "'" + std::string(name) + "' decompresses to more than " + std::to_string(kMaxGunzipBytes) +
                                                   " bytes; decompress it and split it first"};
        }
    }
    inflateEnd(&zs);
    return out;
}

}  // namespace

Result<void> sniff_binary(std::string_view head, std::string_view name) {
    if (is_pdf(head) || is_gzip(head)) return {};
    head = head.substr(0, kSniffBytes);
    size_t n_control = 0, first = std::string_view::npos;
    for (size_t i = 0; i < head.size(); ++i) {
        const auto c = static_cast<unsigned char>(head[i]);
        if (c == 0) {
            return Error{Errc::memory_unsupported_type, "'" + std::string(name) + "' is binary (byte 0x00 at offset " + std::to_string(i) +
                                                            "); only text (UTF-8 or Windows-1252, plain, Markdown, HTML, .gz) and PDF are read"};
        }
        if (is_binary_control(c)) {
            ++n_control;
            if (first == std::string_view::npos) first = i;
        }
    }
    if (n_control * 100 > head.size()) {
        return Error{Errc::memory_unsupported_type, "'" + std::string(name) + "' is binary (" + std::to_string(n_control) + " control bytes in the first " +
                                                        std::to_string(head.size()) + ", the first " + hex_byte(static_cast<unsigned char>(head[first])) +
                                                        " at offset " + std::to_string(first) +
                                                        "); only text (UTF-8 or Windows-1252, plain, Markdown, HTML, .gz) and PDF are read"};
    }
    return {};
}

Result<Extracted> extract_document(std::string_view bytes, std::string_view name, std::string_view mime_type) {
    Extracted out;
    std::string inflated;
    std::string inner_name(name);
    if (is_gzip(bytes)) {
        auto g = gunzip(bytes, name);
        if (!g) return g.error();
        inflated = std::move(*g);
        bytes = inflated;
        if (ascii_lower(inner_name).ends_with(".gz")) inner_name.resize(inner_name.size() - 3);
        mime_type = "";  // the MIME type described the compressed file
    }
    auto type = doc_type_for(inner_name, mime_type);
    if (!type) return type.error();
    if (is_pdf(bytes)) *type = DocType::pdf;
    out.type = *type;
    if (out.type != DocType::pdf) {
        if (auto b = sniff_binary(bytes, name); !b) return b.error();
        if (bytes.size() > kSniffBytes) {
            // The head passed; a NUL further on still marks the file binary.
            const size_t nul = bytes.find('\0', kSniffBytes);
            if (nul != std::string_view::npos) {
                return Error{Errc::memory_unsupported_type, "'" + std::string(name) + "' is binary (byte 0x00 at offset " + std::to_string(nul) + ")"};
            }
        }
        if (bytes.starts_with("\xEF\xBB\xBF")) bytes.remove_prefix(3);
        if (!is_utf8(bytes)) {
            inflated = cp1252_to_utf8(bytes);
            bytes = inflated;
            out.warnings.push_back("'" + std::string(name) + "' is not valid UTF-8; read as Windows-1252 (Latin-1)");
        }
    }
    auto text = extract_text(bytes, out.type, name);
    if (!text) return text.error();
    out.text = std::move(*text);
    return out;
}

Result<std::string> extract_text(std::string_view bytes, DocType type, std::string_view name) {
    std::string text;
    if (type == DocType::pdf) {
        auto r = pdf_to_text(bytes, name);
        if (!r) return r.error();
        text = valid_utf8(*r);
    } else {
        if (auto r = check_not_binary(bytes, name); !r) return r.error();
        const std::string utf8 = valid_utf8(bytes);
        switch (type) {
            case DocType::markdown: text = markdown_to_text(utf8); break;
            case DocType::html: text = html_to_text(utf8); break;
            default: text = utf8; break;
        }
    }
    if (!has_text(text)) {
        return Error{Errc::memory_extract, "'" + std::string(name) + "' (" + doc_type_name(type) + ", " + std::to_string(bytes.size()) +
                                               " bytes) has no text" + (type == DocType::pdf ? " (a scanned PDF?)" : "")};
    }
    return text;
}

}  // namespace kvrag::memory
