#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"
#include "test_paths.h"

#include <gtest/gtest.h>

#include <cstring>

namespace kvrag::gguf {
namespace {

std::vector<uint8_t> sample_file() {
    GgufWriter w;
    w.set_string("general.architecture", "llama");
    w.set_u32("llama.block_count", 2);
    w.set_i32("some.int", -7);
    w.set_u64("some.u64", 1ull << 40);
    w.set_f32("some.float", 0.5f);
    w.set_bool("some.bool", true);
    w.set_string_array("tokenizer.ggml.tokens", {"a", "bb", ""});
    w.set_f32_array("tokenizer.ggml.scores", {1.0f, -2.5f, 3.0f});
    w.set_i32_array("tokenizer.ggml.token_type", {1, 3, 6});
    std::vector<uint8_t> a(4 * 8 * 4), b(2 * 64);
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i);
    EXPECT_TRUE(w.add_tensor("a", GgmlType::F32, {8, 4}, a).ok());
    EXPECT_TRUE(w.add_tensor("b", GgmlType::F16, {64}, b).ok());
    return w.to_bytes();
}

TEST(GgufFile, RoundTripsEveryValueKindAndTensors) {
    auto r = GgufFile::from_bytes(sample_file());
    ASSERT_TRUE(r.ok()) << r.error().what();
    const GgufFile& f = **r;
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(*f.require_string("general.architecture"), "llama");
    EXPECT_EQ(*f.require_int("llama.block_count"), 2);
    EXPECT_EQ(*f.require_int("some.int"), -7);
    EXPECT_EQ(*f.require_int("some.u64"), int64_t(1) << 40);
    EXPECT_DOUBLE_EQ(*f.get_float("some.float").value(), 0.5);
    EXPECT_EQ(*f.get_bool("some.bool").value(), true);
    const ArrayValue* toks = f.get_array("tokenizer.ggml.tokens").value();
    ASSERT_NE(toks, nullptr);
    ASSERT_EQ(toks->strings.size(), 3u);
    EXPECT_EQ(toks->strings[1], "bb");
    const ArrayValue* scores = f.get_array("tokenizer.ggml.scores").value();
    EXPECT_DOUBLE_EQ(*scores->float_at(1), -2.5);
    EXPECT_FALSE(scores->float_at(3).has_value());
    EXPECT_EQ(*f.get_array("tokenizer.ggml.token_type").value()->int_at(2), 6);

    ASSERT_EQ(f.tensors().size(), 2u);
    const TensorInfo* a = f.find_tensor("a");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->ne, (std::vector<int64_t>{8, 4}));
    EXPECT_EQ(a->n_bytes, 128u);
    EXPECT_EQ(a->data[5], 5);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data) % 32, reinterpret_cast<uintptr_t>(f.tensors()[0].data) % 32);
    EXPECT_EQ(f.find_tensor("b")->offset % 32, 0u);
}

TEST(GgufFile, TypedLookupsReportMismatches) {
    auto f = GgufFile::from_bytes(sample_file()).value();
    auto r = f->get_string("llama.block_count");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::gguf_wrong_key_type);
    EXPECT_NE(r.error().message.find("uint32"), std::string::npos);
    auto m = f->require_int("llama.context_length");
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.error().code, Errc::gguf_missing_key);
    EXPECT_NE(m.error().message.find("llama.context_length"), std::string::npos);
}

// Every proper prefix of a valid file is a truncated file: each must give an error, never a
// crash or an out-of-bounds read (run under ASan in CI's sanitizer step).
TEST(GgufFile, EveryTruncationIsAnError) {
    const std::vector<uint8_t> full = sample_file();
    for (size_t n = 0; n < full.size(); ++n) {
        std::vector<uint8_t> cut(full.begin(), full.begin() + n);
        auto r = GgufFile::from_bytes(std::move(cut));
        ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes was accepted";
    }
}

void patch_u32(std::vector<uint8_t>& b, size_t at, uint32_t v) { std::memcpy(b.data() + at, &v, 4); }
void patch_u64(std::vector<uint8_t>& b, size_t at, uint64_t v) { std::memcpy(b.data() + at, &v, 8); }

