#include "server/web_routes.h"

#include <httplib.h>

#include "server/web_assets.h"

namespace kvrag::server {
namespace {

constexpr std::string_view kWebPrefix = "/web/";

const WebAsset* find_asset(std::string_view name) {
    for (const WebAsset& a : web_assets()) {
        if (a.name == name) return &a;
    }
    return nullptr;
}

void send_asset(const WebAsset& a, httplib::Response& res) {
    // The page is small and changes with the binary; no-cache makes a browser revalidate after
    // an upgrade instead of mixing an old app.js with a new server.
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_content(std::string(a.body), std::string(web_content_type(a.name)));
}

}  // namespace

std::string_view web_content_type(std::string_view name) {
    const struct {
        std::string_view ext, type;
    } types[] = {{".html", "text/html; charset=utf-8"},
                 {".js", "text/javascript; charset=utf-8"},
                 {".css", "text/css; charset=utf-8"},
                 {".svg", "image/svg+xml"},
                 {".png", "image/png"}};
    for (const auto& t : types) {
        if (name.ends_with(t.ext)) return t.type;
    }
    return "application/octet-stream";
}

bool is_web_page_request(std::string_view method, std::string_view path) {
    if (method != "GET" && method != "HEAD") return false;
    return path == "/" || path == "/index.html" || path.starts_with(kWebPrefix);
}

void add_web_routes(httplib::Server& http) {
    auto index = [](const httplib::Request&, httplib::Response& res) {
        if (const WebAsset* a = find_asset("index.html")) send_asset(*a, res);
        else res.status = 404;
    };
    http.Get("/", index);
    http.Get("/index.html", index);
    http.Get(R"(/web/([A-Za-z0-9_.-]+))", [](const httplib::Request& req, httplib::Response& res) {
        const std::string& name = req.matches[1].str();
        const WebAsset* a = find_asset(name);
        if (a == nullptr || name == "index.html") {
            res.status = 404;  // the middleware's error handler writes the JSON body
            return;
        }
        send_asset(*a, res);
    });
}

}  // namespace kvrag::server
