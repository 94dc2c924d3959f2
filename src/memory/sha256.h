// SHA-256 of a byte string, as lowercase hex. Used for document content hashes (dedupe and
// replace on re-ingestion) and the embedding-model fingerprint; not for anything secret.
// The digest itself is OpenSSL's (EVP): a tested implementation instead of a hand-written one.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX; kept out of this header

namespace kvrag::memory {

// Incremental: update() any number of times with pieces of any size, then hex() once.
// Throws std::bad_alloc when OpenSSL cannot allocate its context, std::runtime_error when
// OpenSSL refuses SHA-256 (a broken installation); never for any input.
class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;

    void update(const void* data, size_t n);
    void update(std::string_view s) { update(s.data(), s.size()); }
    std::string hex();  // finishes; the object must not be updated afterwards

private:
    evp_md_ctx_st* ctx_ = nullptr;
};

std::string sha256_hex(std::string_view data);

}  // namespace kvrag::memory
