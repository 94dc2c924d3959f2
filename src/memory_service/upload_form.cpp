#include "memory_service/upload_form.h"

#include "core/ascii.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

namespace kvrag::memory_service {

namespace {

Error form_error(std::string msg) { return Error{Errc::memory_bad_input, std::move(msg)}; }


std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
    return s;
}

// `value; key=v; key2="quoted \" value"` -> the parameters after the first ';', names
// lower-cased, quoted strings unescaped. A ';' inside quotes does not split.
std::vector<std::pair<std::string, std::string>> header_params(std::string_view header_value) {
    std::vector<std::pair<std::string, std::string>> out;
    size_t i = header_value.find(';');
    while (i != std::string_view::npos && i < header_value.size()) {
        ++i;  // past ';'
        while (i < header_value.size() && (header_value[i] == ' ' || header_value[i] == '\t')) ++i;
        const size_t eq = header_value.find_first_of("=;", i);
        if (eq == std::string_view::npos || header_value[eq] == ';') {
            i = eq;  // a parameter without '=': skipped
            continue;
        }
        std::string key = ascii_lower(trim(header_value.substr(i, eq - i)));
        size_t j = eq + 1;
        while (j < header_value.size() && (header_value[j] == ' ' || header_value[j] == '\t')) ++j;
        std::string value;
        if (j < header_value.size() && header_value[j] == '"') {
            ++j;
            while (j < header_value.size() && header_value[j] != '"') {
                if (header_value[j] == '\\' && j + 1 < header_value.size()) ++j;
                value.push_back(header_value[j++]);
            }
            if (j < header_value.size()) ++j;  // closing quote
            i = header_value.find(';', j);
        } else {
            const size_t end = header_value.find(';', j);
            value = std::string(trim(header_value.substr(j, end == std::string_view::npos ? std::string_view::npos : end - j)));
            i = end;
        }
        out.emplace_back(std::move(key), std::move(value));
    }
    return out;
}

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// RFC 5987 ext-value: charset'language'percent-encoded. UTF-8 (and ASCII) are decoded; for
// another charset the caller keeps the plain filename.
bool decode_ext_value(std::string_view v, std::string& out) {
    const size_t q1 = v.find('\'');
    if (q1 == std::string_view::npos) return false;
    const size_t q2 = v.find('\'', q1 + 1);
    if (q2 == std::string_view::npos) return false;
    const std::string charset = ascii_lower(v.substr(0, q1));
    if (charset != "utf-8" && charset != "us-ascii") return false;
    out.clear();
    for (size_t i = q2 + 1; i < v.size(); ++i) {
        if (v[i] == '%' && i + 2 < v.size() && hex_digit(v[i + 1]) >= 0 && hex_digit(v[i + 2]) >= 0) {
            out.push_back(static_cast<char>(hex_digit(v[i + 1]) * 16 + hex_digit(v[i + 2])));
            i += 2;
        } else {
            out.push_back(v[i]);
        }
    }
    return true;
}

// One part's header block (without the blank line that ends it) into `part`.
Result<void> read_part_headers(std::string_view block, FormPart& part, size_t index) {
    bool disposition = false;
    while (!block.empty()) {
        size_t eol = block.find('\n');
        std::string_view line = block.substr(0, eol);
        block = eol == std::string_view::npos ? std::string_view{} : block.substr(eol + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty()) continue;
        const size_t colon = line.find(':');
        if (colon == std::string_view::npos) return form_error("multipart part " + std::to_string(index) + ": header line without ':'");
        const std::string name = ascii_lower(trim(line.substr(0, colon)));
        const std::string_view value = trim(line.substr(colon + 1));
        if (name == "content-type") {
            part.content_type = std::string(value);
        } else if (name == "content-disposition") {
            if (ascii_lower(trim(value.substr(0, value.find(';')))) != "form-data") {
                return form_error("multipart part " + std::to_string(index) + ": Content-Disposition is '" + std::string(value) +
                           "', not form-data");
            }
            disposition = true;
            std::string ext_name;
            bool has_ext = false;
            for (auto& [k, v] : header_params(value)) {
                if (k == "name") {
                    part.name = std::move(v);
                } else if (k == "filename") {
                    part.has_filename = true;
                    part.filename = std::move(v);
                } else if (k == "filename*") {
                    part.has_filename = true;
                    has_ext = decode_ext_value(v, ext_name) || has_ext;
                }
            }
            if (has_ext) part.filename = std::move(ext_name);  // filename* wins (RFC 6266)
        }
        // Other part headers (Content-Transfer-Encoding, Content-Length) carry nothing kvrag uses.
    }
    if (!disposition) return form_error("multipart part " + std::to_string(index) + " has no Content-Disposition header");
    return {};
}

constexpr uint64_t kNotFound = ~uint64_t{0};

// Reads a body a window at a time: find() scans forward holding one window (kScanWindowBytes
// plus the needle), so a part of any size is crossed in bounded memory.
class BodyScanner {
public:
    explicit BodyScanner(const BodyReader& body) : body_(body) {}

