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

// softmax() with the exponentials eight at a time when AVX2 is in use (using_avx2()): each
// within 2 ulp of std::exp, so the results may differ from softmax()'s in the last bits.
void softmax_fast(float* x, int64_t n);

// y = silu(g) * u, element-wise. y, g, u: (n); y may alias g or u. With AVX2 in use
// (using_avx2()) the exponentials come from a polynomial, within 2 ulp of std::exp.
void silu_mul(float* y, const float* g, const float* u, int64_t n);

// y += x. y, x: (n)
void add_inplace(float* y, const float* x, int64_t n);

// y = (x - mean(x)) / sqrt(var(x) + eps) * w + b, the LayerNorm of BERT-family models.
// x, y, w, b: (n); y may alias x. Mean and variance are summed in double.
void layernorm(float* y, const float* x, const float* w, const float* b, int64_t n, float eps);

// y = gelu(x) as ggml computes it on CPU, which the reference engine's outputs depend on: the
// tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))) evaluated once per f16
// value into a table, read with x rounded to f16, the f16 result widened back; 0 for
// x <= -10 and x itself for x >= 10. An exact GELU differs by up to one f16 step of the
// result (1e-4 on BERT embeddings). y, x: (n); y may alias x.
void gelu(float* y, const float* x, int64_t n);

// The same GELU computed in float without the f16 table (for tests: gelu() must stay within
// one f16 rounding of it).
float gelu_tanh_f32(float x);

// gelu()'s table widened to floats: entry h is the result for the f16 value with bits h.
const float* gelu_table_f32();

namespace ref {
// silu_mul with std::exp per element (the path without AVX2).
void silu_mul(float* y, const float* g, const float* u, int64_t n);
// gelu one element at a time (the path without AVX2; avx2::gelu equals it bit for bit).
void gelu(float* y, const float* x, int64_t n);
}  // namespace ref

namespace avx2 {
// Eight at a time (call only when avx2_supported()).
void silu_mul(float* y, const float* g, const float* u, int64_t n);
void softmax(float* x, int64_t n);
void gelu(float* y, const float* x, int64_t n);
}  // namespace avx2

}  // namespace kvrag::kernels
