// Scalar reference kernels: the definition of every format's meaning, written for clarity.
// Layouts and element order: see kernels/quant_blocks.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "kernels/fp16.h"
#include "kernels/quant.h"
#include "kernels/quant_blocks.h"

namespace kvrag::kernels::ref {
namespace {

// Round to nearest, ties to even (the default FP environment). The AVX2 quantisers use
// _mm256_round_ps(_MM_FROUND_TO_NEAREST_INT), so both paths give the same integers.
inline int round_int(float v) { return static_cast<int>(std::nearbyint(v)); }

inline float h2f(uint16_t h) { return fp16_to_fp32(h); }

// All 65536 halves as floats (256 KiB, built on first use): the bit-twiddling conversion has a
// data-dependent loop for subnormals and is too slow for whole F16 rows.
const float* fp16_table() {
    static const float* table = [] {
        static float t[1 << 16];
        for (uint32_t h = 0; h < (1u << 16); ++h) t[h] = fp16_to_fp32(static_cast<uint16_t>(h));
        return t;
    }();
    return table;
}

// Q5_0/Q5_1 keep their 32 high bits as a little-endian uint32 in 4 bytes.
inline uint32_t load_qh(const uint8_t qh[4]) {
    return static_cast<uint32_t>(qh[0]) | static_cast<uint32_t>(qh[1]) << 8 |
           static_cast<uint32_t>(qh[2]) << 16 | static_cast<uint32_t>(qh[3]) << 24;
}

inline void store_qh(uint32_t v, uint8_t qh[4]) {
    for (int i = 0; i < 4; ++i) qh[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Smallest fp16 value >= v for v >= 0 (so a scale never ends up too small to cover the range
// it was computed from). Saturates at the largest finite half.
inline uint16_t fp16_round_up(float v) {
    uint16_t h = fp32_to_fp16(v);
    if (h2f(h) < v && h < 0x7bff) ++h;  // positive halves are ordered like their bits
    return h;
}

// ------------------------------------------------------------------------------------------
// Dequantisation
// ------------------------------------------------------------------------------------------

void dequant_q4_0(const BlockQ4_0* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK4_0) {
        const float d = h2f(x[i].d);
        for (int j = 0; j < kQK4_0 / 2; ++j) {
            y[j] = static_cast<float>((x[i].qs[j] & 0xF) - 8) * d;
            y[j + kQK4_0 / 2] = static_cast<float>((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void dequant_q4_1(const BlockQ4_1* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK4_1) {
        const float d = h2f(x[i].d);
        const float m = h2f(x[i].m);
        for (int j = 0; j < kQK4_1 / 2; ++j) {
            y[j] = static_cast<float>(x[i].qs[j] & 0xF) * d + m;
            y[j + kQK4_1 / 2] = static_cast<float>(x[i].qs[j] >> 4) * d + m;
        }
    }
}

void dequant_q5_0(const BlockQ5_0* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK5_0) {
        const float d = h2f(x[i].d);
        const uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < kQK5_0 / 2; ++j) {
            const int q0 = (x[i].qs[j] & 0xF) | static_cast<int>((qh >> j) & 1u) << 4;
            const int q1 = (x[i].qs[j] >> 4) | static_cast<int>((qh >> (j + 16)) & 1u) << 4;
            y[j] = static_cast<float>(q0 - 16) * d;
            y[j + kQK5_0 / 2] = static_cast<float>(q1 - 16) * d;
        }
    }
}

void dequant_q5_1(const BlockQ5_1* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK5_1) {
        const float d = h2f(x[i].d);
        const float m = h2f(x[i].m);
        const uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < kQK5_1 / 2; ++j) {
            const int q0 = (x[i].qs[j] & 0xF) | static_cast<int>((qh >> j) & 1u) << 4;
            const int q1 = (x[i].qs[j] >> 4) | static_cast<int>((qh >> (j + 16)) & 1u) << 4;
            y[j] = static_cast<float>(q0) * d + m;
            y[j + kQK5_1 / 2] = static_cast<float>(q1) * d + m;
        }
    }
}

template <class Block, int kQK>
void dequant_q8(const Block* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK) {
        float d;
        if constexpr (std::is_same_v<Block, BlockQ8_K>) d = x[i].d;
        else d = h2f(x[i].d);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(x[i].qs[j]) * d;
    }
}

void dequant_q4_k(const BlockQ4_K* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i) {
        const float d = h2f(x[i].d);
        const float dmin = h2f(x[i].dmin);
        const uint8_t* q = x[i].qs;
        for (int c = 0; c < 4; ++c, q += 32, y += 64) {
            uint8_t sc0, m0, sc1, m1;
            unpack_scale_min_k4(2 * c, x[i].scales, &sc0, &m0);
            unpack_scale_min_k4(2 * c + 1, x[i].scales, &sc1, &m1);
            const float d0 = d * sc0, min0 = dmin * m0;
            const float d1 = d * sc1, min1 = dmin * m1;
            for (int l = 0; l < 32; ++l) y[l] = d0 * static_cast<float>(q[l] & 0xF) - min0;
            for (int l = 0; l < 32; ++l) y[l + 32] = d1 * static_cast<float>(q[l] >> 4) - min1;
        }
    }
}

void dequant_q5_k(const BlockQ5_K* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i) {
        const float d = h2f(x[i].d);
        const float dmin = h2f(x[i].dmin);
        const uint8_t* q = x[i].qs;
        const uint8_t* qh = x[i].qh;
        for (int c = 0; c < 4; ++c, q += 32, y += 64) {
            uint8_t sc0, m0, sc1, m1;
            unpack_scale_min_k4(2 * c, x[i].scales, &sc0, &m0);
            unpack_scale_min_k4(2 * c + 1, x[i].scales, &sc1, &m1);
            const float d0 = d * sc0, min0 = dmin * m0;
            const float d1 = d * sc1, min1 = dmin * m1;
            for (int l = 0; l < 32; ++l) {
                const int v = (q[l] & 0xF) | ((qh[l] >> (2 * c)) & 1) << 4;
                y[l] = d0 * static_cast<float>(v) - min0;
            }
            for (int l = 0; l < 32; ++l) {
                const int v = (q[l] >> 4) | ((qh[l] >> (2 * c + 1)) & 1) << 4;
                y[l + 32] = d1 * static_cast<float>(v) - min1;
            }
        }
    }
}

// The 256 signed values (q - 32, in [-32, 32)) of a Q6_K super-block, element order.
inline void unpack_q6_k(const BlockQ6_K& b, int8_t q[kQK_K]) {
    for (int h = 0; h < 2; ++h) {
        const uint8_t* ql = b.ql + 64 * h;
        const uint8_t* qh = b.qh + 32 * h;
        int8_t* out = q + 128 * h;
        for (int l = 0; l < 32; ++l) {
            out[l] = static_cast<int8_t>(((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32);
            out[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32);
            out[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
            out[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
        }
    }
}

void dequant_q6_k(const BlockQ6_K* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += kQK_K) {
        const float d = h2f(x[i].d);
        int8_t q[kQK_K];
        unpack_q6_k(x[i], q);
        for (int e = 0; e < kQK_K; ++e) {
            y[e] = d * static_cast<float>(x[i].scales[e / 16]) * static_cast<float>(q[e]);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Quantisation
// ------------------------------------------------------------------------------------------

// Index of the element with the largest magnitude (first one on ties).
inline int argmax_abs(const float* x, int n) {
    int best = 0;
    for (int j = 1; j < n; ++j) {
        if (std::fabs(x[j]) > std::fabs(x[best])) best = j;
    }
    return best;
}

// Symmetric 4/5-bit: the largest-magnitude element maps to q = 0 (value -2^(bits-1) * d),
// so the full negative range is used; the opposite end clamps at 2^bits - 1.
template <int kLevels>  // 16 or 32
void quant_sym_block(const float* x, uint16_t* d_out, uint8_t q[32]) {
    const float vmax = x[argmax_abs(x, 32)];
    const uint16_t dh = fp32_to_fp16(vmax / -static_cast<float>(kLevels / 2));
    const float d = h2f(dh);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    *d_out = dh;
    for (int j = 0; j < 32; ++j) q[j] = static_cast<uint8_t>(std::clamp(round_int(x[j] * id) + kLevels / 2, 0, kLevels - 1));
}

// Asymmetric 4/5-bit: x = d * q + m with m the block minimum.
template <int kLevels>
void quant_asym_block(const float* x, uint16_t* d_out, uint16_t* m_out, uint8_t q[32]) {
    const float mn = *std::min_element(x, x + 32);
    const float mx = *std::max_element(x, x + 32);
    const uint16_t dh = fp32_to_fp16((mx - mn) / static_cast<float>(kLevels - 1));
    const uint16_t mh = fp32_to_fp16(mn);
    const float d = h2f(dh), m = h2f(mh);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    *d_out = dh;
    *m_out = mh;
    for (int j = 0; j < 32; ++j) q[j] = static_cast<uint8_t>(std::clamp(round_int((x[j] - m) * id), 0, kLevels - 1));
}

void quant_q4_0(const float* x, BlockQ4_0* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK4_0) {
        uint8_t q[32];
        quant_sym_block<16>(x, &y[i].d, q);
        for (int j = 0; j < 16; ++j) y[i].qs[j] = static_cast<uint8_t>(q[j] | q[j + 16] << 4);
    }
}

void quant_q4_1(const float* x, BlockQ4_1* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK4_1) {
        uint8_t q[32];
        quant_asym_block<16>(x, &y[i].d, &y[i].m, q);
        for (int j = 0; j < 16; ++j) y[i].qs[j] = static_cast<uint8_t>(q[j] | q[j + 16] << 4);
    }
}

// Splits 5-bit values into nibbles + the qh bit plane.
void pack_q5(const uint8_t q[32], uint8_t qs[16], uint8_t qh[4]) {
    uint32_t h = 0;
    for (int j = 0; j < 16; ++j) {
        qs[j] = static_cast<uint8_t>((q[j] & 0xF) | (q[j + 16] & 0xF) << 4);
        h |= static_cast<uint32_t>(q[j] >> 4) << j;
        h |= static_cast<uint32_t>(q[j + 16] >> 4) << (j + 16);
    }
    store_qh(h, qh);
}

void quant_q5_0(const float* x, BlockQ5_0* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK5_0) {
        uint8_t q[32];
        quant_sym_block<32>(x, &y[i].d, q);
        pack_q5(q, y[i].qs, y[i].qh);
    }
}

void quant_q5_1(const float* x, BlockQ5_1* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK5_1) {
        uint8_t q[32];
        quant_asym_block<32>(x, &y[i].d, &y[i].m, q);
        pack_q5(q, y[i].qs, y[i].qh);
    }
}

// 8-bit symmetric with the unrounded d for the reciprocal (as ggml does); q in [-127, 127].
// Returns d; writes q and the integer sum.
inline float quant_q8_block(const float* x, int n, int8_t* q, int* sum) {
    float amax = 0.0f;
    for (int j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int s = 0;
    for (int j = 0; j < n; ++j) {
        const int v = std::clamp(round_int(x[j] * id), -127, 127);
        q[j] = static_cast<int8_t>(v);
        s += v;
    }
    *sum = s;
    return d;
}

void quant_q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK8_0) {
        int sum;
        y[i].d = fp32_to_fp16(quant_q8_block(x, kQK8_0, y[i].qs, &sum));
    }
}

void quant_q8_1(const float* x, BlockQ8_1* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK8_1) {
        int sum;
        const float d = quant_q8_block(x, kQK8_1, y[i].qs, &sum);
        y[i].d = fp32_to_fp16(d);
        y[i].s = fp32_to_fp16(d * static_cast<float>(sum));
    }
}

void quant_q8_k(const float* x, BlockQ8_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
        int sum;
        y[i].d = quant_q8_block(x, kQK_K, y[i].qs, &sum);
        for (int k = 0; k < kQK_K / 16; ++k) {
            int s = 0;
            for (int j = 0; j < 16; ++j) s += y[i].qs[16 * k + j];
            y[i].bsums[k] = static_cast<int16_t>(s);
        }
    }
}

