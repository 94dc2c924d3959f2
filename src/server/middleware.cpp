#include "server/middleware.h"

#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cinttypes>
#include <cstdio>

#include "server/http_io.h"
#include "server/web_routes.h"

namespace kvrag::server {
namespace {

using Clock = std::chrono::steady_clock;

// Per-request log fields. A request is handled start to end on one httplib worker thread
// (routing, handler, then the response write, streaming included), so a thread_local carries
// them from the pre-routing hook to the logger.
struct RequestLog {
    Clock::time_point start{};
    bool started = false;
    int64_t tokens = -1;
};
thread_local RequestLog t_log;

}  // namespace

void log_tokens(int64_t n) { t_log.tokens = n; }

bool constant_time_equal(std::string_view a, std::string_view b) {
    const size_t n = std::max(a.size(), b.size());
    unsigned char diff = a.size() == b.size() ? 0 : 1;
    for (size_t i = 0; i < n; ++i) {
        const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
        const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
        diff |= static_cast<unsigned char>(x ^ y);
    }
    return diff == 0;
}

bool authorization_matches(std::string_view header, std::string_view key) {
    std::string_view presented = header;
    constexpr std::string_view kScheme = "bearer";
    if (header.size() > kScheme.size() && (header[kScheme.size()] == ' ' || header[kScheme.size()] == '\t')) {
        bool is_bearer = true;
        for (size_t i = 0; i < kScheme.size(); ++i) {
            is_bearer = is_bearer && static_cast<char>(std::tolower(static_cast<unsigned char>(header[i]))) == kScheme[i];
        }
        if (is_bearer) {
            presented = header.substr(kScheme.size());
            while (!presented.empty() && (presented.front() == ' ' || presented.front() == '\t')) presented.remove_prefix(1);
        }
    }
    // A key that itself starts with "Bearer " is matched by the bare form too.
    return constant_time_equal(presented, key) || constant_time_equal(header, key);
}

std::optional<std::string> cors_allow_origin(const std::vector<std::string>& allowed, std::string_view origin) {
    if (allowed.empty() || origin.empty()) return std::nullopt;
    for (const auto& a : allowed) {
        if (a == "*") return std::string("*");
        if (a == origin) return std::string(origin);
    }
    return std::nullopt;
}

bool valid_cors_origin(std::string_view o) {
    if (o == "*" || o == "null") return true;
    const size_t sep = o.find("://");
    if (sep == std::string_view::npos || sep == 0 || !std::isalpha(static_cast<unsigned char>(o[0]))) return false;
    for (char c : o.substr(0, sep)) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') return false;
    }
    std::string_view rest = o.substr(sep + 3);
    std::string_view host = rest, port;
    // [v6]:port, or host:port
    const size_t colon = rest.rfind(':');
    if (colon != std::string_view::npos && rest.find(']', colon) == std::string_view::npos) {
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
        if (port.empty() || port.size() > 5) return false;
        for (char c : port) {
            if (!std::isdigit(static_cast<unsigned char>(c))) return false;
        }
    }
    if (host.empty()) return false;
    for (char c : host) {
        const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' || c == '[' || c == ']' || c == ':' ||
                        static_cast<unsigned char>(c) >= 0x80;
        if (!ok) return false;
    }
    return true;
}

