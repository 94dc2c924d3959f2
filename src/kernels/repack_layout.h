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
// Q8_0, per 32-element block column i, kPackQ8_0BlockBytes = 272 bytes at i * 272:
//   [0, 16)    d[r]: the eight rows' fp16 scales
//   [16, 272)  quants: byte 16 + 32m + 4r + j (m in [0, 8), j in [0, 4)) holds element 4m + j of
//              row r (int8 as stored), so the 32 bytes at 16 + 32m are elements [4m, 4m + 4)
//              of all eight rows, int32 lane r = row r.
//
// F16, per element k (no blocks), 16 bytes at 16k: the eight rows' element k as stored (fp16),
// lane r = row r, so one vcvtph2ps widens element k of the whole group.
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
// layout above for d, dmin, scales, mins and the low four bits (the quants region holds them as
// Q4_K holds its nibbles), then
//   [1184, 1440)  fifth bits: sub-block j at 1184 + 32j; byte 4r + jj holds in bit 2m that of
//                 element 32j + 4m + jj (the low nibble of quants byte 32m + 4r + jj) and in bit
//                 2m + 1 that of element 32j + 16 + 4m + jj (its high nibble), m in [0, 4)
//
// Q6_K, per 256-element super-block i, kPackQ6_KBlockBytes = 1680 bytes (8 x 210) at i * 1680;
// q below is the stored 6-bit value 0..63 (offset 32 not applied), sub-block j = 16 elements:
//   [0, 16)       d[r]: fp16 super-block scales
//   [16, 144)     sc: byte 16 + 8j + r = int8 scale of sub-block j of row r
//   [144, 1168)   low 4 bits: sub-block j at 144 + 64j, two 32-byte vectors a = 0, 1; byte
//                 32a + 4r + jj holds element 16j + 4a + jj in its low nibble and element
//                 16j + 8 + 4a + jj in its high nibble
//   [1168, 1680)  high 2 bits: sub-block j at 1168 + 32j; byte 4r + jj holds those of element
//                 16j + 4v + jj in bits 2v, 2v + 1 (v in [0, 4))
#pragma once

#include <cstddef>

namespace kvrag::kernels {

inline constexpr size_t kPackQ4_0BlockBytes = 16 + 128;
inline constexpr size_t kPackQ8_0BlockBytes = 16 + 256;

inline constexpr size_t kPackQ4_KScales = 32;
inline constexpr size_t kPackQ4_KMins = 96;
inline constexpr size_t kPackQ4_KQuants = 160;
inline constexpr size_t kPackQ4_KBlockBytes = kPackQ4_KQuants + 8 * 128;

inline constexpr size_t kPackQ5_KHigh = kPackQ4_KBlockBytes;
inline constexpr size_t kPackQ5_KBlockBytes = kPackQ5_KHigh + 8 * 32;

inline constexpr size_t kPackQ6_KScales = 16;
inline constexpr size_t kPackQ6_KLow = 144;
inline constexpr size_t kPackQ6_KHigh = 1168;
inline constexpr size_t kPackQ6_KBlockBytes = kPackQ6_KHigh + 16 * 32;

}  // namespace kvrag::kernels