// Q4_K/Q5_K: per 32-element sub-block j, x ~= dl_j * q - ml_j with q in [0, kLevels).
// Both dl_j = d * ls_j and ml_j = dmin * lm_j are rounded *up* (ceil on the 6-bit factors,
// super-scales bumped to the next half if fp16 rounded them down), so the grid always covers
// [min_j, max_j] and the only error is rounding to the grid: |err| <= dl_j / 2.
// The products d * ls and dmin * lm are exact in float (11-bit x 6-bit mantissas).
template <int kLevels>
void quant_k_super(const float* x, uint16_t* d_out, uint16_t* dmin_out, uint8_t scales[12], uint8_t q[256]) {
    float neg_min[8], mx[8];
    float max_neg_min = 0.0f;
    for (int j = 0; j < 8; ++j) {
        const float* xs = x + 32 * j;
        neg_min[j] = -std::min(0.0f, *std::min_element(xs, xs + 32));  // mins are stored >= 0
        mx[j] = *std::max_element(xs, xs + 32);
        max_neg_min = std::max(max_neg_min, neg_min[j]);
    }
    uint16_t dmin_h = fp16_round_up(max_neg_min / 63.0f);
    if (h2f(dmin_h) * 63.0f < max_neg_min && dmin_h < 0x7bff) ++dmin_h;
    const float dmin = h2f(dmin_h);

    uint8_t lm[8], ls[8];
    float ml[8], range[8];
    float max_range = 0.0f;
    for (int j = 0; j < 8; ++j) {
        lm[j] = dmin > 0.0f ? static_cast<uint8_t>(std::min(63.0f, std::ceil(neg_min[j] / dmin))) : 0;
        ml[j] = dmin * lm[j];
        range[j] = std::max(0.0f, mx[j] + ml[j]);
        max_range = std::max(max_range, range[j]);
    }
    constexpr float kSteps = static_cast<float>(kLevels - 1);
    uint16_t d_h = fp16_round_up(max_range / (kSteps * 63.0f));
    if (h2f(d_h) * (kSteps * 63.0f) < max_range && d_h < 0x7bff) ++d_h;
    const float d = h2f(d_h);

    for (int j = 0; j < 8; ++j) {
        ls[j] = d > 0.0f ? static_cast<uint8_t>(std::min(63.0f, std::ceil(range[j] / (kSteps * d)))) : 0;
        const float dl = d * ls[j];
        const float idl = dl > 0.0f ? 1.0f / dl : 0.0f;
        for (int l = 0; l < 32; ++l) {
            q[32 * j + l] = static_cast<uint8_t>(std::clamp(round_int((x[32 * j + l] + ml[j]) * idl), 0, kLevels - 1));
        }
    }
    *d_out = d_h;
    *dmin_out = dmin_h;
    pack_scale_min_k4(ls, lm, scales);
}