    // Up to n bytes from offset (fewer at the end of the body, none past it).
    Result<std::string> bytes(uint64_t offset, size_t n) const {
        const uint64_t size = body_.size();
        if (offset >= size) return std::string();
        return body_.read_string(offset, static_cast<size_t>(std::min<uint64_t>(n, size - offset)));
    }

    // The first offset >= from where `needle` starts, or kNotFound.
    Result<uint64_t> find(std::string_view needle, uint64_t from) {
        const uint64_t size = body_.size();
        uint64_t at = from;
        while (at < size && size - at >= needle.size()) {
            // Consecutive windows overlap by needle.size() - 1 bytes, so a needle that crosses
            // a window's end is found in the next one.
            const size_t n = static_cast<size_t>(std::min<uint64_t>(kScanWindowBytes + needle.size() - 1, size - at));
            window_.resize(n);
            if (auto r = body_.read(at, n, window_.data()); !r) return r.error();
            const size_t i = std::string_view(window_).find(needle);
            if (i != std::string_view::npos) return at + i;
            if (at + n >= size) break;
            at += n - (needle.size() - 1);
        }
        return kNotFound;
    }

private:
    const BodyReader& body_;
    std::string window_;  // (kScanWindowBytes + needle size) bytes, reused
};

}  // namespace

Result<std::string> multipart_boundary(std::string_view content_type) {
    if (ascii_lower(trim(content_type.substr(0, content_type.find(';')))) != "multipart/form-data") {
        return form_error("/upload needs multipart/form-data; the Content-Type is '" + std::string(content_type) + "'");
    }
    for (auto& [k, v] : header_params(content_type)) {
        if (k != "boundary") continue;
        if (v.empty()) return form_error("the multipart boundary is empty");
        if (v.size() > 70) return form_error("the multipart boundary has " + std::to_string(v.size()) + " characters; at most 70 are allowed");
        return std::move(v);
    }
    return form_error("the multipart Content-Type names no boundary");
}

Result<std::string> BodyReader::read_string(uint64_t offset, size_t n) const {
    std::string out(n, '\0');
    if (auto r = read(offset, n, out.data()); !r) return r.error();
    return out;
}

Result<void> MemoryBody::read(uint64_t offset, size_t n, char* out) const {
    if (offset > bytes_.size() || n > bytes_.size() - offset) {
        return Error{Errc::memory_store, "read of bytes [" + std::to_string(offset) + ", " + std::to_string(offset + n) + ") past the body's " +
                                             std::to_string(bytes_.size())};
    }
    std::memcpy(out, bytes_.data() + offset, n);
    return {};
}

