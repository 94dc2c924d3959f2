// Memory::search with injected hooks over SQLite :memory: (no model): the embeddings and the
// reranker are fakes, so each test decides what the vector side and the reranker believe.
//  - Hybrid: a chunk holding a rare exact query term ranks first even when the embeddings
//    favour other chunks that share the query's common words (issue 11's "Rules-Requires-Root");
//    a common-word query keeps the plain reciprocal-rank-fusion order.
//  - Rerank: the pool is rerank_candidates(limit), the order is the reranker's, and a bad
//    reranker is a typed error, never a crash.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>

#include "memory/memory.h"

namespace kvrag::memory {
namespace {

constexpr int32_t kDim = 8;

std::vector<float> unit(std::vector<float> v) {
    double n = 0;
    for (float x : v) n += double(x) * x;
    for (float& x : v) x = static_cast<float>(x / std::sqrt(n));
    return v;
}
// A vector whose cosine with e0 (the default query vector) is `cos`, the rest along axis `axis`.
std::vector<float> at_cosine(double cos, int axis) {
    std::vector<float> v(kDim, 0.0f);
    v[0] = static_cast<float>(cos);
    v[static_cast<size_t>(axis)] = static_cast<float>(std::sqrt(1.0 - cos * cos));
    return v;
}

struct Doc {
    std::string id;
    std::string text;
    std::vector<float> embedding;
};

// The corpus: three "weak vector matches" that share the common words of the exact-term
// queries and sit at the top of the vector list (cosine 0.30-0.40 with e0), the chunks that
// hold the exact terms far down it (cosine 0.00-0.05), and fillers in between.
std::vector<Doc> search_corpus(int n_fillers) {
    std::vector<Doc> d = {
        {"weak1", "The rules of the garden club: each member requires a key to the root cellar. What does the club do in a package deal?", at_cosine(0.40, 1)},
        {"weak2", "Tree root growth requires water; the rules of pruning matter. The error in the cache file was a build error.", at_cosine(0.35, 2)},
        {"weak3", "Root vegetables: the rules for storing them require a cool cellar. What is the best cellar temperature for vegetables?", at_cosine(0.30, 3)},
        {"rrr", "Setting Rules-Requires-Root: no in debian/control lets a package build without fakeroot.", at_cosine(0.00, 4)},
        {"e5002", "Error E5002 means max_tokens exceeds the context of the model.", at_cosine(0.02, 5)},
        {"kvfile", "The block pool lives in kv_cache.cpp next to the prefix index.", at_cosine(0.03, 6)},
        {"cve", "CVE-2024-3094 is the xz backdoor; the details were published in 2024.", at_cosine(0.04, 7)},
        {"quist", "The cartographer Margarethe Quist drew the first survey of the delta.", at_cosine(0.05, 4)},
    };
    // "2024" in five chunks: more than rare_term_max_chunks() allows in a small store, so it
    // is a common term and never an anchor.
    for (int i = 0; i < 4; ++i) d.push_back({"y2024_" + std::to_string(i), "Report " + std::to_string(i) + " of 2024 on water and root systems.", at_cosine(0.2 - 0.01 * i, 1 + i % 7)});
    for (int i = 0; i < n_fillers; ++i) {
        d.push_back({"filler" + std::to_string(i), "Filler paragraph number " + std::to_string(i) + std::string(static_cast<size_t>(i % 5), '!') + " about weather and tides.",
                     at_cosine(0.25 - 0.002 * i, 1 + i % 7)});
    }
    return d;
}

struct SearchFixture {
    std::unique_ptr<Memory> mem;
    std::map<std::string, std::vector<float>> query_vectors;  // query -> embedding; default e0
    int n_rerank_calls = 0;
    size_t last_rerank_docs = 0;
};

std::unique_ptr<SearchFixture> make(int n_fillers = 6, RerankFn rerank = nullptr) {
    auto f = std::make_unique<SearchFixture>();
    auto st = Store::open(":memory:");
    EXPECT_TRUE(st.ok());
    std::shared_ptr<Store> store(std::move(*st));
    const EmbeddingModelInfo model{"fake", "size:0 sha256:fake", kDim};
    EXPECT_TRUE(store->ensure_index("default", model).ok());
    for (const auto& doc : search_corpus(n_fillers)) {
        DocumentInput in;
        in.index = "default";
        in.doc_id = doc.id;
        in.name = doc.id + ".txt";
        in.content_hash = doc.id;
        in.chunks.push_back(ChunkInput{0, doc.text, 20, unit(doc.embedding)});
        EXPECT_TRUE(store->write_document(in).ok());
    }
    ModelHooks hooks;
    hooks.embed_model = model;
    SearchFixture* raw = f.get();
    hooks.embed = [raw](std::string_view text) -> Result<std::vector<float>> {
        auto it = raw->query_vectors.find(std::string(text));
        if (it != raw->query_vectors.end()) return unit(it->second);
        std::vector<float> e0(kDim, 0.0f);
        e0[0] = 1.0f;
        return e0;
    };
    if (rerank) {
        hooks.rerank = [raw, rerank](std::string_view q, const std::vector<std::string_view>& docs) {
            ++raw->n_rerank_calls;
            raw->last_rerank_docs = docs.size();
            return rerank(q, docs);
        };
    }
    f->mem = std::make_unique<Memory>(store, std::move(hooks));
    return f;
}

SearchOptions mode(SearchMode m, int32_t limit = 5) {
    SearchOptions o;
    o.mode = m;
    o.limit = limit;
    return o;
}

TEST(MemorySearch, RareExactTermRanksFirstInHybrid) {
    auto f = make();
    struct Case { const char* query; const char* doc; };
    for (const Case& c : {Case{"Rules-Requires-Root", "rrr"}, Case{"what does Rules-Requires-Root do in a package?", "rrr"},
                          Case{"what is error E5002", "e5002"}, Case{"where is kv_cache.cpp in the cache code", "kvfile"},
                          Case{"the CVE-2024-3094 details", "cve"}, Case{"who was Margarethe Quist", "quist"}}) {
        // The embeddings favour weak1-3: the exact-term chunk is near the bottom of the vector list.
        auto v = f->mem->search(c.query, mode(SearchMode::vector, 50));
        ASSERT_TRUE(v.ok()) << v.error().what();
        ASSERT_GE(v->hits.size(), 4u);
        EXPECT_EQ(v->hits[0].chunk.doc_id, "weak1") << c.query;
        for (size_t i = 0; i < 3; ++i) EXPECT_NE(v->hits[i].chunk.doc_id, c.doc) << c.query;

        auto h = f->mem->search(c.query, mode(SearchMode::hybrid));
        ASSERT_TRUE(h.ok()) << h.error().what();
        ASSERT_FALSE(h->hits.empty()) << c.query;
        EXPECT_EQ(h->hits[0].chunk.doc_id, c.doc) << c.query;
        EXPECT_GE(h->hits[0].n_exact, 1) << c.query;
        EXPECT_GT(h->hits[0].vector_rank, 3) << c.query;  // the vector side ranked it weakly
        for (size_t i = 1; i < h->hits.size(); ++i) {
            EXPECT_NE(h->hits[i].chunk.doc_id, c.doc);
            EXPECT_LE(h->hits[i].n_exact, h->hits[i - 1].n_exact);
        }
    }
}

TEST(MemorySearch, CommonWordQueryKeepsFusionOrder) {
    auto f = make();
    // No exact term: every word is lower-case (or the sentence's first) and "2024", the one
    // number, is in five chunks, above the rare limit of this 18-chunk store.
    const std::string q = "Storing root vegetables in a cool cellar in 2024";
    f->query_vectors[q] = at_cosine(0.5, 3);  // the embeddings agree with BM25 on weak3
    auto h = f->mem->search(q, mode(SearchMode::hybrid, 10));
    ASSERT_TRUE(h.ok()) << h.error().what();
    ASSERT_GE(h->hits.size(), 5u);
    EXPECT_EQ(h->hits[0].chunk.doc_id, "weak3");
    EXPECT_EQ(h->hits[0].vector_rank, 1);
    EXPECT_EQ(h->hits[0].lexical_rank, 1);
    for (size_t i = 0; i < h->hits.size(); ++i) {
        EXPECT_EQ(h->hits[i].n_exact, 0) << h->hits[i].chunk.doc_id;
        if (i > 0) {
            EXPECT_LE(h->hits[i].score, h->hits[i - 1].score);  // plain RRF order
        }
        // each score is the RRF sum of its two ranks
        double rrf = 0;
        if (h->hits[i].vector_rank) rrf += 1.0 / (60.0 + h->hits[i].vector_rank);
        if (h->hits[i].lexical_rank) rrf += 1.0 / (60.0 + h->hits[i].lexical_rank);
        EXPECT_NEAR(h->hits[i].score, rrf, 1e-12);
    }
    // A chunk in both lists outranks one that is only in the vector list.
    size_t first_vector_only = h->hits.size(), last_both = 0;
    for (size_t i = 0; i < h->hits.size(); ++i) {
        if (h->hits[i].lexical_rank == 0 && first_vector_only == h->hits.size()) first_vector_only = i;
        if (h->hits[i].lexical_rank && h->hits[i].vector_rank && h->hits[i].lexical_rank <= 3 && h->hits[i].vector_rank <= 3) last_both = i;
    }
    EXPECT_LT(last_both, first_vector_only);
}

TEST(MemorySearch, ExactTermsRespectFiltersAndMinRelevance) {
    auto f = make();
    SearchOptions o = mode(SearchMode::hybrid);
    o.filter.doc_id = "weak2";
    auto h = f->mem->search("Rules-Requires-Root", o);
    ASSERT_TRUE(h.ok());
    for (const auto& hit : h->hits) EXPECT_EQ(hit.chunk.doc_id, "weak2");
    SearchOptions strict = mode(SearchMode::hybrid);
    strict.min_relevance = 0.2;  // rrr's cosine is 0: filtered however exact its match
    h = f->mem->search("Rules-Requires-Root", strict);
    ASSERT_TRUE(h.ok());
    for (const auto& hit : h->hits) EXPECT_NE(hit.chunk.doc_id, "rrr");
    // Lexical mode stays pure BM25 (no exact-term tier); it finds the chunk first anyway.
    auto l = f->mem->search("Rules-Requires-Root", mode(SearchMode::lexical));
    ASSERT_TRUE(l.ok());
    EXPECT_EQ(l->hits.at(0).chunk.doc_id, "rrr");
    EXPECT_EQ(l->hits.at(0).n_exact, 0);
}

// Longer text = better: an order unrelated to fusion, so the test sees the reranker's hand.
Result<std::vector<float>> by_length(std::string_view, const std::vector<std::string_view>& docs) {
    std::vector<float> s;
    for (auto d : docs) s.push_back(static_cast<float>(d.size()));
    return s;
}

TEST(MemorySearch, RerankScoresThePoolAndKeepsTheBest) {
    auto f = make(40, by_length);  // 52 chunks
    for (int32_t limit : {1, 2, 10}) {
        const int calls = f->n_rerank_calls;
        auto r = f->mem->search("water and tides", mode(SearchMode::hybrid, limit));
        ASSERT_TRUE(r.ok()) << r.error().what();
        EXPECT_EQ(f->n_rerank_calls, calls + 1);
        EXPECT_EQ(f->last_rerank_docs, static_cast<size_t>(rerank_candidates(limit)));  // max(4 x limit, 20)
        EXPECT_EQ(r->n_reranked, rerank_candidates(limit));
        ASSERT_EQ(r->hits.size(), static_cast<size_t>(limit));
        for (size_t i = 0; i < r->hits.size(); ++i) {
            EXPECT_TRUE(r->hits[i].reranked);
            EXPECT_EQ(r->hits[i].rerank_score, static_cast<double>(r->hits[i].chunk.text.size()));
            if (i > 0) {
                EXPECT_LE(r->hits[i].rerank_score, r->hits[i - 1].rerank_score);
            }
        }
    }
    // The pool is what fusion ranked first: the reranked top 2 are the longest of the
    // un-reranked top 20, not of the whole store.
    SearchOptions plain = mode(SearchMode::hybrid, 20);
    plain.rerank = false;
    const int calls = f->n_rerank_calls;
    auto pool = f->mem->search("water and tides", plain);
    ASSERT_TRUE(pool.ok());
    EXPECT_EQ(f->n_rerank_calls, calls);  // disabled per request
    for (const auto& h : pool->hits) EXPECT_FALSE(h.reranked);
    std::vector<size_t> lengths;
    for (const auto& h : pool->hits) lengths.push_back(h.chunk.text.size());
    std::sort(lengths.rbegin(), lengths.rend());
    auto top2 = f->mem->search("water and tides", mode(SearchMode::hybrid, 2));
    ASSERT_TRUE(top2.ok());
    EXPECT_EQ(top2->hits[0].chunk.text.size(), lengths[0]);
    EXPECT_EQ(top2->hits[1].chunk.text.size(), lengths[1]);
    // Fewer candidates than the pool: all of them are scored.
    SearchOptions one_doc = mode(SearchMode::hybrid, 5);
    one_doc.filter.doc_id = "weak1";
    auto od = f->mem->search("water", one_doc);
    ASSERT_TRUE(od.ok());
    EXPECT_EQ(f->last_rerank_docs, 1u);
}

TEST(MemorySearch, BadRerankerIsATypedError) {
    auto wrong_count = make(6, [](std::string_view, const std::vector<std::string_view>& docs) -> Result<std::vector<float>> {
        return std::vector<float>(docs.size() - 1, 1.0f);
    });
    auto r = wrong_count->mem->search("water", mode(SearchMode::hybrid, 3));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::memory_model_mismatch);
    EXPECT_NE(r.error().what().find("E6004 the reranker returned 17 scores for 18 chunks"), std::string::npos) << r.error().what();

