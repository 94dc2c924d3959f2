#include "kernels/ops.h"

#include <array>
#include <cmath>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace kvrag::kernels {

void rmsnorm(float* y, const float* x, const float* w, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
    const float mean = static_cast<float>(sum / n);
    const float scale = 1.0f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

void rope_table(float* cos_sin, float pos, int32_t n_rot, float freq_base, float freq_scale,
                const float* freq_factors) {
    const float theta_scale = std::pow(freq_base, -2.0f / static_cast<float>(n_rot));
    float theta = pos;
    for (int32_t i = 0; i < n_rot / 2; ++i) {
        const float ff = freq_factors ? freq_factors[i] : 1.0f;
        const float t = freq_scale * theta / ff;
        cos_sin[2 * i] = std::cos(t);
        cos_sin[2 * i + 1] = std::sin(t);
        theta *= theta_scale;
    }
}

void rope_apply(float* x, const float* cos_sin, int32_t n_rot, bool neox) {
    const int32_t half = n_rot / 2;
    for (int32_t i = 0; i < half; ++i) {
        const float c = cos_sin[2 * i], s = cos_sin[2 * i + 1];
        float* a = neox ? &x[i] : &x[2 * i];
        float* b = neox ? &x[i + half] : &x[2 * i + 1];
        const float x0 = *a, x1 = *b;
        *a = x0 * c - x1 * s;
        *b = x0 * s + x1 * c;
    }
}

void softmax(float* x, int64_t n) {
    float max = -INFINITY;
    for (int64_t i = 0; i < n; ++i) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - max);
        sum += x[i];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void softmax_fast(float* x, int64_t n) {
#if defined(__x86_64__) || defined(_M_X64)
    if (using_avx2()) return avx2::softmax(x, n);
#endif
    softmax(x, n);
}

void ref::silu_mul(float* y, const float* g, const float* u, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void silu_mul(float* y, const float* g, const float* u, int64_t n) {
#if defined(__x86_64__) || defined(_M_X64)
    if (using_avx2()) return avx2::silu_mul(y, g, u, n);
#endif
    ref::silu_mul(y, g, u, n);
}

void add_inplace(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void layernorm(float* y, const float* x, const float* w, const float* b, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += x[i];
    const float mean = static_cast<float>(sum / static_cast<double>(n));
    double sum2 = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const float d = x[i] - mean;
        sum2 += static_cast<double>(d) * d;
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(sum2 / static_cast<double>(n)) + eps);
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * scale * w[i] + b[i];
}

float gelu_tanh_f32(float x) {
    constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
    constexpr float kCoefA = 0.044715f;
    return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + kCoefA * x * x)));
}

namespace {

// gelu_tanh_f32 of every f16 value, rounded to f16 (256 KiB of floats would also do, but the
// f16 rounding of the result is part of what is being reproduced).
const std::array<uint16_t, 65536>& gelu_f16_table() {
    static const std::array<uint16_t, 65536> table = [] {
        std::array<uint16_t, 65536> t{};
        for (uint32_t i = 0; i < 65536; ++i) t[i] = fp32_to_fp16(gelu_tanh_f32(fp16_to_fp32(static_cast<uint16_t>(i))));
        return t;
    }();
    return table;
}

}  // namespace

const float* gelu_table_f32() {
    static const std::vector<float> table = [] {
        const auto& tab = gelu_f16_table();
        std::vector<float> t(tab.size());
        for (size_t i = 0; i < tab.size(); ++i) t[i] = fp16_to_fp32(tab[i]);
        return t;
    }();
    return table.data();
}

void ref::gelu(float* y, const float* x, int64_t n) {
    const auto& tab = gelu_f16_table();
    for (int64_t i = 0; i < n; ++i) {
        const float v = x[i];
        if (v <= -10.0f) {
            y[i] = 0.0f;
        } else if (v >= 10.0f) {
            y[i] = v;
        } else {
            y[i] = fp16_to_fp32(tab[fp32_to_fp16(v)]);
        }
    }
}

void gelu(float* y, const float* x, int64_t n) {
#if defined(__x86_64__) || defined(_M_X64)
    if (using_avx2()) return avx2::gelu(y, x, n);
#endif
    ref::gelu(y, x, n);
}

}  // namespace kvrag::kernels
