// Runtime choice between the AVX2 kernels and the scalar reference.
//
// The choice is made once (first call) and never changes, so every token of every request runs
// the same arithmetic: kvrag's promise of identical greedy output needs that.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/quant.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace kvrag::kernels {
namespace {

bool detect_avx2() {
#if defined(__x86_64__) || defined(_M_X64)
    // cpuid directly: clang 14's __builtin_cpu_supports does not know "f16c".
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    const bool fma = ecx & (1u << 12), osxsave = ecx & (1u << 27), f16c = ecx & (1u << 29);
    if (!fma || !osxsave || !f16c) return false;
    unsigned xcr0_lo = 0, xcr0_hi = 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 0x6u) != 0x6u) return false;  // the OS saves XMM and YMM state
    if (__get_cpuid_max(0, nullptr) < 7) return false;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    return ebx & (1u << 5);  // AVX2
#else
    return false;
#endif
}

bool detect_avx512() {
#if defined(__x86_64__) || defined(_M_X64)
    if (!detect_avx2()) return false;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const bool f = ebx & (1u << 16), dq = ebx & (1u << 17), bw = ebx & (1u << 30), vl = ebx & (1u << 31);
    const bool vnni = ecx & (1u << 11);
    if (!f || !dq || !bw || !vl || !vnni) return false;
    unsigned xcr0_lo = 0, xcr0_hi = 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    return (xcr0_lo & 0xE6u) == 0xE6u;  // the OS saves XMM, YMM, the opmasks and all of ZMM
#else
    return false;
#endif
}

bool pick_avx2() {
    const char* force = std::getenv("KVRAG_FORCE_SCALAR");
    if (force != nullptr && std::strcmp(force, "1") == 0) return false;
    return detect_avx2();
}

// Function-local statics: safe to call from other translation units' static initialisers.
bool use_avx2() {
    static const bool v = pick_avx2();
    return v;
}

}  // namespace

[[noreturn]] void unsupported_type(const char* what, GgmlType type) {
    std::fprintf(stderr, "kvrag kernels: %s does not support type %.*s (%u)\n", what,
                 static_cast<int>(ggml_type_name(type).size()), ggml_type_name(type).data(),
                 static_cast<unsigned>(type));
    std::abort();
}

bool avx2_supported() {
    static const bool v = detect_avx2();
    return v;
}

bool using_avx2() { return use_avx2(); }

bool avx512_supported() {
    static const bool v = detect_avx512();
    return v;
}

bool using_avx512() {
    static const bool v = [] {
        const char* force = std::getenv("KVRAG_FORCE_AVX2");
        if (force != nullptr && std::strcmp(force, "1") == 0) return false;
        return use_avx2() && avx512_supported();
    }();
    return v;
}

bool has_weight_kernels(GgmlType type) {
    switch (type) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16:
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1:
    case GgmlType::Q8_0: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
        return true;
    default:
        return false;
    }
}

GgmlType vec_dot_type(GgmlType weight_type) {
    switch (weight_type) {
    case GgmlType::F32: return GgmlType::F32;
    case GgmlType::F16: return GgmlType::F16;
    case GgmlType::BF16: return GgmlType::BF16;
    case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: return GgmlType::Q8_0;
    case GgmlType::Q4_1: case GgmlType::Q5_1: return GgmlType::Q8_1;
    case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K: return GgmlType::Q8_K;
    default: unsupported_type("vec_dot_type", weight_type);
    }
}

#if defined(__x86_64__) || defined(_M_X64)
#define KVRAG_DISPATCH(call) (use_avx2() ? avx2::call : ref::call)
#else
#define KVRAG_DISPATCH(call) (ref::call)
#endif

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
    KVRAG_DISPATCH(dequantize_row(type, src, dst, n));
}

void quantize_row(GgmlType type, const float* src, void* dst, int64_t n) {
    KVRAG_DISPATCH(quantize_row(type, src, dst, n));
}

float vec_dot(GgmlType weight_type, int64_t n, const void* w_row, const void* x) {
    return KVRAG_DISPATCH(vec_dot(weight_type, n, w_row, x));
}

void matmul_rows(GgmlType type, int64_t n_in, const void* W, size_t row_bytes,
                 const void* x, size_t x_row_bytes, int64_t n_tokens,
                 float* y, int64_t ldy, int64_t r0, int64_t r1) {
    KVRAG_DISPATCH(matmul_rows(type, n_in, W, row_bytes, x, x_row_bytes, n_tokens, y, ldy, r0, r1));
}

#undef KVRAG_DISPATCH

}  // namespace kvrag::kernels
