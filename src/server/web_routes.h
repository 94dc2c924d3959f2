// The web page at / (chat, memory, KV view; docs/web.md): GET / answers web/index.html and
// GET /web/NAME the other files of web/, from the bytes built into the binary (web_assets.h).
// The page itself loads without the API key (it holds no data; it asks for the key and sends
// it with its API calls, which need it as usual).
#pragma once

#include <string_view>

namespace httplib {
class Server;
}

namespace kvrag::server {

void add_web_routes(httplib::Server& http);

// Whether a request is for the page's own files (GET or HEAD of / or /web/...): the middleware
// serves these without the API key and while the model loads.
bool is_web_page_request(std::string_view method, std::string_view path);

// The Content-Type for a web/ file name by its extension; application/octet-stream otherwise.
std::string_view web_content_type(std::string_view name);

}  // namespace kvrag::server
