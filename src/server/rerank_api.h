// The rerank endpoint's request and response: POST /v1/rerank and /rerank in the shape Jina
// and Cohere clients send (and llama-server accepts), as pure functions.
//
// Request: {model?, query, documents: [string | {text}], top_n?, return_documents?}.
// Response: {object: "list", model, results: [{index, relevance_score, document?: {text}}]
// best first (ties by input order), usage: {prompt_tokens, total_tokens}}. relevance_score is
// the model's raw classifier output, as llama-server returns it (no sigmoid): compare scores,
// do not read them as probabilities.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "server/api_error.h"

namespace kvrag::server {

struct RerankRequest {
    std::string model;                   // as requested (may be empty)
    std::string query;
    std::vector<std::string> documents;
    int64_t top_n = 0;                   // results to return, 1..documents.size()
    bool return_documents = false;
};

inline constexpr size_t kMaxRerankDocuments = 1024;

// Validates every field; unknown fields are refused by name. top_n defaults to every document
// and is capped to their count.
std::optional<ApiError> parse_rerank_request(const json& body, RerankRequest& out);

// scores[i] belongs to req.documents[i]; prompt_tokens is the total the model read.
json rerank_response(const RerankRequest& req, const std::string& model, const std::vector<float>& scores,
                     int64_t prompt_tokens);

}  // namespace kvrag::server