void quant_q4_k(const float* x, BlockQ4_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
        uint8_t q[kQK_K];
        quant_k_super<16>(x, &y[i].d, &y[i].dmin, y[i].scales, q);
        for (int c = 0; c < 4; ++c) {
            for (int l = 0; l < 32; ++l) {
                y[i].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | q[64 * c + 32 + l] << 4);
            }
        }
    }
}

void quant_q5_k(const float* x, BlockQ5_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
        uint8_t q[kQK_K];
        quant_k_super<32>(x, &y[i].d, &y[i].dmin, y[i].scales, q);
        std::memset(y[i].qh, 0, sizeof(y[i].qh));
        for (int c = 0; c < 4; ++c) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t a = q[64 * c + l], b = q[64 * c + 32 + l];
                y[i].qs[32 * c + l] = static_cast<uint8_t>((a & 0xF) | (b & 0xF) << 4);
                y[i].qh[l] |= static_cast<uint8_t>((a >> 4) << (2 * c) | (b >> 4) << (2 * c + 1));
            }
        }
    }
}

// Q6_K: per 16-element sub-block, scale_j = vmax_j / -32 (vmax_j = the largest-magnitude
// element) so vmax_j lands on q - 32 = -32. The 8-bit scales are rounded away from zero so
// |dl_j| >= |scale_j| and nothing clamps except a value of exactly -vmax_j (error <= |dl_j|).
void quant_q6_k(const float* x, BlockQ6_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
        float scale[16];
        float max_abs_scale = 0.0f;
        for (int j = 0; j < 16; ++j) {
            scale[j] = x[16 * j + argmax_abs(x + 16 * j, 16)] / -32.0f;
            max_abs_scale = std::max(max_abs_scale, std::fabs(scale[j]));
        }
        uint16_t d_h = fp16_round_up(max_abs_scale / 127.0f);
        if (h2f(d_h) * 127.0f < max_abs_scale && d_h < 0x7bff) ++d_h;
        const float d = h2f(d_h);
        y[i].d = d_h;

        uint8_t q[kQK_K];
        for (int j = 0; j < 16; ++j) {
            const float mag = d > 0.0f ? std::min(127.0f, std::ceil(std::fabs(scale[j]) / d)) : 0.0f;
            const int ls = static_cast<int>(scale[j] < 0.0f ? -mag : mag);
            y[i].scales[j] = static_cast<int8_t>(ls);
            const float dl = d * static_cast<float>(ls);
            const float idl = dl != 0.0f ? 1.0f / dl : 0.0f;
            for (int l = 0; l < 16; ++l) {
                q[16 * j + l] = static_cast<uint8_t>(std::clamp(round_int(x[16 * j + l] * idl) + 32, 0, 63));
            }
        }
        std::memset(y[i].qh, 0, sizeof(y[i].qh));
        for (int h = 0; h < 2; ++h) {
            uint8_t* ql = y[i].ql + 64 * h;
            uint8_t* qh = y[i].qh + 32 * h;
            const uint8_t* qq = q + 128 * h;
            for (int l = 0; l < 32; ++l) {
                const uint8_t a = qq[l], b = qq[l + 32], c = qq[l + 64], e = qq[l + 96];
                ql[l] = static_cast<uint8_t>((a & 0xF) | (c & 0xF) << 4);
                ql[l + 32] = static_cast<uint8_t>((b & 0xF) | (e & 0xF) << 4);
                qh[l] = static_cast<uint8_t>((a >> 4) | (b >> 4) << 2 | (c >> 4) << 4 | (e >> 4) << 6);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Dot products. Integer sums per block, then one float multiply-add per block.
// ------------------------------------------------------------------------------------------

// F16: one float accumulator, a fused multiply-add per element, in element order. This is the
// order the packed AVX2 kernel keeps with one lane per weight row (kernels/repack.h), so every F16
// path equals this one bit for bit. std::fma is exact (correctly rounded) with or without an FMA
// unit.
float dot_f16(int64_t n, const uint16_t* w, const uint16_t* x) {
    const float* tab = fp16_table();
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc = std::fma(tab[w[i]], tab[x[i]], acc);
    return acc;
}

// BF16: F16's order (one fused multiply-add chain per output, in element order), which the
// packed kernels keep with a lane per weight row, so every BF16 path equals this one bit for bit.
float dot_bf16(int64_t n, const uint16_t* w, const uint16_t* x) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc = std::fma(bf16_to_fp32(w[i]), bf16_to_fp32(x[i]), acc);
    return acc;
}

// F32 accumulates in double: the reference should be the most accurate answer.

float dot_f32(int64_t n, const float* w, const float* x) {
    double acc = 0.0;
    for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(w[i]) * x[i];
    return static_cast<float>(acc);
}

float dot_q4_0(int64_t nb, const BlockQ4_0* w, const BlockQ8_0* x) {
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
        int sumi = 0;
        for (int j = 0; j < 16; ++j) {
            sumi += ((w[i].qs[j] & 0xF) - 8) * x[i].qs[j] + ((w[i].qs[j] >> 4) - 8) * x[i].qs[j + 16];
        }
        acc += static_cast<float>(sumi) * (h2f(w[i].d) * h2f(x[i].d));
    }
    return acc;
}

float dot_q4_1(int64_t nb, const BlockQ4_1* w, const BlockQ8_1* x) {
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
        int sumi = 0;
        for (int j = 0; j < 16; ++j) sumi += (w[i].qs[j] & 0xF) * x[i].qs[j] + (w[i].qs[j] >> 4) * x[i].qs[j + 16];
        // sum_j (d q_j + m) (dy y_j) = d dy sum q y + m * (dy sum y), and s = dy sum y.
        acc += static_cast<float>(sumi) * (h2f(w[i].d) * h2f(x[i].d)) + h2f(w[i].m) * h2f(x[i].s);
    }
    return acc;
}

