#include "server/http_io.h"

#include <httplib.h>

namespace kvrag::server {

void send_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
    if (e.retry_after_s > 0) res.set_header("Retry-After", std::to_string(e.retry_after_s));
    send_json(res, e.status, e.to_json());
}

void send_error(httplib::Response& res, const Error& err, std::string param) { send_error(res, api_error_from(err, std::move(param))); }

}  // namespace kvrag::server
