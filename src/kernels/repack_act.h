// Internal to kernels/: the activations of a packed product (repack.h), regrouped once per
// product four tokens at a time so the micro-kernels walk one pointer per token group. Shared
// by the AVX2 tiles (repack_avx2.cpp, which defines these functions) and the AVX-512 tiles
// (repack_avx512.cpp): both read the same regrouped bytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/quant_blocks.h"

namespace kvrag::kernels::avx2 {

inline constexpr int kActTok = 4;  // tokens per activation group, the widest tile

// Q8_0 activations (Q4_0, Q5_0 and Q8_0 weights): per block i of token group g, at
// (g * nb + i) * kActQ8_0Bytes: the four tokens' 32 quant bytes, their scales as floats, and
// 8 * (sum of their quants), the term that turns the unsigned nibbles q into q - 8. Q8_1
// activations (Q4_1 and Q5_1 weights) take the same layout with the sums slot holding the
// block's s = dx * sum (a float).
inline constexpr size_t kActScales = kActTok * 32;
inline constexpr size_t kActSums = kActScales + kActTok * 4;
inline constexpr size_t kActQ8_0Bytes = kActSums + kActTok * 4;

// Q8_K activations (Q4_K and Q5_K weights): per block, the four tokens' 256 quant bytes, their
// float scales, and per token four int32 words, word p holding the sums of sub-blocks 2p (low
// int16) and 2p + 1 (high int16) of its quants, the factors of the mins.
inline constexpr size_t kActKScales = kActTok * kQK_K;
inline constexpr size_t kActKSums = kActKScales + kActTok * 4;
inline constexpr size_t kActQ8_KBytes = kActKSums + kActTok * 16;

// Q8_K for Q6_K weights: as above, but per token the sixteen int16 bsums as they are (32
// bytes), the factors of the -32 offset: word p holds those of sub-blocks 2p and 2p + 1.
inline constexpr size_t kActQ8_K16Bytes = kActKSums + kActTok * 32;

// Regroup n_tokens rows of x (rows x_row_bytes apart, nb blocks each) into dst, which holds
// ceil(n_tokens / kActTok) * nb blocks of the layout's size; slots of missing tokens are zero.
void group_q8_0(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst);
void group_q8_1(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst);
void group_q8_k(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst);
void group_q8_k16(const uint8_t* x, size_t x_row_bytes, int64_t n_tokens, int64_t nb, uint8_t* dst);

// A per-thread, 64-byte aligned buffer of at least `bytes`, reused across products.
uint8_t* act_buffer(size_t bytes);

}  // namespace kvrag::kernels::avx2
