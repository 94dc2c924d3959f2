#include "memory_service/km_json.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <map>
#include <set>

#include "memory/extract.h"
#include "memory_service/upload_form.h"

namespace kvrag::memory_service {

using namespace kvrag::memory;

namespace {

Error bad(std::string msg) { return Error{Errc::memory_bad_input, std::move(msg)}; }

std::string tag_value(const Tags& tags, const std::string& key) {
    for (const auto& [k, v] : tags) {
        if (k == key) return v;
    }
    return "";
}

std::string url_encode(const std::string& s) {
    static const char* kHex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        }
    }
    return out;
}

// The stored __file_type, else the type kvrag reads the file as.
std::string content_type_of(const std::string& name, const Tags& tags) {
    std::string t = tag_value(tags, kFileTypeTag);
    if (!t.empty()) return t;
    auto type = doc_type_for(name);
    if (!type) return "application/octet-stream";
    switch (*type) {
        case DocType::text: return "text/plain";
        case DocType::markdown: return "text/markdown";
        case DocType::html: return "text/html";
        case DocType::pdf: return "application/pdf";
    }
    return "application/octet-stream";
}

// A partition's tags: the document's own plus Kernel Memory's reserved ones.
json partition_tags(const SearchHit& h, const std::string& km_id, const std::string& type) {
    Tags user;
    for (const auto& kv : h.chunk.tags) {
        if (kv.first.rfind("__", 0) != 0) user.push_back(kv);
    }
    json tags = tags_json(user);
    tags[kDocumentIdTag] = json::array({km_id});
    tags["__file_id"] = json::array({h.chunk.doc_id});
    tags["__file_part"] = json::array({std::to_string(h.chunk.chunk_id)});
    tags["__part_n"] = json::array({std::to_string(h.chunk.position)});
    tags["__sect_n"] = json::array({"0"});
    tags[kFileTypeTag] = json::array({type});
    return tags;
}

Result<double> number_arg(const json& v, const std::string& name) {
    if (v.is_number()) return v.get<double>();
    if (v.is_string()) {
        try {
            size_t used = 0;
            const std::string s = v.get<std::string>();
            const double d = std::stod(s, &used);
            if (used == s.size()) return d;
        } catch (const std::exception&) {
        }
    }
    return bad("argument '" + name + "' must be a number; got " + v.dump());
}

}  // namespace

std::string index_or_default(std::string index) {
    const auto b = index.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return "default";
    const auto e = index.find_last_not_of(" \t\r\n");
    return index.substr(b, e - b + 1);
}

