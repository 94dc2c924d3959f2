// Kernel micro-bench (scripts/kernel_bench.sh builds it against two revisions' kernels):
// y = x W^T for one weight type on the four matrix shapes of the bench model (dim 1024, FF 2816),
// one thread. Packs the matrix when can_repack says so (matmul_packed), else matmul_rows, so the
// same source measures any revision. GFLOP/s = 2 x MACs / thread CPU time (best of the reps):
// CPU time, not wall time, so time spent descheduled on a loaded machine is not counted.
//
//   kernel_bench TYPE [TOKENS [REPS [dram]]]   TYPE: f16, q8_0, q4_0, q4_k, q5_k or q6_k (default f16), TOKENS 512,
//                                                REPS 3; dram: one matrix larger than the caches
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <vector>

#include "kernels/quant.h"
#include "kernels/repack.h"

using namespace kvrag;
using namespace kvrag::kernels;

namespace {

double thread_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
    const char* type_name = argc > 1 ? argv[1] : "f16";
    GgmlType t;
    if (std::strcmp(type_name, "f16") == 0) t = GgmlType::F16;
    else if (std::strcmp(type_name, "q8_0") == 0) t = GgmlType::Q8_0;
    else if (std::strcmp(type_name, "q4_0") == 0) t = GgmlType::Q4_0;
    else if (std::strcmp(type_name, "q4_k") == 0) t = GgmlType::Q4_K;
    else if (std::strcmp(type_name, "q6_k") == 0) t = GgmlType::Q6_K;
    else if (std::strcmp(type_name, "q5_k") == 0) t = GgmlType::Q5_K;
    else {
        std::fprintf(stderr, "kernel_bench: unknown type '%s' (use f16, q8_0, q4_0, q4_k, q5_k or q6_k)\n", type_name);
        return 2;
    }
    const int64_t n_tok = argc > 2 ? std::atoll(argv[2]) : 512;
    const int reps = argc > 3 ? std::atoi(argv[3]) : 3;
    if (n_tok < 1 || reps < 1) {
        std::fprintf(stderr, "kernel_bench: TOKENS and REPS must be >= 1 (got %lld, %d)\n", static_cast<long long>(n_tok), reps);
        return 2;
    }
    struct Shape {
        int64_t rows, cols;
        const char* name;
    };
    // The bench model's matrices fit in L3 after the first rep; "dram" takes one 16384 x 4096
    // matrix (128 MiB in F16, 36 MiB in Q4_0) that does not, which is what decode streams.
    const bool dram = argc > 4 && std::strcmp(argv[4], "dram") == 0;
    const std::vector<Shape> shapes = dram ? std::vector<Shape>{{16384, 4096, "dram"}}
                                           : std::vector<Shape>{{1024, 1024, "wq"}, {256, 1024, "wk"}, {2816, 1024, "up"}, {1024, 2816, "down"}};
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    double total_flop = 0.0, total_s = 0.0, total_bytes = 0.0;
    for (const Shape& s : shapes) {
        std::vector<float> wf(static_cast<size_t>(s.rows * s.cols)), xf(static_cast<size_t>(n_tok * s.cols));
        for (float& v : wf) v = normal(rng) * 0.05f;
        for (float& v : xf) v = normal(rng);
        const GgmlType vt = vec_dot_type(t);
        const size_t rb = ggml_row_size(t, s.cols), xb = ggml_row_size(vt, s.cols);
        std::vector<uint8_t> W(rb * static_cast<size_t>(s.rows)), X(xb * static_cast<size_t>(n_tok));
        for (int64_t r = 0; r < s.rows; ++r) quantize_row(t, &wf[static_cast<size_t>(r * s.cols)], &W[r * rb], s.cols);
        for (int64_t r = 0; r < n_tok; ++r) quantize_row(vt, &xf[static_cast<size_t>(r * s.cols)], &X[r * xb], s.cols);
        const auto P = repack(t, W.data(), rb, s.rows, s.cols);
        std::vector<float> y(static_cast<size_t>(n_tok * s.rows));
        double best = 1e30;
        for (int i = 0; i < reps; ++i) {
            const double t0 = thread_seconds();
            if (P) matmul_packed(*P, X.data(), xb, n_tok, y.data(), s.rows, 0, s.rows);
            else matmul_rows(t, s.cols, W.data(), rb, X.data(), xb, n_tok, y.data(), s.rows, 0, s.rows);
            best = std::min(best, thread_seconds() - t0);
        }
        const double flop = 2.0 * static_cast<double>(s.rows * s.cols * n_tok);
        total_flop += flop;
        total_s += best;
        total_bytes += static_cast<double>(W.size());
        std::printf("%s %s %lldx%lld tokens=%lld packed=%d best=%.3f ms GFLOP/s=%.1f\n", type_name, s.name,
                    static_cast<long long>(s.rows), static_cast<long long>(s.cols), static_cast<long long>(n_tok),
                    P != nullptr, best * 1e3, flop / best * 1e-9);
    }
    // weight_gbs: weight bytes multiplied per CPU second. For one token this is the rate one
    // thread can decode at; below the memory bandwidth per thread, decode is compute bound.
    std::printf("kernel_bench type=%s tokens=%lld gflops=%.1f weight_gbs=%.2f\n", type_name,
                static_cast<long long>(n_tok), total_flop / total_s * 1e-9, total_bytes / total_s * 1e-9);
    return 0;
}