// The 32 5-bit values of a Q5_0/Q5_1 block, element order, before any offset.
inline void unpack_q5(const uint8_t qs[16], const uint8_t qh_bytes[4], int8_t q[32]) {
    // Byte-wise: bit k of qh_bytes[b] belongs to element 8b + k.
    for (int b = 0; b < 2; ++b) {
        for (int k = 0; k < 8; ++k) {
            const int j = 8 * b + k;
            q[j] = static_cast<int8_t>((qs[j] & 0xF) | ((qh_bytes[b] >> k) & 1) << 4);
            q[j + 16] = static_cast<int8_t>((qs[j] >> 4) | ((qh_bytes[b + 2] >> k) & 1) << 4);
        }
    }
}

inline int dot32(const int8_t* a, const int8_t* b) {
    int s = 0;
    for (int j = 0; j < 32; ++j) s += a[j] * b[j];
    return s;
}

float dot_q5_0(int64_t nb, const BlockQ5_0* w, const BlockQ8_0* x) {
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
        int8_t q[32];
        unpack_q5(w[i].qs, w[i].qh, q);
        for (int8_t& v : q) v = static_cast<int8_t>(v - 16);
        acc += static_cast<float>(dot32(q, x[i].qs)) * (h2f(w[i].d) * h2f(x[i].d));
    }
    return acc;
}

