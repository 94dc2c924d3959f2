// Typed errors shared by every module.
//
// Codes are grouped by the module that raises them (1xxx gguf, 2xxx tokenizer, 3xxx kvcache,
// 4xxx engine, 5xxx request, 6xxx memory, 7xxx model, 8xxx server state, 9xxx command line)
// and every message carries the numbers involved, e.g. "E1004 tensor 'blk.0.attn_q.weight' data [4096, 8192) ends past file size 6000".
#pragma once

#include <cstdio>
#include <exception>
#include <string>
#include <utility>
#include <variant>

namespace kvrag {

enum class Errc : int {
    ok = 0,
    // 1xxx: GGUF files
    gguf_io = 1001,             // cannot open / stat / map the file
    gguf_bad_magic = 1002,      // not a GGUF file
    gguf_bad_version = 1003,    // unsupported GGUF version
    gguf_truncated = 1004,      // a read or a tensor's data would go past the end of the file
    gguf_bad_value = 1005,      // corrupt metadata: bad type tag, absurd count or length
    gguf_bad_tensor = 1006,     // corrupt tensor info: dims, offsets, sizes
    gguf_unsupported_type = 1007,  // tensor type kvrag has no kernels for
    gguf_missing_key = 1008,    // required metadata key absent
    gguf_wrong_key_type = 1009, // metadata key present with another type
    gguf_write = 1010,          // writer failed
    // 2xxx: tokenizer
    tokenizer_unsupported = 2001,  // unknown tokenizer model / pre-tokenizer
    tokenizer_bad_vocab = 2002,    // inconsistent vocabulary metadata
    tokenizer_bad_token = 2003,    // token id outside the vocabulary
    tokenizer_bad_input = 2004,    // input text is not valid UTF-8 etc.
    // 3xxx: KV cache
    kv_no_space = 3001,           // it fits, but the cells are not free now (busy; retry later)
    // 4xxx: engine
    engine_bad_config = 4001,
    engine_internal = 4002,
    // 5xxx: request (one code per way a request can fail; the HTTP mapping is in
    // src/server/api_error.cpp, the only place that turns a code into a status)
    request_invalid = 5001,       // a parameter is wrong (the message names it)
    request_too_long = 5002,      // can never fit its context (the message has the numbers)
    request_queue_full = 5003,    // the admission queue is at its limit: retry later
    request_queue_timeout = 5004, // it fit, but no KV room came within the queue timeout: retry later
    request_timed_out = 5005,     // past its --timeout, queued or running; cells freed
    request_cancelled = 5006,     // its client disconnected; cells freed
    request_unauthorized = 5007,  // missing or wrong API key
    request_not_found = 5008,     // no such route
    request_model_not_found = 5009,  // the request names a model this server does not serve
    request_too_large = 5010,     // the body (or an uploaded file) is over the size limit
    // 6xxx: memory (RAG)
    memory_store = 6001,
    memory_extract = 6002,        // a document could not be read: broken file, no text
    memory_unsupported_type = 6003,  // a file type the extractor does not handle
    memory_model_mismatch = 6004, // the index was embedded by another model / dimension
    memory_not_found = 6005,      // no such index, document or conversation
    memory_bad_input = 6006,      // bad id, tags, parameters; a question that cannot fit
    memory_unavailable = 6007,    // the store's server cannot be reached now (restarting, down): retry later
    // 7xxx: model binding
    model_unsupported_arch = 7001,
    model_missing_tensor = 7002,
    model_bad_shape = 7003,
    model_bad_hparams = 7004,
    // 8xxx: server state
    server_loading = 8001,        // the model is still loading
    server_shutting_down = 8002,  // SIGINT/SIGTERM received: no new work
    server_failed = 8003,         // start-up failed or the scheduler hit an error it could not attribute
    // 9xxx: command line
    cli_usage = 9001,
};

struct Error {
    Errc code = Errc::ok;
    std::string message;  // human text without the code prefix

    // "E1004 <message>"
    std::string what() const {
        char prefix[16];
        std::snprintf(prefix, sizeof(prefix), "E%04d ", static_cast<int>(code));
        return prefix + message;
    }
};

// Thrown only on load paths and at API boundaries that are caught and turned into Result
// (never inside the per-token hot loop).
class Exception : public std::exception {
public:
    explicit Exception(Error err) : err_(std::move(err)), what_(err_.what()) {}
    Exception(Errc code, std::string message) : Exception(Error{code, std::move(message)}) {}
    const char* what() const noexcept override { return what_.c_str(); }
    const Error& error() const noexcept { return err_; }

private:
    Error err_;
    std::string what_;
};

// expected-like result: either a value or an Error.
template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}       // NOLINT: implicit on purpose
    Result(Error err) : v_(std::move(err)) {}       // NOLINT
    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }
    const Error& error() const { return std::get<1>(v_); }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error err) : err_(std::move(err)), ok_(false) {}  // NOLINT
    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const Error& error() const { return err_; }

private:
    Error err_;
    bool ok_ = true;
};

// Runs f(), turning a thrown kvrag::Exception into an Error result. For load paths whose
// internals throw for brevity but whose public API returns Result.
template <class F>
auto catch_errors(F&& f) -> Result<decltype(f())> {
    try {
        if constexpr (std::is_void_v<decltype(f())>) {
            f();
            return {};
        } else {
            return f();
        }
    } catch (const Exception& e) {
        return e.error();
    }
}

[[noreturn]] inline void throw_error(Errc code, std::string message) {
    throw Exception(code, std::move(message));
}

}  // namespace kvrag
