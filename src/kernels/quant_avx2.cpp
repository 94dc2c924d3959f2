// AVX2 + FMA + F16C kernels (CMake compiles *_avx2.cpp with -mavx2 -mfma -mf16c; dispatch only
// calls them after a runtime CPU check).
//
// Every dot kernel is a template over NT, the number of activation rows it handles at once:
// the weight block is loaded and unpacked once, then used for NT tokens. Each token keeps its
// own accumulators and sees exactly the same sequence of operations whatever NT is, so
// matmul_rows (NT = 4 plus NT = 1 for the rest) is bit-identical to vec_dot (NT = 1).
// Scalar float updates are written with std::fma / intrinsics, never as `a * b + c`, so the
// compiler's FMA contraction cannot treat two instantiations differently.
//
// Integer dot strategy (as in ggml): _mm256_maddubs_epi16 multiplies unsigned weight bytes by
// signed activation bytes and adds pairs into int16; _mm256_madd_epi16 widens to int32.
// Signed weights use the sign trick: |w| * (x * sign(w)).
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/gemm_f16.h"
#include "kernels/kquant_dots_avx2.h"
#include "kernels/quant.h"
#include "kernels/quant_act_avx2.h"
#include "kernels/quant_blocks.h"
#include "kernels/repack.h"
#include "kernels/simd_avx2.h"

namespace kvrag::kernels::avx2 {
namespace {

constexpr int kMaxNt = 4;  // tokens per weight pass in matmul_rows


// ------------------------------------------------------------------------------------------
// Float rows
// ------------------------------------------------------------------------------------------

// Float weights: one 8-lane accumulator per output over the elements in order, then a scalar
// FMA tail. This is the reduction order of every float product (float_tile below is the same
// per output), so a matrix product equals vec_dot bit for bit; decode hides the FMA latency by
// running several rows at once (float_tile), not by splitting one output's sum.
template <class L>
struct DotFloat {
    template <int NT>
    static void dot(int64_t n, const void* wv, const void* const* xs, float* out) {
        using E = typename L::Elem;
        const E* w = at<E>(wv);
        __m256 acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            const __m256 wv8 = L::load8(w + i);
            for (int t = 0; t < NT; ++t) acc[t] = _mm256_fmadd_ps(wv8, L::load8(at<E>(xs[t]) + i), acc[t]);
        }
        for (int t = 0; t < NT; ++t) {
            const E* x = at<E>(xs[t]);
            __m128 tail = _mm_setzero_ps();
            for (int64_t j = i; j < n; ++j) {
                tail = _mm_fmadd_ss(_mm_set_ss(L::load1(w + j)), _mm_set_ss(L::load1(x + j)), tail);
            }
            out[t] = hsum(acc[t]) + _mm_cvtss_f32(tail);
        }
    }
};

// F16 and BF16 weights in the reference's order: one fused multiply-add chain per output,
// element by element (ref::vec_dot). One row is latency-bound this way (4 cycles per element);
// the matrix products keep the same chains but run a lane per weight row (gemm_f16_avx2.cpp),
// and matmul_rows sends F16 and BF16 there.
template <class L>
struct DotHalf {
    template <int NT>
    static void dot(int64_t n, const void* wv, const void* const* xs, float* out) {
        const auto* w = at<uint16_t>(wv);
        __m128 acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = _mm_setzero_ps();
        for (int64_t i = 0; i < n; ++i) {
            const __m128 wi = _mm_set_ss(L::load1(w + i));
            for (int t = 0; t < NT; ++t) acc[t] = _mm_fmadd_ss(wi, _mm_set_ss(L::load1(at<uint16_t>(xs[t]) + i)), acc[t]);
        }
        for (int t = 0; t < NT; ++t) out[t] = _mm_cvtss_f32(acc[t]);
    }
};

// ------------------------------------------------------------------------------------------
// 32-element blocks against Q8_0 (signed weights) or Q8_1 (unsigned weights + min)
// ------------------------------------------------------------------------------------------

struct DecodeQ4_0 {
    using Block = BlockQ4_0;
    static __m256i decode(const Block& b) {  // [-8, 8)
        return _mm256_sub_epi8(bytes_from_nibbles(b.qs), _mm256_set1_epi8(8));
    }
};
struct DecodeQ5_0 {
    using Block = BlockQ5_0;
    static __m256i decode(const Block& b) {  // [-16, 16)
        const __m256i hi = _mm256_and_si256(bytes_from_bits(b.qh), _mm256_set1_epi8(0x10));
        return _mm256_sub_epi8(_mm256_or_si256(bytes_from_nibbles(b.qs), hi), _mm256_set1_epi8(16));
    }
};
struct DecodeQ8_0 {
    using Block = BlockQ8_0;
    static __m256i decode(const Block& b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)); }
};
struct DecodeQ4_1 {
    using Block = BlockQ4_1;
    static __m256i decode(const Block& b) { return bytes_from_nibbles(b.qs); }  // [0, 16)
};
struct DecodeQ5_1 {
    using Block = BlockQ5_1;
    static __m256i decode(const Block& b) {  // [0, 32)
        const __m256i hi = _mm256_and_si256(bytes_from_bits(b.qh), _mm256_set1_epi8(0x10));
        return _mm256_or_si256(bytes_from_nibbles(b.qs), hi);
    }
};

