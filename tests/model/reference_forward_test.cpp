// kvrag's forward pass against an independent float64 reference written in Python + numpy
// (tools/reference_forward.py: its own GGUF reader, block decoders and forward pass, written
// from the GGUF/ggml format definitions, not from kvrag's kernels).
//
// For every weight type and both architectures (and phi3 with LongRoPE and partial rotary for a
// few types, at a context that takes the long factor set and one that takes the short), a
// synthetic model is written, an 8-token
// prompt is run through ForwardPass with an F32 KV cache (so the cache adds no rounding), and
// the logits of every position are compared with the reference's, as is the greedy token.
//
// The reference emulates the activation rounding that kvrag (like ggml) applies before every
// matmul (activations -> Q8_0 / Q8_1 / Q8_K / F16 / BF16 per weight type), and it reports the
// rounding decisions that sit so close to a tie that kvrag's float32 arithmetic may take the
// other side; the test works out which of those kvrag took and has the reference replay
// exactly them. What is left is float32-vs-float64 rounding, held to kRelTol.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>
#include <vector>

#include "kvcache/kv_store.h"
#include "model/forward.h"
#include "model/model.h"
#include "tools/synthetic.h"
#include "test_paths.h"

namespace kvrag::model {
namespace {

using tools::SyntheticSpec;
using tools::write_synthetic_model;

namespace fs = std::filesystem;

constexpr const char* kPython = "/usr/bin/python3";

// Empty when /usr/bin/python3 with numpy is usable, else the reason to skip.
std::string python_unavailable_reason() {
    static const std::string reason = [] {
        if (!fs::exists(kPython)) return std::string(kPython) + " not found";
        const std::string cmd = std::string(kPython) + " -c 'import numpy' >/dev/null 2>&1";
        if (std::system(cmd.c_str()) != 0) return std::string(kPython) + " has no numpy (apt install python3-numpy)";
        return std::string();
    }();
    return reason;
}

// Runs a shell command and returns its stdout; sets ok = false on a non-zero exit.
std::string run_command(const std::string& cmd, bool& ok) {
    std::string out;
    FILE* pipe = popen(cmd.c_str(), "r");
    if (!pipe) {
        ok = false;
        return out;
    }
    std::array<char, 65536> buf;
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
    ok = pclose(pipe) == 0;
    return out;
}

struct Case {
    const char* arch;
    GgmlType type;
    bool tied = false;  // omit output.weight: the head reuses token_embd
    // phi3 (always with LongRoPE, original context 512 of 2048): the per-sequence context of the
    // run, which selects the factor set; 0 = the trained context (long set).
    int32_t n_ctx = 0;
};

void PrintTo(const Case& c, std::ostream* os) {
    *os << c.arch << " " << ggml_type_name(c.type) << (c.tied ? " tied" : "");
    if (c.n_ctx > 0) *os << " n_ctx " << c.n_ctx;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
    std::string name = std::string(info.param.arch) + "_" + std::string(ggml_type_name(info.param.type));
    if (info.param.tied) name += "_tied";
    if (info.param.n_ctx > 0) name += "_ctx" + std::to_string(info.param.n_ctx);
    return name;
}

bool is_k_quant(GgmlType t) { return t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q6_K; }

// Tolerance on |kvrag - reference| at one position: kRelTol * max(1, max |reference logit|).
//
// kRelTol = 1e-4. With the activation rounding emulated (and the tie flips below replayed),
//   the integer and fp16 parts of every dot are identical on both sides, so what is left is
//   kvrag's float32 arithmetic against the reference's float64: ~1e-7 relative per operation,
//   3e-7 of max|logit| measured at worst over all types (dots of <= 512 terms, 2 layers).
//   1e-4 leaves >100x room for other summation orders (scalar vs AVX2 kernels, thread
//   splits), yet a wrong block layout, scale, min, bias or RoPE pairing moves logits by
//   1e-2..1 (rounding Q8_1's `s` from fp16(d) instead of d alone showed up as 4e-2).
//
// Tie flips. kvrag's float32 activations differ from the float64 ones by ~1e-7 of their
//   magnitude, so a value that close to a rounding midpoint may round to the other Q8 level
//   (or fp16/bf16 neighbour) in kvrag; one such flip legitimately moves logits by up to ~3e-2
//   (seen: qwen2 Q8_0, an activation 2.3e-6 steps from a tie). The reference lists every
//   decision within kTieWindow (5e-6, ~20x kvrag's float32 error) of its magnitude from a tie,
//   with what flipping it does to the logits. A flip kvrag took explains the residual
//   r = kvrag - reference: r . delta > |delta|^2 / 2. Those flips are replayed jointly by the
//   reference, and the replayed logits must then agree to kRelTol everywhere.
constexpr double kRelTol = 1e-4;
constexpr const char* kTieWindow = "5e-6";

// Runs the reference on the model; extra: more command-line arguments.
nlohmann::json run_reference(const std::string& path, const std::vector<int32_t>& tokens, const std::string& extra) {
    std::string token_list;
    for (int32_t t : tokens) token_list += (token_list.empty() ? "" : ",") + std::to_string(t);
    const std::string cmd = std::string(kPython) + " " + testing::source_dir() + "/tools/reference_forward.py " +
                            path + " --tokens " + token_list + " " + extra;
    bool ok = false;
    const std::string out = run_command(cmd, ok);
    EXPECT_TRUE(ok) << "reference failed: " << cmd;
    return ok ? nlohmann::json::parse(out) : nlohmann::json();
}

// The near-tie flips that kvrag took, as "call:index,...": greedily keeps each tie whose delta
// (n, n_vocab) explains the residual kvrag - reference (n, n_vocab). Returns how many it kept.
int explain_flips(const std::vector<float>& got, const nlohmann::json& ref, std::string& flips) {
    std::vector<double> r(got.size());
    size_t k = 0;
    for (const auto& row : ref["logits"]) {
        for (const auto& v : row) r[k] = got[k] - v.get<double>(), ++k;
    }
    std::vector<bool> taken(ref["near_ties"].size(), false);
    int n_taken = 0;
    for (int pass = 0; pass < 3; ++pass) {
        bool changed = false;
        for (size_t e = 0; e < taken.size(); ++e) {
            if (taken[e]) continue;
            std::vector<double> delta;
            for (const auto& row : ref["near_ties"][e]["delta"]) {
                for (const auto& v : row) delta.push_back(v.get<double>());
            }
            double rd = 0, dd = 0;
            for (size_t i = 0; i < r.size(); ++i) rd += r[i] * delta[i], dd += delta[i] * delta[i];
            if (dd == 0 || rd <= dd / 2) continue;
            for (size_t i = 0; i < r.size(); ++i) r[i] -= delta[i];
            taken[e] = changed = true;
            ++n_taken;
            const auto& tie = ref["near_ties"][e];
            flips += (flips.empty() ? "" : ",") + std::to_string(tie["call"].get<int>()) + ":" +
                     std::to_string(tie["index"].get<int64_t>());
        }
        if (!changed) break;
    }
    return n_taken;
}

class ReferenceForwardTest : public ::testing::TestWithParam<Case> {};

TEST_P(ReferenceForwardTest, LogitsMatchPythonReference) {
    const std::string skip = python_unavailable_reason();
    KVRAG_SKIP_UNLESS_SHARED(skip.empty()) << "independent reference needs numpy: " << skip;
    const Case& c = GetParam();

    // 1. A synthetic model of this weight type (matrices, token_embd and output all in it).
    SyntheticSpec spec;
    spec.arch = c.arch;
    spec.weight_type = c.type;
    spec.embd_type = c.type;
    spec.output_type = c.type;
    spec.tied_output = c.tied;
    spec.seed = 7;
    if (is_k_quant(c.type)) {  // K-quant rows are whole 256-blocks
        spec.n_embd = 256;
        spec.n_ff = 512;
    } else {
        spec.n_ff = 192;  // the default 172 is not a whole number of 32-blocks
    }
    if (std::string(c.arch) == "phi3") {
        spec.longrope = true;  // random long and short sets
        spec.n_ctx_orig = 512;
        spec.n_rot = spec.n_embd / spec.n_head * 3 / 4;  // partial rotary
    }
    const fs::path dir = fs::temp_directory_path() / ("kvrag_ref_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const std::string path = (dir / (case_name({c, 0}) + ".gguf")).string();
    auto wr = write_synthetic_model(spec, path);
    ASSERT_TRUE(wr.ok()) << wr.error().what();

    auto m = Model::load(path);
    ASSERT_TRUE(m.ok()) << m.error().what();
    const ModelHParams& hp = (*m)->hparams();
    const int32_t n_vocab = hp.n_vocab;

    // 2. kvrag: one 8-token prefill batch at positions 0..7, logits for every position.
    const std::vector<int32_t> tokens = {1, 5, 9, 42 % n_vocab, 100 % n_vocab, 7, 3, 77 % n_vocab};
    const int n = static_cast<int>(tokens.size());
    auto geo = kvcache::make_geometry(hp, GgmlType::F32);
    ASSERT_TRUE(geo.ok()) << geo.error().what();
    kvcache::KvStore kv(*geo, 16);
    ThreadPool pool(2);
    ForwardPass fwd(hp, (*m)->weights(), c.n_ctx);
    std::vector<int32_t> cells(n);
    for (int i = 0; i < n; ++i) cells[i] = i;
    std::vector<BatchToken> batch(n);
    for (int i = 0; i < n; ++i) {
        batch[i].token = tokens[i];
        batch[i].pos = i;
        batch[i].cell = i;
        batch[i].visible = cells.data();
        batch[i].n_visible = i + 1;
        batch[i].want_logits = true;
    }
    std::vector<float> got;  // (n, n_vocab)
    auto r = fwd.run(batch, kv, pool, got);
    ASSERT_TRUE(r.ok()) << r.error().what();
    ASSERT_EQ(got.size(), static_cast<size_t>(n) * n_vocab);

    // 3. The reference, with the near-tie flips kvrag took replayed.
    const std::string ctx_arg = c.n_ctx > 0 ? " --n-ctx " + std::to_string(c.n_ctx) : "";
    const nlohmann::json base = run_reference(path, tokens, std::string("--tie-window ") + kTieWindow + ctx_arg);
    ASSERT_FALSE(base.is_null());
    const size_t n_ties = base["near_ties"].size();
    std::string flips;
    const int n_flips = explain_flips(got, base, flips);
    const nlohmann::json ref = n_flips == 0 ? base : run_reference(path, tokens, "--flips " + flips + ctx_arg);
    fs::remove(path);
    fs::remove(dir);  // only if empty: other cases may run in other processes
    ASSERT_FALSE(ref.is_null());
    const auto& want = ref["logits"];
    ASSERT_EQ(want.size(), static_cast<size_t>(n));

    // 4. Compare every logit, and the greedy token per position.
    double max_abs = 0, max_rel = 0;
    for (int i = 0; i < n; ++i) {
        const auto row = want[i].get<std::vector<double>>();
        ASSERT_EQ(row.size(), static_cast<size_t>(n_vocab));
        double scale = 1;
        for (double v : row) scale = std::max(scale, std::abs(v));
        const double tol = kRelTol * scale;
        const float* g = got.data() + static_cast<size_t>(i) * n_vocab;
        for (int t = 0; t < n_vocab; ++t) {
            const double err = std::abs(g[t] - row[t]);
            max_abs = std::max(max_abs, err);
            max_rel = std::max(max_rel, err / scale);
            ASSERT_LE(err, tol) << "position " << i << " token " << t << ": kvrag " << g[t] << ", reference "
                                << row[t] << " (" << n_ties << " near-ties, replayed flips '"
                                << flips << "'; a larger error at few positions may be a flip outside "
                                << kTieWindow << ")";
        }
        // Greedy: the same token, unless the reference's top two are within the tolerance
        // (then either is a correct answer).
        const int best_ref = static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
        const int best_got = static_cast<int>(std::max_element(g, g + n_vocab) - g);
        if (best_got != best_ref) {
            EXPECT_LE(row[best_ref] - row[best_got], 2 * tol) << "position " << i << " greedy token differs";
        }
    }
    std::printf("[ %-19s ] max |err| %.2g, / max(1, max|logit|) %.2g; near-ties %zu, flipped in kvrag %d\n",
                case_name({c, 0}).c_str(), max_abs, max_rel, n_ties, n_flips);
}

constexpr GgmlType kAllTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
                                  GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                                  GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

std::vector<Case> all_cases() {
    std::vector<Case> cases;
    for (const char* arch : {"llama", "qwen2"}) {
        for (GgmlType t : kAllTypes) cases.push_back({arch, t});
    }
    cases.push_back({"qwen2", GgmlType::F32, true});
    cases.push_back({"llama", GgmlType::Q8_0, true});
    // phi3: fused attn_qkv / ffn_up, LongRoPE. 2048 (the trained context) takes the long set,
    // 512 the short one. Not F16: with seed 7, kvrag takes one listed near-tie flip and then a
    // second tie that only exists after the first (a cascade the one-round explanation above
    // cannot see), 4.9e-4 at one logit against a tolerance of 2.8e-4; listing the ties with the
    // first flip applied shows the second (delta -4.915e-4 at that logit, kvrag's residual
    // -4.917e-4). F16 weights are covered here by llama and qwen2, phi3's parts by the other
    // types, and tests/engine/phi3_engine_test.cpp runs phi3 F16 through the engine.
    for (GgmlType t : {GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::Q4_K}) {
        cases.push_back({"phi3", t});
    }
    cases.push_back({"phi3", GgmlType::F32, false, 512});
    cases.push_back({"phi3", GgmlType::Q8_0, true, 512});
    return cases;
}

INSTANTIATE_TEST_SUITE_P(ReferenceForward, ReferenceForwardTest, ::testing::ValuesIn(all_cases()), case_name);

// The reference's phi3 (fused matrices, partial rotary, LongRoPE) is itself checked against the
// reference engine's greedy oracle on the shared phi3 model, at both factor sets ("Once upon a
// time", the first 12 greedy steps: 32064-wide rows make every position cost JSON): the same
// greedy tokens, and the logits of the prompt's last position (its top 10) and of each greedy
// token within 2e-2. The reference runs all in float64 where llama.cpp keeps K/V and attention
// probabilities in F16 (README: that alone moves these logits by up to 1.3e-2; measured here
// 3.5e-3); a wrong factor set moves them by up to 7.2, a missing attn_factor by 2.8.
TEST(ReferenceForwardShared, Phi3LongRopeMatchesTheReferenceEngine) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    const std::string skip = python_unavailable_reason();
    KVRAG_SKIP_UNLESS_SHARED(skip.empty()) << "independent reference needs numpy: " << skip;
    std::ifstream in(dir + "/oracle/synth-phi3-f32-greedy.json");
    const auto cases = nlohmann::json::parse(in);
    int n_checked = 0;
    for (const auto& c : cases) {
        const auto prompt = c["prompt_tokens"].get<std::vector<int32_t>>();
        if (c["prompt"] != "Once upon a time") continue;  // at 4096 (long set) and 1024 (short)
        auto greedy = c["greedy_tokens"].get<std::vector<int32_t>>();
        greedy.resize(12);
        const int32_t n_ctx = c["n_ctx"].get<int32_t>();
        std::vector<int32_t> tokens = prompt;
        tokens.insert(tokens.end(), greedy.begin(), greedy.end() - 1);
        const size_t last = prompt.size() - 1;
        const nlohmann::json ref = run_reference(dir + "/models/synth-phi3-f32.gguf", tokens,
                                                 "--exact-activations --n-ctx " + std::to_string(n_ctx) +
                                                     " --logits-from " + std::to_string(last));
        ASSERT_FALSE(ref.is_null());
        const auto& logits = ref["logits"];  // positions last ..
        ASSERT_EQ(logits.size(), greedy.size());
        for (const auto& top : c["top10_last_prompt_logits"]) {
            EXPECT_NEAR(logits[0][top["id"].get<int>()].get<double>(), top["logit"].get<double>(), 2e-2)
                << c["rope_factors"] << " " << c["prompt"];
        }
        for (size_t i = 0; i < greedy.size(); ++i) {
            const auto row = logits[i].get<std::vector<double>>();
            const int best = static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
            EXPECT_EQ(best, greedy[i]) << c["rope_factors"] << " step " << i;
            EXPECT_NEAR(row[greedy[i]], c["greedy_logits"][i].get<double>(), 2e-2) << c["rope_factors"] << " step " << i;
        }
        ++n_checked;
    }
    EXPECT_EQ(n_checked, 2);
}

}  // namespace
}  // namespace kvrag::model
