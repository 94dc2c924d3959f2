// What runs around every route: the API-key check, the readiness and shutdown checks, an
// OpenAI-shaped body for every error without one (404, 413, malformed requests, exceptions),
// and the one-line request log ("POST /v1/completions 200 tokens=12 ms=85.3").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/server_state.h"

namespace httplib {
class Server;
}

namespace kvrag::server {

void install_middleware(httplib::Server& http, ServerState& state);

// Number of generated tokens to show in the current request's log line.
void log_tokens(int64_t n);

// Whether an Authorization header value carries `key`: "Bearer KEY" with the scheme in any
// case and any spaces after it (RFC 7235 schemes are case-insensitive), or the bare key, which
// is what Kernel Memory's clients send by default. The comparison is constant_time_equal.
bool authorization_matches(std::string_view header, std::string_view key);

// The Access-Control-Allow-Origin value for a request from `origin` (its Origin header; empty
// for non-browser clients): "*" when `allowed` holds "*", the origin itself when it is listed,
// nothing otherwise (the browser then refuses the response). allowed empty = CORS off.
std::optional<std::string> cors_allow_origin(const std::vector<std::string>& allowed, std::string_view origin);
// A --cors entry: "*", or an origin as browsers send it (scheme://host[:port], no path; the
// scheme letters, digits, + - .; the port digits), or "null" (pages opened from files).
bool valid_cors_origin(std::string_view origin);

// Compares in time that depends only on the lengths, not on where the texts differ.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace kvrag::server
