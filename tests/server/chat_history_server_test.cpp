// A long chat on a small context never fails: `kvrag serve --ctx 256` with a client that
// resends its whole history every turn, as OpenAI clients do (the seeds' second failure).
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "server_suite.h"

namespace kvrag {
namespace {

using json = nlohmann::json;
using testing::get;
using testing::post;
using testing::Reply;
using testing::ServerProcess;

class ChatHistoryServerTest : public testing::ServerSuite<ChatHistoryServerTest> {
protected:
    static void SetUpTestSuite() {
        make_suite_model("kvrag-chat-history", "chat.gguf", {"--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ff", "128"});
    }
};

json chat_body(const json& messages, const char* history = nullptr) {
    json b{{"messages", messages}, {"temperature", 0}};
    if (history) b["chat_history"] = history;
    return b;
}

TEST_F(ChatHistoryServerTest, FiftyTurnsOnA256TokenContextAllAnswer) {
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model(), "--ctx", "256", "-t", "1"}, path("fifty.log"))) << srv.log();
    const int port = srv.port();
    json messages = json::array({json{{"role", "system"}, {"content", "You are a helpful assistant."}}});
    int dropped_turns = 0;
    int last_dropped = 0;
    for (int turn = 0; turn < 50; ++turn) {
        messages.push_back(json{{"role", "user"}, {"content", "Question number " + std::to_string(turn) + ": what happens next in the story?"}});
        const Reply r = post(port, "/v1/chat/completions", chat_body(messages).dump());
        ASSERT_EQ(r.status, 200) << "turn " << turn << ": " << r.body;
        const json j = r.j();
        // Every turn had room to answer: the default budget is min(256, 256 / 4) = 64 tokens.
        const int completion = j["usage"]["completion_tokens"];
        EXPECT_GE(completion, 1) << "turn " << turn;
        EXPECT_LE(j["usage"]["prompt_tokens"].get<int>() + 64, 256) << "turn " << turn;
        const std::string finish = j["choices"][0]["finish_reason"];
        EXPECT_TRUE(finish == "stop" || (finish == "length" && completion == 64)) << "turn " << turn << ": " << finish << " after " << completion;
        const int dropped = j["kvrag"]["messages_dropped"];
        EXPECT_EQ(r.headers.find("X-Kvrag-Messages-Dropped")->second, std::to_string(dropped));
        EXPECT_EQ(dropped % 2, 0) << "whole turns are dropped";
        if (dropped > 0) ++dropped_turns;
        last_dropped = dropped;
        messages.push_back(json{{"role", "assistant"}, {"content", j["choices"][0]["message"]["content"]}});
    }
    EXPECT_GT(dropped_turns, 30) << "a 50-turn chat outgrows 256 tokens early";
    EXPECT_GT(last_dropped, 40);
    // Every request's cells came back.
    EXPECT_EQ(get(port, "/v1/kv").j()["cache"]["cells_used"], 0);

    messages.push_back(json{{"role", "user"}, {"content", "One more question?"}});
    // chat_history "error" refuses with the true numbers (and no invented max_tokens).
    const Reply e = post(port, "/v1/chat/completions", chat_body(messages, "error").dump());
    EXPECT_EQ(e.status, 400) << e.body;
    EXPECT_NE(e.body.find("prompt tokens + the default answer budget 64"), std::string::npos) << e.body;
    EXPECT_NE(e.body.find("> context 256"), std::string::npos) << e.body;
    EXPECT_EQ(e.body.find("lower max_tokens"), std::string::npos) << e.body;
    // summarize: the dropped turns become one summary message the model writes.
    const Reply s = post(port, "/v1/chat/completions", chat_body(messages, "summarize").dump());
    ASSERT_EQ(s.status, 200) << s.body;
    EXPECT_TRUE(s.j()["kvrag"]["history_summarized"].get<bool>()) << s.body;
    EXPECT_GT(s.j()["kvrag"]["messages_dropped"].get<int>(), 0);
    const Reply bad = post(port, "/v1/chat/completions", chat_body(messages, "forget").dump());
    EXPECT_EQ(bad.status, 400);
    EXPECT_EQ(bad.j()["error"]["param"], "chat_history");
    EXPECT_EQ(get(port, "/v1/kv").j()["cache"]["cells_used"], 0);
    EXPECT_EQ(srv.stop(), 0) << srv.log();
}

TEST_F(ChatHistoryServerTest, ServerWideErrorPolicy) {
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model(), "--ctx", "128", "--chat-history", "error", "-t", "1"}, path("error.log"))) << srv.log();
    json messages = json::array();
    for (int i = 0; i < 20; ++i) {
        messages.push_back(json{{"role", "user"}, {"content", "a fairly long message number " + std::to_string(i)}});
        messages.push_back(json{{"role", "assistant"}, {"content", "a fairly long answer number " + std::to_string(i)}});
    }
    messages.push_back(json{{"role", "user"}, {"content", "and now?"}});
    const Reply e = post(srv.port(), "/v1/chat/completions", chat_body(messages).dump());
    EXPECT_EQ(e.status, 400) << e.body;
    // The request's own field overrides the server's policy.
    EXPECT_EQ(post(srv.port(), "/v1/chat/completions", chat_body(messages, "drop").dump()).status, 200);
    EXPECT_EQ(srv.stop(), 0) << srv.log();
}

}  // namespace
}  // namespace kvrag
