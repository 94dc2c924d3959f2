// Packed quantisation blocks, byte for byte as GGUF files store them (ggml's block_* structs).
//
// All fp16 fields are raw IEEE half bits (uint16_t); see kernels/fp16.h. Every struct is made
// only of 1- and 2-byte members (4 for Q8_K's float), so the natural layout has no padding;
// the static_asserts pin the sizes to the GGUF type sizes in core/ggml_type.cpp.
//
// Element order inside each block (checked against ggml-quants.c):
//   Q4_0/Q4_1: qs[j] low nibble = element j, high nibble = element j + 16.
//   Q5_0/Q5_1: as Q4_*, plus a 5th bit: bit j of the little-endian uint32 qh is the high bit
//              of element j (j in [0, 32)).
//   Q8_0/Q8_1: qs[j] = element j.
//   Q4_K: 8 sub-blocks of 32 with 6-bit scale/min pairs packed in scales[12] (see
//         unpack_scale_min_k4). Chunk c in [0,4) covers elements [64c, 64c+64): qs[32c + l] low
//         nibble = element 64c + l (sub-block 2c), high nibble = element 64c + 32 + l
//         (sub-block 2c+1).
//   Q5_K: as Q4_K for the low 4 bits; qh[l] bit 2c is the 5th bit of element 64c + l and
//         bit 2c+1 that of element 64c + 32 + l.
//   Q6_K: two halves of 128; in half h (ql += 64h, qh += 32h), for l in [0,32):
//           element 128h + l      = (ql[l]    & 0xF) | ((qh[l] >> 0) & 3) << 4
//           element 128h + l + 32 = (ql[l+32] & 0xF) | ((qh[l] >> 2) & 3) << 4
//           element 128h + l + 64 = (ql[l]    >> 4)  | ((qh[l] >> 4) & 3) << 4
//           element 128h + l + 96 = (ql[l+32] >> 4)  | ((qh[l] >> 6) & 3) << 4
//         each minus 32, times d * scales[e / 16] (16 sub-blocks of 16 elements).
//   Q8_K: float d, qs[j] = element j, bsums[k] = sum of qs[16k .. 16k+16).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvrag::kernels {

constexpr int kQK4_0 = 32;
constexpr int kQK4_1 = 32;
constexpr int kQK5_0 = 32;
constexpr int kQK5_1 = 32;
constexpr int kQK8_0 = 32;
constexpr int kQK8_1 = 32;
constexpr int kQK_K = 256;         // super-block size of the K-quants
constexpr int kKScaleSize = 12;    // packed 6-bit scales + mins of Q4_K / Q5_K

// x = d * (q - 8), q in [0, 16)
struct BlockQ4_0 {
    uint16_t d;                 // fp16 scale
    uint8_t qs[kQK4_0 / 2];     // (32) nibbles
};
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block must be 18 bytes");

// x = d * q + m, q in [0, 16)
struct BlockQ4_1 {
    uint16_t d;                 // fp16 scale
    uint16_t m;                 // fp16 min
    uint8_t qs[kQK4_1 / 2];
};
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block must be 20 bytes");

// x = d * (q - 16), q in [0, 32)
struct BlockQ5_0 {
    uint16_t d;
    uint8_t qh[4];              // 32 high bits, little-endian uint32
    uint8_t qs[kQK5_0 / 2];
};
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block must be 22 bytes");

// x = d * q + m, q in [0, 32)
struct BlockQ5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[kQK5_1 / 2];
};
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1 block must be 24 bytes");

// x = d * q
struct BlockQ8_0 {
    uint16_t d;
    int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block must be 34 bytes");

// x = d * q; s = d * sum(q), precomputed so the Q4_1/Q5_1 min term costs one multiply
struct BlockQ8_1 {
    uint16_t d;
    uint16_t s;
    int8_t qs[kQK8_1];
};
static_assert(sizeof(BlockQ8_1) == 36, "Q8_1 block must be 36 bytes");

// x = d * sc[j] * q - dmin * m[j] for sub-block j (32 elements), q in [0, 16)
struct BlockQ4_K {
    uint16_t d;                     // fp16 scale of the 6-bit scales
    uint16_t dmin;                  // fp16 scale of the 6-bit mins
    uint8_t scales[kKScaleSize];    // 8 scales + 8 mins, 6 bits each
    uint8_t qs[kQK_K / 2];          // (256) nibbles
};
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block must be 144 bytes");

// As Q4_K with q in [0, 32)
struct BlockQ5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[kKScaleSize];
    uint8_t qh[kQK_K / 8];          // (32) 5th bits, see header comment
    uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176, "Q5_K block must be 176 bytes");

// x = d * scales[j] * (q - 32) for sub-block j (16 elements), q in [0, 64)
struct BlockQ6_K {
    uint8_t ql[kQK_K / 2];          // (128) low 4 bits
    uint8_t qh[kQK_K / 4];          // (64) high 2 bits
    int8_t scales[kQK_K / 16];      // (16) signed 8-bit sub-block scales
    uint16_t d;                     // fp16 super-block scale, last (not first!)
};
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block must be 210 bytes");

// Activation format for the K-quant dots; d is a full float.
struct BlockQ8_K {
    float d;
    int8_t qs[kQK_K];
    int16_t bsums[kQK_K / 16];      // (16) sums of qs in groups of 16
};
static_assert(sizeof(BlockQ8_K) == 292, "Q8_K block must be 292 bytes");

// Q4_K/Q5_K scale packing. Sub-blocks 0..3 keep their 6-bit scale in scales[j] and their min in
// scales[j+4] (low 6 bits). Sub-blocks 4..7 keep the low 4 bits of scale and min in the two
// nibbles of scales[j+4], and their top 2 bits in the spare top bits of scales[j-4] (scale) and
// scales[j] (min).
inline void unpack_scale_min_k4(int j, const uint8_t* scales, uint8_t* sc, uint8_t* m) {
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = static_cast<uint8_t>((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4));
        *m = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
    }
}

// Inverse of unpack_scale_min_k4 for all 8 sub-blocks; sc and m must be < 64.
inline void pack_scale_min_k4(const uint8_t sc[8], const uint8_t m[8], uint8_t scales[12]) {
    for (int j = 0; j < 4; ++j) {
        scales[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        scales[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
        scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
    }
}

}  // namespace kvrag::kernels
