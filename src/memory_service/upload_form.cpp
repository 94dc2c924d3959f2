#include "memory_service/upload_form.h"

namespace kvrag::memory_service {

Result<UploadForm> parse_upload_form(const httplib::MultipartFormDataMap& parts) {
    UploadForm form;
    for (const auto& [name, part] : parts) {
        if (!part.filename.empty()) {
            form.files.push_back(&part);
        } else if (name == "index") {
            if (!part.content.empty()) form.index = part.content;
        } else if (name == "documentId") {
            form.doc_id = part.content;
        } else if (name == "tags") {
            const auto colon = part.content.find(':');
            if (colon == std::string::npos || colon == 0) return Error{Errc::memory_bad_input, "tag '" + part.content + "' is not key:value"};
            form.tags.emplace_back(part.content.substr(0, colon), part.content.substr(colon + 1));
        }
    }
    if (form.files.empty()) return Error{Errc::memory_bad_input, "/upload carries no file"};
    if (!form.doc_id.empty() && form.files.size() > 1) {
        return Error{Errc::memory_bad_input, "documentId with " + std::to_string(form.files.size()) + " files; send one file per document id"};
    }
    return form;
}

}  // namespace kvrag::memory_service
