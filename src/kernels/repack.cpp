// Packing weight matrices into 8-row interleaved groups (layouts in repack_layout.h) and the
// dispatch of matmul_packed. Packing is plain byte shuffling, done once per matrix at load.
#include "kernels/repack.h"

#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/gemm_f16.h"
#include "kernels/quant.h"
#include "kernels/quant_blocks.h"
#include "kernels/repack_layout.h"

namespace kvrag::kernels {
namespace {

// Element e's low four bits as stored (before any offset): the same nibble layout in all four.
template <class Block>
inline uint8_t nibble(const Block& b, int e) {
    return e < 16 ? (b.qs[e] & 0x0F) : (b.qs[e - 16] >> 4);
}

template <class Block>
void pack_q4_family_group(const uint8_t* const rows[kPackRows], int64_t nb, uint8_t* dst) {
    using F = PackQ4Family<Block>;
    for (int64_t i = 0; i < nb; ++i) {
        uint8_t* out = dst + static_cast<size_t>(i) * F::kBytes;
        std::memset(out, 0, F::kBytes);  // padding rows: scale 0, quants 0
        for (int r = 0; r < kPackRows; ++r) {
            if (rows[r] == nullptr) continue;
            const auto& b = reinterpret_cast<const Block*>(rows[r])[i];
            std::memcpy(out + 2 * r, &b.d, 2);
            if constexpr (F::kHasMin) std::memcpy(out + 16 + 2 * r, &b.m, 2);
            uint32_t qh = 0;
            if constexpr (F::kHasHighBit) std::memcpy(&qh, b.qh, 4);  // bit e: element e's fifth bit
            for (int m = 0; m < 4; ++m) {
                for (int j = 0; j < 4; ++j) {
                    out[F::kQuants + 32 * m + 4 * r + j] =
                        static_cast<uint8_t>(nibble(b, 4 * m + j) | (nibble(b, 16 + 4 * m + j) << 4));
                    if constexpr (F::kHasHighBit) {
                        uint8_t& h = out[F::kQuants + 128 + 4 * r + j];
                        h = static_cast<uint8_t>(h | ((qh >> (4 * m + j)) & 1u) << m | ((qh >> (16 + 4 * m + j)) & 1u) << (4 + m));
                    }
                }
            }
        }
    }
}

void pack_q8_0_group(const uint8_t* const rows[kPackRows], int64_t nb, uint8_t* dst) {
    for (int64_t i = 0; i < nb; ++i) {
        uint8_t* out = dst + static_cast<size_t>(i) * kPackQ8_0BlockBytes;
        std::memset(out, 0, kPackQ8_0BlockBytes);  // padding rows: scale 0, quants 0
        for (int r = 0; r < kPackRows; ++r) {
            if (rows[r] == nullptr) continue;
            const auto& b = reinterpret_cast<const BlockQ8_0*>(rows[r])[i];
            std::memcpy(out + 2 * r, &b.d, 2);
            for (int m = 0; m < 8; ++m) std::memcpy(out + 16 + 32 * m + 4 * r, b.qs + 4 * m, 4);
        }
    }
}

// Q4_K, or Q5_K (Block = BlockQ5_K: the same fields plus the fifth bits in qh).
template <class Block, size_t kBlockBytes>
void pack_q45_k_group(const uint8_t* const rows[kPackRows], int64_t nb, uint8_t* dst) {
    constexpr bool kHasHighBit = std::is_same_v<Block, BlockQ5_K>;
    for (int64_t i = 0; i < nb; ++i) {
        uint8_t* out = dst + static_cast<size_t>(i) * kBlockBytes;
        std::memset(out, 0, kBlockBytes);  // padding rows: scales 0, quants 0
        for (int r = 0; r < kPackRows; ++r) {
            if (rows[r] == nullptr) continue;
            const auto& b = reinterpret_cast<const Block*>(rows[r])[i];
            std::memcpy(out + 2 * r, &b.d, 2);
            std::memcpy(out + 16 + 2 * r, &b.dmin, 2);
            uint8_t q[kQK_K];     // low four bits of element e of the row, 0..15
            uint8_t high[kQK_K];  // its fifth bit (Q5_K), else 0
            for (int e = 0; e < kQK_K; ++e) {
                const int j = e / 32, c = j / 2;
                const uint8_t byte = b.qs[32 * c + e % 32];
                q[e] = (j & 1) ? (byte >> 4) : (byte & 0x0F);
                high[e] = 0;
                if constexpr (kHasHighBit) high[e] = static_cast<uint8_t>((b.qh[e % 32] >> j) & 1);
            }
            for (int j = 0; j < 8; ++j) {
                uint8_t sc, m;
                unpack_scale_min_k4(j, b.scales, &sc, &m);
                out[kPackQ4_KScales + 8 * j + r] = sc;
                out[kPackQ4_KMins + 16 * (j / 2) + 2 * r + (j & 1)] = m;
                if constexpr (kHasHighBit) {
                    for (int jj = 0; jj < 4; ++jj) {
                        uint8_t v[8];  // element 32j + 4k + jj, all five bits
                        for (int k = 0; k < 8; ++k) v[k] = static_cast<uint8_t>(q[32 * j + 4 * k + jj] | (high[32 * j + 4 * k + jj] << 4));
                        // Elements 5..7's bits, in bits 5..7 of the five bytes (repack_layout.h).
                        const uint8_t spare[5] = {
                            static_cast<uint8_t>((v[5] & 7) << 5),
                            static_cast<uint8_t>((((v[5] >> 3) & 3) << 5) | ((v[6] & 1) << 7)),
                            static_cast<uint8_t>(((v[6] >> 1) & 7) << 5),
                            static_cast<uint8_t>((((v[6] >> 4) & 1) << 5) | ((v[7] & 3) << 6)),
                            static_cast<uint8_t>(((v[7] >> 2) & 7) << 5),
                        };
                        for (int k = 0; k < 5; ++k) out[kPackQ5_KQuants + 160 * j + 32 * k + 4 * r + jj] = static_cast<uint8_t>(v[k] | spare[k]);
                    }
                } else {
                    for (int m4 = 0; m4 < 4; ++m4) {
                        for (int jj = 0; jj < 4; ++jj) {
                            const int lo = 32 * j + 4 * m4 + jj, hi = lo + 16;
                            out[kPackQ4_KQuants + 128 * j + 32 * m4 + 4 * r + jj] = static_cast<uint8_t>(q[lo] | (q[hi] << 4));
                        }
                    }
                }
            }
        }
    }
}


// Element e of a Q6_K block as stored (0..63), from the layout in quant_blocks.h.
inline uint8_t q6_k_value(const BlockQ6_K& b, int e) {
    const int h = e / 128, g = (e % 128) / 32, l = e % 32;
    const uint8_t lo = b.ql[64 * h + l + (g & 1) * 32];
    const uint8_t low4 = (g < 2) ? (lo & 0x0F) : (lo >> 4);
    return static_cast<uint8_t>(low4 | (((b.qh[32 * h + l] >> (2 * g)) & 3) << 4));
}

void pack_q6_k_group(const uint8_t* const rows[kPackRows], int64_t nb, uint8_t* dst) {
    for (int64_t i = 0; i < nb; ++i) {
        uint8_t* out = dst + static_cast<size_t>(i) * kPackQ6_KBlockBytes;
        std::memset(out, 0, kPackQ6_KBlockBytes);  // padding rows: scales 0, quants 0
        for (int r = 0; r < kPackRows; ++r) {
            if (rows[r] == nullptr) continue;
            const auto& b = reinterpret_cast<const BlockQ6_K*>(rows[r])[i];
            std::memcpy(out + 2 * r, &b.d, 2);
            uint8_t q[kQK_K];
            for (int e = 0; e < kQK_K; ++e) q[e] = q6_k_value(b, e);
            for (int j = 0; j < 16; ++j) {
                out[kPackQ6_KScales + 16 * (j / 2) + 2 * r + (j % 2)] = static_cast<uint8_t>(b.scales[j]);
                for (int jj = 0; jj < 4; ++jj) {
                    const uint8_t v3 = q[16 * j + 12 + jj];
                    for (int v = 0; v < 3; ++v) {
                        out[kPackQ6_KQuants + 96 * j + 32 * v + 4 * r + jj] =
                            static_cast<uint8_t>(q[16 * j + 4 * v + jj] | (((v3 >> (2 * v)) & 3) << 6));
                    }
                }
            }
        }
    }
}

}  // namespace

void pack_f16_group(const uint8_t* const rows[kPackRows], int64_t n_cols, uint8_t* dst) {
    // Element k of the eight rows, then k + 1: the group is written front to back.
    for (int64_t k = 0; k < n_cols; ++k) {
        for (int r = 0; r < kPackRows; ++r) {
            uint16_t v = 0;  // padding rows: zeros
            if (rows[r] != nullptr) std::memcpy(&v, rows[r] + 2 * k, 2);
            std::memcpy(dst + 16 * k + 2 * r, &v, 2);
        }
    }
}

void PackedMatrix::FreeAligned::operator()(uint8_t* p) const { std::free(p); }

PackedMatrix::PackedMatrix(GgmlType type, int64_t n_rows, int64_t n_cols, size_t group_bytes)
    : type_(type), n_rows_(n_rows), n_cols_(n_cols), group_bytes_(group_bytes) {
    const size_t bytes = (group_bytes_ * static_cast<size_t>(n_groups()) + 63) / 64 * 64;
    data_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes)));
    if (!data_) throw std::bad_alloc();
}