TEST(GgufFile, CorruptHeadersNameTheProblem) {
    struct Case {
        const char* what;
        void (*corrupt)(std::vector<uint8_t>&);
        Errc code;
        const char* needle;
    };
    const Case cases[] = {
        {"magic", [](std::vector<uint8_t>& b) { b[0] = 'X'; }, Errc::gguf_bad_magic, "expected 0x46554747"},
        {"version 1", [](std::vector<uint8_t>& b) { patch_u32(b, 4, 1); }, Errc::gguf_bad_version, "version 1"},
        {"version 99", [](std::vector<uint8_t>& b) { patch_u32(b, 4, 99); }, Errc::gguf_bad_version, "versions 2 and 3"},
        {"huge tensor count", [](std::vector<uint8_t>& b) { patch_u64(b, 8, 1ull << 60); }, Errc::gguf_bad_tensor, "tensor count"},
        {"huge kv count", [](std::vector<uint8_t>& b) { patch_u64(b, 16, 1ull << 60); }, Errc::gguf_bad_value, "metadata count"},
        {"huge key length", [](std::vector<uint8_t>& b) { patch_u64(b, 24, 1ull << 62); }, Errc::gguf_bad_value, "claims length"},
        {"bad type tag", [](std::vector<uint8_t>& b) { patch_u32(b, 24 + 8 + 20, 77); }, Errc::gguf_bad_value, "type tag 77"},
    };
    for (const Case& c : cases) {
        std::vector<uint8_t> b = sample_file();
        c.corrupt(b);
        auto r = GgufFile::from_bytes(std::move(b), "model.gguf");
        ASSERT_FALSE(r.ok()) << c.what;
        EXPECT_EQ(r.error().code, c.code) << c.what << ": " << r.error().what();
        EXPECT_NE(r.error().message.find(c.needle), std::string::npos) << c.what << ": " << r.error().what();
        EXPECT_NE(r.error().message.find("model.gguf"), std::string::npos) << c.what;
    }
}

// Locates tensor info fields by searching for the tensor's name in the header; searching
// backwards skips equal strings in the metadata, which comes first.
size_t tensor_info_at(const std::vector<uint8_t>& b, const std::string& name) {
    for (size_t i = b.size() - 8 - name.size(); i-- > 0;) {
        uint64_t len;
        std::memcpy(&len, b.data() + i, 8);
        if (len == name.size() && std::memcmp(b.data() + i + 8, name.data(), name.size()) == 0) {
            return i + 8 + name.size();  // points at n_dims
        }
    }
    return 0;
}

TEST(GgufFile, CorruptTensorInfosNameTheProblem) {
    {  // type id that GGUF does not define
        auto b = sample_file();
        const size_t at = tensor_info_at(b, "b");  // n_dims(4) ne0(8) type(4)
        patch_u32(b, at + 4 + 8, 4);
        auto r = GgufFile::from_bytes(b);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message.find("type id 4"), std::string::npos) << r.error().what();
    }
    {  // offset not aligned
        auto b = sample_file();
        const size_t at = tensor_info_at(b, "b");
        patch_u64(b, at + 4 + 8 + 4, 129);
        auto r = GgufFile::from_bytes(b);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message.find("alignment"), std::string::npos) << r.error().what();
    }
    {  // data past the end of the file
        auto b = sample_file();
        const size_t at = tensor_info_at(b, "b");
        patch_u64(b, at + 4 + 8 + 4, 1 << 20);
        auto r = GgufFile::from_bytes(b);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().code, Errc::gguf_truncated);
        EXPECT_NE(r.error().message.find("but the file has"), std::string::npos) << r.error().what();
    }
    {  // overlapping tensors
        auto b = sample_file();
        const size_t at = tensor_info_at(b, "b");
        patch_u64(b, at + 4 + 8 + 4, 96);
        auto r = GgufFile::from_bytes(b);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message.find("overlap"), std::string::npos) << r.error().what();
    }
    {  // zero dimension
        auto b = sample_file();
        const size_t at = tensor_info_at(b, "a");
        patch_u64(b, at + 4, 0);
        auto r = GgufFile::from_bytes(b);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().code, Errc::gguf_bad_tensor);
    }
    {  // 5 dims
        auto b = sample_file();
        const size_t at = tensor_info_at(b, "a");
        patch_u32(b, at, 5);
        auto r = GgufFile::from_bytes(b);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message.find("5 dims"), std::string::npos) << r.error().what();
    }
}

TEST(GgufFile, MissingFileIsAnIoError) {
    auto r = GgufFile::open("/nonexistent/dir/model.gguf");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::gguf_io);
    EXPECT_NE(r.error().message.find("/nonexistent/dir/model.gguf"), std::string::npos);
}

TEST(GgufFile, WriterCopiesKeysFromAnotherFile) {
    auto src = GgufFile::from_bytes(sample_file()).value();
    GgufWriter w;
    w.copy_keys_with_prefix(*src, "tokenizer.");
    auto copy = GgufFile::from_bytes(w.to_bytes()).value();
    EXPECT_EQ(copy->metadata().size(), 3u);
    EXPECT_EQ(copy->get_array("tokenizer.ggml.tokens").value()->strings[0], "a");
}

TEST(GgufFile, ReadsTheSharedModelsAndVocabularies) {
    KVRAG_REQUIRE_SHARED_DATA(dir);
    for (const char* name : {"/models/stories260K.gguf", "/models/synth-tiny-f32.gguf",
                             "/vocab/ggml-vocab-llama-spm.gguf", "/vocab/ggml-vocab-gpt-2.gguf"}) {
        auto r = GgufFile::open(dir + name);
        ASSERT_TRUE(r.ok()) << r.error().what();
        EXPECT_TRUE((*r)->has("tokenizer.ggml.model")) << name;
    }
    auto m = GgufFile::open(dir + "/models/stories260K.gguf").value();
    EXPECT_EQ(*m->require_string("general.architecture"), "llama");
    EXPECT_NE(m->find_tensor("token_embd.weight"), nullptr);
}

}  // namespace
}  // namespace kvrag::gguf
