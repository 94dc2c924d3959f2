// libFuzzer target: POST /upload bodies (multipart/form-data) of arbitrary bytes.
//
// kvrag does not parse multipart itself: cpp-httplib 0.11 does, inside Server, and Debian ships
// that parser compiled in libcpp-httplib.so (its header declares no parser to call). So the
// target goes through httplib's public API in-process: a Server on a loopback port, in this
// process, whose /upload handler runs the project's own code on the parsed parts exactly as
// the memory service does (parse_upload_form, then doc_type_for and sanitize_id per file);
// a keep-alive Client sends each input as the body. httplib's parser is not instrumented for
// coverage, so the corpus (tests/fuzz/corpus/multipart_fuzz/) starts from valid forms; ASan still
// sees every allocation and copy it makes through the interceptors.
//
// Invariants: every body gets an answer (no hang, no dropped connection), 200 or a 4xx, never
// a 5xx; an accepted form obeys upload_form.h (at least one file, a non-empty index, tags with
// keys, documentId only with one file); each file name sanitises to a valid id
// (memory/ids.h) and gets a document type or memory_unsupported_type.
#define KVRAG_FUZZ_TARGET "multipart_fuzz"

#include <httplib.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <thread>

#include "fuzz_check.h"
#include "memory/extract.h"
#include "memory/ids.h"
#include "memory_service/upload_form.h"
#include "server/http_io.h"

namespace {

constexpr const char* kContentType = "multipart/form-data; boundary=kvragFuzzBoundary";

void upload(const httplib::Request& req, httplib::Response& res) {
    using kvrag::Errc;
    if (!req.is_multipart_form_data()) return kvrag::server::send_error(res, kvrag::Error{Errc::memory_bad_input, "not multipart"});
    auto form = kvrag::memory_service::parse_upload_form(req.files);
    if (!form) {
        KVRAG_FUZZ_CHECK(form.error().code == Errc::memory_bad_input, "parse_upload_form failed with another code than E6006");
        return kvrag::server::send_error(res, form.error());
    }
    KVRAG_FUZZ_CHECK(!form->files.empty(), "a form without files was accepted");
    KVRAG_FUZZ_CHECK(!form->index.empty(), "an empty index");
    KVRAG_FUZZ_CHECK(form->doc_id.empty() || form->files.size() == 1, "documentId with several files");
    for (const auto& [k, v] : form->tags) KVRAG_FUZZ_CHECK(!k.empty(), "a tag with an empty key");
    for (const auto* f : form->files) {
        KVRAG_FUZZ_CHECK(!f->filename.empty(), "a file part without a file name");
        KVRAG_FUZZ_CHECK(kvrag::memory::valid_id(kvrag::memory::sanitize_id(f->filename)), "sanitize_id made an invalid id");
        auto type = kvrag::memory::doc_type_for(f->filename, f->content_type);
        KVRAG_FUZZ_CHECK(type || type.error().code == Errc::memory_unsupported_type, "doc_type_for failed with another code");
    }
    res.status = 200;
    res.set_content("{}", "application/json");
}

struct Loopback {
    httplib::Server server;
    std::unique_ptr<httplib::Client> client;
    std::thread thread;
};

Loopback& loopback() {
    static Loopback* lb = [] {
        auto* l = new Loopback;  // lives for the whole run; the fuzzer exits without tearing it down
        l->server.Post("/upload", upload);
        l->server.set_read_timeout(5, 0);
        // One connection for the whole run: httplib closes a keep-alive connection after 5
        // requests by default, and reconnecting each time would cost most of the run.
        l->server.set_keep_alive_max_count(std::numeric_limits<size_t>::max());
        // Headers and body go out in separate writes: without TCP_NODELAY each request waits
        // out a delayed ACK (about 40 ms), a few dozen runs per second instead of thousands.
        l->server.set_tcp_nodelay(true);
        const int port = l->server.bind_to_any_port("127.0.0.1");
        if (port <= 0) kvrag::fuzz::fail(KVRAG_FUZZ_TARGET, "cannot bind a loopback port");
        l->thread = std::thread([l] { l->server.listen_after_bind(); });
        while (!l->server.is_running()) std::this_thread::yield();
        l->client = std::make_unique<httplib::Client>("127.0.0.1", port);
        l->client->set_keep_alive(true);
        l->client->set_tcp_nodelay(true);
        l->client->set_read_timeout(10, 0);
        return l;
    }();
    return *lb;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Loopback& lb = loopback();
    auto res = lb.client->Post("/upload", reinterpret_cast<const char*>(data), size, kContentType);
    if (!res) {
        // The server may close a keep-alive connection after refusing a body; a fresh one must
        // then get an answer.
        res = lb.client->Post("/upload", reinterpret_cast<const char*>(data), size, kContentType);
    }
    KVRAG_FUZZ_CHECK(static_cast<bool>(res), "the server gave no answer");
    KVRAG_FUZZ_CHECK(res->status == 200 || (res->status >= 400 && res->status < 500), "an upload got a status other than 200 or 4xx");
    return 0;
}
