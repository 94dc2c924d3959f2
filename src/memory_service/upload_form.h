// POST /upload bodies: the multipart/form-data parser and the rules of Kernel Memory's upload
// form. Kept apart from the route so both can be tested and fuzzed without a store or a model
// (tests/memory_service/upload_form_test.cpp, tests/fuzz/multipart_fuzz.cpp).
//
// The parser reads the body through a BodyReader, a window at a time: the route's body is the
// upload's temporary file (upload_body.h), so neither the body nor a part is ever held in
// memory whole. A part is its place in the body ([offset, offset + size)); only the short form
// fields are read out (at most kMaxFieldBytes each).
//
// Why kvrag parses multipart itself: Debian 12's cpp-httplib 0.11 reads a part's
// Content-Disposition only in the quoted form (name="x"; filename="y"). .NET's
// MultipartFormDataContent -- Kernel Memory's MemoryWebClient -- writes the parameters
// unquoted, adds filename*=utf-8''..., puts a Content-Type line first and quotes the boundary,
// so every part came out nameless. This is the one place multipart bodies are parsed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "memory/ids.h"
#include "memory/store.h"

namespace kvrag::memory_service {

// ---- the body ----

// Random read access to a whole request body: the upload's temporary file (UploadBody) or
// bytes in memory (MemoryBody: tests, the fuzz target).
class BodyReader {
public:
    virtual ~BodyReader() = default;
    virtual uint64_t size() const = 0;
    // Copies the bytes [offset, offset + n) to out. Precondition: offset + n <= size().
    // Errors: memory_store when the file cannot be read (the message names the errno).
    virtual Result<void> read(uint64_t offset, size_t n, char* out) const = 0;
    // [offset, offset + n) as a string (one allocation of n bytes).
    Result<std::string> read_string(uint64_t offset, size_t n) const;
};

// A body in memory; `bytes` must outlive it.
class MemoryBody final : public BodyReader {
public:
    explicit MemoryBody(std::string_view bytes) : bytes_(bytes) {}
    uint64_t size() const override { return bytes_.size(); }
    Result<void> read(uint64_t offset, size_t n, char* out) const override;

private:
    std::string_view bytes_;
};

// ---- multipart/form-data (RFC 7578) ----

struct FormPart {
    std::string name;          // Content-Disposition name (quoted or not)
    std::string filename;      // filename* (RFC 5987, percent-decoded) when given, else filename
    bool has_filename = false;  // a filename or filename* parameter was present (a file part)
    std::string content_type;  // the part's Content-Type value, parameters included ("" when absent)
    uint64_t offset = 0;       // the part's bytes are [offset, offset + size) of the body
    uint64_t size = 0;
    std::string_view content;  // the bytes themselves, set only by the in-memory parse_multipart
                               // overload (a view into that body, which must outlive it)
};

// The boundary parameter of a Content-Type header (quoted or not). Errors (memory_bad_input):
// not multipart/form-data, no boundary, a boundary longer than 70 characters (RFC 2046).
Result<std::string> multipart_boundary(std::string_view content_type);

// Splits a body into its parts, in body order. Lenient where clients differ (quoted or bare
// parameters, any header order and case, a preamble, LF-only line ends inside part headers);
// strict where data could be lost: a part that does not end with a delimiter, a final
// delimiter that is missing, more than kMaxParts parts or part headers over kMaxPartHeaderBytes
// are errors (memory_bad_input) naming what was found; a body that cannot be read is
// memory_store. Memory: one window of kScanWindowBytes plus the parts' headers, whatever the
// body's size (tests/memory_service/upload_body_test.cpp measures it on 64 MiB).
constexpr size_t kMaxParts = 1000;
constexpr size_t kMaxPartHeaderBytes = 16 * 1024;
constexpr size_t kScanWindowBytes = 256 * 1024;
Result<std::vector<FormPart>> parse_multipart(const BodyReader& body, std::string_view boundary);
// The same over bytes in memory; each part's `content` is also set (a view into `body`).
Result<std::vector<FormPart>> parse_multipart(std::string_view body, std::string_view boundary);

// ---- Kernel Memory's upload form ----

// "steps" may name exactly the pipeline kvrag runs (memory::kIngestSteps, Kernel Memory's
// DefaultPipeline step names), in this order, or nothing.

struct UploadForm {
    std::string index = "default";  // field "index"; absent, empty or blank = "default"
    std::string doc_id;             // field "documentId" ("" = one document per file, id from its name)
    memory::Tags tags;              // fields "tags", "key:value" or "key" alone (value ""), in form order
    std::vector<std::string> steps;  // field(s) "steps", split on space, comma, semicolon
    std::vector<const FormPart*> files;  // parts with a file name, in form order; point into the parts
};

// Reads the parts as Kernel Memory's server does: parts with a file name are the document's
// files; the fields are index, documentId, tags, steps and args, read from `body`. Errors
// (memory_bad_input), each naming the field: no file; a file part with an empty name or a
// name given twice; index or documentId or args given twice; a field over kMaxFieldBytes; a
// tag key starting with "__" (reserved, as in Kernel Memory); steps other than
// memory::kIngestSteps; args that are not a JSON object or name any argument (no upload
// argument maps to a kvrag setting); any other field. The form's files point into `parts`,
// which must outlive it.
constexpr size_t kMaxFieldBytes = 64 * 1024;
Result<UploadForm> parse_upload_form(const std::vector<FormPart>& parts, const BodyReader& body);
// The same with each field's value taken from its part's `content` (in-memory parts).
Result<UploadForm> parse_upload_form(const std::vector<FormPart>& parts);

// A Kernel Memory document may hold several files; a kvrag document holds one. Each file of a
// form becomes one kvrag document: with no documentId its id is the sanitised file name; with
// a documentId D and one file it is D; with several files it is D + "__" + the file's 0-based
// position. Every one carries the reserved tag __document_id = D (the Kernel Memory id) and
// __file_type = its content type, which /upload-status, /documents DELETE, filters and
// citations read back.
struct FileDocument {
    const FormPart* file = nullptr;
    std::string km_document_id;  // Kernel Memory's document id (D)
    std::string doc_id;          // kvrag's document id
    std::string content_type;    // without parameters; "" when the part named none (or octet-stream)
};
std::vector<FileDocument> file_documents(const UploadForm& form);

constexpr const char* kDocumentIdTag = "__document_id";  // Kernel Memory's reserved tag names
constexpr const char* kFileTypeTag = "__file_type";

}  // namespace kvrag::memory_service
