// The one mapping from a kvrag error to what an HTTP client sees: a status, an OpenAI-style
// body {"error":{"message","type","param","code"}} and, for retryable conditions, Retry-After.
//
// Every route (the OpenAI endpoints, the server's own middleware, and extensions such as the
// memory service) answers errors through api_error(); no other place picks a status for a code.
// The table is in api_error.cpp and in docs/server.md ("Errors").
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"

namespace kvrag::server {

using json = nlohmann::json;

struct ApiError {
    int status = 400;
    std::string message;                       // "E5001 ..." (the code, then the text with the numbers)
    std::string type = "invalid_request_error";
    std::string param;                         // the request field at fault; "" -> null
    std::string code;                          // OpenAI's short code ("context_length_exceeded"); "" -> null
    int retry_after_s = 0;                     // > 0 adds a Retry-After header

    json to_json() const;
    // A parameter error (E5001) naming the field.
    static ApiError bad_request(std::string message, std::string param = "");
};

// The mapping, by code:
//   400 request_invalid, request_too_long (code context_length_exceeded), tokenizer input
//       errors, memory input errors (bad input, unreadable or unsupported document, model mismatch)
//   401 request_unauthorized          404 request_not_found, request_model_not_found, memory_not_found
//   413 request_too_large             429 request_queue_full (Retry-After 1)
//   499 request_cancelled (nginx's "client closed request"; the client is gone and never reads it)
//   503 kv_no_space, request_queue_timeout (Retry-After 1), server_loading (Retry-After 1), server_shutting_down
//   504 request_timed_out             500 everything else (engine, model, store, server_failed)
ApiError api_error_from(const Error& err, std::string param = "");
ApiError api_error(Errc code, std::string message, std::string param = "");

// JSON text that never throws: invalid UTF-8 in a string (a model's partial token, a document's
// bytes) is replaced by U+FFFD instead of raising nlohmann's type_error.316.
std::string dump(const json& j);

}  // namespace kvrag::server
