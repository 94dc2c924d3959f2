#include "sampling/json_schema.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <regex>
#include <string>
#include <tuple>
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

// ---- a validator for the keywords the compiler supports (the property test's oracle). It
// is written from the specifications (JSON Schema, RFC 3339, 5321, 1123, 3986), not from the
// compiler's rules, and the formats are checked as strict clients do: real calendar dates,
// UTC date-times (zod's default), octets without leading zeros, no special-use email domains.

size_t n_chars(const std::string& s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
    return n;
}

bool real_date(const std::string& s) {
    static const std::regex re(R"((\d{4})-(\d{2})-(\d{2}))");
    std::smatch m;
    if (!std::regex_match(s, m, re)) return false;
    const int y = std::stoi(m[1]), mo = std::stoi(m[2]), d = std::stoi(m[3]);
    const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const int days[] = {31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return y >= 1 && mo >= 1 && mo <= 12 && d >= 1 && d <= days[mo - 1];
}

bool valid_hostname(const std::string& s) {
    static const std::regex label(R"([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)");
    if (s.empty() || s.size() > 253) return false;
    std::vector<std::string> labels;
    for (size_t p = 0;;) {
        const size_t dot = s.find('.', p);
        labels.push_back(s.substr(p, dot - p));
        if (dot == std::string::npos) break;
        p = dot + 1;
    }
    for (const auto& l : labels) {
        if (!std::regex_match(l, label)) return false;
        if (l.size() >= 4 && l.substr(2, 2) == "--") return false;  // IDNA-reserved unless a valid A-label
    }
    static const std::regex tld("[a-zA-Z]{2,63}");
    return labels.size() >= 2 && std::regex_match(labels.back(), tld);
}

bool valid_format(const std::string& f, const std::string& s) {
    static const std::regex time_re(R"(([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d))");
    static const std::regex utc_time_re(R"(([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?Z)");
    static const std::regex uuid_re("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}");
    static const std::regex ipv6_re("[0-9a-fA-F]{1,4}(:[0-9a-fA-F]{1,4}){7}");
    static const std::regex octet_re("0|[1-9][0-9]{0,2}");
    static const std::regex dot_atom(R"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)");
    static const std::regex uri_re(R"(https?://([^/?#]+)((/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*))");
    if (f == "date") return real_date(s);
    if (f == "time") return std::regex_match(s, time_re);
    if (f == "date-time") return s.size() > 11 && s[10] == 'T' && real_date(s.substr(0, 10)) && std::regex_match(s.substr(11), utc_time_re);
    if (f == "uuid") return std::regex_match(s, uuid_re);
    if (f == "ipv6") return std::regex_match(s, ipv6_re);
    if (f == "hostname") return valid_hostname(s);
    if (f == "ipv4") {
        int n_octets = 0;
        for (size_t p = 0;; ++n_octets) {
            const size_t dot = s.find('.', p);
            const std::string o = s.substr(p, dot - p);
            if (!std::regex_match(o, octet_re) || std::stoi(o) > 255) return false;
            if (dot == std::string::npos) break;
            p = dot + 1;
        }
        return n_octets == 3;
    }
    if (f == "email") {
        const size_t at = s.find('@');
        if (at == std::string::npos || at > 64 || s.size() > 254) return false;
        const std::string domain = s.substr(at + 1);
        const std::string tld = domain.substr(domain.rfind('.') + 1);
        for (const char* special : {"test", "local", "localhost", "invalid", "example", "onion", "arpa"}) {
            if (tld == special) return false;
        }
        return std::regex_match(s.substr(0, at), dot_atom) && valid_hostname(domain);
    }
    if (f == "uri") {
        std::smatch m;
        if (!std::regex_match(s, m, uri_re) || !valid_hostname(m[1])) return false;
        const std::string path = m[2];
        return path.find("/./") == std::string::npos && path.find("/../") == std::string::npos && !path.ends_with("/.") && !path.ends_with("/..");
    }
    ADD_FAILURE() << "validator: unknown format " << f;
    return false;
}

bool valid(const ojson& s, const json& v, const ojson& root);

bool is_type(const std::string& type, const json& v) {
    if (type == "null") return v.is_null();
    if (type == "boolean") return v.is_boolean();
    if (type == "string") return v.is_string();
    if (type == "array") return v.is_array();
    if (type == "object") return v.is_object();
    if (type == "number") return v.is_number();
    if (type == "integer") return v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
    ADD_FAILURE() << "validator: unknown type " << type;
    return false;
}

// Numbers compare as the doubles a client parses them to (JSON.parse, Python's json).
bool valid_number(const ojson& s, const json& v) {
    const double x = v.get<double>();
    if (!std::isfinite(x)) return false;
    const bool draft4_min = s.contains("exclusiveMinimum") && s["exclusiveMinimum"].is_boolean() && s["exclusiveMinimum"].get<bool>();
    const bool draft4_max = s.contains("exclusiveMaximum") && s["exclusiveMaximum"].is_boolean() && s["exclusiveMaximum"].get<bool>();
    if (s.contains("minimum") && (draft4_min ? x <= s["minimum"].get<double>() : x < s["minimum"].get<double>())) return false;
    if (s.contains("maximum") && (draft4_max ? x >= s["maximum"].get<double>() : x > s["maximum"].get<double>())) return false;
    if (s.contains("exclusiveMinimum") && s["exclusiveMinimum"].is_number() && x <= s["exclusiveMinimum"].get<double>()) return false;
    if (s.contains("exclusiveMaximum") && s["exclusiveMaximum"].is_number() && x >= s["exclusiveMaximum"].get<double>()) return false;
    return true;
}

// JavaScript's length (what zod's .min()/.max() count): characters beyond U+FFFF count twice.
size_t n_utf16(const std::string& s) {
    size_t n = n_chars(s);
    for (char c : s) n += (static_cast<uint8_t>(c) & 0xF8) == 0xF0;
    return n;
}

bool valid_string(const ojson& s, const json& v) {
    const std::string str = v.get<std::string>();
    if (s.contains("minLength") && n_chars(str) < s["minLength"].get<size_t>()) return false;
    if (s.contains("maxLength") && n_utf16(str) > s["maxLength"].get<size_t>()) return false;  // >= the code points
    return !s.contains("format") || valid_format(s["format"].get<std::string>(), str);
}

bool valid_array(const ojson& s, const json& v, const ojson& root) {
    if (s.contains("minItems") && v.size() < s["minItems"].get<size_t>()) return false;
    if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>()) return false;
    // Tuples: prefixItems then items (2020-12), or items as an array then additionalItems (draft-07).
    const bool draft7_tuple = s.contains("items") && s["items"].is_array();
    const ojson prefix = s.contains("prefixItems") ? s["prefixItems"] : draft7_tuple ? s["items"] : ojson::array();
    const ojson later = s.contains("prefixItems") ? s.value("items", ojson(true)) : draft7_tuple ? s.value("additionalItems", ojson(true)) : s.value("items", ojson(true));
    for (size_t i = 0; i < v.size(); ++i) {
        if (!valid(i < prefix.size() ? prefix[i] : later, v[i], root)) return false;
    }
    return true;
}

