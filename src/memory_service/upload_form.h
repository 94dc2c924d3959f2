// The fields of a POST /upload form, read from the parts cpp-httplib parsed out of the
// multipart body. Kept apart from the route so the rules can be tested and fuzzed without a
// store or a model (tests/memory_service/upload_form_test.cpp, tests/fuzz/multipart_fuzz.cpp).
#pragma once

#include <httplib.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "memory/ids.h"

namespace kvrag::memory_service {

struct UploadForm {
    std::string index = "default";                     // field "index" (an empty one keeps the default)
    std::string doc_id;                                // field "documentId" ("" = from each file name)
    memory::Tags tags;                                 // fields "tags", each "key:value", in form order
    std::vector<const httplib::MultipartFormData*> files;  // parts with a file name, in form order; point into `parts`
};

// Reads the parts: a part with a file name is a document; otherwise "index", "documentId" and
// "tags" are read and other fields ignored (Kernel Memory clients send more than kvrag uses).
// Errors (memory_bad_input): a tag that is not key:value with a non-empty key, no file at all,
// a documentId with more than one file. The form's files point into `parts`, which must
// outlive it.
Result<UploadForm> parse_upload_form(const httplib::MultipartFormDataMap& parts);

}  // namespace kvrag::memory_service
