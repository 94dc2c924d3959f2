#include "sampling/json_schema.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <string>
#include <vector>

#include "engine/engine_test_util.h"
#include "sampling/grammar_test_util.h"

namespace kvrag::sampling {
namespace {

using ojson = nlohmann::ordered_json;
using json = nlohmann::json;

std::shared_ptr<const Grammar> must_compile(const std::string& schema) {
    auto g = compile_json_schema(ojson::parse(schema));
    EXPECT_TRUE(g.ok()) << (g.ok() ? "" : g.error().what()) << "\n" << schema;
    return g.ok() ? *g : nullptr;
}

// ---- a validator for the keywords the compiler supports (the property test's oracle)

size_t n_chars(const std::string& s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
    return n;
}

bool valid(const ojson& s, const json& v, const ojson& root);

bool valid_typed(const ojson& s, const std::string& type, const json& v, const ojson& root) {
    if (type == "null") return v.is_null();
    if (type == "boolean") return v.is_boolean();
    if (type == "integer" || type == "number") {
        if (type == "integer" ? !v.is_number_integer() : !v.is_number()) return false;
        const double x = v.get<double>();
        if (s.contains("minimum") && x < s["minimum"].get<double>()) return false;
        if (s.contains("maximum") && x > s["maximum"].get<double>()) return false;
        if (s.contains("exclusiveMinimum") && x <= s["exclusiveMinimum"].get<double>()) return false;
        if (s.contains("exclusiveMaximum") && x >= s["exclusiveMaximum"].get<double>()) return false;
        return true;
    }
    if (type == "string") {
        if (!v.is_string()) return false;
        const std::string str = v.get<std::string>();
        if (s.contains("minLength") && n_chars(str) < s["minLength"].get<size_t>()) return false;
        if (s.contains("maxLength") && n_chars(str) > s["maxLength"].get<size_t>()) return false;
        if (s.contains("format")) {
            const std::string f = s["format"];
            const std::string date = "\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])";
            const std::string time = "([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d{1,6})?(Z|[+-]([01]\\d|2[0-3]):[0-5]\\d)";
            const std::string uuid = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
            const std::string re = f == "date" ? date : f == "time" ? time : f == "date-time" ? date + "T" + time : uuid;
            if (!std::regex_match(str, std::regex(re))) return false;
        }
        return true;
    }
    if (type == "array") {
        if (!v.is_array()) return false;
        if (s.contains("minItems") && v.size() < s["minItems"].get<size_t>()) return false;
        if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>()) return false;
        if (s.contains("items")) {
            for (const auto& x : v) {
                if (!valid(s["items"], x, root)) return false;
            }
        }
        return true;
    }
    if (type == "object") {
        if (!v.is_object()) return false;
        const ojson props = s.value("properties", ojson::object());
        for (const auto& r : s.value("required", ojson::array())) {
            if (!v.contains(r.get<std::string>())) return false;
        }
        for (const auto& [k, x] : v.items()) {
            if (props.contains(k)) {
                if (!valid(props[k], x, root)) return false;
            } else if (s.contains("additionalProperties")) {
                const ojson& extra = s["additionalProperties"];
                if (extra.is_boolean() ? !extra.get<bool>() : !valid(extra, x, root)) return false;
            }
        }
        return true;
    }
    ADD_FAILURE() << "validator: unknown type " << type;
    return false;
}

bool valid(const ojson& s, const json& v, const ojson& root) {
    if (s.is_boolean()) return s.get<bool>();
    if (s.contains("$ref")) {
        const std::string ref = s["$ref"];
        const std::string sec = ref.rfind("#/$defs/", 0) == 0 ? "$defs" : "definitions";
        return valid(root[sec][ref.substr(sec.size() + 3)], v, root);
    }
    for (const char* key : {"anyOf", "oneOf"}) {
        if (!s.contains(key)) continue;
        for (const auto& alt : s[key]) {
            if (valid(alt, v, root)) return true;
        }
        return false;
    }
    if (s.contains("const")) return json::parse(s["const"].dump()) == v;
    if (s.contains("enum")) {
        for (const auto& e : s["enum"]) {
            if (json::parse(e.dump()) == v) return true;
        }
        return false;
    }
    if (!s.contains("type")) return true;
    if (s["type"].is_array()) {
        for (const auto& t : s["type"]) {
            if (valid_typed(s, t.get<std::string>(), v, root)) return true;
        }
        return false;
    }
    return valid_typed(s, s["type"].get<std::string>(), v, root);
}

// ---- compile errors

TEST(JsonSchema, UnsupportedKeywordsAreTypedErrors) {
    const std::vector<std::pair<const char*, const char*>> cases = {
        {R"({"type":"string","pattern":"^a+$"})", "keyword 'pattern' at # is not supported"},
        {R"({"type":"object","properties":{"id":{"type":"string","pattern":"x"}}})", "keyword 'pattern' at #/properties/id"},
        {R"({"allOf":[{"type":"string"}]})", "keyword 'allOf' at #"},
        {R"({"type":"string","format":"email"})", "format 'email' at # is not supported"},
        {R"({"type":"array","prefixItems":[]})", "keyword 'prefixItems'"},
        {R"({"$ref":"http://x/y"})", "'$ref' 'http://x/y' at # is not supported"},
        {R"({"$ref":"#/$defs/missing"})", "points to nothing"},
        {R"({"type":"integer","anyOf":[{"minimum":1}]})", "keyword 'type' beside 'anyOf'"},
        {R"({"type":"array","minItems":3,"maxItems":2})", "maxItems 2 < minItems 3"},
        {R"({"type":"string","maxLength":100000})", "'maxLength' 100000 at # is over the limit of 1000"},
        {R"({"type":"object","properties":{"a":{}},"required":["b"]})", "required property 'b'"},
        {R"({"type":"number","minimum":0.5})", "'minimum' of a number at # must be an integer"},
        {R"({"type":"integer","minimum":5,"maximum":4})", "leave no value"},
        {R"({"type":"decimal"})", "type 'decimal' at # is not a JSON Schema type"},
        {R"(false)", "no value can match it"},
    };
    for (const auto& [schema, want] : cases) {
        auto g = compile_json_schema(ojson::parse(schema));
        ASSERT_FALSE(g.ok()) << schema;
        EXPECT_EQ(g.error().code, Errc::request_invalid);
        EXPECT_NE(g.error().message.find(want), std::string::npos) << schema << "\n got: " << g.error().message;
    }
}

// ---- grammar tables

struct SchemaCase {
    const char* schema;
    std::vector<std::string> accept;
    std::vector<std::string> reject;
};

TEST(JsonSchema, AcceptRejectTable) {
    const std::vector<SchemaCase> cases = {
        {R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"ok":{"type":"boolean"}},"required":["name"]})",
         {R"({"name":"a"})", R"({"name":"a","age":3})", R"({ "name" : "x\"y" , "ok" : true })", R"({"name":"a","age":-1,"ok":false})"},
         {R"({})", R"({"age":3})", R"({"age":3,"name":"a"})", R"({"name":"a",})", R"({"name":"a","x":1})"}},
        {R"({"type":"object","properties":{"a":{"type":"null"},"b":{"type":"number"}}})",
         {"{}", R"({"a":null})", R"({"b":1.5e3})", R"({"a":null,"b":-0.25})"}, {R"({"b":01})", R"({"a":null,})"}},
        {R"({"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3})",
         {"[1]", "[1, 2,3]"}, {"[]", "[1,2,3,4]", "[1,]", "[1.5]"}},
        {R"({"type":"array","items":{"type":"boolean"}})", {"[]", "[true,false,true,true]"}, {"[null]"}},
        {R"({"enum":["red",2,null,{"k":[1]}]})", {"\"red\"", "2", "null", R"({"k":[1]})"}, {"\"blue\"", "3"}},
        {R"({"const":"é\n"})", {"\"é\\n\""}, {"\"é\""}},
        {R"({"type":"string","minLength":2,"maxLength":3})", {"\"ab\"", "\"a\\nc\"", "\"éüö\""}, {"\"a\"", "\"abcd\""}},
        {R"({"type":"string","format":"date"})", {"\"2024-02-29\""}, {"\"2024-13-01\"", "\"24-01-01\""}},
        {R"({"type":"string","format":"date-time"})", {"\"2024-02-29T23:59:59Z\"", "\"2024-02-29T01:02:03.123+05:30\""},
         {"\"2024-02-29 23:59:59Z\"", "\"2024-02-29T24:00:00Z\""}},
        {R"({"type":"string","format":"time"})", {"\"12:00:00Z\""}, {"\"12:00\""}},
        {R"({"type":"string","format":"uuid"})", {"\"123e4567-e89b-12d3-a456-426614174000\""}, {"\"123e4567e89b12d3a456426614174000\""}},
        {R"({"type":["string","null"]})", {"\"x\"", "null"}, {"1"}},
        {R"({"anyOf":[{"type":"integer"},{"type":"array","items":{"type":"string"}}]})", {"7", "[\"a\"]"}, {"\"a\"", "[1]"}},
        {R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["v","next"]}},"$ref":"#/$defs/node"})",
         {R"({"v":1,"next":{"v":2,"next":null}})"}, {R"({"v":1})"}},
        {R"({"type":"object","additionalProperties":{"type":"integer"}})", {"{}", R"({"a":1,"b":2})"}, {R"({"a":"x"})"}},
        {R"({"type":"object","additionalProperties":false})", {"{}", "{ }"}, {R"({"a":1})"}},
        {R"({"type":"boolean"})", {"true", "false"}, {"True", "1"}},
    };
    for (const auto& c : cases) {
        auto g = must_compile(c.schema);
        ASSERT_NE(g, nullptr);
        for (const auto& s : c.accept) EXPECT_TRUE(matches(g, s)) << c.schema << "\n should accept " << s;
        for (const auto& s : c.reject) EXPECT_FALSE(matches(g, s)) << c.schema << "\n should reject " << s;
    }
}

