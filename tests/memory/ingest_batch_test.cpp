// Ingestion through EmbedBatchFn: chunks go to the embedding hook in groups of
// kEmbedBatchChunks (an encoder packs each group into few forward passes), and the stored
// result is the same as embedding them one by one.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/engine_test_util.h"
#include "memory/memory.h"
#include "memory/memory_test_util.h"

namespace kvrag::memory {
namespace {

struct Ingested {
    std::vector<size_t> batch_sizes;
    int n_single = 0;
    std::vector<std::string> hits;
};

Ingested ingest_and_search(bool batch, const std::string& text) {
    Ingested out;
    auto m = engine::testing::load_synthetic("ingest-batch");
    auto st = Store::open(":memory:");
    EXPECT_TRUE(st.ok());
    ModelHooks h;
    h.tokenizer = m.tokenizer;
    h.embed_model = EmbeddingModelInfo{"fake", "size:0 sha256:fake", testing::kFakeEmbeddingDim};
    h.embed = [&out](std::string_view t) -> Result<std::vector<float>> {
        ++out.n_single;
        return testing::fake_embedding(t);
    };
    if (batch) {
        h.embed_batch = [&out](std::span<const std::string> texts) -> Result<std::vector<std::vector<float>>> {
            out.batch_sizes.push_back(texts.size());
            std::vector<std::vector<float>> v;
            for (const auto& t : texts) v.push_back(testing::fake_embedding(t));
            return v;
        };
    }
    Memory mem(std::shared_ptr<Store>(std::move(*st)), std::move(h), ChunkOptions{16, 0});
    IngestRequest req;
    req.name = "long.txt";
    req.bytes = text;
    auto r = mem.ingest(req);
    EXPECT_TRUE(r.ok()) << r.error().what();
    SearchOptions so;
    so.mode = SearchMode::vector;
    so.limit = 10;
    auto s = mem.search("entry number 7", so);
    EXPECT_TRUE(s.ok()) << s.error().what();
    for (const auto& hit : s->hits) out.hits.push_back(std::to_string(hit.chunk.position) + ":" + std::to_string(hit.relevance));
    return out;
}

TEST(MemoryIngest, ChunksAreEmbeddedInGroupsWithTheSameResult) {
    std::string text;
    for (int i = 0; i < 120; ++i) text += "Entry number " + std::to_string(i) + " of the keeper's log. ";
    const Ingested batched = ingest_and_search(true, text);
    const Ingested single = ingest_and_search(false, text);
    ASSERT_GE(batched.batch_sizes.size(), 2u) << "a long document spans several groups";
    size_t total = 0;
    for (size_t i = 0; i < batched.batch_sizes.size(); ++i) {
        EXPECT_LE(batched.batch_sizes[i], kEmbedBatchChunks);
        if (i + 1 < batched.batch_sizes.size()) {
            EXPECT_EQ(batched.batch_sizes[i], kEmbedBatchChunks);
        }
        total += batched.batch_sizes[i];
    }
    EXPECT_EQ(batched.n_single, 1);  // only the search query goes through EmbedFn
    EXPECT_EQ(static_cast<int>(total) + 1, single.n_single);
    EXPECT_EQ(batched.hits, single.hits);
}

}  // namespace
}  // namespace kvrag::memory