bool valid_object(const ojson& s, const json& v, const ojson& root) {
    const ojson props = s.value("properties", ojson::object());
    for (const auto& r : s.value("required", ojson::array())) {
        if (!v.contains(r.get<std::string>())) return false;
    }
    for (const auto& [k, x] : v.items()) {
        if (props.contains(k)) {
            if (!valid(props[k], x, root)) return false;
        } else if (s.contains("additionalProperties") && !valid(s["additionalProperties"], x, root)) {
            return false;
        }
    }
    return true;
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
    // enum/const and every keyword beside them must hold together.
    if (s.contains("const") && json::parse(s["const"].dump()) != v) return false;
    if (s.contains("enum")) {
        bool listed = false;
        for (const auto& e : s["enum"]) listed = listed || json::parse(e.dump()) == v;
        if (!listed) return false;
    }
    // OpenAPI nullable: null as well (beside an enum, only when listed: checked above).
    const bool nullable_null = v.is_null() && s.value("nullable", false);
    if (s.contains("type") && !nullable_null) {
        bool typed = false;
        if (s["type"].is_array()) {
            for (const auto& t : s["type"]) typed = typed || is_type(t.get<std::string>(), v);
        } else {
            typed = is_type(s["type"].get<std::string>(), v);
        }
        if (!typed) return false;
    }
    // Each kind's keywords apply to values of that kind.
    if (v.is_number()) return valid_number(s, v);
    if (v.is_string()) return valid_string(s, v);
    if (v.is_array()) return valid_array(s, v, root);
    if (v.is_object()) return valid_object(s, v, root);
    return true;
}

