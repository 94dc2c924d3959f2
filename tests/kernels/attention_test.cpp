// Attention kernels: a hand-computed case, the AVX2 f16 path against the scalar reference over
// many shapes (GQA groups, tile and lane remainders, scattered cells), and independence of a
// result from the scratch's previous contents.
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace kvrag::kernels {
namespace {

// A KV plane of n_cells f16 rows, n_kv_heads heads of head_dim each, filled with N(0, 1).
struct Plane {
    int32_t n_cells = 0, head_dim = 0, n_kv_heads = 0;
    std::vector<uint16_t> k, v;
    size_t row_bytes() const { return static_cast<size_t>(n_kv_heads) * head_dim * 2; }
};

Plane make_plane(int32_t n_cells, int32_t head_dim, int32_t n_kv_heads, std::mt19937& rng) {
    Plane p{n_cells, head_dim, n_kv_heads, {}, {}};
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const size_t n = static_cast<size_t>(n_cells) * n_kv_heads * head_dim;
    for (size_t i = 0; i < n; ++i) {
        p.k.push_back(fp32_to_fp16(nd(rng)));
        p.v.push_back(fp32_to_fp16(nd(rng)));
    }
    return p;
}

AttentionArgs args_for(const Plane& p, const std::vector<int32_t>& cells, const std::vector<float>& q, int32_t kv_head, int32_t n_q_heads) {
    AttentionArgs a;
    a.q = q.data();
    a.k = reinterpret_cast<const uint8_t*>(p.k.data());
    a.v = reinterpret_cast<const uint8_t*>(p.v.data());
    a.row_bytes = p.row_bytes();
    a.head_offset = static_cast<size_t>(kv_head) * p.head_dim * 2;
    a.type = GgmlType::F16;
    a.cells = cells.data();
    a.n_visible = static_cast<int32_t>(cells.size());
    a.head_dim = p.head_dim;
    a.n_q_heads = n_q_heads;
    a.scale = 1.0f / std::sqrt(static_cast<float>(p.head_dim));
    return a;
}

TEST(Attention, HandComputedTwoCells) {
    // head_dim 8, two cells. q . k0 = 0 and q . k1 = 2 * sqrt(8) * (1/sqrt(8)) = 2 after scaling,
    // so p = softmax([0, 2]) and out = p0 * v0 + p1 * v1 (values exact in f16).
    Plane p{2, 8, 1, std::vector<uint16_t>(16, 0), std::vector<uint16_t>(16, 0)};
    std::vector<float> q(8, 0.0f);
    q[0] = 2.0f;
    p.k[8 + 0] = fp32_to_fp16(std::sqrt(8.0f));  // k1[0]
    for (int d = 0; d < 8; ++d) {
        p.v[d] = fp32_to_fp16(1.0f);              // v0 = 1
        p.v[8 + d] = fp32_to_fp16(static_cast<float>(d));  // v1 = d
    }
    const std::vector<int32_t> cells = {0, 1};
    const AttentionArgs a = args_for(p, cells, q, 0, 1);
    std::vector<float> scratch(attention_scratch_floats(2, 8, 1)), out(8);
    attention(a, out.data(), scratch.data());
    // k1[0] = sqrt(8) rounded to f16; the score is 2 * that / sqrt(8).
    const float s1 = 2.0f * fp16_to_fp32(fp32_to_fp16(std::sqrt(8.0f))) / std::sqrt(8.0f);
    const float p1 = 1.0f / (1.0f + std::exp(-s1)), p0 = 1.0f - p1;
    for (int d = 0; d < 8; ++d) {
        const float want = fp16_to_fp32(fp32_to_fp16(p0)) * 1.0f + fp16_to_fp32(fp32_to_fp16(p1)) * static_cast<float>(d);
        EXPECT_NEAR(out[d], want, 1e-6f) << d;
    }
}

TEST(Attention, Avx2MatchesTheReference) {
    if (!avx2_supported()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
    std::mt19937 rng(1234);
    int checked = 0;
    for (int32_t hd : {8, 16, 40, 64, 72, 128, 256}) {
        for (int32_t group : {1, 2, 4}) {
            for (int32_t nv : {1, 7, 8, 9, 31, 32, 33, 100, 257}) {
                const int32_t n_kv_heads = 2;
                Plane p = make_plane(300, hd, n_kv_heads, rng);
                // Scattered cells in an arbitrary order, as a sequence's cells are.
                std::vector<int32_t> cells(300);
                std::iota(cells.begin(), cells.end(), 0);
                std::shuffle(cells.begin(), cells.end(), rng);
                cells.resize(nv);
                std::vector<float> q(static_cast<size_t>(group) * hd);
                std::normal_distribution<float> nd(0.0f, 2.0f);
                for (float& x : q) x = nd(rng);
                const AttentionArgs a = args_for(p, cells, q, 1, group);
                std::vector<float> s_ref(attention_scratch_floats(nv, hd, group)), s_simd(s_ref.size(), 123.0f);
                std::vector<float> want(q.size()), got(q.size(), -7.0f);
                attention_ref(a, want.data(), s_ref.data());
                avx2::attention_f16(a, got.data(), s_simd.data());
                for (size_t i = 0; i < want.size(); ++i) {
                    // Outputs are convex combinations of N(0,1) values; the two paths differ only
                    // in f32 summation order (and FMA) of the dot products.
                    ASSERT_NEAR(got[i], want[i], 2e-4f + 2e-4f * std::fabs(want[i]))
                        << "hd " << hd << " group " << group << " nv " << nv << " i " << i;
                }
                ++checked;
            }
        }
    }
    EXPECT_EQ(checked, 7 * 3 * 9);
}

// The AVX-512 kernel gives the AVX2 kernel's outputs bit for bit: head sizes that fill 16-float
// vectors or leave half of one (8, 40, 72), GQA groups, cell counts around the 16-cell pairs
// and 32-cell tiles, one to four queries over one scattered cell list.
TEST(Attention, Avx512EqualsAvx2BitForBit) {
    if (!avx512_supported()) GTEST_SKIP() << "CPU lacks AVX-512 VNNI";
    std::mt19937 rng(4321);
    int checked = 0;
    for (int32_t hd : {8, 16, 40, 64, 72, 128, 256}) {
        const Plane p = make_plane(300, hd, 2, rng);
        std::vector<int32_t> cells(300);
        std::iota(cells.begin(), cells.end(), 0);
        std::shuffle(cells.begin(), cells.end(), rng);
        std::normal_distribution<float> nd(0.0f, 2.0f);
        for (int32_t group : {1, 2, 4}) {
            for (const std::vector<int32_t>& visible : std::vector<std::vector<int32_t>>{
                     {1}, {7, 8, 9}, {15, 16, 17, 18}, {31, 32, 33}, {100}, {257, 258, 260, 300}}) {
                const int n = static_cast<int>(visible.size());
                std::vector<std::vector<float>> q(n, std::vector<float>(static_cast<size_t>(group) * hd));
                for (auto& qj : q)
                    for (float& x : qj) x = nd(rng);
                std::vector<AttentionArgs> args;
                std::vector<std::vector<float>> want(n, std::vector<float>(q[0].size(), NAN)), got = want;
                std::vector<float*> want_p, got_p;
                for (int j = 0; j < n; ++j) {
                    AttentionArgs a = args_for(p, cells, q[j], 1, group);
                    a.n_visible = visible[j];
                    args.push_back(a);
                    want_p.push_back(want[j].data());
                    got_p.push_back(got[j].data());
                }
                std::vector<float> s1(attention_scratch_floats(300, hd, group, kAttentionMaxQueries), 3.0f), s2(s1.size(), -9.0f);
                avx2::attention_f16_multi(args.data(), n, want_p.data(), s1.data());
                avx512::attention_f16_multi(args.data(), n, got_p.data(), s2.data());
                for (int j = 0; j < n; ++j) {
                    for (size_t i = 0; i < want[j].size(); ++i) {
                        ASSERT_EQ(std::bit_cast<uint32_t>(got[j][i]), std::bit_cast<uint32_t>(want[j][i]))
                            << "hd " << hd << " group " << group << " query " << j << " n_visible " << visible[j] << " element " << i;
                    }
                }
                ++checked;
            }
        }
    }
    EXPECT_EQ(checked, 7 * 3 * 6);
}

// A q8_0 KV plane pair: n_cells rows of n_kv_heads heads, each head's head_dim values from
// N(0, 1) quantised as the cache stores them.
struct Q8Plane {
    int32_t head_dim = 0;
    size_t head_bytes = 0, row_bytes = 0;
    std::vector<uint8_t> k, v;
};

Q8Plane make_q8_plane(int32_t n_cells, int32_t hd, int32_t n_kv_heads, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    Q8Plane p;
    p.head_dim = hd;
    p.head_bytes = ggml_row_size(GgmlType::Q8_0, hd);
    p.row_bytes = p.head_bytes * n_kv_heads;
    p.k.resize(p.row_bytes * n_cells);
    p.v.resize(p.row_bytes * n_cells);
    std::vector<float> tmp(hd);
    for (auto* plane : {&p.k, &p.v}) {
        for (int32_t c = 0; c < n_cells; ++c) {
            for (int32_t h = 0; h < n_kv_heads; ++h) {
                for (float& x : tmp) x = nd(rng);
                quantize_row(GgmlType::Q8_0, tmp.data(), plane->data() + c * p.row_bytes + h * p.head_bytes, hd);
            }
        }
    }
    return p;
}

// Queries (group heads each) over kv head 1 of p, one per entry of `visible` (its n_visible).
struct Q8Queries {
    std::vector<std::vector<float>> q, got;
    std::vector<AttentionArgs> args;
    std::vector<float*> outs;
};

Q8Queries make_q8_queries(const Q8Plane& p, const std::vector<int32_t>& cells, const std::vector<int32_t>& visible, int32_t group, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    Q8Queries r;
    const int n = static_cast<int>(visible.size());
    r.q.assign(n, std::vector<float>(static_cast<size_t>(group) * p.head_dim));
    for (auto& qj : r.q)
        for (float& x : qj) x = nd(rng);
    r.got.assign(n, std::vector<float>(r.q[0].size(), NAN));
    for (int j = 0; j < n; ++j) {
        AttentionArgs a;
        a.q = r.q[j].data();
        a.k = p.k.data();
        a.v = p.v.data();
        a.row_bytes = p.row_bytes;
        a.head_offset = p.head_bytes;  // kv head 1
        a.type = GgmlType::Q8_0;
        a.cells = cells.data();
        a.n_visible = visible[j];
        a.head_dim = p.head_dim;
        a.n_q_heads = group;
        a.scale = 1.0f / std::sqrt(static_cast<float>(p.head_dim));
        r.args.push_back(a);
        r.outs.push_back(r.got[j].data());
    }
    return r;
}

// q8_0 cells, scalar path: the group path (every head and up to four queries at once, each K
// row read and each V row dequantised once for all of them) gives each head exactly what the
// per-head reference gives it.
TEST(Attention, Q8_0GroupEqualsThePerHeadReference) {
    std::mt19937 rng(77);
    const int32_t hd = 64, n_cells = 200;
    const Q8Plane p = make_q8_plane(n_cells, hd, 2, rng);
    std::vector<int32_t> cells(n_cells);
    std::iota(cells.begin(), cells.end(), 0);
    std::shuffle(cells.begin(), cells.end(), rng);
    for (int32_t group : {1, 4}) {
        for (const std::vector<int32_t>& visible : std::vector<std::vector<int32_t>>{{1}, {5}, {31, 32, 33}, {100, 101, 150, 200}}) {
            Q8Queries qq = make_q8_queries(p, cells, visible, group, rng);
            const int n = static_cast<int>(visible.size());
            std::vector<float> scratch(attention_scratch_floats(n_cells, hd, group, kAttentionMaxQueries), 5.0f);
            attention_generic_multi(qq.args.data(), n, qq.outs.data(), scratch.data());
            for (int j = 0; j < n; ++j) {
                std::vector<float> want(qq.q[j].size()), one(qq.q[j].size()), own(attention_scratch_floats(n_cells, hd, group));
                attention_ref(qq.args[j], want.data(), own.data());
                float* one_out[1] = {one.data()};
                attention_generic_multi(&qq.args[j], 1, one_out, own.data());
                for (size_t i = 0; i < want.size(); ++i) {
                    ASSERT_EQ(std::bit_cast<uint32_t>(qq.got[j][i]), std::bit_cast<uint32_t>(want[i]))
                        << "group " << group << " query " << j << " of " << n << " n_visible " << visible[j] << " element " << i;
                    ASSERT_EQ(std::bit_cast<uint32_t>(one[i]), std::bit_cast<uint32_t>(want[i])) << "alone, element " << i;
                }
            }
        }
    }
}

// What the AVX2 q8_0 kernel promises, one head at a time in plain code: scores vec_dot(Q8_0)
// against q quantised to Q8_0, times scale; avx2::softmax; out[d] = fma(p, v[d], out[d]) over
// the cells in order, v the dequantised row.
std::vector<float> q8_0_model(const AttentionArgs& a) {
    const int32_t hd = a.head_dim;
    std::vector<float> out(static_cast<size_t>(a.n_q_heads) * hd, 0.0f), s(a.n_visible), v(hd);
    std::vector<uint8_t> qb(ggml_row_size(GgmlType::Q8_0, hd));
    for (int32_t g = 0; g < a.n_q_heads; ++g) {
        quantize_row(GgmlType::Q8_0, a.q + static_cast<size_t>(g) * hd, qb.data(), hd);
        for (int32_t c = 0; c < a.n_visible; ++c)
            s[c] = vec_dot(GgmlType::Q8_0, hd, a.k + static_cast<size_t>(a.cells[c]) * a.row_bytes + a.head_offset, qb.data()) * a.scale;
        avx2::softmax(s.data(), a.n_visible);
        float* o = out.data() + static_cast<size_t>(g) * hd;
        for (int32_t c = 0; c < a.n_visible; ++c) {
            dequantize_row(GgmlType::Q8_0, a.v + static_cast<size_t>(a.cells[c]) * a.row_bytes + a.head_offset, v.data(), hd);
            for (int32_t d = 0; d < hd; ++d) o[d] = std::fma(s[c], v[d], o[d]);
        }
    }
    return out;
}

// q8_0 cells, AVX2 tiled path (what attention() and attention_multi() run with AVX2), for head
// sizes 32-256, GQA groups 1-4, n_visible around the 8-cell groups and 32-cell tiles: bit for
// bit q8_0_model (so the scores are vec_dot's exactly), within float rounding of the exact
// reference (only the softmax's exponentials and P V's FMAs round differently), and each query
// of a block gets bit for bit what it gets alone, whatever the scratch held.
TEST(Attention, Q8_0Avx2TiledMatchesTheReference) {
    if (!avx2_supported()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
    std::mt19937 rng(5);
    const int32_t n_cells = 300;
    std::vector<int32_t> cells(n_cells);
    std::iota(cells.begin(), cells.end(), 0);
    std::shuffle(cells.begin(), cells.end(), rng);
    int checked = 0;
    float worst = 0.0f;
    for (int32_t hd : {32, 64, 96, 128, 256}) {
        ASSERT_TRUE(avx2::attention_q8_0_supports(hd));
        const Q8Plane p = make_q8_plane(n_cells, hd, 2, rng);
        for (int32_t group : {1, 2, 4}) {
            for (const std::vector<int32_t>& visible :
                 std::vector<std::vector<int32_t>>{{1}, {7, 8, 9}, {31, 32, 33, 40}, {64, 65}, {299, 300, 2, 150}}) {
                Q8Queries qq = make_q8_queries(p, cells, visible, group, rng);
                const int n = static_cast<int>(visible.size());
                std::vector<float> scratch(attention_scratch_floats(n_cells, hd, group, kAttentionMaxQueries), 1e30f);
                avx2::attention_q8_0_multi(qq.args.data(), n, qq.outs.data(), scratch.data());
                for (int j = 0; j < n; ++j) {
                    std::vector<float> want(qq.q[j].size()), one(qq.q[j].size()), own(attention_scratch_floats(n_cells, hd, group), -3.0f);
                    attention_ref(qq.args[j], want.data(), own.data());
                    float* one_out[1] = {one.data()};
                    avx2::attention_q8_0_multi(&qq.args[j], 1, one_out, own.data());
                    const std::vector<float> model = q8_0_model(qq.args[j]);
                    for (size_t i = 0; i < want.size(); ++i) {
                        ASSERT_EQ(std::bit_cast<uint32_t>(qq.got[j][i]), std::bit_cast<uint32_t>(model[i]))
                            << "model: hd " << hd << " group " << group << " query " << j << " n_visible " << visible[j] << " element " << i;
                        ASSERT_EQ(std::bit_cast<uint32_t>(one[i]), std::bit_cast<uint32_t>(qq.got[j][i]))
                            << "hd " << hd << " group " << group << " query " << j << " n_visible " << visible[j] << " element " << i;
                        const float err = std::fabs(qq.got[j][i] - want[i]);
                        worst = std::max(worst, err / (1.0f + std::fabs(want[i])));
                        ASSERT_LE(err, 2e-6f * (1.0f + std::fabs(want[i])))
                            << "hd " << hd << " group " << group << " query " << j << " n_visible " << visible[j] << " element " << i
                            << ": " << qq.got[j][i] << " vs " << want[i];
                    }
                }
                ++checked;
            }
        }
    }
    EXPECT_EQ(checked, 5 * 3 * 5);
    std::printf("largest difference from the reference: %.3g (relative to 1 + |value|)\n", worst);
}

TEST(Attention, Avx2MatchesTheReferenceWithPeakedScores) {
    // Scores spread over hundreds: most exponentials underflow, the softmax is nearly one-hot.
    if (!avx2_supported()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
    std::mt19937 rng(99);
    for (float spread : {10.0f, 40.0f, 200.0f}) {
        Plane p = make_plane(200, 64, 1, rng);
        std::vector<int32_t> cells(150);
        std::iota(cells.begin(), cells.end(), 20);
        std::vector<float> q(2 * 64);
        std::normal_distribution<float> nd(0.0f, spread);
        for (float& x : q) x = nd(rng);
        const AttentionArgs a = args_for(p, cells, q, 0, 2);
        std::vector<float> s1(attention_scratch_floats(150, 64, 2)), s2(s1.size());
        std::vector<float> want(q.size()), got(q.size());
        attention_ref(a, want.data(), s1.data());
        avx2::attention_f16(a, got.data(), s2.data());
        for (size_t i = 0; i < want.size(); ++i) {
            ASSERT_TRUE(std::isfinite(got[i])) << spread << " " << i;
            ASSERT_NEAR(got[i], want[i], 5e-4f + 5e-4f * std::fabs(want[i])) << "spread " << spread << " i " << i;
        }
    }
}

TEST(Attention, ResultDoesNotDependOnScratchOrRepetition) {
    std::mt19937 rng(7);
    Plane p = make_plane(64, 64, 1, rng);
    std::vector<int32_t> cells(50);
    std::iota(cells.begin(), cells.end(), 3);
    std::vector<float> q(4 * 64);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float& x : q) x = nd(rng);
    const AttentionArgs a = args_for(p, cells, q, 0, 4);
    std::vector<float> s1(attention_scratch_floats(50, 64, 4), 0.0f), s2(s1.size(), 1e30f);
    std::vector<float> o1(q.size()), o2(q.size());
    attention(a, o1.data(), s1.data());
    attention(a, o2.data(), s2.data());
    EXPECT_EQ(o1, o2);
    // The group path gives each head what it gets alone.
    for (int32_t g = 0; g < 4; ++g) {
        std::vector<float> qg(q.begin() + g * 64, q.begin() + (g + 1) * 64), og(64);
        AttentionArgs one = args_for(p, cells, qg, 0, 1);
        attention(one, og.data(), s1.data());
        for (int d = 0; d < 64; ++d) EXPECT_EQ(og[d], o1[static_cast<size_t>(g) * 64 + d]) << g << " " << d;
    }
}

// Several queries over one cell list (a prompt's consecutive tokens) give each exactly what a
// call of its own gives: any number of queries, n_visible differing between them (a prefix of
// the list each, inside and across tiles and 8-cell steps), GQA groups, scattered cells, and
// a scratch left dirty by the previous call.
TEST(Attention, MultiQueryEqualsOneQueryAtATime) {
    std::mt19937 rng(99);
    const Plane p = make_plane(300, 64, 2, rng);
    std::vector<int32_t> cells(300);
    std::iota(cells.begin(), cells.end(), 0);
    std::shuffle(cells.begin(), cells.end(), rng);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int32_t group = 4;
    const std::vector<std::vector<int32_t>> visible_sets = {{1}, {7, 8, 9, 33}, {31, 32, 33}, {64, 200}, {299, 300, 5, 100}};
    std::vector<float> scratch(attention_scratch_floats(300, 64, group, kAttentionMaxQueries), 7.0f);
    for (const auto& visible : visible_sets) {
        for (int32_t kv_head = 0; kv_head < 2; ++kv_head) {
            const int n = static_cast<int>(visible.size());
            std::vector<std::vector<float>> q(n, std::vector<float>(static_cast<size_t>(group) * 64));
            for (auto& qj : q)
                for (float& x : qj) x = nd(rng);
            std::vector<AttentionArgs> args;
            std::vector<std::vector<float>> got(n, std::vector<float>(static_cast<size_t>(group) * 64, NAN));
            std::vector<float*> outs;
            for (int j = 0; j < n; ++j) {
                AttentionArgs a = args_for(p, cells, q[j], kv_head, group);
                a.n_visible = visible[j];
                args.push_back(a);
                outs.push_back(got[j].data());
            }
            attention_multi(args.data(), n, outs.data(), scratch.data());
            for (int j = 0; j < n; ++j) {
                std::vector<float> want(static_cast<size_t>(group) * 64), own(attention_scratch_floats(300, 64, group));
                attention(args[j], want.data(), own.data());
                for (size_t i = 0; i < want.size(); ++i) {
                    ASSERT_EQ(std::bit_cast<uint32_t>(got[j][i]), std::bit_cast<uint32_t>(want[i]))
                        << "query " << j << " of " << n << ", n_visible " << visible[j] << ", kv head " << kv_head << ", element " << i;
                }
            }
        }
    }
}

}  // namespace
}  // namespace kvrag::kernels
