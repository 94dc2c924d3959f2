// AVX2 versions of the element-wise ops in kernels/ops.h that show in a prompt's profile.
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <cmath>

#include "kernels/ops.h"
#include "kernels/simd_avx2.h"

namespace kvrag::kernels::avx2 {

// silu(g) * u = g / (1 + e^-g) * u, eight at a time. e^x by exp_ps (within 2 ulp of std::exp
// over the range used); e^-g is clamped to a finite value for g < -88.7, where the scalar form
// gives -0 and this one a number below 1e-36 in magnitude. It was 4 % of a Q4_K_M prompt's
// samples as scalar code (one std::exp per element).
void silu_mul(float* y, const float* g, const float* u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 e = exp_ps(_mm256_xor_ps(gv, sign));
        const __m256 s = _mm256_div_ps(gv, _mm256_add_ps(one, e));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

// In-place softmax of x (n), as kernels::softmax (max-subtracted, normalised by a double sum)
// with the exponentials eight at a time (attention's scores, the encoder's attention rows).
void softmax(float* x, int64_t n) {
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, vmax);
    float max = lanes[0];
    for (int k = 1; k < 8; ++k) max = lanes[k] > max ? lanes[k] : max;
    for (int64_t j = i; j < n; ++j) max = x[j] > max ? x[j] : max;
    const __m256 m = _mm256_set1_ps(max);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    alignas(32) double d[4];
    _mm256_store_pd(d, _mm256_add_pd(s0, s1));
    double sum = (d[0] + d[1]) + (d[2] + d[3]);
    if (i < n) {
        alignas(32) float tail[8] = {};
        for (int64_t j = i; j < n; ++j) tail[j - i] = x[j] - max;
        for (int64_t j = n - i; j < 8; ++j) tail[j] = -INFINITY;
        _mm256_store_ps(tail, exp_ps(_mm256_load_ps(tail)));
        for (int64_t j = i; j < n; ++j) {
            x[j] = tail[j - i];
            sum += tail[j - i];
        }
    }
    const __m256 inv = _mm256_set1_ps(static_cast<float>(1.0 / sum));
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (int64_t j = i; j < n; ++j) x[j] *= static_cast<float>(1.0 / sum);
}

// gelu() eight at a time, bit for bit: F16C's vcvtps2ph rounds to nearest even like
// fp32_to_fp16, the f16 table is read widened to floats (256 KiB, so a gather needs no
// conversion back), and the +-10 limits are blended in. The scalar loop (a software f16
// rounding per element) was 12 % of an embedding pass's samples.
void gelu(float* y, const float* x, int64_t n) {
    const float* tab = gelu_table_f32();
    const __m256 lo = _mm256_set1_ps(-10.0f), hi = _mm256_set1_ps(10.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256i h = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256 r = _mm256_i32gather_ps(tab, h, 4);
        r = _mm256_blendv_ps(r, _mm256_setzero_ps(), _mm256_cmp_ps(v, lo, _CMP_LE_OQ));
        r = _mm256_blendv_ps(r, v, _mm256_cmp_ps(v, hi, _CMP_GE_OQ));
        _mm256_storeu_ps(y + i, r);
    }
    if (i < n) ref::gelu(y + i, x + i, n - i);
}

}  // namespace kvrag::kernels::avx2

#endif  // x86-64