std::string iso8601(int64_t unix_seconds) {
    const std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

json tags_json(const Tags& tags) {
    json out = json::object();
    for (const auto& [k, v] : tags) {
        if (!out.contains(k)) out[k] = json::array();
        if (!v.empty()) out[k].push_back(v);
    }
    return out;
}

Result<std::optional<std::vector<SearchFilter>>> parse_km_filters(const json& body) {
    using Out = std::optional<std::vector<SearchFilter>>;
    if (!body.contains("filters") || body["filters"].is_null()) return Out();
    const json& fs = body["filters"];
    if (!fs.is_array()) return bad("'filters' must be an array of objects (Kernel Memory's MemoryFilter list)");
    if (fs.empty()) return Out();
    std::vector<SearchFilter> out;
    for (size_t i = 0; i < fs.size(); ++i) {
        const json& obj = fs[i];
        if (!obj.is_object()) return bad("filter " + std::to_string(i) + " is not an object of key -> [values]");
        std::set<std::string> doc_ids;
        Tags tags;
        for (const auto& item : obj.items()) {
            // Named copies, not a structured binding: clang 14 (the sanitizer build) cannot
            // capture a binding in the lambda below.
            const std::string& k = item.key();
            const json& v = item.value();
            std::vector<std::string> values;
            auto add = [&](const json& x) -> Result<void> {
                if (x.is_null()) values.emplace_back();
                else if (x.is_string()) values.push_back(x.get<std::string>());
                else return bad("filter '" + k + "' values must be strings or null; got " + x.dump());
                return {};
            };
            if (v.is_array()) {
                for (const auto& x : v) {
                    if (auto r = add(x); !r) return r.error();
                }
            } else if (auto r = add(v); !r) {
                return r.error();
            }
            if (k == kDocumentIdTag) {
                for (auto& d : values) doc_ids.insert(std::move(d));
            } else if (k.rfind("__", 0) == 0) {
                return bad("filter '" + k + "' is not supported: of Kernel Memory's reserved tags kvrag filters by __document_id only");
            } else {
                for (auto& val : values) tags.emplace_back(k, std::move(val));
            }
        }
        if (doc_ids.size() > 1) continue;  // one document cannot have two ids: this object matches nothing
        if (doc_ids.empty()) {
            out.push_back(SearchFilter{"", tags});
            continue;
        }
        // Either a document with that id (ingested by the CLI, or uploaded with one file) or
        // one file of a document uploaded under it.
        const std::string& d = *doc_ids.begin();
        out.push_back(SearchFilter{d, tags});
        Tags with = tags;
        with.emplace_back(kDocumentIdTag, d);
        out.push_back(SearchFilter{"", std::move(with)});
    }
    return Out(std::move(out));
}

std::string km_document_id(const std::string& doc_id, const Tags& tags) {
    std::string t = tag_value(tags, kDocumentIdTag);
    return t.empty() ? doc_id : t;
}

Result<std::vector<DocumentInfo>> km_document_files(Store& store, const std::string& index, const std::string& km_id) {
    auto docs = store.list_documents(index);
    if (!docs) return docs.error();
    std::vector<DocumentInfo> out;
    for (auto& d : *docs) {
        if (km_document_id(d.doc_id, d.tags) == km_id) out.push_back(std::move(d));
    }
    return out;
}

json pipeline_status_json(const std::string& index, const std::string& km_id, const std::vector<DocumentInfo>& files) {
    bool done = true, failed = false;
    int64_t updated = 0;
    int64_t n_chunks = 0;
    std::string error;
    Tags tags;
    json file_list = json::array();
    for (const auto& f : files) {
        done = done && f.state == "ready";
        failed = failed || f.state == "failed";
        if (f.state == "failed" && error.empty()) error = f.name + ": " + f.error;
        updated = std::max(updated, f.updated_at);
        n_chunks += f.n_chunks;
        for (const auto& kv : f.tags) {
            if (kv.first.rfind("__", 0) != 0 && std::find(tags.begin(), tags.end(), kv) == tags.end()) tags.push_back(kv);
        }
        file_list.push_back(json{{"name", f.name}, {"fileId", f.doc_id}, {"state", f.state}, {"chunks", f.n_chunks}});
    }
    json steps = json::array();
    for (const char* s : kUploadSteps) steps.push_back(s);
    const bool over = done || failed;
    return json{{"completed", done},
                {"failed", failed},
                {"empty", files.empty()},
                {"index", index},
                {"document_id", km_id},
                {"tags", tags_json(tags)},
                {"creation", iso8601(updated)},
                {"last_update", iso8601(updated)},
                {"steps", steps},
                {"remaining_steps", over ? json::array() : steps},
                {"completed_steps", done ? steps : json::array()},
                {"error", error},
                {"chunks", n_chunks},
                {"files", file_list}};
}

json citations_json(const std::vector<SearchHit>& hits, const std::function<int64_t(const ChunkRow&)>& updated_at) {
    json out = json::array();
    std::map<std::string, size_t> slot;  // link -> position in out
    for (const auto& h : hits) {
        const ChunkRow& c = h.chunk;
        const std::string km_id = km_document_id(c.doc_id, c.tags);
        const std::string type = content_type_of(c.doc_name, c.tags);
        const std::string link = c.index + "/" + km_id + "/" + c.doc_id;
        auto it = slot.find(link);
        if (it == slot.end()) {
            it = slot.emplace(link, out.size()).first;
            out.push_back(json{{"link", link},
                               {"index", c.index},
                               {"documentId", km_id},
                               {"fileId", c.doc_id},
                               {"sourceContentType", type},
                               {"sourceName", c.doc_name.empty() ? c.doc_id : c.doc_name},
                               {"sourceUrl", "/download?index=" + url_encode(c.index) + "&documentId=" + url_encode(km_id) +
                                                 "&filename=" + url_encode(c.doc_name)},
                               {"partitions", json::array()}});
        }
        out[it->second]["partitions"].push_back(json{{"text", c.text},
                                                     {"relevance", h.relevance},
                                                     {"partitionNumber", c.position},
                                                     {"sectionNumber", 0},
                                                     {"lastUpdate", iso8601(updated_at(c))},
                                                     {"tags", partition_tags(h, km_id, type)},
                                                     {"tokens", c.n_tokens}});
    }
    return out;
}

json token_usage_json(const AskResult& r, const std::string& model_name) {
    json u = json{{"timestamp", iso8601(static_cast<int64_t>(std::time(nullptr)))},
                  {"serviceType", "kvrag"},
                  {"modelType", "TextGeneration"},
                  {"modelName", model_name},
                  {"tokenizerTokensIn", r.n_prompt_tokens},
                  {"tokenizerTokensOut", r.n_generated},
                  {"serviceTokensIn", r.n_prompt_tokens},
                  {"serviceTokensOut", r.n_generated}};
    return json::array({u});
}

Result<void> apply_ask_args(const json& body, AskOptions& o, std::string& empty_answer) {
    if (!body.contains("args") || body["args"].is_null()) return {};
    const json& args = body["args"];
    if (!args.is_object()) return bad("'args' must be an object of Kernel Memory context arguments");
    for (const auto& [k, v] : args.items()) {
        if (k == "custom_rag_max_tokens_int" || k == "custom_rag_max_matches_count_int") {
            auto d = number_arg(v, k);
            if (!d) return d.error();
            if (*d < 1 || *d > 1e6 || *d != static_cast<double>(static_cast<int64_t>(*d))) {
                return bad("argument '" + k + "' must be a whole number >= 1; got " + v.dump());
            }
            (k == "custom_rag_max_tokens_int" ? o.max_tokens : o.n_candidates) = static_cast<int32_t>(*d);
        } else if (k == "custom_rag_temperature_float") {
            auto d = number_arg(v, k);
            if (!d) return d.error();
            if (*d < 0 || *d > 2) return bad("argument '" + k + "' must be in [0, 2]; got " + v.dump());
            o.sampling.temperature = static_cast<float>(*d);
        } else if (k == "custom_rag_nucleus_sampling_float") {
            auto d = number_arg(v, k);
            if (!d) return d.error();
            if (*d < 0 || *d > 1) return bad("argument '" + k + "' must be in [0, 1]; got " + v.dump());
            if (*d > 0) o.sampling.top_p = static_cast<float>(*d);  // 0 is Kernel Memory's "service default"
        } else if (k == "custom_rag_empty_answer_str") {
            if (!v.is_string()) return bad("argument '" + k + "' must be a string; got " + v.dump());
            empty_answer = v.get<std::string>();
        } else {
            return bad("argument '" + k +
                       "' is not supported; /ask takes custom_rag_max_tokens_int, custom_rag_max_matches_count_int, "
                       "custom_rag_temperature_float, custom_rag_nucleus_sampling_float, custom_rag_empty_answer_str");
        }
    }
    return {};
}

Result<void> check_search_args(const json& body) {
    if (!body.contains("args") || body["args"].is_null()) return {};
    const json& args = body["args"];
    if (!args.is_object()) return bad("'args' must be an object of Kernel Memory context arguments");
    if (!args.empty()) return bad("argument '" + args.begin().key() + "' is not supported: /search takes no context arguments");
    return {};
}

Result<void> check_known_fields(const json& body, std::initializer_list<const char*> known, const char* route) {
    for (const auto& [k, v] : body.items()) {
        bool ok = false;
        for (const char* n : known) ok = ok || k == n;
        if (!ok) {
            std::string names;
            for (const char* n : known) names += (names.empty() ? "" : ", ") + std::string(n);
            return bad(std::string(route) + ": field '" + k + "' is not supported (fields: " + names + ")");
        }
    }
    return {};
}

}  // namespace kvrag::memory_service
