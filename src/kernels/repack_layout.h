// Byte layouts of the packed weight groups (kernels/repack.h), shared by the packer and the
// AVX2 kernels. A group holds kPackRows (8) rows; r below is the row within the group.
//
// Q4_0, per 32-element block column i, kPackQ4_0BlockBytes = 144 bytes at i * 144:
//   [0, 16)    d[r]: the eight rows' fp16 scales
//   [16, 144)  quants: byte 16 + 32m + 4r + j (m, j in [0, 4)) holds element 4m + j of row r in
//              its low nibble and element 16 + 4m + j in its high nibble (0..15, offset 8 not
//              applied). So the low nibbles of the 32 bytes at 16 + 32m are elements
//              [4m, 4m + 4) of all eight rows, int32 lane r = row r; the high nibbles are
//              elements [16 + 4m, 16 + 4m + 4).
//
// Q5_0, per block column, kPackQ5_0BlockBytes = 176 bytes: Q4_0's 144 (the low four bits of
// each 5-bit value as Q4_0's nibbles, offset 16 not applied), then
//   [144, 176) high bits: byte 144 + 4r + j holds in bit m (m in [0, 4)) the fifth bit of element
//              4m + j of row r, and in bit 4 + m that of element 16 + 4m + j. A shift and a mask
//              put the fifth bits under the nibbles of vector m (low, then high).
//
// Q4_1, kPackQ4_1BlockBytes = 160 bytes: d[r] in [0, 16), the fp16 mins m[r] in [16, 32), then
// Q4_0's quants in [32, 160). Q5_1, kPackQ5_1BlockBytes = 192: Q4_1's 160, then Q5_0's high
// bits in [160, 192).
//
// Q8_0, per 32-element block column i, kPackQ8_0BlockBytes = 272 bytes at i * 272:
//   [0, 16)    d[r]: the eight rows' fp16 scales
//   [16, 272)  quants: byte 16 + 32m + 4r + j (m in [0, 8), j in [0, 4)) holds element 4m + j of
//              row r (int8 as stored), so the 32 bytes at 16 + 32m are elements [4m, 4m + 4)
//              of all eight rows, int32 lane r = row r.
//
// F16 and BF16, per element k (no blocks), 16 bytes at 16k: the eight rows' element k as stored
// (fp16 or bf16), lane r = row r, so one vcvtph2ps (or zero-extend and shift) widens element k
// of the whole group.
//
// Q4_K, per 256-element super-block i, kPackQ4_KBlockBytes = 1184 bytes at i * 1184:
//   [0, 16)       d[r]: fp16 scales of the 6-bit scales
//   [16, 32)      dmin[r]: fp16 scales of the 6-bit mins
//   [32, 96)      sc: byte 32 + 8j + r = 6-bit scale of sub-block j (32 elements) of row r
//   [96, 160)     mins: byte 96 + 16p + 2r + k = 6-bit min of sub-block 2p + k of row r, so the
//                 16 bytes at 96 + 16p widen to int16 pairs (m_2p, m_2p+1) per row for madd
//   [160, 1184)   quants: sub-block j at 160 + 128j laid out as a Q4_0 block's quants above
//                 (byte 32m + 4r + jj: element 32j + 4m + jj low, 32j + 16 + 4m + jj high).
//
// Q5_K, per 256-element super-block i, kPackQ5_KBlockBytes = 1440 bytes at i * 1440: the Q4_K
// layout above for d, dmin, scales and mins, then
//   [160, 1440)   quants: sub-block j at 160 + 160j, five 32-byte vectors k = 0..4; byte
//                 32k + 4r + jj holds element 32j + 4k + jj of row r (all five bits, 0..31) in
//                 bits 0..4, and in bits 5..7 pieces of elements 32j + 20 + jj (e5), 24 + jj (e6)
//                 and 28 + jj (e7): vector 0 bits 0-2 of e5; vector 1 bits 3-4 of e5 and bit 0
//                 of e6; vector 2 bits 1-3 of e6; vector 3 bit 4 of e6 and bits 0-1 of e7;
//                 vector 4 bits 2-4 of e7. Five masks give five whole vectors and masked shifts
//                 rebuild the other three: 23 operations for the sub-block where a 4 + 1 bit
//                 split takes 40.
//
// Q6_K, per 256-element super-block i, kPackQ6_KBlockBytes = 1680 bytes (8 x 210) at i * 1680;
// q below is the stored 6-bit value 0..63 (offset 32 not applied), sub-block j = 16 elements:
//   [0, 16)       d[r]: fp16 super-block scales
//   [16, 144)     sc: byte 16 + 16p + 2r + k = int8 scale of sub-block 2p + k of row r, so the
//                 16 bytes at 16 + 16p widen to int16 pairs (sc_2p, sc_2p+1) per row for madd
//   [144, 1680)   quants: sub-block j at 144 + 96j, three 32-byte vectors v = 0, 1, 2; byte
//                 32v + 4r + jj holds element 16j + 4v + jj of row r in bits 0..5 and bits
//                 2v, 2v + 1 of element 16j + 12 + jj in bits 6, 7. So a mask gives three
//                 vectors of whole values and three masked shifts rebuild the fourth: the kernel
//                 unpacks 128 weights in 11 operations where a 4 + 2 bit split takes 17.
#pragma once