void install_middleware(httplib::Server& http, ServerState& st) {
    const ServeConfig& cfg = st.cfg;
    const size_t n_http_threads = static_cast<size_t>(std::clamp(cfg.parallel + cfg.max_queue + 8, 8, 512));
    http.new_task_queue = [n_http_threads] { return new httplib::ThreadPool(n_http_threads); };
    http.set_payload_max_length(cfg.max_body_bytes);
    http.set_keep_alive_timeout(2);
    http.set_read_timeout(30);
    http.set_write_timeout(30);

    http.set_pre_routing_handler([&st](const httplib::Request& req, httplib::Response& res) {
        t_log = RequestLog{Clock::now(), true, -1};
        // Behind a load balancer (deploy/haproxy.cfg) the header tells which replica answered.
        if (!st.cfg.replica_name.empty()) res.set_header("X-Kvrag-Replica", st.cfg.replica_name);
        // CORS (--cors): the allow-origin header goes on every response, and a preflight is
        // answered here, before the API-key check (browsers send no credentials with it).
        if (auto allow = cors_allow_origin(st.cfg.cors_origins, req.get_header_value("Origin"))) {
            res.set_header("Access-Control-Allow-Origin", *allow);
            if (*allow != "*") res.set_header("Vary", "Origin");
            res.set_header("Access-Control-Expose-Headers", "Retry-After, X-Kvrag-Messages-Dropped, X-Kvrag-Replica");
            if (req.method == "OPTIONS") {
                res.set_header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
                const std::string asked = req.get_header_value("Access-Control-Request-Headers");
                res.set_header("Access-Control-Allow-Headers", asked.empty() ? "Authorization, Content-Type" : asked);
                res.set_header("Access-Control-Max-Age", "600");
                res.status = 204;
                return httplib::Server::HandlerResponse::Handled;
            }
        }
        // /health and the web page's own files never need the key (the page asks for it).
        if (req.path == "/health" || is_web_page_request(req.method, req.path)) return httplib::Server::HandlerResponse::Unhandled;
        if (!st.cfg.api_key.empty()) {
            const std::string auth = req.get_header_value("Authorization");
            if (!authorization_matches(auth, st.cfg.api_key)) {
                res.set_header("WWW-Authenticate", "Bearer");
                send_error(res, Error{Errc::request_unauthorized, auth.empty() ? "missing API key: send 'Authorization: Bearer KEY'" : "invalid API key"});
                return httplib::Server::HandlerResponse::Handled;
            }
        }
        const Health h = st.health.load();
        if (h == Health::loading) {
            send_error(res, Error{Errc::server_loading, "the model is loading; retry shortly"});
            return httplib::Server::HandlerResponse::Handled;
        }
        if (h == Health::error) {
            send_error(res, Error{Errc::server_failed, "the server failed: " + st.health_message});
            return httplib::Server::HandlerResponse::Handled;
        }
        if (st.draining.load() && req.method == "POST") {
            send_error(res, Error{Errc::server_shutting_down, "the server is shutting down"});
            return httplib::Server::HandlerResponse::Handled;
        }
        return httplib::Server::HandlerResponse::Unhandled;
    });

    // Every 4xx/5xx without a body of our own gets an OpenAI-shaped one (404 no route, 413 too
    // large, 400 malformed request line, ...).
    http.set_error_handler(httplib::Server::HandlerWithResponse([&st](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        switch (res.status) {
            case 404: send_error(res, Error{Errc::request_not_found, "no route for " + req.method + " " + req.path}); break;
            case 413:
                send_error(res, Error{Errc::request_too_large, "the request body exceeds the limit of " + std::to_string(st.cfg.max_body_bytes) + " bytes"});
                break;
            default: {
                // A status httplib chose (400 bad request line, 414, ...): keep it, give it a body.
                const int status = res.status;
                ApiError e = api_error(status >= 500 ? Errc::server_failed : Errc::request_invalid,
                                       "HTTP " + std::to_string(status) + " for " + req.method + " " + req.path);
                e.status = status;
                e.code.clear();
                send_error(res, e);
                break;
            }
        }
        return httplib::Server::HandlerResponse::Handled;
    }));

    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
            if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
            what = e.what();
        } catch (...) {
        }
        send_error(res, Error{Errc::engine_internal, "internal error: " + what});
    });

    http.set_logger([](const httplib::Request& req, const httplib::Response& res) {
        const double ms = t_log.started ? std::chrono::duration<double, std::milli>(Clock::now() - t_log.start).count() : 0.0;
        char tokens[32] = "-";
        if (t_log.tokens >= 0) std::snprintf(tokens, sizeof(tokens), "%" PRId64, t_log.tokens);
        std::fprintf(stderr, "%s %s %d tokens=%s ms=%.1f\n", req.method.c_str(), req.path.c_str(), res.status, tokens, ms);
        t_log = RequestLog{};
    });
}

}  // namespace kvrag::server