Result<std::vector<FormPart>> parse_multipart(const BodyReader& body, std::string_view boundary) {
    BodyScanner scan(body);
    std::vector<FormPart> parts;
    const uint64_t size = body.size();
    const std::string dash = "--" + std::string(boundary);
    // The first delimiter: at the very start, or after a preamble and a line end.
    uint64_t pos;
    auto head = scan.bytes(0, dash.size());
    if (!head) return head.error();
    if (*head == dash) {
        pos = 0;
    } else {
        auto f = scan.find("\n" + dash, 0);
        if (!f) return f.error();
        if (*f == kNotFound) return form_error("the body holds no multipart delimiter '" + dash + "'");
        pos = *f + 1;
    }
    const std::string delim = "\r\n" + dash;
    for (;;) {
        // At a delimiter line: "--boundary" then "--" (the end) or optional blanks and a line end.
        uint64_t p = pos + dash.size();
        auto after = scan.bytes(p, 2);
        if (!after) return after.error();
        if (*after == "--") return parts;
        for (;;) {  // blanks, read a little at a time (a line of them is not bounded)
            auto blanks = scan.bytes(p, 256);
            if (!blanks) return blanks.error();
            const size_t k = blanks->find_first_not_of(" \t");
            if (k != std::string::npos) {
                p += k;
                break;
            }
            p += blanks->size();
            if (blanks->empty()) break;
        }
        auto eol = scan.bytes(p, 2);
        if (!eol) return eol.error();
        if (*eol == "\r\n") p += 2;
        else if (!eol->empty() && (*eol)[0] == '\n') p += 1;
        else return form_error("multipart delimiter " + std::to_string(parts.size()) + " is not followed by a line end");
        if (parts.size() == kMaxParts) return form_error("the form has more than " + std::to_string(kMaxParts) + " parts");
        // Headers end at the first blank line, within kMaxPartHeaderBytes (read as one block).
        auto block = scan.bytes(p, kMaxPartHeaderBytes + 4);
        if (!block) return block.error();
        size_t hend = block->find("\r\n\r\n");
        size_t skip = 4;
        const size_t lf = block->find("\n\n");
        if (lf != std::string::npos && (hend == std::string::npos || lf < hend)) {
            hend = lf;
            skip = 2;
        }
        if (block->rfind("\r\n", 0) == 0) {  // a part without headers
            hend = 0;
            skip = 2;
        }
        if (hend == std::string::npos) {
            if (p + block->size() >= size) return form_error("multipart part " + std::to_string(parts.size()) + ": its headers never end");
            return form_error("multipart part " + std::to_string(parts.size()) + ": headers of more than " + std::to_string(kMaxPartHeaderBytes) +
                              " bytes; at most " + std::to_string(kMaxPartHeaderBytes));
        }
        if (hend > kMaxPartHeaderBytes) {
            return form_error("multipart part " + std::to_string(parts.size()) + ": headers of " + std::to_string(hend) + " bytes; at most " +
                              std::to_string(kMaxPartHeaderBytes));
        }
        FormPart part;
        if (auto r = read_part_headers(std::string_view(*block).substr(0, hend), part, parts.size()); !r) return r.error();
        const uint64_t cstart = p + hend + skip;
        // The content ends at CRLF + the next delimiter.
        auto cend = scan.find(delim, cstart);
        if (!cend) return cend.error();
        if (*cend == kNotFound) {
            return form_error("multipart part " + std::to_string(parts.size()) + " ('" + part.name + "') is not closed by a delimiter: the body was cut");
        }
        part.offset = cstart;
        part.size = *cend - cstart;
        parts.push_back(std::move(part));
        pos = *cend + 2;
    }
}

Result<std::vector<FormPart>> parse_multipart(std::string_view body, std::string_view boundary) {
    const MemoryBody reader(body);
    auto parts = parse_multipart(reader, boundary);
    if (!parts) return parts.error();
    for (auto& p : *parts) p.content = body.substr(p.offset, p.size);
    return parts;
}