#include <cstddef>

#include "kernels/quant_blocks.h"

namespace kvrag::kernels {

inline constexpr size_t kPackQ4_0BlockBytes = 16 + 128;
inline constexpr size_t kPackQ8_0BlockBytes = 16 + 256;
inline constexpr size_t kPackQ5_0BlockBytes = 16 + 128 + 32;
inline constexpr size_t kPackQ4_1BlockBytes = 32 + 128;
inline constexpr size_t kPackQ5_1BlockBytes = 32 + 128 + 32;

inline constexpr size_t kPackQ4_KScales = 32;
inline constexpr size_t kPackQ4_KMins = 96;
inline constexpr size_t kPackQ4_KQuants = 160;
inline constexpr size_t kPackQ4_KBlockBytes = kPackQ4_KQuants + 8 * 128;

inline constexpr size_t kPackQ5_KQuants = kPackQ4_KQuants;
inline constexpr size_t kPackQ5_KBlockBytes = kPackQ5_KQuants + 8 * 160;

inline constexpr size_t kPackQ6_KScales = 16;
inline constexpr size_t kPackQ6_KQuants = 144;
inline constexpr size_t kPackQ6_KBlockBytes = kPackQ6_KQuants + 16 * 96;

// The 32-element block types with 4-bit quants, optionally a min (Q4_1, Q5_1) and a fifth bit
// (Q5_0, Q5_1): their packed block size and where the quants go (the high bits follow them).
// kOffset: the value subtracted from each stored quant (8, 16; 0 with a min instead).
template <size_t Bytes, size_t Quants, bool HasMin, bool HasHighBit, int Offset>
struct PackQ4Layout {
    static constexpr size_t kBytes = Bytes, kQuants = Quants;
    static constexpr bool kHasMin = HasMin, kHasHighBit = HasHighBit;
    static constexpr int kOffset = Offset;
};
template <class Block>
struct PackQ4Family;
template <>
struct PackQ4Family<BlockQ4_0> : PackQ4Layout<kPackQ4_0BlockBytes, 16, false, false, 8> {};
template <>
struct PackQ4Family<BlockQ5_0> : PackQ4Layout<kPackQ5_0BlockBytes, 16, false, true, 16> {};
template <>
struct PackQ4Family<BlockQ4_1> : PackQ4Layout<kPackQ4_1BlockBytes, 32, true, false, 0> {};
template <>
struct PackQ4Family<BlockQ5_1> : PackQ4Layout<kPackQ5_1BlockBytes, 32, true, true, 0> {};

}  // namespace kvrag::kernels
