// AVX2 activation quantisers (Q8_0, Q8_1, Q8_K): bit-identical to ref (same amax, same d and
// 1/d, round-to-nearest-even), so activations do not depend on the path. Internal to kernels/:
// avx2::quantize_row calls them; x: (nb * block size) floats, y: nb blocks.
#pragma once

#include <cstdint>

#include "kernels/quant_blocks.h"

namespace kvrag::kernels::avx2 {

void quant_q8_0(const float* x, BlockQ8_0* y, int64_t nb);
void quant_q8_1(const float* x, BlockQ8_1* y, int64_t nb);
void quant_q8_k(const float* x, BlockQ8_K* y, int64_t nb);

}  // namespace kvrag::kernels::avx2
