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

}  // namespace kvrag::kernels::avx2

#endif  // x86-64
