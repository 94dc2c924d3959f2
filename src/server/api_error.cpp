#include "server/api_error.h"

namespace kvrag::server {
namespace {

struct HttpMapping {
    int status;
    const char* type;
    const char* code;   // nullptr -> JSON null
    int retry_after_s;
};

HttpMapping mapping(Errc code) {
    switch (code) {
        case Errc::request_invalid:
        case Errc::tokenizer_bad_token:
        case Errc::tokenizer_bad_input:
        case Errc::memory_bad_input:
        case Errc::memory_extract:
        case Errc::memory_unsupported_type:
        case Errc::memory_model_mismatch: return {400, "invalid_request_error", nullptr, 0};
        case Errc::request_too_long: return {400, "invalid_request_error", "context_length_exceeded", 0};
        case Errc::request_unauthorized: return {401, "invalid_request_error", "invalid_api_key", 0};
        case Errc::request_not_found: return {404, "invalid_request_error", "not_found", 0};
        case Errc::request_model_not_found: return {404, "invalid_request_error", "model_not_found", 0};
        case Errc::memory_not_found: return {404, "not_found_error", nullptr, 0};
        case Errc::request_too_large: return {413, "invalid_request_error", "payload_too_large", 0};
        case Errc::request_queue_full: return {429, "rate_limit_error", "queue_full", 1};
        case Errc::request_cancelled: return {499, "cancelled", nullptr, 0};
        case Errc::kv_no_space:
        case Errc::request_queue_timeout: return {503, "server_error", "kv_cache_busy", 1};
        case Errc::server_loading: return {503, "server_error", "model_loading", 1};
        case Errc::memory_unavailable: return {503, "server_error", "store_unavailable", 1};
        case Errc::server_shutting_down: return {503, "server_error", "shutting_down", 0};
        case Errc::request_timed_out: return {504, "timeout_error", "request_timeout", 0};
        case Errc::server_failed: return {500, "server_error", "server_failed", 0};
        default: return {500, "server_error", nullptr, 0};
    }
}

}  // namespace

json ApiError::to_json() const {
    json e;
    e["message"] = message;
    e["type"] = type;
    e["param"] = param.empty() ? json(nullptr) : json(param);
    e["code"] = code.empty() ? json(nullptr) : json(code);
    return json{{"error", e}};
}

ApiError ApiError::bad_request(std::string message, std::string param) {
    return api_error(Errc::request_invalid, std::move(message), std::move(param));
}

ApiError api_error_from(const Error& err, std::string param) {
    const HttpMapping m = mapping(err.code);
    ApiError e;
    e.status = m.status;
    e.message = err.what();
    e.type = m.type;
    e.param = std::move(param);
    e.code = m.code ? m.code : "";
    e.retry_after_s = m.retry_after_s;
    return e;
}

ApiError api_error(Errc code, std::string message, std::string param) {
    return api_error_from(Error{code, std::move(message)}, std::move(param));
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace kvrag::server
