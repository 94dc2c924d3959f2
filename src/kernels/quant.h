// Quantised row kernels: dequantise, quantise, dot products and the batched row matmul.
//
// Weight types with kernels: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K.
// Activation-only types: Q8_1, Q8_K (and Q8_0, which is also a weight type).
//
// A weight row is dotted with an activation row stored in vec_dot_type(weight_type), the same
// pairing as ggml: the activations are quantised once per token (quantize_row) and then reused
// by every weight row, which is what makes the integer dot products pay off.
//
// The functions in kvrag::kernels pick the AVX2 path or the scalar reference once, at first
// use (see using_avx2). kvrag::kernels::ref and ::avx2 expose each path directly so tests can
// compare them; call avx2:: only when using_avx2() or avx2_supported() is true.
//
// Preconditions (internal invariants, checked by the GGUF/model loader before any kernel runs):
// n is a multiple of the type's block size, the type has kernels, buffers are large enough.
// A type without kernels aborts with a message; the other conditions are not checked (hot path).
// Nothing here allocates (except a one-time 256 KiB fp16 table in ref) or throws.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/ggml_type.h"

namespace kvrag::kernels {

// True for the weight types listed above (the ones vec_dot / matmul_rows accept).
bool has_weight_kernels(GgmlType type);

// dst (n) floats <- src (n / block_size blocks of `type`).
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);

// dst (n / block_size blocks of `type`) <- src (n) floats. Deterministic reference quantiser for
// every weight type plus Q8_1 and Q8_K. The K-quant quantisers use a simple per-sub-block
// min/max fit (not ggml's iterative search), so files they write decode correctly everywhere
// but are a little less accurate than llama.cpp's.
void quantize_row(GgmlType type, const float* src, void* dst, int64_t n);

// The activation format a weight row of this type is dotted with:
// F32->F32, F16->F16, BF16->BF16, Q4_0/Q5_0/Q8_0->Q8_0, Q4_1/Q5_1->Q8_1, Q4_K/Q5_K/Q6_K->Q8_K.
GgmlType vec_dot_type(GgmlType weight_type);

// sum_i w[i] * x[i] over n elements. w_row: (n) elements of weight_type;
// x: (n) elements of vec_dot_type(weight_type).
float vec_dot(GgmlType weight_type, int64_t n, const void* w_row, const void* x);

// For each token t in [0, n_tokens) and row r in [r0, r1):
//   y[t*ldy + r] = vec_dot(type, n_in, W + r*row_bytes, x + t*x_row_bytes)
// W: (n_rows, n_in) of `type`, rows row_bytes apart; x: (n_tokens, n_in) of vec_dot_type(type),
// rows x_row_bytes apart; y: (n_tokens, ldy) floats.
// Every y element is bit-identical to the single vec_dot call (same accumulation order), so the
// result does not depend on the batch size or on how [r0, r1) is split between threads.
void matmul_rows(GgmlType type, int64_t n_in, const void* W, size_t row_bytes,
                 const void* x, size_t x_row_bytes, int64_t n_tokens,
                 float* y, int64_t ldy, int64_t r0, int64_t r1);

// Which path the dispatching functions use: true when the CPU has AVX2 + FMA + F16C and
// KVRAG_FORCE_SCALAR=1 is not set in the environment.
bool using_avx2();

// Whether this CPU could run the avx2:: functions at all (ignores KVRAG_FORCE_SCALAR).
bool avx2_supported();

// Whether the packed products (repack.h) and attention use the avx512:: kernels: the CPU has AVX-512 F, BW,
// VL, DQ and VNNI with the OS saving the ZMM state, the AVX2 path is in use, and neither
// KVRAG_FORCE_SCALAR=1 nor KVRAG_FORCE_AVX2=1 is set. Their outputs equal the AVX2 kernels'
// bit for bit; the switch exists to compare speeds.
bool using_avx512();

// Whether this CPU could run the avx512:: functions at all (ignores the environment).
bool avx512_supported();

// Portable scalar reference; the definition of the right answer.
namespace ref {
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);
void quantize_row(GgmlType type, const float* src, void* dst, int64_t n);
float vec_dot(GgmlType weight_type, int64_t n, const void* w_row, const void* x);
void matmul_rows(GgmlType type, int64_t n_in, const void* W, size_t row_bytes,
                 const void* x, size_t x_row_bytes, int64_t n_tokens,
                 float* y, int64_t ldy, int64_t r0, int64_t r1);
}  // namespace ref

// AVX2/FMA/F16C versions (x86-64 builds only). Types without a dedicated kernel forward to ref.
// The activation quantisers (Q8_0, Q8_1, Q8_K) give bit-identical blocks to ref. The F16, Q4_0,
// Q8_0, Q4_K, Q5_K and Q6_K dots are bit-identical to ref too (the packed kernels of repack.h need
// the reference's order); the others differ from ref only by float summation order. The F16
// order is one fused multiply-add chain per output in element order, so a single F16 vec_dot is
// latency-bound: the matrix products (matmul_rows, matmul_packed) run eight rows' chains at once.
namespace avx2 {
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);
void quantize_row(GgmlType type, const float* src, void* dst, int64_t n);
float vec_dot(GgmlType weight_type, int64_t n, const void* w_row, const void* x);
void matmul_rows(GgmlType type, int64_t n_in, const void* W, size_t row_bytes,
                 const void* x, size_t x_row_bytes, int64_t n_tokens,
                 float* y, int64_t ldy, int64_t r0, int64_t r1);
}  // namespace avx2

// Internal: aborts with "kvrag kernels: <what> does not support type <name>". Used for broken
// preconditions only; user input never reaches it because the loader rejects unknown types.
[[noreturn]] void unsupported_type(const char* what, GgmlType type);

}  // namespace kvrag::kernels
