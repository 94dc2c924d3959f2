#include "memory_service/upload_body.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

namespace kvrag::memory_service {

namespace {

std::string errno_text(int e) { return std::string(std::strerror(e)) + " (errno " + std::to_string(e) + ")"; }

}  // namespace

Result<UploadBody> UploadBody::create(const std::string& dir) {
    std::string path = (dir.empty() ? std::string(".") : dir) + "/.kvrag-upload-XXXXXX";
    std::vector<char> tmpl(path.begin(), path.end());
    tmpl.push_back('\0');
    const int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);  // O_CREAT | O_EXCL, mode 0600
    if (fd < 0) {
        const int e = errno;
        return Error{Errc::memory_store, "cannot create the upload's temporary file in '" + dir + "': " + errno_text(e) +
                                             "; the directory must exist and be writable"};
    }
    // Unlinked at once: the descriptor alone keeps the file, so no path can leave it behind.
    if (::unlink(tmpl.data()) != 0) {
        const int e = errno;
        ::close(fd);
        ::unlink(tmpl.data());
        return Error{Errc::memory_store, "cannot unlink the upload's temporary file '" + std::string(tmpl.data()) + "': " + errno_text(e)};
    }
    return UploadBody(fd, dir);
}

UploadBody::UploadBody(UploadBody&& other) noexcept : fd_(other.fd_), dir_(std::move(other.dir_)), size_(other.size_) { other.fd_ = -1; }

UploadBody& UploadBody::operator=(UploadBody&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = other.fd_;
        dir_ = std::move(other.dir_);
        size_ = other.size_;
        other.fd_ = -1;
    }
    return *this;
}

UploadBody::~UploadBody() {
    if (fd_ >= 0) ::close(fd_);
}

Result<void> UploadBody::append(const char* data, size_t n) {
    while (n > 0) {
        const ssize_t w = ::write(fd_, data, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            const int e = errno;
            return Error{Errc::memory_store, "writing the upload to a temporary file in '" + dir_ + "' failed after " + std::to_string(size_) +
                                                 " bytes: " + errno_text(e)};
        }
        data += w;
        n -= static_cast<size_t>(w);
        size_ += static_cast<uint64_t>(w);
    }
    return {};
}

Result<void> UploadBody::receive(const BodyFeed& feed, uint64_t limit, const std::string& limit_why, const std::atomic<bool>* stopping) {
    std::optional<Error> failure;
    const bool complete = feed([&](const char* data, size_t n) {
        // Checked per piece: a stopping server abandons an upload still arriving within one
        // piece (httplib hands over at most a few KiB at a time).
        if (stopping && stopping->load(std::memory_order_relaxed)) {
            failure = Error{Errc::server_shutting_down, "the server is stopping; the upload was abandoned after " + std::to_string(size_) +
                                                            " bytes and nothing was stored: send it again once the server is back"};
            return false;
        }
        if (n > limit || size_ > limit - n) {
            failure = Error{Errc::request_too_large, "the upload body is over the limit of " + std::to_string(limit) + " bytes (" + limit_why +
                                                         "): " + std::to_string(size_ + n) + " bytes had arrived when it was refused"};
            return false;
        }
        if (auto w = append(data, n); !w) {
            failure = w.error();
            return false;
        }
        return true;
    });
    if (failure) return *failure;
    if (!complete) {
        return Error{Errc::memory_bad_input, "the upload body ended early after " + std::to_string(size_) +
                                                 " bytes: the client closed the connection or sent a broken body"};
    }
    return {};
}

Result<void> UploadBody::read(uint64_t offset, size_t n, char* out) const {
    if (offset > size_ || n > size_ - offset) {
        return Error{Errc::memory_store, "read of bytes [" + std::to_string(offset) + ", " + std::to_string(offset + n) + ") past the upload's " +
                                             std::to_string(size_)};
    }
    while (n > 0) {
        const ssize_t r = ::pread(fd_, out, n, static_cast<off_t>(offset));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            const int e = r < 0 ? errno : EIO;
            return Error{Errc::memory_store, "reading the upload's temporary file in '" + dir_ + "' at byte " + std::to_string(offset) + " failed: " +
                                                 errno_text(e)};
        }
        out += r;
        offset += static_cast<uint64_t>(r);
        n -= static_cast<size_t>(r);
    }
    return {};
}

}  // namespace kvrag::memory_service