// A register tile of RM float weight rows x RN tokens of f32 activations (widened once per
// product when they were f16/bf16: exact). Each step loads RM weight vectors and uses each
// activation vector RM times: 3 x 4 gives 12 accumulators + 3 weight registers, and 12 FMAs per
// 7 loads. Per output the order is DotFloat's, so results are bit-identical to vec_dot.
template <int RM, int RN, class LW>
void float_tile(int64_t n, const typename LW::Elem* const* w, const float* const* x, float* out /* (RM, RN) */) {
    __m256 acc[RM][RN];
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < RN; ++c) acc[r][c] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 wv[RM];
        for (int r = 0; r < RM; ++r) wv[r] = LW::load8(w[r] + i);
        for (int c = 0; c < RN; ++c) {
            const __m256 xv = _mm256_loadu_ps(x[c] + i);
            for (int r = 0; r < RM; ++r) acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
        }
    }
    for (int r = 0; r < RM; ++r) {
        for (int c = 0; c < RN; ++c) {
            __m128 tail = _mm_setzero_ps();
            for (int64_t j = i; j < n; ++j) tail = _mm_fmadd_ss(_mm_set_ss(LW::load1(w[r] + j)), _mm_set_ss(x[c][j]), tail);
            out[r * RN + c] = hsum(acc[r][c]) + _mm_cvtss_f32(tail);
        }
    }
}


// Q4_0, Q5_0 and Q8_0 in the reference's order: one float per output, block by block,
// acc = acc + float(isum) * (dw * dx), the integer block sum exact and dw * dx exact. This is
// the order the packed 8-row kernels (repack_avx2.cpp) can keep with a lane per row, so vec_dot,
// matmul_rows, matmul_packed and ref::vec_dot all agree bit for bit.
template <class D>
struct DotRefOrderQ8_0 {
    template <int NT>
    static void dot(int64_t n, const void* wv, const void* const* xs, float* out) {
        const int64_t nb = n / kQK8_0;
        const auto* w = at<typename D::Block>(wv);
        float acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
        for (int64_t i = 0; i < nb; ++i) {
            const __m256i qw = D::decode(w[i]);
            const __m256i aw = _mm256_sign_epi8(qw, qw);
            const float dw = h2f(w[i].d);
            for (int t = 0; t < NT; ++t) {
                const BlockQ8_0* xb = at<BlockQ8_0>(xs[t], i);
                const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb->qs));
                const int isum = hsum_i32x8(dot_u8_i8(aw, _mm256_sign_epi8(qx, qw)));
                acc[t] += no_contract(static_cast<float>(isum) * (dw * h2f(xb->d)));
            }
        }
        for (int t = 0; t < NT; ++t) out[t] = acc[t];
    }
};

// Q4_1 and Q5_1 (x = d*q + m, q unsigned) against Q8_1 in the reference's order, one float per
// output, block by block: acc = acc + (float(isum) * (dw * dx) + mw * sx), each product and sum
// rounded on its own (s = dx * sum(x) gives the m term). The packed kernels keep this order with
// a lane per row.
template <class D>
struct DotRefOrderQ8_1 {
    template <int NT>
    static void dot(int64_t n, const void* wv, const void* const* xs, float* out) {
        const int64_t nb = n / kQK8_1;
        const auto* w = at<typename D::Block>(wv);
        float acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
        for (int64_t i = 0; i < nb; ++i) {
            const __m256i qw = D::decode(w[i]);
            const float dw = h2f(w[i].d);
            const float mw = h2f(w[i].m);
            for (int t = 0; t < NT; ++t) {
                const BlockQ8_1* xb = at<BlockQ8_1>(xs[t], i);
                const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb->qs));
                const int isum = hsum_i32x8(dot_u8_i8(qw, qx));
                acc[t] += no_contract(static_cast<float>(isum) * (dw * h2f(xb->d))) + no_contract(mw * h2f(xb->s));
            }
        }
        for (int t = 0; t < NT; ++t) out[t] = acc[t];
    }
};

