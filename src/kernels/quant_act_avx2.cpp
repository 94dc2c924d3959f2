// AVX2 activation quantisers; see quant_act_avx2.h.
#if defined(__x86_64__) || defined(_M_X64)

#include "kernels/quant_act_avx2.h"

#include <immintrin.h>

#include "kernels/fp16.h"

namespace kvrag::kernels::avx2 {

namespace {

inline float amax_of(const float* x, int n) {  // n % 8 == 0
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// q[0..32) = clamp(rne(x * id), -127, 127).
inline void quant32(const float* x, float id, int8_t* q) {
    const __m256 vid = _mm256_set1_ps(id);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    __m256i v[4];
    for (int k = 0; k < 4; ++k) {
        const __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v[k] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(r), lo), hi);
    }
    // packs work per 128-bit lane; the permute restores element order.
    const __m256i a = _mm256_packs_epi32(v[0], v[1]);
    const __m256i b = _mm256_packs_epi32(v[2], v[3]);
    const __m256i p = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), p);
}

inline int sum_i8(const int8_t* q, int n) {
    int s = 0;
    for (int j = 0; j < n; ++j) s += q[j];
    return s;
}

}  // namespace

void quant_q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK8_0) {
        const float d = amax_of(x, kQK8_0) / 127.0f;
        quant32(x, d != 0.0f ? 1.0f / d : 0.0f, y[i].qs);
        y[i].d = fp32_to_fp16(d);
    }
}

void quant_q8_1(const float* x, BlockQ8_1* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK8_1) {
        const float d = amax_of(x, kQK8_1) / 127.0f;
        quant32(x, d != 0.0f ? 1.0f / d : 0.0f, y[i].qs);
        y[i].d = fp32_to_fp16(d);
        y[i].s = fp32_to_fp16(d * static_cast<float>(sum_i8(y[i].qs, kQK8_1)));
    }
}

void quant_q8_k(const float* x, BlockQ8_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
        const float d = amax_of(x, kQK_K) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int k = 0; k < kQK_K / 32; ++k) quant32(x + 32 * k, id, y[i].qs + 32 * k);
        y[i].d = d;
        for (int k = 0; k < kQK_K / 16; ++k) y[i].bsums[k] = static_cast<int16_t>(sum_i8(y[i].qs + 16 * k, 16));
    }
}

}  // namespace kvrag::kernels::avx2

#endif  // x86-64
