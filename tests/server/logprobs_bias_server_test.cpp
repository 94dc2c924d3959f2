// logprobs come from the distribution that was sampled, after logit_bias and penalties (issue
// 14, point 3), through the real `kvrag serve` on a synthetic model: a bias of b on token X moves X's logprob
// against every other listed token by exactly b (greedy reports log_softmax(logits) at T = 1,
// so lp(X) - lp(Y) = l(X) + b - l(Y)), and the greedy pick under a large bias is X.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "server/server_process.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::post;
using testing::Reply;
using testing::ServerProcess;

TEST(LogprobsBiasServer, ABiasMovesTheReportedLogprobByExactlyItsSize) {
    const fs::path dir = fs::temp_directory_path() / ("kvrag-logprobs-bias-" + std::to_string(getpid()));
    fs::create_directories(dir);
    const std::string model = (dir / "tiny.gguf").string();
    ASSERT_EQ(testing::run_kvrag_sync({"make-model", "-o", model, "--type", "f32"}), 0);
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model, "-t", "1"}, (dir / "server.log").string())) << srv.log();

    // X: a token of an ordinary word, by id and text.
    const Reply t = post(srv.port(), "/tokenize", R"({"content": "cat", "with_pieces": true})");
    ASSERT_EQ(t.status, 200) << t.body;
    const json x = t.j()["tokens"].back();
    ASSERT_TRUE(x["piece"].is_string()) << t.body;
    const int32_t x_id = x["id"];
    const std::string x_text = x["piece"];

    // The first token's top 20 logprobs with bias 0, 4 and 6 on X.
    const auto top = [&](double bias) {
        json body{{"prompt", "Once upon a time"}, {"max_tokens", 1}, {"temperature", 0}, {"ignore_eos", true}, {"logprobs", 20}};
        if (bias != 0.0) body["logit_bias"] = json{{std::to_string(x_id), bias}};
        const Reply r = post(srv.port(), "/v1/completions", body.dump());
        EXPECT_EQ(r.status, 200) << r.body;
        return r.j()["choices"][0]["logprobs"];
    };
    const json a = top(0.0), b = top(4.0), c = top(6.0);
    const json& tb = b["top_logprobs"][0];
    const json& tc = c["top_logprobs"][0];
    ASSERT_TRUE(tb.contains(x_text) && tc.contains(x_text)) << b.dump() << c.dump();
    // Under +6 the greedy pick is X, and its reported logprob is its entry in the list.
    EXPECT_EQ(c["tokens"][0], x_text) << c.dump();
    EXPECT_DOUBLE_EQ(c["token_logprobs"][0].get<double>(), tc[x_text].get<double>());
    int n_compared = 0;
    for (const auto& [y, lp_b] : tb.items()) {
        if (y == x_text || !tc.contains(y)) continue;
        const double gap_b = tb[x_text].get<double>() - lp_b.get<double>();
        const double gap_c = tc[x_text].get<double>() - tc[y].get<double>();
        EXPECT_NEAR(gap_c - gap_b, 2.0, 2e-3) << "X '" << x_text << "' against '" << y << "'";
        const json& ta = a["top_logprobs"][0];
        if (ta.contains(x_text) && ta.contains(y)) {
            EXPECT_NEAR(gap_b - (ta[x_text].get<double>() - ta[y].get<double>()), 4.0, 2e-3) << "X '" << x_text << "' against '" << y << "'";
        }
        ++n_compared;
    }
    EXPECT_GE(n_compared, 5) << b.dump() << c.dump();
    EXPECT_EQ(srv.stop(), 0) << srv.log();
    fs::remove_all(dir);
}

// Penalties too: presence_penalty p lowers every token already in the window (the prompt's
// count) by p, so the reported gap between a prompt token X and a token Y outside the prompt
// moves by exactly -p. X carries a bias of +6 so that it is in the top list either way.
TEST(LogprobsBiasServer, APresencePenaltyMovesTheReportedLogprobByExactlyItsSize) {
    const fs::path dir = fs::temp_directory_path() / ("kvrag-logprobs-penalty-" + std::to_string(getpid()));
    fs::create_directories(dir);
    const std::string model = (dir / "tiny.gguf").string();
    ASSERT_EQ(testing::run_kvrag_sync({"make-model", "-o", model, "--type", "f32"}), 0);
    ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model, "-t", "1"}, (dir / "server.log").string())) << srv.log();

    const std::string prompt = "Once upon a time there was a cat";
    const Reply t = post(srv.port(), "/tokenize", json{{"content", prompt}, {"with_pieces", true}}.dump());
    ASSERT_EQ(t.status, 200) << t.body;
    // The parsed reply is kept: a range-for over t.j()["tokens"] would walk a destroyed temporary.
    const json tokens = t.j()["tokens"];
    std::set<std::string> prompt_pieces;
    for (const json& tok : tokens) prompt_pieces.insert(tok["piece"].get<std::string>());
    const json x = tokens.back();
    const int32_t x_id = x["id"];
    const std::string x_text = x["piece"];

    const auto top = [&](double presence) {
        json body{{"prompt", prompt},         {"max_tokens", 1},
                  {"temperature", 0},         {"ignore_eos", true},
                  {"logprobs", 20},           {"logit_bias", json{{std::to_string(x_id), 6.0}}},
                  {"presence_penalty", presence}};
        const Reply r = post(srv.port(), "/v1/completions", body.dump());
        EXPECT_EQ(r.status, 200) << r.body;
        return r.j()["choices"][0]["logprobs"]["top_logprobs"][0];
    };
    const json plain = top(0.0), penalised = top(1.5);
    ASSERT_TRUE(plain.contains(x_text) && penalised.contains(x_text)) << plain.dump() << penalised.dump();
    int n_compared = 0;
    for (const auto& [y, lp] : plain.items()) {
        if (y == x_text || prompt_pieces.count(y) != 0 || !penalised.contains(y)) continue;
        const double gap_plain = plain[x_text].get<double>() - lp.get<double>();
        const double gap_penalised = penalised[x_text].get<double>() - penalised[y].get<double>();
        EXPECT_NEAR(gap_penalised - gap_plain, -1.5, 2e-3) << "X '" << x_text << "' against '" << y << "'";
        ++n_compared;
    }
    EXPECT_GE(n_compared, 5) << plain.dump() << penalised.dump();
    EXPECT_EQ(srv.stop(), 0) << srv.log();
    fs::remove_all(dir);
}

}  // namespace
}  // namespace kvrag