// ------------------------------------------------------------------------------------------
// Row drivers
// ------------------------------------------------------------------------------------------

template <class K>
float vec_dot_impl(int64_t n, const void* w, const void* x) {
    float out;
    K::template dot<1>(n, w, &x, &out);
    return out;
}

// The row/token walk shared by the matrix products: rows in tiles of ~64 KiB of weights (kept
// in L2), and inside a tile each group of kMaxNt tokens (in L1) sweeps all rows; leftover tokens
// one at a time. dot.operator()<NT>(r, t, out) computes row r for tokens [t, t + NT), NT = kMaxNt
// or 1.
template <class Dot>
void walk_tiles(size_t row_bytes, int64_t n_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1, Dot&& dot) {
    const int64_t tile = std::max<int64_t>(1, static_cast<int64_t>((64 * 1024) / std::max<size_t>(row_bytes, 1)));
    for (int64_t rt = r0; rt < r1; rt += tile) {
        const int64_t rt_end = std::min(r1, rt + tile);
        int64_t t = 0;
        for (; t + kMaxNt <= n_tokens; t += kMaxNt) {
            for (int64_t r = rt; r < rt_end; ++r) {
                float out[kMaxNt];
                dot.template operator()<kMaxNt>(r, t, out);
                for (int k = 0; k < kMaxNt; ++k) y[(t + k) * ldy + r] = out[k];
            }
        }
        for (; t < n_tokens; ++t) {
            for (int64_t r = rt; r < rt_end; ++r) dot.template operator()<1>(r, t, &y[t * ldy + r]);
        }
    }
}

// Any kernel type, activations used as prepared. Output order does not affect values: every y
// element comes from one dot<NT> call whose per-token arithmetic is the same as dot<1>.
template <class K>
void matmul_impl(int64_t n_in, const void* W, size_t row_bytes, const void* x, size_t x_row_bytes,
                 int64_t n_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1) {
    const auto* wb = static_cast<const uint8_t*>(W);
    const auto* xb = static_cast<const uint8_t*>(x);
    walk_tiles(row_bytes, n_tokens, y, ldy, r0, r1, [&]<int NT>(int64_t r, int64_t t, float* out) {
        const void* xs[NT];
        for (int k = 0; k < NT; ++k) xs[k] = xb + static_cast<size_t>(t + k) * x_row_bytes;
        K::template dot<NT>(n_in, wb + static_cast<size_t>(r) * row_bytes, xs, out);
    });
}

// Runs float_tile<rm, rn> for run-time rm <= 3, rn <= 4.
template <class LW, int RN>
void float_tile_rows(int rm, int64_t n, const typename LW::Elem* const* w, const float* const* x, float* out) {
    switch (rm) {
    case 3: return float_tile<3, RN, LW>(n, w, x, out);
    case 2: return float_tile<2, RN, LW>(n, w, x, out);
    default: return float_tile<1, RN, LW>(n, w, x, out);
    }
}
template <class LW>
void float_tile_any(int rm, int rn, int64_t n, const typename LW::Elem* const* w, const float* const* x, float* out) {
    switch (rn) {
    case 4: return float_tile_rows<LW, 4>(rm, n, w, x, out);
    case 3: return float_tile_rows<LW, 3>(rm, n, w, x, out);
    case 2: return float_tile_rows<LW, 2>(rm, n, w, x, out);
    default: return float_tile_rows<LW, 1>(rm, n, w, x, out);
    }
}