float dot_q5_1(int64_t nb, const BlockQ5_1* w, const BlockQ8_1* x) {
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
        int8_t q[32];
        unpack_q5(w[i].qs, w[i].qh, q);
        acc += static_cast<float>(dot32(q, x[i].qs)) * (h2f(w[i].d) * h2f(x[i].d)) + h2f(w[i].m) * h2f(x[i].s);
    }
    return acc;
}

float dot_q8_0(int64_t nb, const BlockQ8_0* w, const BlockQ8_0* x) {
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
        int sumi = 0;
        for (int j = 0; j < kQK8_0; ++j) sumi += w[i].qs[j] * x[i].qs[j];
        acc += static_cast<float>(sumi) * (h2f(w[i].d) * h2f(x[i].d));
    }
    return acc;
}

// Q4_K/Q5_K: sum_j (d sc_j q - dmin m_j) (dy y) = dy (d sum_j sc_j (q.y)_j - dmin sum_j m_j sum(y)_j);
// sum(y)_j over 32 elements is two Q8_K bsums.
template <class Block, bool kHasHighBit>
float dot_qk_k(int64_t nb, const Block* w, const BlockQ8_K* x) {
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; ++j) {
            uint8_t sc, m;
            unpack_scale_min_k4(j, w[i].scales, &sc, &m);
            const int c = j / 2;
            const bool high = j & 1;
            int dot = 0;
            for (int l = 0; l < 32; ++l) {
                const uint8_t byte = w[i].qs[32 * c + l];
                int v = high ? (byte >> 4) : (byte & 0xF);
                if constexpr (kHasHighBit) v |= ((w[i].qh[l] >> j) & 1) << 4;
                dot += v * x[i].qs[32 * j + l];
            }
            sumi += sc * dot;
            summ += m * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
        }
        acc += x[i].d * (h2f(w[i].d) * static_cast<float>(sumi) - h2f(w[i].dmin) * static_cast<float>(summ));
    }
    return acc;
}

