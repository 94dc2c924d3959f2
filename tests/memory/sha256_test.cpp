// SHA-256 known answers: the FIPS 180-2 examples (appendix B) and messages around the padding
// boundaries, fed whole and in pieces of every awkward size.
#include "memory/sha256.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>
#include <string>
#include <string_view>

namespace kvrag::memory {
namespace {

// FIPS 180-2, appendix B.1 / B.2 / B.3.
constexpr const char* kEmpty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr const char* kAbc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr const char* k448Bit = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
constexpr const char* kMillionA = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
constexpr const char* k448BitMessage = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";

TEST(Sha256, Fips180KnownAnswers) {
    EXPECT_EQ(sha256_hex(""), kEmpty);
    EXPECT_EQ(sha256_hex("abc"), kAbc);
    EXPECT_EQ(sha256_hex(k448BitMessage), k448Bit);
    EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), kMillionA);
}

TEST(Sha256, MillionAFedIncrementallyInUnevenPieces) {
    // Piece sizes cycle through 0, 1, 63, 64, 65, 1000 and a prime, so pieces start and end at
    // every offset within a 64-byte block, and empty updates come in between.
    const std::string a(1000000, 'a');
    const size_t sizes[] = {0, 1, 63, 64, 65, 1000, 7919};
    Sha256 h;
    size_t off = 0, i = 0;
    while (off < a.size()) {
        const size_t n = std::min(sizes[i++ % std::size(sizes)], a.size() - off);
        h.update(a.data() + off, n);
        off += n;
    }
    EXPECT_EQ(h.hex(), kMillionA);
}

TEST(Sha256, PiecesGiveTheSameDigestAsOneCall) {
    for (const std::string& msg : {std::string("abc"), std::string(k448BitMessage)}) {
        for (size_t cut = 0; cut <= msg.size(); ++cut) {
            Sha256 h;
            h.update(std::string_view(msg).substr(0, cut));
            h.update(std::string_view(msg).substr(cut));
            EXPECT_EQ(h.hex(), sha256_hex(msg)) << "cut at " << cut;
        }
    }
    Sha256 bytewise;
    for (char c : std::string(k448BitMessage)) bytewise.update(&c, 1);
    EXPECT_EQ(bytewise.hex(), k448Bit);
    Sha256 nothing;
    nothing.update(nullptr, 0);
    EXPECT_EQ(nothing.hex(), kEmpty);
}

TEST(Sha256, PaddingBoundaries) {
    // 55 bytes is the longest message whose length fits in its last block; 56 needs one
    // more block; 64 is a whole block. Digests from coreutils' sha256sum.
    struct Case {
        size_t n;
        const char* hex;
    };
    const Case cases[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
    };
    for (const auto& c : cases) EXPECT_EQ(sha256_hex(std::string(c.n, 'a')), c.hex) << c.n << " bytes";
}

}  // namespace
}  // namespace kvrag::memory