// F32 weights and activations (F16 and BF16 keep their own order: matmul_half_rows). Rows in
// tiles of ~64 KiB (L2); inside a tile, groups of 4 tokens sweep the rows 3 at a time.
template <class LW>
void matmul_float(int64_t n_in, const void* W, size_t row_bytes, const void* x, size_t x_row_bytes, int64_t n_tokens, float* y,
                  int64_t ldy, int64_t r0, int64_t r1) {
    using E = typename LW::Elem;
    constexpr int kRn = 4, kRmMax = 3;
    // Decode (one token): a row at a time, read front to back. Several rows at once (independent
    // FMA chains) measured slower here: decode is memory-bound, and one sequential stream is
    // what the prefetchers serve best.
    const int kRm = n_tokens == 1 ? 1 : kRmMax;
    const auto* wb = static_cast<const uint8_t*>(W);
    const auto* xb = static_cast<const uint8_t*>(x);
    auto xptr = [&](int64_t t) { return reinterpret_cast<const float*>(xb + static_cast<size_t>(t) * x_row_bytes); };
    const int64_t tile = std::max<int64_t>(kRmMax, static_cast<int64_t>((64 * 1024) / std::max<size_t>(row_bytes, 1)));
    for (int64_t rt = r0; rt < r1; rt += tile) {
        const int64_t rt_end = std::min(r1, rt + tile);
        for (int64_t t = 0; t < n_tokens; t += kRn) {
            const int rn = static_cast<int>(std::min<int64_t>(kRn, n_tokens - t));
            const float* xs[kRn];
            for (int c = 0; c < rn; ++c) xs[c] = xptr(t + c);
            for (int64_t r = rt; r < rt_end; r += kRm) {
                const int rm = static_cast<int>(std::min<int64_t>(kRm, rt_end - r));
                const E* ws[kRmMax];
                for (int k = 0; k < rm; ++k) ws[k] = reinterpret_cast<const E*>(wb + static_cast<size_t>(r + k) * row_bytes);
                float out[kRmMax * kRn];
                float_tile_any<LW>(rm, rn, n_in, ws, xs, out);
                for (int k = 0; k < rm; ++k)
                    for (int c = 0; c < rn; ++c) y[(t + c) * ldy + r + k] = out[k * rn + c];
            }
        }
    }
}

// F16 and BF16 rows that were not repacked at load (the encoder's weights, tests): the rows of
// [r0, r1) are packed into 8-row groups per call (a copy of those rows, per thread, reused),
// then multiplied by the packed kernel. Bit-identical to DotHalf and ref::vec_dot.
void matmul_half_rows(GgmlType half, int64_t n_in, const void* W, size_t row_bytes, const void* x, size_t x_row_bytes,
                      int64_t n_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1) {
    if (r0 >= r1 || n_tokens <= 0) return;
    const int64_t g0 = r0 / kPackRows, g1 = (r1 + kPackRows - 1) / kPackRows;
    const size_t group_bytes = f16_group_bytes(n_in);
    thread_local std::vector<uint8_t> packed;
    packed.resize(group_bytes * static_cast<size_t>(g1 - g0));
    const auto* wb = static_cast<const uint8_t*>(W);
    for (int64_t g = g0; g < g1; ++g) {
        const uint8_t* rows[kPackRows];
        for (int r = 0; r < kPackRows; ++r) {
            const int64_t row = g * kPackRows + r;  // only rows in [r0, r1) are read
            rows[r] = row >= r0 && row < r1 ? wb + static_cast<size_t>(row) * row_bytes : nullptr;
        }
        pack_f16_group(rows, n_in, packed.data() + group_bytes * static_cast<size_t>(g - g0));
    }
    matmul_half_groups(half, packed.data(), g0, n_in, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
}

// Calls f.template operator()<K>() with the kernel type for `type`; false if none.
template <class F>
bool with_kernel(GgmlType type, F&& f) {
    switch (type) {
    case GgmlType::F32: f.template operator()<DotFloat<LoadF32>>(); return true;
    case GgmlType::F16: f.template operator()<DotHalf<LoadF16>>(); return true;
    case GgmlType::BF16: f.template operator()<DotHalf<LoadBF16>>(); return true;
    case GgmlType::Q4_0: f.template operator()<DotRefOrderQ8_0<DecodeQ4_0>>(); return true;
    case GgmlType::Q5_0: f.template operator()<DotRefOrderQ8_0<DecodeQ5_0>>(); return true;
    case GgmlType::Q8_0: f.template operator()<DotRefOrderQ8_0<DecodeQ8_0>>(); return true;
    case GgmlType::Q4_1: f.template operator()<DotRefOrderQ8_1<DecodeQ4_1>>(); return true;
    case GgmlType::Q5_1: f.template operator()<DotRefOrderQ8_1<DecodeQ5_1>>(); return true;
    case GgmlType::Q4_K: f.template operator()<DotQ45K<BlockQ4_K, false>>(); return true;
    case GgmlType::Q5_K: f.template operator()<DotQ45K<BlockQ5_K, true>>(); return true;
    case GgmlType::Q6_K: f.template operator()<DotQ6K>(); return true;
    default: return false;
    }
}

}  // namespace

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
    // Exact conversions; the K-quants and Q*_1 types are rare on this path (embedding rows) and
    // use the reference.
    switch (type) {
    case GgmlType::F16: {
        const auto* s = at<uint16_t>(src);
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, LoadF16::load8(s + i));
        for (; i < n; ++i) dst[i] = _cvtsh_ss(s[i]);
        return;
    }
    case GgmlType::BF16: {
        const auto* s = at<uint16_t>(src);
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, LoadBF16::load8(s + i));
        for (; i < n; ++i) dst[i] = bf16_to_fp32(s[i]);
        return;
    }
    case GgmlType::Q4_0:
    case GgmlType::Q8_0: {
        // (q as float) * d: one rounding, same value as the scalar path.
        const int64_t nb = n / 32;
        for (int64_t i = 0; i < nb; ++i, dst += 32) {
            __m256i q;
            float d;
            if (type == GgmlType::Q4_0) {
                q = DecodeQ4_0::decode(at<BlockQ4_0>(src)[i]);
                d = h2f(at<BlockQ4_0>(src)[i].d);
            } else {
                q = DecodeQ8_0::decode(at<BlockQ8_0>(src)[i]);
                d = h2f(at<BlockQ8_0>(src)[i].d);
            }
            const __m256 vd = _mm256_set1_ps(d);
            for (int k = 0; k < 4; ++k) {
                const __m128i q8 = k < 2 ? _mm256_castsi256_si128(q) : _mm256_extracti128_si256(q, 1);
                const __m128i part = (k & 1) ? _mm_srli_si128(q8, 8) : q8;
                const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part));
                _mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(f, vd));
            }
        }
        return;
    }
    default: ref::dequantize_row(type, src, dst, n); return;
    }
}

