// Document bytes -> plain text, with Debian's libraries: cmark (Markdown), gumbo (HTML) and
// poppler-cpp (PDF). Block structure becomes blank lines so the chunker can see paragraphs.
#pragma once

#include <string>
#include <string_view>

#include "core/error.h"

namespace kvrag::memory {

enum class DocType { text, markdown, html, pdf };
const char* doc_type_name(DocType t);

// By extension (case-insensitive): .txt .text .log .csv .json .rst -> text; .md .markdown ->
// markdown; .html .htm .xhtml -> html; .pdf -> pdf. A MIME type, when given, wins
// (text/plain, text/markdown, text/html, application/pdf). Error memory_unsupported_type,
// naming the extension and listing the supported ones.
Result<DocType> doc_type_for(std::string_view file_name, std::string_view mime_type = "");

// Errors (memory_extract, naming `name`): text-like input with NUL bytes (binary), a PDF
// poppler cannot open or that is encrypted, a document with no text at all. Invalid UTF-8 in
// text input becomes U+FFFD.
Result<std::string> extract_text(std::string_view bytes, DocType type, std::string_view name);

}  // namespace kvrag::memory