    auto failing = make(6, [](std::string_view, const std::vector<std::string_view>&) -> Result<std::vector<float>> {
        return Error{Errc::request_too_long, "pair of 600 tokens > context 512"};
    });
    r = failing->mem->search("water", mode(SearchMode::hybrid, 3));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), "E5002 reranking 18 chunks: pair of 600 tokens > context 512");

    // NaN scores sort last instead of corrupting the order.
    auto nan = make(6, [](std::string_view, const std::vector<std::string_view>& docs) -> Result<std::vector<float>> {
        std::vector<float> s;
        for (size_t i = 0; i < docs.size(); ++i) s.push_back(i % 2 ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(i));
        return s;
    });
    r = nan->mem->search("water", mode(SearchMode::hybrid, 18));
    ASSERT_TRUE(r.ok()) << r.error().what();
    ASSERT_EQ(r->hits.size(), 18u);
    for (size_t i = 0; i < 9; ++i) EXPECT_FALSE(std::isnan(r->hits[i].rerank_score)) << i;
    for (size_t i = 9; i < 18; ++i) EXPECT_TRUE(std::isnan(r->hits[i].rerank_score)) << i;
}

// A limit from an HTTP body may be anything: INT32_MAX gives every chunk once, with or without
// the rerank pool (whose 4 x limit would overflow 32 bits).
TEST(MemorySearch, HugeLimitIsBoundedByTheIndex) {
    for (bool with_rerank : {false, true}) {
        auto f = make(6, with_rerank ? RerankFn(by_length) : RerankFn());
        for (SearchMode m : {SearchMode::hybrid, SearchMode::vector, SearchMode::lexical}) {
            auto r = f->mem->search("Rules-Requires-Root water", mode(m, INT32_MAX));
            ASSERT_TRUE(r.ok()) << r.error().what();
            EXPECT_EQ(r->hits.size(), m == SearchMode::lexical ? 6u : 18u);  // lexical: rrr + the 5 with "water"
            EXPECT_EQ(r->n_reranked, with_rerank ? static_cast<int32_t>(r->hits.size()) : 0);
        }
    }
    EXPECT_EQ(rerank_candidates(INT32_MAX), INT32_MAX);
    EXPECT_EQ(rerank_candidates(1), kRerankMinCandidates);
}

}  // namespace
}  // namespace kvrag::memory