// ---- compile errors

TEST(JsonSchema, UnsupportedKeywordsAreTypedErrors) {
    const std::vector<std::pair<const char*, const char*>> cases = {
        {R"({"type":"string","pattern":"^a+$"})", "keyword 'pattern' at # is not supported"},
        {R"({"type":"object","properties":{"id":{"type":"string","pattern":"x"}}})", "keyword 'pattern' at #/properties/id"},
        {R"({"allOf":[{"type":"string"}]})", "keyword 'allOf' at #"},
        {R"({"type":"string","format":"duration"})", "format 'duration' at # is not supported"},
        {R"({"type":"array","uniqueItems":true})", "keyword 'uniqueItems'"},
        {R"({"$ref":"http://x/y"})", "'$ref' 'http://x/y' at # is not supported"},
        {R"({"type":"object","properties":{"next":{"$ref":"#"}}})", "'$ref' '#' (the root) at #/properties/next is not supported"},
        {R"({"$ref":"#/$defs/missing"})", "points to nothing"},
        {R"({"type":"integer","anyOf":[{"minimum":1}]})", "keyword 'type' beside 'anyOf'"},
        {R"({"type":"array","minItems":3,"maxItems":2})", "maxItems 2 < minItems 3"},
        {R"({"type":"string","maxLength":100000})", "'maxLength' 100000 at # is over the limit of 1000"},
        {R"({"type":"object","properties":{"a":{}},"required":["b"]})", "required property 'b'"},
        {R"({"type":"integer","minimum":5,"maximum":4})", "leave no value"},
        {R"({"type":"number","minimum":2.5,"exclusiveMaximum":2.5})", "number bounds at # leave no value"},
        {R"({"type":"number","exclusiveMinimum":0,"exclusiveMaximum":1e-20})", "at most 16 integer and 16 fraction digits"},
        {R"({"type":"number","minimum":1e20})", "number bounds at # leave no value"},
        {R"({"type":"number","exclusiveMinimum":true})", "'exclusiveMinimum': true at # needs 'minimum'"},
        {R"({"type":"decimal"})", "type 'decimal' at # is not a JSON Schema type"},
        {R"({"type":"string","nullable":"yes"})", "'nullable' at # must be a boolean"},
        {R"({"type":"string","format":"email","maxLength":20})", "cut into format 'email' (its strings have 6 to 166 characters)"},
        {R"({"type":"array","additionalItems":false})", "'additionalItems' at # only applies beside an array 'items'"},
        {R"({"type":"array","prefixItems":[{}],"items":false,"minItems":2})", "minItems 2 at # is more than the 1 tuple items"},
        // enum/const values are filtered by the keywords beside them; none left is an error.
        {R"({"type":"string","const":5})", "at #: no value of 'const' satisfies the keywords beside it (5 is not of type \"string\")"},
        {R"({"type":"object","properties":{"c":{"type":"string","enum":["abc"],"maxLength":2}}})",
         "at #/properties/c: no value of 'enum' satisfies the keywords beside it (\"abc\" is longer than maxLength 2)"},
        {R"({"enum":[10,20],"maximum":6})", "10 > maximum 6"},
        {R"({"const":"b","enum":["a"]})", "'const' is not in 'enum'"},
        {R"({"type":"string","format":"date","enum":["2023-02-29"]})", "\"2023-02-29\" is not a date"},
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
        // Under a maxLength no character beyond U+FFFF (two UTF-16 units for zod's .max()).
        {R"({"type":"string","minLength":2,"maxLength":3})", {"\"ab\"", "\"a\\nc\"", "\"éüö\"", "\"\uFFFDa\""}, {"\"a\"", "\"abcd\"", "\"a\U0001F600\""}},
        {R"({"type":"string","minLength":1})", {"\"\U0001F600\""}, {"\"\""}},
        {R"({"type":"string","format":"date"})", {"\"2024-02-29\"", "\"2000-02-29\"", "\"1600-02-29\"", "\"0004-02-29\"", "\"2023-12-31\"", "\"0001-01-01\"", "\"2023-04-30\""},
         {"\"2024-13-01\"", "\"24-01-01\"", "\"2023-02-29\"", "\"1900-02-29\"", "\"2100-02-29\"", "\"2024-02-30\"", "\"2024-04-31\"", "\"2024-11-31\"",
          "\"0000-01-01\"", "\"0000-02-29\"", "\"2024-00-10\"", "\"2024-01-00\""}},
        // UTC only: zod's default .datetime() refuses offsets.
        {R"({"type":"string","format":"date-time"})", {"\"2024-02-29T23:59:59Z\"", "\"2024-02-29T01:02:03.123Z\"", "\"2024-02-29T01:02:03.123456Z\""},
         {"\"2024-02-29 23:59:59Z\"", "\"2024-02-29T24:00:00Z\"", "\"2024-02-29T01:02:03.123+05:30\"", "\"2023-02-29T00:00:00Z\"", "\"2024-02-29T01:02:03.1234Z\""}},
        {R"({"type":"string","format":"time"})", {"\"12:00:00Z\"", "\"23:59:59.500+05:30\"", "\"00:00:00.000-12:00\""}, {"\"12:00\"", "\"12:00:00\""}},
        {R"({"type":"string","format":"email"})", {"\"a@b.co\"", "\"A.b_c+d-e@x-y.z.com\""},
         {"\"a@b\"", "\".a@b.com\"", "\"a.@b.com\"", "\"a..b@c.com\"", "\"a@b.test\"", "\"a@-b.com\"", "\"a b@c.com\""}},
        {R"({"type":"string","format":"hostname"})", {"\"a.io\"", "\"api-1.example.com\""}, {"\"localhost\"", "\"a..io\"", "\"-a.io\"", "\"a-.io\"", "\"ab--c.io\"", "\"a.b1\""}},
        {R"({"type":"string","format":"ipv4"})", {"\"0.0.0.0\"", "\"255.255.255.255\"", "\"10.0.12.1\""}, {"\"256.1.1.1\"", "\"01.2.3.4\"", "\"1.2.3\""}},
        {R"({"type":"string","format":"ipv6"})", {"\"2001:db8:0:0:0:0:0:1\"", "\"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\""}, {"\"::1\"", "\"1:2:3:4:5:6:7\"", "\"12345:0:0:0:0:0:0:1\""}},
        {R"({"type":"string","format":"uri","minLength":1,"maxLength":2083})", {"\"https://a.io\"", "\"https://x.y.com/a/b_c~d.e/\""}, {"\"http://a.io\"", "\"https://a.io/..\"", "\"https://a.io/./x\"", "\"a.io\""}},
        {R"({"type":"string","format":"uuid"})", {"\"123e4567-e89b-12d3-a456-426614174000\""}, {"\"123e4567e89b12d3a456426614174000\""}},
        {R"({"type":["string","null"]})", {"\"x\"", "null"}, {"1"}},
        {R"({"anyOf":[{"type":"integer"},{"type":"array","items":{"type":"string"}}]})", {"7", "[\"a\"]"}, {"\"a\"", "[1]"}},
        {R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["v","next"]}},"$ref":"#/$defs/node"})",
         {R"({"v":1,"next":{"v":2,"next":null}})"}, {R"({"v":1})"}},
        {R"({"type":"object","additionalProperties":{"type":"integer"}})", {"{}", R"({"a":1,"b":2})"}, {R"({"a":"x"})"}},
        {R"({"type":"object","additionalProperties":false})", {"{}", "{ }"}, {R"({"a":1})"}},
        // properties: {} declares none: only {} (a function without parameters gets "{}").
        {R"({"type":"object","properties":{}})", {"{}", "{ }"}, {R"({"a":1})"}},
        {R"({"type":"object"})", {"{}", R"({"a":[1]})"}, {"[]"}},
        {R"({"type":"object","properties":{},"additionalProperties":{"type":"integer"}})", {"{}", R"({"a":1})"}, {R"({"a":"x"})"}},
        // nullable (OpenAPI; zod's .nullable() on scalars): the schema or null.
        {R"({"type":"string","nullable":true,"maxLength":2})", {"null", "\"ab\""}, {"\"abc\"", "1"}},
        {R"({"type":"number","nullable":true,"minimum":0})", {"null", "0.5"}, {"-1"}},
        {R"({"type":"object","properties":{"o":{"type":"object","nullable":true,"properties":{"b":{"type":"boolean"}},"required":["b"]}},"required":["o"]})",
         {R"({"o":null})", R"({"o":{"b":true}})"}, {R"({"o":{}})"}},
        {R"({"type":"string","nullable":false})", {"\"a\""}, {"null"}},
        {R"({"type":"string","nullable":true,"enum":["a",null]})", {"null", "\"a\""}, {"\"b\""}},
        {R"({"type":"string","nullable":true,"enum":["a"]})", {"\"a\""}, {"null"}},  // OpenAPI 3.0.3: null must be listed
        {R"({"$defs":{"p":{"type":"integer"}},"$ref":"#/$defs/p","nullable":true})", {"null", "3"}, {"\"3\""}},
        // enum/const: only the values the keywords beside them allow.
        {R"({"type":"string","enum":["a",5]})", {"\"a\""}, {"5"}},
        {R"({"type":"string","enum":["abc","de"],"maxLength":2})", {"\"de\""}, {"\"abc\""}},
        {R"({"type":"integer","enum":[1,5,10],"maximum":6})", {"1", "5"}, {"10"}},
        {R"({"type":"number","enum":[0,1,2],"exclusiveMinimum":0})", {"1", "2"}, {"0"}},
        {R"({"type":"array","enum":[[1,2,3],[4],[true]],"maxItems":1,"items":{"type":"integer"}})", {"[4]"}, {"[1,2,3]", "[true]"}},
        {R"({"type":"object","enum":[{"a":1},{"b":2}],"properties":{"a":{},"b":{}},"required":["a"]})", {R"({"a":1})"}, {R"({"b":2})"}},
        {R"({"type":"string","const":"x"})", {"\"x\""}, {"\"y\""}},
        {R"({"type":["integer","null"],"enum":[1,"1",null,1.5]})", {"1", "null"}, {"\"1\"", "1.5"}},
        // tuples: z.tuple (draft-07 items array) and 2020-12 prefixItems.
        {R"({"type":"array","minItems":2,"maxItems":2,"items":[{"type":"string"},{"type":"number"}]})", {R"(["a",1.5])"}, {R"(["a"])", R"([1,"a"])", R"(["a",1,2])"}},
        {R"({"type":"array","items":[{"type":"boolean"}],"additionalItems":{"type":"null"}})", {"[]", "[true]", "[true,null,null]"}, {"[true,1]", "[null]"}},
        {R"({"type":"array","prefixItems":[{"type":"boolean"},{"type":"integer"}],"items":false})", {"[]", "[true]", "[false,3]"}, {"[true,3,4]", "[3]"}},
        {R"({"type":"array","prefixItems":[{"type":"boolean"}],"items":{"type":"string"},"minItems":2,"maxItems":3})",
         {R"([true,"a"])", R"([true,"a","b"])"}, {"[true]", R"([true,"a","b","c"])", "[true,true]"}},
        // without type, the keywords present decide the kind
        {R"({"minLength":2})", {"\"ab\""}, {"\"a\"", "5"}},
        {R"({"minimum":3})", {"3", "4.5"}, {"2", "\"x\""}},
        {R"({"format":"date"})", {"\"2024-01-31\""}, {"\"x\""}},
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
    for (const char* ok : {"-2", "-1.99", "-0.5", "0", "2.999", "3", "1.25", "3.000", "-2.0"}) EXPECT_TRUE(matches(g, ok)) << ok;
    for (const char* bad : {"-2.5", "3.5", "-3", "4", "1e2", "-0", "-0.0", "3.0000001", "-2.01"}) EXPECT_FALSE(matches(g, bad)) << bad;
}

// Fractional, exclusive (numeric and draft-4) and one-sided bounds: every decimal of up to 3
// fraction digits in a window around the bounds (and ones with more digits next to each bound)
// is accepted exactly when the double it parses to lies within them.
TEST(JsonSchema, FractionalAndExclusiveNumberBoundsAreExact) {
    const std::vector<const char*> schemas = {
        R"({"type":"number","minimum":0.5,"maximum":2.75})",
        R"({"type":"number","minimum":-2.75,"maximum":-0.5})",
        R"({"type":"number","minimum":-1.125,"maximum":0.375})",
        R"({"type":"number","exclusiveMinimum":0})",
        R"({"type":"number","exclusiveMinimum":-1.5,"exclusiveMaximum":2})",
        R"({"type":"number","exclusiveMaximum":-0.25})",
        R"({"type":"number","minimum":1,"exclusiveMinimum":true,"maximum":2,"exclusiveMaximum":true})",
        R"({"type":"number","minimum":0.1,"exclusiveMinimum":0.2,"maximum":0.7,"exclusiveMaximum":0.6})",
        R"({"type":"number","minimum":0.001,"maximum":0.001})",
    };
    for (const char* text : schemas) {
        const ojson schema = ojson::parse(text);
        auto g = must_compile(text);
        ASSERT_NE(g, nullptr);
        std::vector<std::string> candidates;
        for (int k = -4000; k <= 4000; ++k) {
            char buf[32];
            std::snprintf(buf, sizeof(buf), "%s%d.%03d", k < 0 ? "-" : "", std::abs(k) / 1000, std::abs(k) % 1000);
            candidates.push_back(buf);
            if (k % 1000 == 0) candidates.push_back(std::to_string(k / 1000));
        }
        for (const char* edge : {"0.5", "2.75", "0.25", "0.1", "0.2", "0.6", "0.7", "1", "2", "1.5", "0.375", "1.125", "0.001", "0"}) {
            for (const char* sign : {"", "-"}) {
                for (const char* more : {"", "0", "0000000001", "999999999", "000000000"}) {  // at most 16 fraction digits
                    candidates.push_back(std::string(sign) + edge + (std::string(edge).find('.') == std::string::npos && *more ? "." : "") + more);
                }
            }
        }
        candidates.push_back("0.0000000000000001");
        candidates.push_back("9999999999999999.9999999999999999");
        int n_accepted = 0;
        for (const auto& c : candidates) {
            if (c[0] == '-' && json::parse(c).get<double>() == 0) continue;  // "-0", "-0.0": never written, by design
            const bool ok = valid(schema, json::parse(c), schema);
            EXPECT_EQ(matches(g, c), ok) << text << "\n candidate " << c;
            n_accepted += ok;
        }
        EXPECT_GT(n_accepted, 0) << text;
    }
}

// Unbounded numbers stay finite doubles: at most 2 exponent digits.
TEST(JsonSchema, NumberExponentIsBounded) {
    auto g = must_compile(R"({"type":"number"})");
    for (const char* ok : {"1e99", "-9999999999999999.9999999999999999E+99", "1E-99", "0.5e1"}) EXPECT_TRUE(matches(g, ok)) << ok;
    for (const char* bad : {"9E665", "1e100", "1e-100", "1e"}) EXPECT_FALSE(matches(g, bad)) << bad;
    auto any = json_object_grammar();
    EXPECT_FALSE(matches(any, R"({"a":9E665})"));
}

// The formats' length ranges (which minLength/maxLength beside them must admit) are the rules'.
TEST(JsonSchema, FormatLengthsAreTheRulesLengths) {
    const std::vector<std::tuple<const char*, int, int>> formats = {
        {"date", 10, 10}, {"time", 9, 21}, {"date-time", 20, 27}, {"uuid", 36, 36}, {"ipv4", 7, 15},
        {"ipv6", 15, 39}, {"hostname", 4, 105}, {"email", 6, 166}, {"uri", 12, 198},
    };
    std::mt19937_64 rng(7);
    for (const auto& [f, lo, hi] : formats) {
        const std::string base = std::string(R"({"type":"string","format":")") + f + "\"";
        EXPECT_TRUE(compile_json_schema(ojson::parse(base + ",\"minLength\":" + std::to_string(lo) + ",\"maxLength\":" + std::to_string(hi) + "}")).ok()) << f;
        EXPECT_FALSE(compile_json_schema(ojson::parse(base + ",\"minLength\":" + std::to_string(lo + 1) + "}")).ok()) << f;
        EXPECT_FALSE(compile_json_schema(ojson::parse(base + ",\"maxLength\":" + std::to_string(hi - 1) + "}")).ok()) << f;
        // The walk reaches both ends when it is told to be short or long.
        auto g = must_compile(base + "}");
        size_t shortest = SIZE_MAX, longest = 0;
        for (size_t budget : {size_t{0}, size_t{1000}}) {
            GrammarSampler sampler(g, budget);
            for (int i = 0; i < 300; ++i) {
                const size_t n = n_chars(json::parse(sampler.sample(rng)).get<std::string>());
                shortest = std::min(shortest, n);
                longest = std::max(longest, n);
            }
        }
        EXPECT_EQ(shortest, static_cast<size_t>(lo)) << f;
        EXPECT_LE(longest, static_cast<size_t>(hi)) << f;
    }
}

// The key property without a model: random walks of the grammar (every choice random, what
// random weights could write) always parse as JSON and validate against the schema, with
// real dates, exact bounds and strictly checked formats.
TEST(JsonSchema, SampledOutputValidates) {
    const std::vector<const char*> schemas = {
        // what zodResponseFormat sends
        R"({"type":"object","properties":{"a":{"type":"string","nullable":true},"n":{"type":"number","nullable":true},"b":{"type":"boolean","nullable":true},
            "i":{"type":"integer","nullable":true},"p":{"type":"number","exclusiveMinimum":0},"t":{"type":"number","minimum":0.5,"maximum":2.5},
            "lit":{"type":"string","const":"x"},"tu":{"type":"array","minItems":2,"maxItems":2,"items":[{"type":"string"},{"type":"number"}]},
            "m":{"type":"object","additionalProperties":{"type":"number"}}},
            "required":["a","n","b","i","p","t","lit","tu","m"],"additionalProperties":false,"$schema":"http://json-schema.org/draft-07/schema#"})",
        R"({"type":"object","properties":{"d":{"type":"string","format":"date"},"dt":{"type":"string","format":"date-time"},"u":{"type":"string","format":"uuid"},
            "tm":{"type":"string","format":"time"},"e":{"type":"string","format":"email"},"url":{"type":"string","format":"uri"},
            "h":{"type":"string","format":"hostname"},"v4":{"type":"string","format":"ipv4"},"v6":{"type":"string","format":"ipv6"}},
            "required":["d","dt","u","tm","e","url","h","v4","v6"]})",
        R"({"type":"array","items":{"type":"string","format":"date"},"minItems":20,"maxItems":20})",
        R"({"type":"number","minimum":-2.75,"maximum":-0.5})",
        R"({"type":"number","exclusiveMinimum":-1.5,"exclusiveMaximum":0.001})",
        R"({"type":"number","minimum":0.1,"maximum":0.30000000000000004})",
        R"({"type":"number","minimum":1,"exclusiveMinimum":true,"maximum":1.0000001})",
        R"({"type":"integer","minimum":-7.5,"exclusiveMaximum":12.5})",
        R"({"type":"array","items":{"type":"string","minLength":1,"maxLength":3},"minItems":10,"maxItems":10})",
        R"({"type":"array","items":{"type":"number"},"minItems":30,"maxItems":30})",
        R"({"type":"object","properties":{"s":{"type":"string","enum":["a",5,"bcd"],"maxLength":2},"i":{"type":"integer","enum":[1,5,10,2.0],"maximum":6},
            "arr":{"type":"array","enum":[[1,2,3],[4]],"maxItems":1},"o":{"type":"object","properties":{}},"c":{"const":[1,{"k":null}]},
            "ne":{"type":"string","nullable":true,"enum":["x",null]}},"required":["s","i","arr","o","c","ne"]})",
        R"({"type":"array","prefixItems":[{"type":"boolean"},{"type":"string","format":"ipv4"}],"items":{"type":"integer","minimum":0,"maximum":3},"maxItems":5})",
        R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"number","minimum":0,"exclusiveMaximum":1},
            "kids":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":2}},"required":["v"]}},"$ref":"#/$defs/node"})",
    };
    std::mt19937_64 rng(14);
    for (const char* text : schemas) {
        const ojson schema = ojson::parse(text);
        auto g = must_compile(text);
        ASSERT_NE(g, nullptr);
        GrammarSampler sampler(g);
        for (int i = 0; i < 300; ++i) {
            const std::string out = sampler.sample(rng);
            ASSERT_TRUE(matches(g, out)) << "the sampler left the grammar: " << out;
            json v;
            ASSERT_NO_THROW(v = json::parse(out)) << text << "\n" << out;
            ASSERT_TRUE(valid(schema, v, schema)) << text << "\n" << out;
        }
    }
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
        // zod-style: nullable scalars, fractional and exclusive number bounds, formats, a tuple, a filtered enum
        R"({"type":"object","properties":{"a":{"type":"string","nullable":true,"maxLength":6},"p":{"type":"number","exclusiveMinimum":0,"maximum":2.5},
            "d":{"type":"string","format":"date"},"e":{"type":"string","format":"email"},"t":{"type":"array","minItems":2,"maxItems":2,"items":[{"type":"integer"},{"type":"boolean"}]},
            "k":{"type":"string","enum":["ab",7,"abcdef"],"maxLength":4}},"required":["a","p","d","e","t","k"],"additionalProperties":false})",
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