float dot_q6_k(int64_t nb, const BlockQ6_K* w, const BlockQ8_K* x) {
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
        int8_t q[kQK_K];
        unpack_q6_k(w[i], q);
        int sumi = 0;
        for (int j = 0; j < 16; ++j) {
            int dot = 0;
            for (int l = 0; l < 16; ++l) dot += q[16 * j + l] * x[i].qs[16 * j + l];
            sumi += w[i].scales[j] * dot;
        }
        acc += h2f(w[i].d) * x[i].d * static_cast<float>(sumi);
    }
    return acc;
}

template <class T>
const T* as(const void* p) { return static_cast<const T*>(p); }
template <class T>
T* as(void* p) { return static_cast<T*>(p); }

}  // namespace

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
    switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case GgmlType::F16: {
        const float* tab = fp16_table();
        for (int64_t i = 0; i < n; ++i) dst[i] = tab[as<uint16_t>(src)[i]];
        return;
    }
    case GgmlType::BF16:
        for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(as<uint16_t>(src)[i]);
        return;
    case GgmlType::Q4_0: dequant_q4_0(as<BlockQ4_0>(src), dst, n / kQK4_0); return;
    case GgmlType::Q4_1: dequant_q4_1(as<BlockQ4_1>(src), dst, n / kQK4_1); return;
    case GgmlType::Q5_0: dequant_q5_0(as<BlockQ5_0>(src), dst, n / kQK5_0); return;
    case GgmlType::Q5_1: dequant_q5_1(as<BlockQ5_1>(src), dst, n / kQK5_1); return;
    case GgmlType::Q8_0: dequant_q8<BlockQ8_0, kQK8_0>(as<BlockQ8_0>(src), dst, n / kQK8_0); return;
    case GgmlType::Q8_1: dequant_q8<BlockQ8_1, kQK8_1>(as<BlockQ8_1>(src), dst, n / kQK8_1); return;
    case GgmlType::Q8_K: dequant_q8<BlockQ8_K, kQK_K>(as<BlockQ8_K>(src), dst, n / kQK_K); return;
    case GgmlType::Q4_K: dequant_q4_k(as<BlockQ4_K>(src), dst, n / kQK_K); return;
    case GgmlType::Q5_K: dequant_q5_k(as<BlockQ5_K>(src), dst, n / kQK_K); return;
    case GgmlType::Q6_K: dequant_q6_k(as<BlockQ6_K>(src), dst, n / kQK_K); return;
    default: unsupported_type("dequantize_row", type);
    }
}