TEST(JsonSchema, PropertiesInSchemaOrder) {
    auto g = must_compile(R"({"type":"object","properties":{"z":{"type":"integer"},"a":{"type":"integer"}},"required":["z","a"]})");
    EXPECT_TRUE(matches(g, R"({"z":1,"a":2})"));
    EXPECT_FALSE(matches(g, R"({"a":2,"z":1})"));
}

TEST(JsonSchema, WhitespaceIsBounded) {
    auto g = must_compile(R"({"type":"array","items":{"type":"integer"}})");
    EXPECT_TRUE(matches(g, "[" + std::string(kMaxWs, ' ') + "1]"));
    EXPECT_FALSE(matches(g, "[" + std::string(kMaxWs + 1, ' ') + "1]"));
}

TEST(JsonSchema, IntegerBoundsAreExact) {
    const std::vector<std::pair<int64_t, int64_t>> ranges = {{0, 0}, {7, 7}, {-123, 4567}, {-20, -3}, {95, 1005}, {10, 99}, {-1, 1}, {1, 1000}};
    for (const auto& [lo, hi] : ranges) {
        const std::string schema = R"({"type":"integer","minimum":)" + std::to_string(lo) + R"(,"maximum":)" + std::to_string(hi) + "}";
        auto g = must_compile(schema);
        ASSERT_NE(g, nullptr);
        for (int64_t n = lo - 150; n <= hi + 150; ++n) {
            EXPECT_EQ(matches(g, std::to_string(n)), n >= lo && n <= hi) << schema << " n=" << n;
        }
        EXPECT_FALSE(matches(g, "0" + std::to_string(std::max<int64_t>(lo, 1))));  // no leading zero
        EXPECT_FALSE(matches(g, "-0"));
    }
    auto ex = must_compile(R"({"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":10})");
    EXPECT_FALSE(matches(ex, "0"));
    EXPECT_TRUE(matches(ex, "1"));
    EXPECT_TRUE(matches(ex, "9"));
    EXPECT_FALSE(matches(ex, "10"));
    auto half = must_compile(R"({"type":"integer","minimum":0})");
    EXPECT_TRUE(matches(half, "9999999999999999"));   // 16 digits: the documented limit
    EXPECT_FALSE(matches(half, "10000000000000000"));
    EXPECT_FALSE(matches(half, "-1"));
}