namespace {

// The form rules over the parts; a field's value comes from `body` (when given) or from the
// part's in-memory content.
Result<UploadForm> read_form(const std::vector<FormPart>& parts, const BodyReader* body) {
    UploadForm form;
    bool seen_index = false, seen_doc = false, seen_args = false;
    std::set<std::string> file_names;
    for (const auto& part : parts) {
        std::string value;
        if (!part.has_filename) {
            const uint64_t n = body ? part.size : part.content.size();
            if (n > kMaxFieldBytes) {
                return form_error("form field '" + part.name + "' holds " + std::to_string(n) + " bytes; a field may hold at most " +
                                  std::to_string(kMaxFieldBytes) + " (a file part needs a filename)");
            }
            if (body) {
                auto v = body->read_string(part.offset, static_cast<size_t>(part.size));
                if (!v) return v.error();
                value = std::move(*v);
            } else {
                value = std::string(part.content);
            }
        }
        if (part.has_filename) {
            if (part.filename.empty()) return form_error("file part '" + part.name + "' has an empty file name");
            if (!file_names.insert(part.filename).second) return form_error("file name '" + part.filename + "' is given twice in one upload");
            form.files.push_back(&part);
        } else if (part.name == "index") {
            if (seen_index) return form_error("field 'index' is given twice; one index per upload");
            seen_index = true;
            const std::string_view v = trim(value);
            if (!v.empty()) form.index = std::string(v);
        } else if (part.name == "documentId") {
            if (seen_doc) return form_error("field 'documentId' is given twice; one document per upload");
            seen_doc = true;
            if (!trim(value).empty()) form.doc_id = value;
        } else if (part.name == "tags") {
            // "key:value" (the value keeps any further ':'), or "key" alone: a tag without a value.
            const std::string_view t = trim(value);
            const size_t colon = t.find(':');
            const std::string key(trim(t.substr(0, colon)));
            const std::string val = colon == std::string_view::npos ? "" : std::string(trim(t.substr(colon + 1)));
            if (key.empty()) {
                if (val.empty()) continue;  // an empty tag field, as Kernel Memory skips it
                return form_error("tag '" + std::string(t) + "' has an empty key");
            }
            if (key.rfind("__", 0) == 0) return form_error("tag '" + key + "': names starting with '__' are reserved");
            form.tags.emplace_back(key, val);
        } else if (part.name == "steps") {
            std::string s = value;
            std::replace(s.begin(), s.end(), ',', ' ');
            std::replace(s.begin(), s.end(), ';', ' ');
            size_t i = 0;
            while (i < s.size()) {
                const size_t b = s.find_first_not_of(" \t\r\n", i);
                if (b == std::string::npos) break;
                const size_t e = s.find_first_of(" \t\r\n", b);
                form.steps.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
                i = e == std::string::npos ? s.size() : e;
            }
        } else if (part.name == "args") {
            if (seen_args) return form_error("field 'args' is given twice; send one JSON object");
            seen_args = true;
            if (trim(value).empty()) continue;
            const auto j = nlohmann::json::parse(value, nullptr, false);
            if (j.is_discarded() || !(j.is_object() || j.is_null())) return form_error("field 'args' is not a JSON object: '" + value.substr(0, 80) + "'");
            if (j.is_object() && !j.empty()) {
                return form_error("upload argument '" + j.begin().key() + "' is not supported: kvrag chunks with the server's --chunk-tokens/--chunk-overlap and takes no upload arguments");
            }
        } else {
            return form_error("form field '" + part.name + "' is not one of index, documentId, tags, steps, args or a file");
        }
    }
    if (form.files.empty()) return form_error("/upload carries no file (no part has a filename)");
    if (!form.steps.empty()) {
        const bool is_default = form.steps.size() == std::size(memory::kIngestSteps) &&
                                std::equal(form.steps.begin(), form.steps.end(), std::begin(memory::kIngestSteps));
        if (!is_default) {
            std::string named;
            for (const auto& s : form.steps) named += (named.empty() ? "" : ",") + s;
            for (const auto& s : form.steps) {
                if (std::find(std::begin(memory::kIngestSteps), std::end(memory::kIngestSteps), s) == std::end(memory::kIngestSteps)) {
                    return form_error("pipeline step '" + s + "' is not supported; kvrag runs extract,partition,gen_embeddings,save_records (steps given: " + named + ")");
                }
            }
            return form_error("steps '" + named + "' are not kvrag's pipeline; send extract,partition,gen_embeddings,save_records or no steps");
        }
    }
    return form;
}

}  // namespace

Result<UploadForm> parse_upload_form(const std::vector<FormPart>& parts, const BodyReader& body) { return read_form(parts, &body); }

Result<UploadForm> parse_upload_form(const std::vector<FormPart>& parts) { return read_form(parts, nullptr); }

std::vector<FileDocument> file_documents(const UploadForm& form) {
    std::vector<FileDocument> out;
    for (size_t i = 0; i < form.files.size(); ++i) {
        const FormPart* f = form.files[i];
        FileDocument d;
        d.file = f;
        if (form.doc_id.empty()) {
            d.km_document_id = d.doc_id = memory::sanitize_id(f->filename);
        } else {
            d.km_document_id = form.doc_id;
            d.doc_id = form.files.size() == 1 ? form.doc_id : form.doc_id + "__" + std::to_string(i);
        }
        std::string type(trim(std::string_view(f->content_type).substr(0, f->content_type.find(';'))));
        type = ascii_lower(type);
        d.content_type = type == "application/octet-stream" ? "" : type;
        out.push_back(std::move(d));
    }
    return out;
}

}  // namespace kvrag::memory_service
