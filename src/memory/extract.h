// Document bytes -> plain text, with Debian's libraries: cmark (Markdown), gumbo (HTML),
// poppler-cpp (PDF) and zlib (.gz). Block structure becomes blank lines so the chunker can see
// paragraphs. What a file is comes from its bytes (extract_document): any text is read whatever
// its name; the name or MIME type only says whether text is Markdown or HTML.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace kvrag::memory {

enum class DocType { text, markdown, html, pdf };
const char* doc_type_name(DocType t);

// The type a name or MIME type asks for: a MIME type wins (text/plain, text/markdown,
// text/html, application/pdf); else the extension, case-insensitive (.md .markdown ->
// markdown; .html .htm .xhtml -> html; .pdf -> pdf); anything else is text (the bytes decide
// whether it really is: extract_document). A trailing ".gz" is looked through. Never fails.
Result<DocType> doc_type_for(std::string_view file_name, std::string_view mime_type = "");

// How many leading bytes sniff_binary needs to decide.
constexpr size_t kSniffBytes = 64u << 10;
// Error memory_unsupported_type when the head of a file (its first kSniffBytes, or all of it)
// shows a binary file: a NUL byte, or more than 1% control bytes other than tab, newline,
// carriage return, form feed, vertical tab and escape. A PDF (%PDF-) or gzip (1f 8b) head
// passes: their content is checked when extracted. Lets a caller refuse a binary file before
// reading or queueing all of it.
Result<void> sniff_binary(std::string_view head, std::string_view name);

struct Extracted {
    std::string text;                   // valid UTF-8
    DocType type = DocType::text;
    std::vector<std::string> warnings;  // e.g. "not UTF-8; read as Windows-1252"
};

// Bytes -> text, found by content: gzip is decompressed (once, at most kMaxGunzipBytes) and
// its content read as below; %PDF- is a PDF; other bytes must be text: valid UTF-8 (a BOM is
// dropped), or, when not UTF-8 but free of binary bytes, Windows-1252 (a superset of Latin-1)
// decoded with a warning. Markdown and HTML by doc_type_for(name, mime); a MIME of
// application/pdf on non-PDF bytes is an error. Errors: memory_unsupported_type (binary:
// names the offending byte and offset), memory_extract (broken or encrypted PDF, broken gzip,
// no text).
constexpr size_t kMaxGunzipBytes = 512u << 20;
Result<Extracted> extract_document(std::string_view bytes, std::string_view name, std::string_view mime_type = "");

// Errors (memory_extract, naming `name`): text-like input with NUL bytes (binary), a PDF
// poppler cannot open or that is encrypted, a document with no text at all. Invalid UTF-8 in
// text input becomes U+FFFD.
Result<std::string> extract_text(std::string_view bytes, DocType type, std::string_view name);

}  // namespace kvrag::memory
