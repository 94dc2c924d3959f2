// libFuzzer target: document extraction (memory/extract.h) on arbitrary bytes, per format.
// Byte 0 picks the format (plain text, Markdown via cmark, HTML via gumbo, PDF via poppler);
// the rest is the document. Seeds: tests/fuzz/corpus/extract_fuzz/ (one or more per format).
//
// Invariants (extract.h): extraction returns text or a memory_extract error, never a crash;
// the text is valid UTF-8 (invalid input bytes become U+FFFD: the chunker, SQLite's FTS5 and
// the tokenizer get well-formed text) and is not blank; plain text that is already valid UTF-8
// comes back unchanged.
#define KVRAG_FUZZ_TARGET "extract_fuzz"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "memory/extract.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using kvrag::memory::DocType;
    if (size == 0) return 0;
    static constexpr DocType kTypes[] = {DocType::text, DocType::markdown, DocType::html, DocType::pdf};
    const DocType type = kTypes[data[0] % 4];
    const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
    auto text = kvrag::memory::extract_text(bytes, type, "fuzz");
    if (!text) {
        KVRAG_FUZZ_CHECK(text.error().code == kvrag::Errc::memory_extract, "extract_text failed with another code than E6002");
        return 0;
    }
    KVRAG_FUZZ_CHECK(kvrag::fuzz::is_valid_utf8(*text), "extracted text is not valid UTF-8");
    KVRAG_FUZZ_CHECK(text->find_first_not_of(" \t\n\v\f\r") != std::string::npos, "extracted text is blank");
    if (type == DocType::text && kvrag::fuzz::is_valid_utf8(bytes)) {
        KVRAG_FUZZ_CHECK(*text == bytes, "valid plain text did not come back unchanged");
    }
    return 0;
}