TEST(JsonSchema, NumberBoundsAreExact) {
    auto g = must_compile(R"({"type":"number","minimum":-2,"maximum":3})");
    for (const char* ok : {"-2", "-1.99", "-0.5", "0", "2.999", "3", "1.25"}) EXPECT_TRUE(matches(g, ok)) << ok;
    for (const char* bad : {"-2.5", "3.5", "-3", "4", "1e2", "-0"}) EXPECT_FALSE(matches(g, bad)) << bad;
}

TEST(JsonSchema, JsonObjectGrammar) {
    auto g = json_object_grammar();
    ASSERT_NE(g, nullptr);
    EXPECT_TRUE(matches(g, R"({"a":[1,{"b":null}],"c":"d"})"));
    EXPECT_FALSE(matches(g, "[1]"));
    EXPECT_FALSE(matches(g, R"({"a":})"));
}

// ---- the key property: any weights, any seed, the output validates

TEST(JsonSchemaEngine, SyntheticVocabularyHasTheCharactersJsonNeeds) {
    auto m = engine::testing::load_synthetic("grammar-vocab");
    const auto& tok = *m.tokenizer;
    for (char c : std::string("{}[]\":,.-+eE0123456789 \n\\abcdefghijklmnopqrstuvwxyzT:Z")) {
        bool found = false;
        for (int32_t i = 0; i < tok.n_vocab() && !found; ++i) found = tok.token_to_piece(i) == std::string(1, c);
        EXPECT_TRUE(found) << "no token whose piece is '" << c << "'";
    }
}

