#include "core/ggml_type.h"
#include "core/error.h"

#include <gtest/gtest.h>

namespace kvrag {
namespace {

TEST(GgmlType, BlockGeometryMatchesGguf) {
    // Bytes per block follow from the block layouts: e.g. Q4_0 = fp16 scale + 32 nibbles.
    EXPECT_EQ(ggml_type_traits(GgmlType::Q4_0).type_size, 2u + 32 / 2);
    EXPECT_EQ(ggml_type_traits(GgmlType::Q8_0).type_size, 2u + 32);
    EXPECT_EQ(ggml_type_traits(GgmlType::Q4_K).type_size, 2u * 2 + 12 + 256 / 2);
    EXPECT_EQ(ggml_type_traits(GgmlType::Q6_K).type_size, 256u / 2 + 256 / 4 + 256 / 16 + 2);
    EXPECT_EQ(ggml_row_size(GgmlType::Q4_0, 4096), 4096u / 32 * 18);
}

TEST(GgmlType, UnknownIdsAreRejected) {
    EXPECT_FALSE(ggml_type_traits(4u).has_value());  // removed Q4_2
    EXPECT_FALSE(ggml_type_traits(9999u).has_value());
    ASSERT_TRUE(ggml_type_traits(30u).has_value());
    EXPECT_EQ(ggml_type_traits(30u)->name, "BF16");
}

TEST(GgmlType, ParsesNames) {
    EXPECT_EQ(ggml_type_from_name("q4_k"), GgmlType::Q4_K);
    EXPECT_EQ(ggml_type_from_name("F16"), GgmlType::F16);
    EXPECT_FALSE(ggml_type_from_name("q9_9").has_value());
}

TEST(Error, MessageCarriesCode) {
    Error e{Errc::gguf_truncated, "tensor 'x' ends at 100 > file size 50"};
    EXPECT_EQ(e.what(), "E1004 tensor 'x' ends at 100 > file size 50");
    Result<int> r = catch_errors([]() -> int { throw_error(Errc::gguf_bad_magic, "bad"); });
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::gguf_bad_magic);
}

}  // namespace
}  // namespace kvrag