void quantize_row(GgmlType type, const float* src, void* dst, int64_t n) {
    switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case GgmlType::F16:
        for (int64_t i = 0; i < n; ++i) as<uint16_t>(dst)[i] = fp32_to_fp16(src[i]);
        return;
    case GgmlType::BF16:
        for (int64_t i = 0; i < n; ++i) as<uint16_t>(dst)[i] = fp32_to_bf16(src[i]);
        return;
    case GgmlType::Q4_0: quant_q4_0(src, as<BlockQ4_0>(dst), n / kQK4_0); return;
    case GgmlType::Q4_1: quant_q4_1(src, as<BlockQ4_1>(dst), n / kQK4_1); return;
    case GgmlType::Q5_0: quant_q5_0(src, as<BlockQ5_0>(dst), n / kQK5_0); return;
    case GgmlType::Q5_1: quant_q5_1(src, as<BlockQ5_1>(dst), n / kQK5_1); return;
    case GgmlType::Q8_0: quant_q8_0(src, as<BlockQ8_0>(dst), n / kQK8_0); return;
    case GgmlType::Q8_1: quant_q8_1(src, as<BlockQ8_1>(dst), n / kQK8_1); return;
    case GgmlType::Q8_K: quant_q8_k(src, as<BlockQ8_K>(dst), n / kQK_K); return;
    case GgmlType::Q4_K: quant_q4_k(src, as<BlockQ4_K>(dst), n / kQK_K); return;
    case GgmlType::Q5_K: quant_q5_k(src, as<BlockQ5_K>(dst), n / kQK_K); return;
    case GgmlType::Q6_K: quant_q6_k(src, as<BlockQ6_K>(dst), n / kQK_K); return;
    default: unsupported_type("quantize_row", type);
    }
}