void quantize_row(GgmlType type, const float* src, void* dst, int64_t n) {
    switch (type) {
    case GgmlType::Q8_0: quant_q8_0(src, static_cast<BlockQ8_0*>(dst), n / kQK8_0); return;
    case GgmlType::Q8_1: quant_q8_1(src, static_cast<BlockQ8_1*>(dst), n / kQK8_1); return;
    case GgmlType::Q8_K: quant_q8_k(src, static_cast<BlockQ8_K*>(dst), n / kQK_K); return;
    case GgmlType::F16: {
        auto* d = static_cast<uint16_t*>(dst);
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), h);
        }
        for (; i < n; ++i) d[i] = fp32_to_fp16(src[i]);
        return;
    }
    default: ref::quantize_row(type, src, dst, n); return;  // weight quantisers: offline only
    }
}

float vec_dot(GgmlType type, int64_t n, const void* w, const void* x) {
    float result = 0.0f;
    if (!with_kernel(type, [&]<class K>() { result = vec_dot_impl<K>(n, w, x); })) {
        unsupported_type("vec_dot", type);
    }
    return result;
}

void matmul_rows(GgmlType type, int64_t n_in, const void* W, size_t row_bytes,
                 const void* x, size_t x_row_bytes, int64_t n_tokens,
                 float* y, int64_t ldy, int64_t r0, int64_t r1) {
    // Quantised rows not repacked at load (the encoder's weights): a prefill-sized product packs
    // its rows once and runs the packed kernel (the same results as the row kernels: every packed
    // kernel equals vec_dot bit for bit).
    if (type != GgmlType::F16 && type != GgmlType::BF16 && n_tokens >= 4 && r0 < r1 && can_repack(type, n_in)) {
        const auto P = repack(type, static_cast<const uint8_t*>(W) + static_cast<size_t>(r0) * row_bytes, row_bytes,
                              r1 - r0, n_in);
        return avx2::matmul_packed(*P, x, x_row_bytes, n_tokens, y + r0, ldy, 0, r1 - r0);
    }
    // Float weights: register tiles over several rows and tokens.
    switch (type) {
    case GgmlType::F32: return matmul_float<LoadF32>(n_in, W, row_bytes, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
    case GgmlType::F16:
    case GgmlType::BF16: return matmul_half_rows(type, n_in, W, row_bytes, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
    default: break;
    }
    if (!with_kernel(type, [&]<class K>() {
            matmul_impl<K>(n_in, W, row_bytes, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
        })) {
        unsupported_type("matmul_rows", type);
    }
}

}  // namespace kvrag::kernels::avx2

#endif  // x86-64
