// Element-wise and per-row kernels of the transformer block (everything but the matmuls,
// which live in quant.h). Plain loops over pointers; shapes in the comments.
#pragma once

#include <cstdint>

namespace kvrag::kernels {

// y = x / sqrt(mean(x^2) + eps) * w.  x, y, w: (n). Sum of squares in double, as the
// reference engine does, so long rows do not lose precision.
void rmsnorm(float* y, const float* x, const float* w, int64_t n, float eps);

// Rotates one head in place. x: (head_dim); the first n_rot dims are rotated.
// cos_sin: (n_rot / 2, 2) table for this position (see rope_table).
// neox = false: pairs (x[2i], x[2i+1]) (llama); neox = true: pairs (x[i], x[i + n_rot/2]) (qwen2).
void rope_apply(float* x, const float* cos_sin, int32_t n_rot, bool neox);

// Fills cos_sin (n_rot / 2, 2) for position pos: theta_i = pos * freq_scale * base^(-2i/n_rot)
// / freq_factors[i] (freq_factors may be null). theta advances by repeated multiplication, like
// the reference engine, so the angles match it to the last bit as far as possible.
void rope_table(float* cos_sin, float pos, int32_t n_rot, float freq_base, float freq_scale,
                const float* freq_factors);

// In-place softmax of x: (n). Max-subtracted, sum in double.
void softmax(float* x, int64_t n);

// y = silu(g) * u, element-wise. y, g, u: (n).
void silu_mul(float* y, const float* g, const float* u, int64_t n);

// y += x. y, x: (n)
void add_inplace(float* y, const float* x, int64_t n);

}  // namespace kvrag::kernels
