// libFuzzer target: POST /upload bodies (multipart/form-data) of arbitrary bytes.
//
// kvrag parses multipart itself (src/memory_service/upload_form.h says why cpp-httplib's parser
// cannot be used), so the target calls the parser and the form rules directly, exactly as the
// /upload route does: parse_multipart under a fixed boundary, then parse_upload_form and
// file_documents. Everything runs in-process and instrumented.
//
// Invariants: parse_multipart and parse_upload_form fail only with memory_bad_input; every
// part's content lies inside the body, parts do not overlap and come in body order, at most
// kMaxParts; each part's offset and size name its content; parse_upload_form reading the
// fields through a BodyReader (as the route does from its temporary file) decides exactly as
// it does from the in-memory parts; an accepted form obeys upload_form.h (at least one file, each with a non-empty
// name, a non-empty index, tag keys non-empty and not reserved, steps empty or kvrag's
// pipeline); file_documents gives one document per file with non-empty ids, and each file
// name sanitises to a valid id (memory/ids.h) and gets a document type or
// memory_unsupported_type.
#define KVRAG_FUZZ_TARGET "multipart_fuzz"

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "memory/extract.h"
#include "memory/ids.h"
#include "memory_service/upload_form.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using kvrag::Errc;
    namespace ms = kvrag::memory_service;
    const std::string_view body(reinterpret_cast<const char*>(data), size);
    auto boundary = ms::multipart_boundary("multipart/form-data; boundary=\"kvragFuzzBoundary\"");
    KVRAG_FUZZ_CHECK(boundary.ok() && *boundary == "kvragFuzzBoundary", "the quoted boundary was not read");
    auto parts = ms::parse_multipart(body, *boundary);
    if (!parts) {
        KVRAG_FUZZ_CHECK(parts.error().code == Errc::memory_bad_input, "parse_multipart failed with another code than E6006");
        return 0;
    }
    KVRAG_FUZZ_CHECK(parts->size() <= ms::kMaxParts, "more parts than kMaxParts");
    const char* end_of_last = body.data();
    for (const auto& p : *parts) {
        KVRAG_FUZZ_CHECK(p.content.data() >= body.data() && p.content.data() + p.content.size() <= body.data() + body.size(),
                         "a part's content lies outside the body");
        KVRAG_FUZZ_CHECK(p.content.data() >= end_of_last, "parts overlap or are out of order");
        KVRAG_FUZZ_CHECK(p.content.data() == body.data() + p.offset && p.content.size() == p.size, "a part's offset and size do not name its content");
        end_of_last = p.content.data() + p.content.size();
    }
    auto form = ms::parse_upload_form(*parts);
    auto form_read = ms::parse_upload_form(*parts, ms::MemoryBody(body));
    KVRAG_FUZZ_CHECK(form.ok() == form_read.ok(), "reading the fields through a BodyReader decided otherwise");
    if (!form) {
        KVRAG_FUZZ_CHECK(form.error().code == Errc::memory_bad_input, "parse_upload_form failed with another code than E6006");
        KVRAG_FUZZ_CHECK(form_read.error().message == form.error().message, "reading the fields through a BodyReader gave another error");
        return 0;
    }
    KVRAG_FUZZ_CHECK(form_read->index == form->index && form_read->doc_id == form->doc_id && form_read->tags == form->tags &&
                         form_read->files == form->files,
                     "reading the fields through a BodyReader gave another form");
    KVRAG_FUZZ_CHECK(!form->files.empty(), "a form without files was accepted");
    KVRAG_FUZZ_CHECK(!form->index.empty(), "an empty index");
    KVRAG_FUZZ_CHECK(form->steps.empty() || form->steps.size() == 4, "steps other than kvrag's pipeline were accepted");
    for (const auto& [k, v] : form->tags) {
        KVRAG_FUZZ_CHECK(!k.empty(), "a tag with an empty key");
        KVRAG_FUZZ_CHECK(k.rfind("__", 0) != 0, "a reserved tag key was accepted");
    }
    const auto docs = ms::file_documents(*form);
    KVRAG_FUZZ_CHECK(docs.size() == form->files.size(), "file_documents gave another count than the files");
    for (const auto& d : docs) {
        KVRAG_FUZZ_CHECK(!d.file->filename.empty(), "a file part without a file name");
        KVRAG_FUZZ_CHECK(!d.doc_id.empty() && !d.km_document_id.empty(), "an empty document id");
        KVRAG_FUZZ_CHECK(kvrag::memory::valid_id(kvrag::memory::sanitize_id(d.file->filename)), "sanitize_id made an invalid id");
        auto type = kvrag::memory::doc_type_for(d.file->filename, d.content_type);
        KVRAG_FUZZ_CHECK(type || type.error().code == Errc::memory_unsupported_type, "doc_type_for failed with another code");
    }
    return 0;
}
