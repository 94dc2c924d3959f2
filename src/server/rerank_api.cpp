#include "server/rerank_api.h"

#include <algorithm>
#include <numeric>

#include "server/json_fields.h"

namespace kvrag::server {

std::optional<ApiError> parse_rerank_request(const json& body, RerankRequest& out) {
    out = RerankRequest{};
    if (auto e = refuse_unknown_fields(body, {"model", "query", "documents", "top_n", "return_documents"}, "/v1/rerank")) return e;
    if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
        if (!it->is_string()) return wrong_type("model", "a string", *it);
        out.model = it->get<std::string>();
    }
    auto q = body.find("query");
    if (q == body.end() || q->is_null()) return ApiError::bad_request("missing required field 'query'", "query");
    if (!q->is_string()) return wrong_type("query", "a string", *q);
    out.query = q->get<std::string>();
    if (out.query.empty()) return ApiError::bad_request("'query' is an empty string", "query");

    auto d = body.find("documents");
    if (d == body.end() || d->is_null()) return ApiError::bad_request("missing required field 'documents'", "documents");
    if (!d->is_array()) return wrong_type("documents", "an array of strings or {\"text\": ...} objects", *d);
    if (d->empty()) return ApiError::bad_request("'documents' is an empty array", "documents");
    if (d->size() > kMaxRerankDocuments) {
        return ApiError::bad_request("'documents' has " + std::to_string(d->size()) + " items; the limit is " +
                                         std::to_string(kMaxRerankDocuments) + " per request",
                                     "documents");
    }
    for (size_t i = 0; i < d->size(); ++i) {
        const json& doc = (*d)[i];
        const std::string at = "documents[" + std::to_string(i) + "]";
        if (doc.is_string()) {
            out.documents.push_back(doc.get<std::string>());
        } else if (doc.is_object()) {
            auto t = doc.find("text");
            if (t == doc.end() || !t->is_string()) return ApiError::bad_request("'" + at + "' must have a string field 'text'", at + ".text");
            for (auto f = doc.begin(); f != doc.end(); ++f) {
                if (f.key() != "text") return ApiError::bad_request("'" + at + "." + f.key() + "' is not supported (a document is a string or {\"text\": ...})", at + "." + f.key());
            }
            out.documents.push_back(t->get<std::string>());
        } else {
            return wrong_type(at, "a string or a {\"text\": ...} object", doc);
        }
        if (out.documents.back().empty()) return ApiError::bad_request("'" + at + "' is an empty string", at);
    }

    std::optional<int64_t> top_n;
    if (auto e = get_integer(body, "top_n", top_n)) return e;
    if (top_n && *top_n < 1) return ApiError::bad_request("'top_n' " + std::to_string(*top_n) + " must be at least 1", "top_n");
    const auto n_docs = static_cast<int64_t>(out.documents.size());
    out.top_n = top_n ? std::min(*top_n, n_docs) : n_docs;
    if (auto e = get_bool(body, "return_documents", out.return_documents)) return e;
    return std::nullopt;
}

json rerank_response(const RerankRequest& req, const std::string& model, const std::vector<float>& scores,
                     int64_t prompt_tokens) {
    std::vector<size_t> order(scores.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
    json results = json::array();
    const auto n = std::min<size_t>(order.size(), static_cast<size_t>(std::max<int64_t>(req.top_n, 0)));
    for (size_t k = 0; k < n; ++k) {
        const size_t i = order[k];
        json r{{"index", i}, {"relevance_score", scores[i]}};
        if (req.return_documents && i < req.documents.size()) r["document"] = json{{"text", req.documents[i]}};
        results.push_back(std::move(r));
    }
    return json{{"object", "list"},
                {"model", model},
                {"results", std::move(results)},
                {"usage", json{{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

}  // namespace kvrag::server