TEST(JsonSchemaEngine, RandomWeightsOutputValidates) {
    auto e = engine::testing::make_engine(engine::testing::load_synthetic("grammar"), 2048);
    const std::vector<const char*> schemas = {
        R"({"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer","minimum":0,"maximum":150},
            "tags":{"type":"array","items":{"enum":["a","b",3]},"maxItems":3},"score":{"type":"number","minimum":-1,"maximum":1},
            "when":{"type":"string","format":"date-time"},"id":{"type":"string","format":"uuid"},"nick":{"type":["string","null"],"maxLength":5}},
            "required":["name","age","when"],"additionalProperties":false})",
        R"({"$defs":{"pt":{"type":"object","properties":{"x":{"type":"integer","minimum":-5,"maximum":5},"ok":{"type":"boolean"}},"required":["x"]}},
            "type":"array","items":{"$ref":"#/$defs/pt"},"minItems":1,"maxItems":4})",
        R"({"anyOf":[{"type":"object","properties":{"k":{"const":[1,"two"]}},"required":["k"]},{"type":"string","minLength":1,"maxLength":8}]})",
    };
    for (const char* schema : schemas) {
        const ojson s = ojson::parse(schema);
        auto g = compile_json_schema(s);
        ASSERT_TRUE(g.ok()) << g.error().what();
        for (uint64_t seed = 1; seed <= 5; ++seed) {
            engine::GenerateOptions o;
            o.max_tokens = 600;
            o.sampling.temperature = 1.0f;
            o.sampling.top_k = 0;
            o.sampling.top_p = 1.0f;
            o.sampling.min_p = 0.0f;
            o.sampling.seed = seed;
            o.grammar = *g;
            auto r = e->generate("Answer in JSON:", o);
            ASSERT_TRUE(r.ok()) << r.error().what();
            ASSERT_EQ(r->finish, engine::FinishReason::stop) << "seed " << seed << " text " << r->text;
            json v;
            ASSERT_NO_THROW(v = json::parse(r->text)) << "seed " << seed << ": " << r->text;
            EXPECT_TRUE(valid(s, v, s)) << "seed " << seed << ": " << r->text;
            EXPECT_EQ(e->cache().stats().used, 0);  // the request's cells went back
        }
    }
}

TEST(JsonSchemaEngine, JsonObjectAndGreedyUnchangedWithoutGrammar) {
    auto e = engine::testing::make_engine(engine::testing::load_synthetic("grammar"), 2048);
    // Without a grammar the output is what it was (the same call twice, and grammar unset).
    auto a = e->generate("Hello", engine::testing::greedy(16));
    auto b = e->generate("Hello", engine::testing::greedy(16));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->tokens, b->tokens);
    // With the json_object grammar a greedy run is a JSON object or hits max_tokens as a prefix.
    auto o = engine::testing::greedy(300);
    o.grammar = json_object_grammar();
    auto r = e->generate("Hello", o);
    ASSERT_TRUE(r.ok()) << r.error().what();
    GrammarMatcher m(o.grammar);
    EXPECT_TRUE(m.advance(r->text)) << r->text;
    if (r->finish == engine::FinishReason::stop) {
        EXPECT_TRUE(json::parse(r->text).is_object()) << r->text;
    }
}

}  // namespace
}  // namespace kvrag::sampling
