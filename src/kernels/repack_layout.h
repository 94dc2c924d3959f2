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
#pragma once

#include <cstddef>

namespace kvrag::kernels {

inline constexpr size_t kPackQ4_0BlockBytes = 16 + 128;

}  // namespace kvrag::kernels
