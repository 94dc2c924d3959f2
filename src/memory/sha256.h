// SHA-256 of a byte string, as lowercase hex. Used for document content hashes (dedupe and
// replace on re-ingestion) and the embedding-model fingerprint; not for anything secret.
#pragma once

#include <string>
#include <string_view>

namespace kvrag::memory {

class Sha256 {
public:
    Sha256();
    void update(const void* data, size_t n);
    void update(std::string_view s) { update(s.data(), s.size()); }
    std::string hex();  // finishes; the object must not be updated afterwards

private:
    void block(const unsigned char* p);  // one 64-byte block
    unsigned int h_[8];
    unsigned char buf_[64];
    size_t n_buf_ = 0;
    unsigned long long n_total_ = 0;
};

std::string sha256_hex(std::string_view data);

}  // namespace kvrag::memory
