// Writing JSON and errors into an httplib response: the only place routes turn an ApiError into
// bytes, so every endpoint's errors look alike (see api_error.h for the status table).
#pragma once

#include <string>

#include "core/error.h"
#include "server/api_error.h"

namespace httplib {
struct Response;
}

namespace kvrag::server {

void send_json(httplib::Response& res, int status, const json& body);
void send_error(httplib::Response& res, const ApiError& e);
void send_error(httplib::Response& res, const Error& err, std::string param = "");

}  // namespace kvrag::server