bool can_repack(GgmlType type, int64_t n_cols) {
#if defined(__x86_64__) || defined(_M_X64)
    if (!using_avx2() || n_cols <= 0) return false;
    switch (type) {
    case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q4_1: case GgmlType::Q5_1: return n_cols % kQK4_0 == 0;
    case GgmlType::Q8_0: return n_cols % kQK8_0 == 0;
    case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K: return n_cols % kQK_K == 0;
    case GgmlType::F16: case GgmlType::BF16: return true;
    default: return false;
    }
#else
    (void)type;
    (void)n_cols;
    return false;
#endif
}

std::shared_ptr<const PackedMatrix> repack(GgmlType type, const void* W, size_t row_bytes, int64_t n_rows,
                                           int64_t n_cols) {
    if (!can_repack(type, n_cols) || n_rows <= 0) return nullptr;
    size_t group_bytes = 0;
    switch (type) {
    case GgmlType::Q4_0: group_bytes = static_cast<size_t>(n_cols / kQK4_0) * kPackQ4_0BlockBytes; break;
    case GgmlType::Q5_0: group_bytes = static_cast<size_t>(n_cols / kQK5_0) * kPackQ5_0BlockBytes; break;
    case GgmlType::Q4_1: group_bytes = static_cast<size_t>(n_cols / kQK4_1) * kPackQ4_1BlockBytes; break;
    case GgmlType::Q5_1: group_bytes = static_cast<size_t>(n_cols / kQK5_1) * kPackQ5_1BlockBytes; break;
    case GgmlType::Q8_0: group_bytes = static_cast<size_t>(n_cols / kQK8_0) * kPackQ8_0BlockBytes; break;
    case GgmlType::Q4_K: group_bytes = static_cast<size_t>(n_cols / kQK_K) * kPackQ4_KBlockBytes; break;
    case GgmlType::Q5_K: group_bytes = static_cast<size_t>(n_cols / kQK_K) * kPackQ5_KBlockBytes; break;
    case GgmlType::Q6_K: group_bytes = static_cast<size_t>(n_cols / kQK_K) * kPackQ6_KBlockBytes; break;
    default: group_bytes = f16_group_bytes(n_cols); break;  // F16, BF16
    }
    auto p = std::make_shared<PackedMatrix>(type, n_rows, n_cols, group_bytes);
    const auto* wb = static_cast<const uint8_t*>(W);
    for (int64_t g = 0; g < p->n_groups(); ++g) {
        const uint8_t* rows[kPackRows];
        for (int r = 0; r < kPackRows; ++r) {
            const int64_t row = g * kPackRows + r;
            rows[r] = row < n_rows ? wb + static_cast<size_t>(row) * row_bytes : nullptr;
        }
        switch (type) {
        case GgmlType::Q4_0: pack_q4_family_group<BlockQ4_0>(rows, n_cols / kQK4_0, p->mutable_group(g)); break;
        case GgmlType::Q5_0: pack_q4_family_group<BlockQ5_0>(rows, n_cols / kQK5_0, p->mutable_group(g)); break;
        case GgmlType::Q4_1: pack_q4_family_group<BlockQ4_1>(rows, n_cols / kQK4_1, p->mutable_group(g)); break;
        case GgmlType::Q5_1: pack_q4_family_group<BlockQ5_1>(rows, n_cols / kQK5_1, p->mutable_group(g)); break;
        case GgmlType::Q8_0: pack_q8_0_group(rows, n_cols / kQK8_0, p->mutable_group(g)); break;
        case GgmlType::Q4_K: pack_q45_k_group<BlockQ4_K, kPackQ4_KBlockBytes>(rows, n_cols / kQK_K, p->mutable_group(g)); break;
        case GgmlType::Q5_K: pack_q45_k_group<BlockQ5_K, kPackQ5_KBlockBytes>(rows, n_cols / kQK_K, p->mutable_group(g)); break;
        case GgmlType::Q6_K: pack_q6_k_group(rows, n_cols / kQK_K, p->mutable_group(g)); break;
        default: pack_f16_group(rows, n_cols, p->mutable_group(g)); break;
        }
    }
    return p;
}

void matmul_packed(const PackedMatrix& w, const void* x, size_t x_row_bytes, int64_t n_tokens, float* y,
                   int64_t ldy, int64_t r0, int64_t r1) {
#if defined(__x86_64__) || defined(_M_X64)
    // repack() only packs when the AVX2 path is in use, so this is never reached otherwise.
    if (using_avx512() && avx512::has_kernel(w.type())) return avx512::matmul_packed(w, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
    avx2::matmul_packed(w, x, x_row_bytes, n_tokens, y, ldy, r0, r1);
#else
    unsupported_type("matmul_packed", w.type());
#endif
}

}  // namespace kvrag::kernels