float vec_dot(GgmlType type, int64_t n, const void* w, const void* x) {
    switch (type) {
    case GgmlType::F32: return dot_f32(n, as<float>(w), as<float>(x));
    case GgmlType::F16: return dot_f16(n, as<uint16_t>(w), as<uint16_t>(x));
    case GgmlType::BF16: return dot_bf16(n, as<uint16_t>(w), as<uint16_t>(x));
    case GgmlType::Q4_0: return dot_q4_0(n / kQK4_0, as<BlockQ4_0>(w), as<BlockQ8_0>(x));
    case GgmlType::Q4_1: return dot_q4_1(n / kQK4_1, as<BlockQ4_1>(w), as<BlockQ8_1>(x));
    case GgmlType::Q5_0: return dot_q5_0(n / kQK5_0, as<BlockQ5_0>(w), as<BlockQ8_0>(x));
    case GgmlType::Q5_1: return dot_q5_1(n / kQK5_1, as<BlockQ5_1>(w), as<BlockQ8_1>(x));
    case GgmlType::Q8_0: return dot_q8_0(n / kQK8_0, as<BlockQ8_0>(w), as<BlockQ8_0>(x));
    case GgmlType::Q4_K: return dot_qk_k<BlockQ4_K, false>(n / kQK_K, as<BlockQ4_K>(w), as<BlockQ8_K>(x));
    case GgmlType::Q5_K: return dot_qk_k<BlockQ5_K, true>(n / kQK_K, as<BlockQ5_K>(w), as<BlockQ8_K>(x));
    case GgmlType::Q6_K: return dot_q6_k(n / kQK_K, as<BlockQ6_K>(w), as<BlockQ8_K>(x));
    default: unsupported_type("vec_dot", type);
    }
}

// Row-outer, token-inner: the weight row stays in L1 while every token reuses it.
void matmul_rows(GgmlType type, int64_t n_in, const void* W, size_t row_bytes,
                 const void* x, size_t x_row_bytes, int64_t n_tokens,
                 float* y, int64_t ldy, int64_t r0, int64_t r1) {
    const auto* wb = static_cast<const uint8_t*>(W);
    const auto* xb = static_cast<const uint8_t*>(x);
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* w_row = wb + static_cast<size_t>(r) * row_bytes;
        for (int64_t t = 0; t < n_tokens; ++t) {
            y[t * ldy + r] = vec_dot(type, n_in, w_row, xb + static_cast<size_t>(t) * x_row_bytes);
        }
    }
}

}  // namespace kvrag::kernels::ref
