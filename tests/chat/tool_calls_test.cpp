#include "chat/tool_calls.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace kvrag::chat {
namespace {

using json = nlohmann::json;

std::vector<ToolFunction> weather_tools() {
    return {ToolFunction{"get_weather", "Weather for a city", R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})"}};
}

ChatTemplate tmpl(const char* name) {
    auto t = ChatTemplate::by_name(name);
    EXPECT_TRUE(t.ok());
    return *t;
}

std::vector<Message> round_trip() {
    Message call{"assistant", "", {ToolCall{"call_1", "get_weather", R"({"city":"Oslo"})"}}, {}};
    Message result{"tool", R"({"temp_c":3})", {}, "call_1"};
    return {Message{"system", "Be brief.", {}, {}}, Message{"user", "Weather in Oslo?", {}, {}}, call, result};
}

TEST(ToolCalls, FormatPerTemplate) {
    EXPECT_EQ(tool_format(tmpl("chatml")), ToolFormat::hermes);
    EXPECT_EQ(tool_format(tmpl("llama3")), ToolFormat::llama3);
    EXPECT_EQ(tool_format(tmpl("mistral-v3")), ToolFormat::mistral);
    EXPECT_EQ(tool_format(tmpl("mistral-v7-tekken")), ToolFormat::mistral);
    EXPECT_EQ(tool_format(tmpl("gemma")), ToolFormat::hermes);  // the ChatML-style fallback
}

TEST(ToolCalls, HermesRendering) {
    auto text = render_with_tools(tmpl("chatml"), round_trip(), weather_tools(), true);
    ASSERT_TRUE(text.ok()) << text.error().what();
    const std::string& t = *text;
    // The tools sit in the system turn after its own text, one JSON object a line.
    EXPECT_EQ(t.rfind("<|im_start|>system\nBe brief.\n\n# Tools", 0), 0u) << t;
    EXPECT_NE(t.find("<tools>\n{\"type\":\"function\",\"function\":{\"name\":\"get_weather\""), std::string::npos) << t;
    EXPECT_NE(t.find("<|im_start|>assistant\n<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}\n</tool_call><|im_end|>"), std::string::npos) << t;
    EXPECT_NE(t.find("<|im_start|>user\n<tool_response>\n{\"temp_c\":3}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"), std::string::npos) << t;
}

TEST(ToolCalls, Llama3Rendering) {
    auto text = render_with_tools(tmpl("llama3"), round_trip(), weather_tools(), true);
    ASSERT_TRUE(text.ok()) << text.error().what();
    const std::string& t = *text;
    EXPECT_NE(t.find("<|start_header_id|>system<|end_header_id|>\n\nBe brief.\n\nYou have access to the following functions"), std::string::npos) << t;
    EXPECT_NE(t.find("<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\":\"get_weather\",\"parameters\":{\"city\":\"Oslo\"}}<|eot_id|>"), std::string::npos) << t;
    EXPECT_NE(t.find("<|start_header_id|>ipython<|end_header_id|>\n\n{\"temp_c\":3}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"), std::string::npos) << t;
}

TEST(ToolCalls, MistralRendering) {
    auto text = render_with_tools(tmpl("mistral-v3"), round_trip(), weather_tools(), true);
    ASSERT_TRUE(text.ok()) << text.error().what();
    EXPECT_EQ(*text,
              "[AVAILABLE_TOOLS] [{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather for a city\","
              "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}}][/AVAILABLE_TOOLS]"
              "[INST] Be brief.\n\nWeather in Oslo?[/INST]"
              "[TOOL_CALLS] [{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"},\"id\":\"call_1\"}]</s>"
              "[TOOL_RESULTS] {\"content\":\"{\\\"temp_c\\\":3}\",\"call_id\":\"call_1\"}[/TOOL_RESULTS]");
    auto tekken = render_with_tools(tmpl("mistral-v7-tekken"), round_trip(), weather_tools(), true);
    ASSERT_TRUE(tekken.ok());
    EXPECT_EQ(tekken->rfind("[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][AVAILABLE_TOOLS][{", 0), 0u) << *tekken;
}

TEST(ToolCalls, ToolResultWithoutACallIsRefused) {
    std::vector<Message> msgs = {Message{"user", "x", {}, {}}, Message{"tool", "1", {}, "call_9"}};
    auto text = render_with_tools(tmpl("chatml"), msgs, weather_tools(), true);
    ASSERT_FALSE(text.ok());
    EXPECT_NE(text.error().message.find("messages[1] has role 'tool'"), std::string::npos) << text.error().message;
}

TEST(ToolCalls, ParsesEachFormat) {
    const auto tools = weather_tools();
    auto h = parse_tool_calls(ToolFormat::hermes, "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>", tools);
    ASSERT_EQ(h.calls.size(), 1u);
    EXPECT_EQ(h.calls[0].name, "get_weather");
    EXPECT_EQ(h.calls[0].arguments, R"({"city":"Oslo"})");
    EXPECT_EQ(h.content, "Let me look.");
    // Two calls; an unknown function stays in the text.
    auto two = parse_tool_calls(ToolFormat::hermes,
                                "<tool_call>{\"name\":\"get_weather\",\"arguments\":{\"city\":\"A\"}}</tool_call><tool_call>{\"name\":\"rm\",\"arguments\":{}}</tool_call>", tools);
    ASSERT_EQ(two.calls.size(), 1u);
    EXPECT_NE(two.content.find("\"rm\""), std::string::npos);

    auto l = parse_tool_calls(ToolFormat::llama3, " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}", tools);
    ASSERT_EQ(l.calls.size(), 1u);
    EXPECT_EQ(l.calls[0].arguments, R"({"city":"Rome"})");
    auto plain = parse_tool_calls(ToolFormat::llama3, "It is sunny.", tools);
    EXPECT_TRUE(plain.calls.empty());
    EXPECT_EQ(plain.content, "It is sunny.");

    auto m = parse_tool_calls(ToolFormat::mistral, "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Graz\"}}]", tools);
    ASSERT_EQ(m.calls.size(), 2u);
    EXPECT_EQ(m.calls[1].arguments, R"({"city":"Graz"})");
    EXPECT_TRUE(m.content.empty());
}

}  // namespace
}  // namespace kvrag::chat
