// Fitting a chat into its context (chat_history.h) with a fake renderer: each message costs
// 2 tokens of framing plus one per word of its content.
#include "server/chat_history.h"

#include <gtest/gtest.h>

#include <sstream>

namespace kvrag::server {
namespace {

using chat::Message;

int render_count = 0;

Result<std::vector<int32_t>> render(std::span<const Message> msgs) {
    ++render_count;
    std::vector<int32_t> out;
    for (const auto& m : msgs) {
        out.push_back(1);
        std::istringstream in(m.content);
        std::string w;
        while (in >> w) out.push_back(7);
        out.push_back(2);
    }
    return out;
}

std::string words(int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += "w ";
    return s;
}

std::vector<Message> chat_of(int turns, int words_per_message) {
    std::vector<Message> m = {{"system", words(5)}};
    for (int t = 0; t < turns; ++t) {
        m.push_back({"user", "u" + std::to_string(t) + " " + words(words_per_message - 1)});
        m.push_back({"assistant", "a" + std::to_string(t) + " " + words(words_per_message - 1)});
    }
    m.push_back({"user", "last " + words(words_per_message - 1)});
    return m;
}

TEST(ChatHistory, ParsesPolicies) {
    EXPECT_EQ(*parse_history_policy("drop"), HistoryPolicy::drop);
    EXPECT_EQ(*parse_history_policy("summarize"), HistoryPolicy::summarize);
    EXPECT_EQ(*parse_history_policy("error"), HistoryPolicy::error);
    auto bad = parse_history_policy("truncate");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("drop, summarize, error"), std::string::npos);
}

TEST(ChatHistory, DefaultBudgetIsAQuarterOfTheContextAtMost) {
    EXPECT_EQ(default_answer_budget(256, 256), 64);
    EXPECT_EQ(default_answer_budget(32, 256), 32);
    EXPECT_EQ(default_answer_budget(256, 2), 1);
}

TEST(ChatHistory, AConversationThatFitsIsUntouched) {
    const auto msgs = chat_of(3, 5);  // 8 messages x 7 tokens = 56
    auto fit = fit_history(msgs, 10, "max_tokens 10", 100, HistoryPolicy::drop, render);
    ASSERT_TRUE(fit.ok()) << fit.error().what();
    EXPECT_EQ(fit->kept.size(), msgs.size());
    EXPECT_TRUE(fit->dropped.empty());
    EXPECT_EQ(fit->prompt.size(), 56u);
}

TEST(ChatHistory, DropRemovesTheOldestWholeTurnsAndKeepsSystemAndLastUser) {
    const auto msgs = chat_of(10, 5);  // system + 10 turns + last user = 22 messages x 7 = 154 tokens
    auto fit = fit_history(msgs, 20, "max_tokens 20", 100, HistoryPolicy::drop, render);
    ASSERT_TRUE(fit.ok()) << fit.error().what();
    // 100 - 20 = 80 tokens: system (7) + last user (7) + 4 turns (56) = 70; 5 turns would be 84.
    ASSERT_EQ(fit->kept.size(), 10u);
    EXPECT_EQ(fit->kept.front().role, "system");
    EXPECT_EQ(fit->kept[1].content.substr(0, 2), "u6");  // turns 0-5 dropped, whole
    EXPECT_EQ(fit->kept.back().content.substr(0, 4), "last");
    EXPECT_EQ(fit->dropped.size(), 12u);
    EXPECT_EQ(fit->dropped.front().content.substr(0, 2), "u0");
    EXPECT_LE(fit->prompt.size() + 20, 100u);
    // One more turn would not have fitted: the fewest drops that fit.
    EXPECT_GT(fit->prompt.size() + 14 + 20, 100u);
}

TEST(ChatHistory, ALongHistoryTakesFewRenders) {
    const auto msgs = chat_of(2000, 5);
    render_count = 0;
    auto fit = fit_history(msgs, 20, "max_tokens 20", 200, HistoryPolicy::drop, render);
    ASSERT_TRUE(fit.ok()) << fit.error().what();
    EXPECT_LE(render_count, 16);  // bisection, not one render per dropped turn
    EXPECT_LE(fit->prompt.size() + 20, 200u);
}

TEST(ChatHistory, ErrorPolicyAndUnfittableTailGiveTheTrueNumbers) {
    const auto msgs = chat_of(10, 5);
    auto e = fit_history(msgs, 20, "max_tokens 20", 100, HistoryPolicy::error, render);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code, Errc::request_too_long);
    EXPECT_NE(e.error().message.find("154 prompt tokens + max_tokens 20 = 174 > context 100"), std::string::npos) << e.error().message;

    std::vector<Message> big = {{"system", words(50)}, {"user", "a"}, {"assistant", "b"}, {"user", words(50)}};
    auto t = fit_history(big, 20, "the default answer budget 20", 100, HistoryPolicy::drop, render);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().code, Errc::request_too_long);
    EXPECT_NE(t.error().message.find("104 prompt tokens + the default answer budget 20 = 124 > context 100"), std::string::npos)
        << t.error().message;
}

TEST(ChatHistory, LeadingAssistantMessagesAndNoSystemMessage) {
    std::vector<Message> m = {{"assistant", words(20)}, {"user", words(20)}, {"assistant", words(20)}, {"user", words(5)}};
    auto fit = fit_history(m, 10, "max_tokens 10", 40, HistoryPolicy::drop, render);
    ASSERT_TRUE(fit.ok()) << fit.error().what();
    ASSERT_EQ(fit->kept.size(), 1u);
    EXPECT_EQ(fit->kept[0].role, "user");
    EXPECT_EQ(fit->dropped.size(), 3u);
}

TEST(ChatHistory, SummaryRequestKeepsTheNewestText) {
    std::vector<Message> dropped = {{"user", "first question about cats"}, {"assistant", "an answer about dogs"}};
    const auto req = summary_request(dropped, 30);
    ASSERT_EQ(req.size(), 2u);
    EXPECT_EQ(req[0].role, "system");
    EXPECT_LE(req[1].content.size(), 30u);
    EXPECT_NE(req[1].content.find("dogs"), std::string::npos);
    EXPECT_EQ(summary_message("cats and dogs").content, "Summary of the earlier conversation: cats and dogs");
}

}  // namespace
}  // namespace kvrag::server
