// Unit tests of the rerank request parser and response shape (no sockets, no model).
#include "server/rerank_api.h"

#include <gtest/gtest.h>

namespace kvrag::server {
namespace {

std::optional<ApiError> parse(const char* body, RerankRequest& out) { return parse_rerank_request(json::parse(body), out); }

TEST(RerankApi, AcceptsJinaAndCohereShapes) {
    RerankRequest r;
    ASSERT_FALSE(parse(R"({"model":"bge","query":"q","documents":["a",{"text":"b"}],"top_n":1,"return_documents":true})", r));
    EXPECT_EQ(r.model, "bge");
    EXPECT_EQ(r.query, "q");
    ASSERT_EQ(r.documents.size(), 2u);
    EXPECT_EQ(r.documents[1], "b");
    EXPECT_EQ(r.top_n, 1);
    EXPECT_TRUE(r.return_documents);

    ASSERT_FALSE(parse(R"({"query":"q","documents":["a","b","c"]})", r));
    EXPECT_EQ(r.top_n, 3);  // every document by default
    EXPECT_FALSE(r.return_documents);
    ASSERT_FALSE(parse(R"({"query":"q","documents":["a","b"],"top_n":50})", r));
    EXPECT_EQ(r.top_n, 2);  // capped to the documents
}

TEST(RerankApi, RefusesBadFieldsByName) {
    RerankRequest r;
    struct Case {
        const char* body;
        const char* param;
    };
    const Case cases[] = {
        {R"({"documents":["a"]})", "query"},
        {R"({"query":"","documents":["a"]})", "query"},
        {R"({"query":3,"documents":["a"]})", "query"},
        {R"({"query":"q"})", "documents"},
        {R"({"query":"q","documents":[]})", "documents"},
        {R"({"query":"q","documents":"a"})", "documents"},
        {R"({"query":"q","documents":["a",""]})", "documents[1]"},
        {R"({"query":"q","documents":["a",7]})", "documents[1]"},
        {R"({"query":"q","documents":[{"content":"a"}]})", "documents[0].text"},
        {R"({"query":"q","documents":[{"text":"a","title":"t"}]})", "documents[0].title"},
        {R"({"query":"q","documents":["a"],"top_n":0})", "top_n"},
        {R"({"query":"q","documents":["a"],"top_n":"2"})", "top_n"},
        {R"({"query":"q","documents":["a"],"return_documents":"yes"})", "return_documents"},
        {R"({"query":"q","documents":["a"],"rank_fields":["text"]})", "rank_fields"},
        {R"({"query":"q","documents":["a"],"max_chunks_per_doc":4})", "max_chunks_per_doc"},
    };
    for (const auto& c : cases) {
        auto e = parse(c.body, r);
        ASSERT_TRUE(e) << c.body;
        EXPECT_EQ(e->status, 400) << c.body;
        EXPECT_EQ(e->param, c.param) << c.body << " -> " << e->message;
    }
    std::string many = R"({"query":"q","documents":[)";
    for (size_t i = 0; i <= kMaxRerankDocuments; ++i) many += (i ? ",\"d\"" : "\"d\"");
    many += "]}";
    auto e = parse_rerank_request(json::parse(many), r);
    ASSERT_TRUE(e);
    EXPECT_NE(e->message.find(std::to_string(kMaxRerankDocuments + 1)), std::string::npos) << e->message;
}

TEST(RerankApi, ResponseIsBestFirstWithTiesInInputOrder) {
    RerankRequest r;
    ASSERT_FALSE(parse(R"({"query":"q","documents":["a","b","c","d"],"top_n":3,"return_documents":true})", r));
    const json out = rerank_response(r, "bge-reranker", {0.5f, 2.0f, 0.5f, -1.0f}, 42);
    EXPECT_EQ(out["object"], "list");
    EXPECT_EQ(out["model"], "bge-reranker");
    ASSERT_EQ(out["results"].size(), 3u);
    EXPECT_EQ(out["results"][0]["index"], 1);
    EXPECT_EQ(out["results"][1]["index"], 0);
    EXPECT_EQ(out["results"][2]["index"], 2);
    EXPECT_FLOAT_EQ(out["results"][0]["relevance_score"].get<float>(), 2.0f);
    EXPECT_EQ(out["results"][0]["document"]["text"], "b");
    EXPECT_EQ(out["usage"]["prompt_tokens"], 42);
    EXPECT_EQ(out["usage"]["total_tokens"], 42);

    ASSERT_FALSE(parse(R"({"query":"q","documents":["a","b"]})", r));
    const json bare = rerank_response(r, "m", {1.0f, 3.0f}, 5);
    ASSERT_EQ(bare["results"].size(), 2u);
    EXPECT_FALSE(bare["results"][0].contains("document"));
}

}  // namespace
}  // namespace kvrag::server
