// The body of one POST /upload, streamed to a temporary file as it arrives, so that an upload
// costs the server a few buffers of memory whatever its size (the parser then reads the file
// through BodyReader, a window at a time: upload_form.h).
//
// The file is made with mkstemp (O_EXCL: never an existing file, never another upload's) in
// the directory given -- the store's own directory by default, because /tmp is often a tmpfs
// (RAM) and the store's disk is where the bytes go anyway -- and unlinked at once: only the
// open descriptor keeps it, so it is gone when the UploadBody is destroyed on every path
// (answered, refused, client gone, server stopping) and even after kill -9.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "core/error.h"
#include "memory_service/upload_form.h"

namespace kvrag::memory_service {

// Hands each piece of a body to the sink, in order, until the body ends (true) or the sink
// answers false or the connection fails (false). httplib::ContentReader has this shape.
using ChunkSink = std::function<bool(const char* data, size_t n)>;
using BodyFeed = std::function<bool(const ChunkSink& sink)>;

class UploadBody final : public BodyReader {
public:
    // A new empty body file in `dir` (named .kvrag-upload-XXXXXX while it is being created).
    // Errors (memory_store): the directory is missing or not writable, naming it and errno.
    static Result<UploadBody> create(const std::string& dir);

    UploadBody(UploadBody&& other) noexcept;
    UploadBody& operator=(UploadBody&& other) noexcept;
    UploadBody(const UploadBody&) = delete;
    UploadBody& operator=(const UploadBody&) = delete;
    ~UploadBody() override;

    // Writes the whole body that `feed` gives to the file. Stops, and the body is refused, as
    // soon as more than `limit` bytes arrived (request_too_large: the limit, `limit_why` and
    // the bytes received), when *stopping turns true (server_shutting_down: the server is
    // stopping; nothing stored), when the file cannot be written (memory_store: errno, e.g. a
    // full disk) or when the feed ends early (memory_bad_input: the client went away or sent a
    // broken body; the bytes received). Call once.
    Result<void> receive(const BodyFeed& feed, uint64_t limit, const std::string& limit_why, const std::atomic<bool>* stopping);

    uint64_t size() const override { return size_; }
    Result<void> read(uint64_t offset, size_t n, char* out) const override;
    const std::string& dir() const { return dir_; }

private:
    UploadBody(int fd, std::string dir) : fd_(fd), dir_(std::move(dir)) {}
    Result<void> append(const char* data, size_t n);

    int fd_ = -1;
    std::string dir_;
    uint64_t size_ = 0;  // bytes written so far
};

}  // namespace kvrag::memory_service
