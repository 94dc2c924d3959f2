// Loading releases the mapped file pages of matrices the kernels read repacked: the process
// holds each such matrix once (its packed copy), not twice. Checked on the mapping's own
// resident size in /proc/self/smaps, and the outputs must not change: a model loaded from a
// mapped file (pages released) and the same bytes loaded from memory (never released: heap
// memory would be zeroed by MADV_DONTNEED) give bit-identical logits.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/repack.h"
#include "kvcache/kv_store.h"
#include "model/forward.h"
#include "model/model.h"
#include "tools/synthetic.h"

namespace kvrag::model {
namespace {

namespace fs = std::filesystem;

// Resident bytes of the mapping that contains `addr`, from /proc/self/smaps; -1 when not found.
int64_t mapping_rss_bytes(const void* addr) {
    std::ifstream smaps("/proc/self/smaps");
    std::string line;
    bool in_mapping = false;
    const auto a = reinterpret_cast<uintptr_t>(addr);
    while (std::getline(smaps, line)) {
        unsigned long lo = 0, hi = 0;
        char dash = 0;
        std::istringstream head(line);
        if (head >> std::hex >> lo >> dash >> hi && dash == '-' && line.find(':') > line.find(' ')) {
            in_mapping = a >= lo && a < hi;
            continue;
        }
        if (in_mapping && line.rfind("Rss:", 0) == 0) {
            return std::stoll(line.substr(4)) * 1024;
        }
    }
    return -1;
}

tools::SyntheticSpec f16_spec() {
    tools::SyntheticSpec spec;
    spec.n_embd = 512;
    spec.n_ff = 2048;
    spec.n_layer = 2;
    spec.n_head = 4;
    spec.n_head_kv = 2;
    spec.weight_type = GgmlType::F16;
    spec.embd_type = GgmlType::F16;
    spec.output_type = GgmlType::F16;
    spec.seed = 11;
    return spec;
}

class ModelLoad : public ::testing::Test {
protected:
    void SetUp() override {
        if (!kernels::can_repack(GgmlType::F16, 256)) GTEST_SKIP() << "this CPU has no packed F16 kernel, so nothing is released";
        dir_ = fs::temp_directory_path() / ("kvrag_model_load_" + std::to_string(::getpid()));
        fs::create_directories(dir_);
        path_ = (dir_ / "f16.gguf").string();
        auto w = tools::write_synthetic_model(f16_spec(), path_);
        ASSERT_TRUE(w.ok()) << w.error().what();
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }
    fs::path dir_;
    std::string path_;
};

std::vector<float> prompt_logits(const Model& m) {
    const ModelHParams& hp = m.hparams();
    auto geo = kvcache::make_geometry(hp, GgmlType::F32);
    EXPECT_TRUE(geo.ok());
    kvcache::KvStore kv(*geo, 16);
    ThreadPool pool(2);
    ForwardPass fwd(hp, m.weights());
    const std::vector<int32_t> tokens = {1, 17, 40, 3, 99, 250};
    std::vector<int32_t> cells(tokens.size());
    std::vector<BatchToken> batch(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
        cells[i] = static_cast<int32_t>(i);
        batch[i].token = tokens[i] % hp.n_vocab;
        batch[i].pos = static_cast<int32_t>(i);
        batch[i].cell = static_cast<int32_t>(i);
        batch[i].visible = cells.data();
        batch[i].n_visible = static_cast<int32_t>(i + 1);
        batch[i].want_logits = true;
    }
    std::vector<float> logits;
    auto r = fwd.run(batch, kv, pool, logits);
    EXPECT_TRUE(r.ok()) << r.error().what();
    return logits;
}

TEST_F(ModelLoad, PackedMatricesHoldNoMappedPages) {
    auto m = Model::load(path_);
    ASSERT_TRUE(m.ok()) << m.error().what();
    const Model& model = **m;
    // Every attention and feed-forward matrix and the untied output head are packed.
    ASSERT_GT(model.packed_bytes(), model.weight_bytes() / 2);
    // Released: all of it but the pages a matrix shares with its neighbours (two per matrix at most).
    const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    const uint64_t n_matrices = 2 * 7 + 1;
    EXPECT_GE(model.released_bytes() + 2 * page * n_matrices, model.packed_bytes());
    // The mapping keeps only the pages nothing packed: the file minus what was released.
    const int64_t rss = mapping_rss_bytes(model.file().tensors().front().data);
    ASSERT_GT(rss, 0) << "the model's mapping was not found in /proc/self/smaps";
    EXPECT_LE(static_cast<uint64_t>(rss), model.file().file_size() - model.released_bytes() + page)
        << "file " << model.file().file_size() << " bytes, released " << model.released_bytes();
}

TEST_F(ModelLoad, ReleasedPagesChangeNoOutput) {
    auto mapped = Model::load(path_);
    ASSERT_TRUE(mapped.ok()) << mapped.error().what();
    std::ifstream in(path_, std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto file = gguf::GgufFile::from_bytes(std::move(bytes));
    ASSERT_TRUE(file.ok()) << file.error().what();
    auto owned = Model::from_file(*file);
    ASSERT_TRUE(owned.ok()) << owned.error().what();
    EXPECT_GT((*mapped)->released_bytes(), 0u);
    EXPECT_EQ((*owned)->released_bytes(), 0u) << "memory the process owns must never be released";
    EXPECT_EQ((*owned)->packed_bytes(), (*mapped)->packed_bytes());
    const std::vector<float> a = prompt_logits(**mapped), b = prompt_logits(**owned);
    ASSERT_EQ(a.size(), b.size());
    ASSERT_FALSE(a.empty());
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

TEST_F(ModelLoad, ReleasedBytesReadBackUnchanged) {
    auto file = gguf::GgufFile::open(path_);
    ASSERT_TRUE(file.ok()) << file.error().what();
    const gguf::TensorInfo* t = (*file)->find_tensor("blk.0.ffn_up.weight");
    ASSERT_NE(t, nullptr);
    const std::vector<uint8_t> before(t->data, t->data + t->n_bytes);
    EXPECT_GT((*file)->release_pages(t->data, t->n_bytes), 0u);
    EXPECT_EQ(0, std::memcmp(before.data(), t->data, before.size())) << "a released page must read back from the file";
    // Outside the file's bytes, nothing is released.
    EXPECT_EQ((*file)->release_pages(before.data(), before.size()), 0u);
}

}  // namespace
}  // namespace kvrag::model
