#include "sampling/json_schema.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "sampling/json_schema_detail.h"

namespace kvrag::sampling {

namespace {

// ordered_json keeps the schema's key order, which is the order properties are generated in.
using json = nlohmann::ordered_json;
using schema_detail::kIntLimit;
using schema_detail::literal;
static_assert(kMaxIntDigits == 16, "kIntLimit spells out kMaxIntDigits nines");

const std::set<std::string> kAnnotations = {"title", "description", "default", "examples", "$schema", "$id",
                                            "$comment", "deprecated", "readOnly", "writeOnly"};
const std::set<std::string> kSupported = {"type", "properties", "required", "additionalProperties", "items", "minItems",
                                          "maxItems", "enum", "const", "minLength", "maxLength", "format", "minimum",
                                          "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf", "$ref",
                                          "$defs", "definitions", "nullable", "prefixItems", "additionalItems"};

// Shared rules. `char` is one JSON string character (an escape counts as one, as JSON Schema
// lengths count characters of the decoded string). \u escapes of surrogates (D800-DFFF) are
// excluded: a lone one is invalid JSON text for strict parsers, and pairs are not worth the
// rules when the character can be written as raw UTF-8. `bmp-char` leaves out the characters
// beyond U+FFFF: JavaScript counts each as two (UTF-16 units), so under a maxLength they could
// make a string that JSON Schema's count (code points) allows too long for zod's .max().
//
// Formats are subsets chosen so that every string passes strict validators (zod's .date(),
// .datetime(), .email(), .url(), .ip(), .uuid(); Python's date/datetime.fromisoformat,
// ipaddress; RFC 3339, 5321, 3986):
//   date: years 0001-9999 (Python has no year 0), days per month, Feb 29 in leap years only.
//   time: RFC 3339 full-time; fractions of 3 or 6 digits (what every fromisoformat reads).
//   date-time: "Z" only, since zod's default .datetime() refuses offsets.
//   hostname labels: lowercase letters and digits with single inner hyphens (no "xn--"-like
//   label an IDNA check could refuse), 2-4 labels ending in a 2-6 letter TLD (zod and FQDN
//   checks want letters there).
//   email: dot-atoms of [a-zA-Z0-9_+-] starting with a letter or digit; the domain ends in one
//   of a few common TLDs (email validators refuse special-use names like .test and .local).
//   ipv4: no leading zeros (Python and zod refuse them). ipv6: 8 groups, lowercase.
//   uri: https://hostname with up to 4 path segments that never are "." or "..".
const char* kCommonRules = R"(ws ::= [ \t\n]{0,8}
char ::= [^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" ([0-9a-cA-Ce-fE-F] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}))
string ::= "\"" char* "\""
bmp-char ::= [^"\\\x00-\x1F\U00010000-\U0010FFFF] | "\\" (["\\/bfnrt] | "u" ([0-9a-cA-Ce-fE-F] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}))
number ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})?
integer ::= "-"? ("0" | [1-9] [0-9]{0,15})
boolean ::= "true" | "false"
null ::= "null"
value ::= object | array | string | number | boolean | null
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
date ::= year "-" month-day | leap-year "-02-29"
year ::= "0" ("0" ("0" [1-9] | [1-9] [0-9]) | [1-9] [0-9]{2}) | [1-9] [0-9]{3}
leap-year ::= [0-9]{2} ("0" [48] | [2468] [048] | [13579] [26]) | ("0" [48] | [2468] [048] | [13579] [26]) "00"
month-day ::= ("0" [13578] | "1" [02]) "-" day-31 | ("0" [469] | "11") "-" day-30 | "02-" day-28
day-28 ::= "0" [1-9] | "1" [0-9] | "2" [0-8]
day-30 ::= day-28 | "29" | "30"
day-31 ::= day-30 | "31"
partial-time ::= ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{3} ([0-9]{3})?)?
time ::= partial-time ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])
date-time ::= date "T" partial-time "Z"
uuid ::= [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}
label ::= [a-z0-9]{1,10} ("-" [a-z0-9]{1,10}){0,2}
hostname ::= (label "."){1,3} [a-z]{2,6}
email ::= [a-zA-Z0-9] [a-zA-Z0-9_+-]{0,19} ("." [a-zA-Z0-9_+-]{1,20}){0,2} "@" (label "."){1,3} ("com" | "org" | "net" | "io" | "dev" | "app" | "info" | "co" | "uk" | "de")
dec-octet ::= "25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9] [0-9] | [0-9]
ipv4 ::= dec-octet "." dec-octet "." dec-octet "." dec-octet
ipv6 ::= [0-9a-f]{1,4} (":" [0-9a-f]{1,4}){7}
uri ::= "https://" hostname ("/" [a-zA-Z0-9_~-] [a-zA-Z0-9._~-]{0,19}){0,4} "/"?
)";
static_assert(kMaxWs == 8 && kMaxFracDigits == 16 && kMaxExpDigits == 2, "kCommonRules spells out these bounds");

// The `format` values a string may carry, each the name of a rule in kCommonRules.
const std::set<std::string> kFormats = {"date", "time", "date-time", "uuid", "email", "hostname", "ipv4", "ipv6", "uri"};
// The shortest and longest string of each format's rule (in characters, quotes excluded).
const std::map<std::string, std::pair<int64_t, int64_t>> kFormatLengths = {
    {"date", {10, 10}},  {"time", {9, 21}},  {"date-time", {20, 27}}, {"uuid", {36, 36}},  {"ipv4", {7, 15}},
    {"ipv6", {15, 39}},  {"hostname", {4, 105}}, {"email", {6, 166}},  {"uri", {12, 198}},
};

}  // namespace

namespace schema_detail {

// GBNF string literal for raw bytes (UTF-8 passes through; quotes, backslashes and control
// bytes are escaped).
std::string literal(std::string_view bytes) {
    std::string out = "\"";
    for (char c : bytes) {
        const auto u = static_cast<uint8_t>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\x%02X", u);
            out += buf;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

std::shared_ptr<const Grammar> format_grammar(const std::string& name) {
    static const std::map<std::string, std::shared_ptr<const Grammar>> grammars = [] {
        std::map<std::string, std::shared_ptr<const Grammar>> out;
        for (const auto& f : kFormats) {
            auto g = Grammar::parse("root ::= \"\\\"\" " + f + " \"\\\"\"\n" + kCommonRules);
            // Fixed texts: failing to parse one is a bug in this file, caught by the tests.
            out[f] = g.ok() ? *g : nullptr;
        }
        return out;
    }();
    auto it = grammars.find(name);
    return it == grammars.end() ? nullptr : it->second;
}

}  // namespace schema_detail

namespace {

class SchemaCompiler {
public:
    explicit SchemaCompiler(const json& root) : root_(root) {}

    std::string run() {
        const std::string body = visit(root_, "#");
        std::string out = "root ::= " + body + "\n";
        for (const auto& [name, rule] : rules_) out += name + " ::= " + rule + "\n";
        return out + kCommonRules;
    }

private:
    [[noreturn]] static void fail(const std::string& msg) { throw Exception(Errc::request_invalid, "json_schema " + msg); }

    std::string add_rule(std::string body) {
        const std::string name = "s" + std::to_string(rules_.size());
        rules_.emplace_back(name, std::move(body));
        return name;
    }

    static std::string join_alts(const std::vector<std::string>& alts) {
        if (alts.size() == 1) return alts[0];
        std::string out = "(";
        for (size_t i = 0; i < alts.size(); ++i) out += (i ? " | " : "") + alts[i];
        return out + ")";
    }

    static int64_t get_count(const json& s, const char* key, const std::string& at, int64_t dflt, int64_t limit) {
        if (!s.contains(key)) return dflt;
        const json& v = s[key];
        if (!v.is_number_integer() || v.get<int64_t>() < 0) fail("'" + std::string(key) + "' at " + at + " must be a non-negative integer");
        const int64_t n = v.get<int64_t>();
        if (n > limit) fail("'" + std::string(key) + "' " + std::to_string(n) + " at " + at + " is over the limit of " + std::to_string(limit));
        return n;
    }

    std::string visit(const json& s, const std::string& at) {
        if (++depth_ > 64) fail("at " + at + " nests deeper than 64 schemas");
        std::string r = visit_inner(s, at);
        --depth_;
        return r;
    }

    // `key` decides the value alone here; a constraint beside it would be silently dropped.
    static void only_with(const json& s, const std::string& key, const std::string& at) {
        for (const auto& [k, v] : s.items()) {
            if (k != key && k != "$defs" && k != "definitions" && !kAnnotations.count(k)) {
                fail("keyword '" + k + "' beside '" + key + "' at " + at + " is not supported (move it into each alternative)");
            }
        }
    }

    static bool has_any(const json& s, std::initializer_list<const char*> keys) {
        for (const char* k : keys) {
            if (s.contains(k)) return true;
        }
        return false;
    }

    std::string visit_inner(const json& s, const std::string& at) {
        if (s.is_boolean()) {
            if (!s.get<bool>()) fail("at " + at + " is 'false': no value can match it");
            return "value";
        }
        if (!s.is_object()) fail("at " + at + " must be an object or a boolean, got " + std::string(s.type_name()));
        for (const auto& [key, v] : s.items()) {
            if (!kSupported.count(key) && !kAnnotations.count(key)) fail("keyword '" + key + "' at " + at + " is not supported");
        }
        if (s.contains("nullable")) {
            if (!s["nullable"].is_boolean()) fail("'nullable' at " + at + " must be a boolean");
            // Beside enum/const, null must be listed to be valid (OpenAPI 3.0.3), so the enum's
            // filter (which reads nullable) decides. Elsewhere: the schema without it, or null.
            if (!has_any(s, {"enum", "const"})) {
                json inner = s;
                inner.erase("nullable");
                const std::string body = visit_inner(inner, at);
                return s["nullable"].get<bool>() ? add_rule(body + " | null") : body;
            }
        }
        if (s.contains("$ref")) {
            only_with(s, "$ref", at);
            return ref(s["$ref"], at);
        }
        for (const char* key : {"anyOf", "oneOf"}) {
            if (!s.contains(key)) continue;
            only_with(s, key, at);
            const json& list = s[key];
            if (!list.is_array() || list.empty()) fail("'" + std::string(key) + "' at " + at + " must be a non-empty array");
            std::vector<std::string> alts;
            for (size_t i = 0; i < list.size(); ++i) alts.push_back(visit(list[i], at + "/" + key + "/" + std::to_string(i)));
            return add_rule(join_alts(alts));
        }
        if (has_any(s, {"enum", "const"})) return enumerated(s, at);
        if (!s.contains("type")) {
            // Keywords of one kind apply only to values of that kind (any other value passes
            // them), so generating that kind alone honours them; "any value" would not.
            if (has_any(s, {"properties", "additionalProperties", "required"})) return object(s, at);
            if (has_any(s, {"items", "prefixItems", "additionalItems", "minItems", "maxItems"})) return array(s, at);
            if (has_any(s, {"minLength", "maxLength", "format"})) return string(s, at);
            if (has_any(s, {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})) return number(s, at);
            return "value";
        }
        const json& type = s["type"];
        if (type.is_array()) {
            if (type.empty()) fail("'type' at " + at + " is an empty array");
            std::vector<std::string> alts;
            for (const json& t : type) {
                if (!t.is_string()) fail("'type' at " + at + " lists a non-string");
                alts.push_back(typed(s, t.get<std::string>(), at));
            }
            return add_rule(join_alts(alts));
        }
        if (!type.is_string()) fail("'type' at " + at + " must be a string or an array of strings");
        return typed(s, type.get<std::string>(), at);
    }

    // enum and/or const: the listed values that satisfy every keyword beside them.
    std::string enumerated(const json& s, const std::string& at) {
        std::vector<json> values;
        if (s.contains("enum")) {
            const json& list = s["enum"];
            if (!list.is_array() || list.empty()) fail("'enum' at " + at + " must be a non-empty array");
            values.assign(list.begin(), list.end());
        }
        if (s.contains("const")) {
            const bool listed = values.empty() || std::find(values.begin(), values.end(), s["const"]) != values.end();
            values.clear();
            if (listed) values.push_back(s["const"]);
        }
        json rest = s;
        rest.erase("enum");
        rest.erase("const");
        rest.erase("$defs");
        rest.erase("definitions");
        // The other keywords are compiled once to check them (bad values, unsupported
        // keywords); the rules made are never referenced.
        json checked = rest;
        checked.erase("nullable");
        visit(checked, at);
        std::vector<std::string> alts;
        std::string why = s.contains("const") && values.empty() ? "'const' is not in 'enum'" : "";
        for (const json& v : values) {
            std::string reason;
            if (schema_detail::admits(rest, v, root_, &reason)) {
                alts.push_back(literal(v.dump()));
            } else if (why.empty()) {
                why = reason;
            }
        }
        if (alts.empty()) {
            fail("at " + at + ": no value of '" + std::string(s.contains("enum") ? "enum" : "const") + "' satisfies the keywords beside it (" + why +
                 "); change the values or those keywords");
        }
        return add_rule(join_alts(alts));
    }

    std::string typed(const json& s, const std::string& type, const std::string& at) {
        if (type == "object") return object(s, at);
        if (type == "array") return array(s, at);
        if (type == "string") return string(s, at);
        if (type == "integer") return integer(s, at);
        if (type == "number") return number(s, at);
        if (type == "boolean") return "boolean";
        if (type == "null") return "null";
        fail("type '" + type + "' at " + at + " is not a JSON Schema type");
    }

    std::string ref(const json& r, const std::string& at) {
        if (!r.is_string()) fail("'$ref' at " + at + " must be a string");
        const std::string target = r.get<std::string>();
        auto it = refs_.find(target);
        if (it != refs_.end()) return it->second;
        std::string section, name;
        for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
            if (target.rfind(prefix, 0) == 0) {
                section = std::string(prefix).substr(2, std::string(prefix).size() - 3);
                name = target.substr(std::string(prefix).size());
            }
        }
        if (target == "#") {
            // Tool parameters are compiled inside the call's schema, where '#' would be that.
            fail("'$ref' '#' (the root) at " + at + " is not supported; put the recursive schema in $defs and use '#/$defs/NAME'");
        }
        if (section.empty() || name.empty() || name.find('/') != std::string::npos) {
            fail("'$ref' '" + target + "' at " + at + " is not supported (only #/$defs/NAME and #/definitions/NAME)");
        }
        if (!root_.contains(section) || !root_[section].contains(name)) fail("'$ref' '" + target + "' at " + at + " points to nothing");
        // The rule is named before its body is built, so a recursive reference finds it.
        const std::string rule = "s" + std::to_string(rules_.size());
        rules_.emplace_back(rule, "");
        const size_t slot = rules_.size() - 1;
        refs_[target] = rule;
        const std::string body = visit(root_[section][name], target);
        rules_[slot].second = body;
        return rule;
    }

    std::string object(const json& s, const std::string& at) {
        const json empty = json::object();
        const json& props = s.contains("properties") ? s["properties"] : empty;
        if (!props.is_object()) fail("'properties' at " + at + " must be an object");
        std::set<std::string> required;
        if (s.contains("required")) {
            if (!s["required"].is_array()) fail("'required' at " + at + " must be an array");
            for (const json& n : s["required"]) {
                if (!n.is_string()) fail("'required' at " + at + " lists a non-string");
                if (!props.contains(n.get<std::string>())) {
                    fail("required property '" + n.get<std::string>() + "' at " + at + " is not in 'properties' (extra keys are never generated)");
                }
                required.insert(n.get<std::string>());
            }
        }
        if (props.empty()) {
            const json& extra = s.contains("additionalProperties") ? s["additionalProperties"] : json(true);
            // Only declared properties are generated: `properties: {}` declares none, so "{}"
            // (a function without parameters gets "{}"), unless a schema for other keys is given.
            if (extra.is_boolean() && (!extra.get<bool>() || s.contains("properties"))) return literal("{") + " ws " + literal("}");
            const std::string v = visit(extra, at + "/additionalProperties");
            const std::string kv = "string ws \":\" ws " + v + " ws";
            return add_rule("\"{\" ws ( " + kv + " ( \",\" ws " + kv + " )* )? \"}\"");
        }
        if (s.contains("additionalProperties")) {
            const json& extra = s["additionalProperties"];
            if (!extra.is_boolean()) visit(extra, at + "/additionalProperties");  // checked, never generated
        }
        // rest[i][c]: properties i.. in order, c = a comma must precede the next one.
        std::vector<std::string> names, values;
        for (const auto& [name, sub] : props.items()) {
            names.push_back(name);
            values.push_back(visit(sub, at + "/properties/" + name));
        }
        const size_t n = names.size();
        std::vector<std::array<std::string, 2>> rest(n + 1);
        rest[n] = {"", ""};
        for (size_t i = n; i-- > 0;) {
            const std::string kv = literal(json(names[i]).dump()) + " ws \":\" ws " + values[i] + " ws";
            for (int c = 0; c < 2; ++c) {
                const std::string take = std::string(c ? "\",\" ws " : "") + kv + (rest[i + 1][1].empty() ? "" : " " + rest[i + 1][1]);
                if (required.count(names[i])) {
                    rest[i][c] = add_rule(take);
                } else {
                    const std::string skip = rest[i + 1][c].empty() ? "\"\"" : rest[i + 1][c];
                    rest[i][c] = add_rule(take + " | " + skip);
                }
            }
        }
        return add_rule("\"{\" ws " + rest[0][0] + " \"}\"");
    }

    std::string array(const json& s, const std::string& at) {
        // A tuple: prefixItems (2020-12) with `items` for the elements after it, or `items` as
        // an array (draft-07, what zod writes for z.tuple) with additionalItems.
        const json* prefix = nullptr;
        const json* later = nullptr;  // schema of the elements after the prefix; null: any
        std::string prefix_at, later_at;
        if (s.contains("prefixItems")) {
            if (s.contains("additionalItems")) fail("'additionalItems' beside 'prefixItems' at " + at + " is not supported (use 'items')");
            prefix = &s["prefixItems"];
            prefix_at = at + "/prefixItems";
            if (s.contains("items")) later = &s["items"], later_at = at + "/items";
        } else if (s.contains("items") && s["items"].is_array()) {
            prefix = &s["items"];
            prefix_at = at + "/items";
            if (s.contains("additionalItems")) later = &s["additionalItems"], later_at = at + "/additionalItems";
        } else {
            if (s.contains("additionalItems")) fail("'additionalItems' at " + at + " only applies beside an array 'items' (a tuple)");
            if (s.contains("items")) later = &s["items"], later_at = at + "/items";
        }
        if (prefix && !prefix->is_array()) fail("'" + prefix_at.substr(prefix_at.rfind('/') + 1) + "' at " + at + " must be an array of schemas");
        const int64_t n_prefix = prefix ? static_cast<int64_t>(prefix->size()) : 0;
        const bool closed = later && later->is_boolean() && !later->get<bool>();  // nothing after the prefix
        const std::string item = later && !closed ? visit(*later, later_at) : "value";
        const int64_t lo = get_count(s, "minItems", at, 0, kMaxRepeat);
        int64_t hi = get_count(s, "maxItems", at, -1, kMaxRepeat);
        if (hi >= 0 && hi < lo) fail("maxItems " + std::to_string(hi) + " < minItems " + std::to_string(lo) + " at " + at);
        if (closed && (hi < 0 || hi > n_prefix)) hi = n_prefix;
        if (hi >= 0 && hi < lo) fail("minItems " + std::to_string(lo) + " at " + at + " is more than the " + std::to_string(n_prefix) + " tuple items with no others allowed");
        if (hi == 0) return add_rule("\"[\" ws \"]\"");
        if (n_prefix == 0) {
            const std::string more_lo = std::to_string(lo > 0 ? lo - 1 : 0);
            const std::string more = "( \",\" ws " + item + " ws ){" + more_lo + "," + (hi < 0 ? "" : std::to_string(hi - 1)) + "}";
            const std::string items = item + " ws " + more;
            return add_rule("\"[\" ws " + (lo > 0 ? items : "( " + items + " )?") + " \"]\"");
        }
        std::vector<std::string> elems;
        for (int64_t j = 0; j < n_prefix; ++j) elems.push_back(visit((*prefix)[j], prefix_at + "/" + std::to_string(j)));
        // after[j]: what may follow once j elements are written (j >= 1); "" = nothing.
        std::string after;
        if (hi < 0 || hi > n_prefix) {
            after = "( \",\" ws " + item + " ws ){" + std::to_string(std::max<int64_t>(lo - n_prefix, 0)) + "," + (hi < 0 ? "" : std::to_string(hi - n_prefix)) + "}";
        }
        for (int64_t j = std::min<int64_t>(n_prefix, hi < 0 ? n_prefix : hi) - 1; j >= 1; --j) {
            const std::string next = "\",\" ws " + elems[j] + " ws" + (after.empty() ? "" : " " + after);
            after = add_rule(j >= lo ? "( " + next + " )?" : next);
        }
        const std::string first = elems[0] + " ws" + (after.empty() ? "" : " " + after);
        return add_rule("\"[\" ws " + (lo >= 1 ? first : "( " + first + " )?") + " \"]\"");
    }

    std::string string(const json& s, const std::string& at) {
        if (s.contains("format")) {
            const std::string f = s["format"].is_string() ? s["format"].get<std::string>() : "";
            if (!kFormats.count(f)) {
                fail("format '" + f + "' at " + at + " is not supported (date, time, date-time, uuid, email, hostname, ipv4, ipv6, uri are)");
            }
            // The format's strings are not cut to a length: lengths beside it must admit them all.
            // Only compared, never a repetition count: no kMaxRepeat limit (Pydantic's HttpUrl
            // sends maxLength 2083).
            const auto [f_lo, f_hi] = kFormatLengths.at(f);
            const int64_t lo = get_count(s, "minLength", at, 0, INT64_MAX);
            const int64_t hi = get_count(s, "maxLength", at, -1, INT64_MAX);
            if (lo > f_lo || (hi >= 0 && hi < f_hi)) {
                fail("minLength/maxLength at " + at + " cut into format '" + f + "' (its strings have " + std::to_string(f_lo) + " to " + std::to_string(f_hi) +
                     " characters); allow that range or drop them");
            }
            return add_rule("\"\\\"\" " + f + " \"\\\"\"");
        }
        const int64_t lo = get_count(s, "minLength", at, 0, kMaxRepeat);
        const int64_t hi = get_count(s, "maxLength", at, -1, kMaxRepeat);
        if (hi >= 0 && hi < lo) fail("maxLength " + std::to_string(hi) + " < minLength " + std::to_string(lo) + " at " + at);
        if (lo == 0 && hi < 0) return "string";
        // With a maximum, only characters that count the same in code points and UTF-16 units.
        const std::string ch = hi < 0 ? "char" : "bmp-char";
        return add_rule("\"\\\"\" " + ch + "{" + std::to_string(lo) + "," + (hi < 0 ? "" : std::to_string(hi)) + "} \"\\\"\"");
    }

    // The bounds of an integer or number as doubles: lower (-inf when absent) and whether it
    // is exclusive; the same for the upper. exclusiveMinimum/Maximum are numbers (draft 6+) or
    // booleans that make minimum/maximum exclusive (draft 4).
    struct Bounds {
        double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
        bool lo_strict = false, hi_strict = false, bounded = false;
    };
    static Bounds read_bounds(const json& s, const std::string& at) {
        Bounds b;
        auto num = [&](const char* key) {
            if (!s[key].is_number()) fail("'" + std::string(key) + "' at " + at + " must be a number");
            b.bounded = true;
            return s[key].get<double>();
        };
        // Keeps the tighter of two lower bounds (at the same value, the strict one).
        auto lower = [&](double v, bool strict) {
            if (v > b.lo || (v == b.lo && strict)) b.lo = v, b.lo_strict = strict;
        };
        auto upper = [&](double v, bool strict) {
            if (v < b.hi || (v == b.hi && strict)) b.hi = v, b.hi_strict = strict;
        };
        for (const auto& [bound, excl, is_lower] : {std::tuple{"minimum", "exclusiveMinimum", true}, std::tuple{"maximum", "exclusiveMaximum", false}}) {
            bool draft4_strict = false;
            if (s.contains(excl) && s[excl].is_boolean()) {
                draft4_strict = s[excl].get<bool>();
                if (draft4_strict && !s.contains(bound)) fail("'" + std::string(excl) + "': true at " + at + " needs '" + bound + "' (the draft-4 form)");
            } else if (s.contains(excl)) {
                is_lower ? lower(num(excl), true) : upper(num(excl), true);
            }
            if (s.contains(bound)) is_lower ? lower(num(bound), draft4_strict) : upper(num(bound), draft4_strict);
        }
        return b;
    }

    std::string integer(const json& s, const std::string& at) {
        const Bounds b = read_bounds(s, at);
        if (!b.bounded) return "integer";
        const double lo = b.lo_strict ? std::floor(b.lo) + 1 : std::ceil(b.lo);
        const double hi = b.hi_strict ? std::ceil(b.hi) - 1 : std::floor(b.hi);
        // kIntLimit (10^16 - 1) is not a double: the clamp is done on the integers, else an
        // unbounded side would round up to 10^16 and allow a 17-digit number.
        auto clamp = [](double v) {
            if (v >= static_cast<double>(kIntLimit)) return kIntLimit;
            if (v <= -static_cast<double>(kIntLimit)) return -kIntLimit;
            return static_cast<int64_t>(v);
        };
        const int64_t ilo = clamp(lo), ihi = clamp(hi);
        if (ilo > ihi) fail("integer bounds at " + at + " leave no value (" + std::to_string(ilo) + " > " + std::to_string(ihi) + ")");
        return add_rule(schema_detail::int_range(ilo, ihi));
    }

    std::string number(const json& s, const std::string& at) {
        const Bounds b = read_bounds(s, at);
        if (!b.bounded) return "number";
        // An exclusive bound becomes the next double inward: a validator compares the double it
        // parses the output to with the double it parses the bound to, so x > b is x >= next(b).
        const double lo = b.lo_strict ? std::nextafter(b.lo, std::numeric_limits<double>::infinity()) : b.lo;
        const double hi = b.hi_strict ? std::nextafter(b.hi, -std::numeric_limits<double>::infinity()) : b.hi;
        std::optional<std::string> body = lo <= hi ? schema_detail::number_range(lo, hi) : std::nullopt;
        if (!body) {
            fail("number bounds at " + at + " leave no value with at most " + std::to_string(kMaxIntDigits) + " integer and " + std::to_string(kMaxFracDigits) +
                 " fraction digits");
        }
        return add_rule(*body);
    }

    const json& root_;
    std::vector<std::pair<std::string, std::string>> rules_;
    std::map<std::string, std::string> refs_;
    int depth_ = 0;
};

}  // namespace

Result<std::string> json_schema_to_gbnf(const nlohmann::json& schema) {
    return json_schema_to_gbnf(nlohmann::ordered_json::parse(schema.dump()));
}

Result<std::string> json_schema_to_gbnf(const nlohmann::ordered_json& schema) {
    try {
        SchemaCompiler c(schema);
        return c.run();
    } catch (const Exception& e) {
        return e.error();
    } catch (const nlohmann::json::exception& e) {
        return Error{Errc::request_invalid, std::string("json_schema: ") + e.what()};
    }
}

Result<std::shared_ptr<const Grammar>> compile_json_schema(const nlohmann::ordered_json& schema) {
    auto text = json_schema_to_gbnf(schema);
    if (!text) return text.error();
    return Grammar::parse(*text);
}

Result<std::shared_ptr<const Grammar>> compile_json_schema(const nlohmann::json& schema) {
    return compile_json_schema(nlohmann::ordered_json::parse(schema.dump()));
}

std::string json_object_gbnf() { return std::string("root ::= object\n") + kCommonRules; }

std::shared_ptr<const Grammar> json_object_grammar() {
    // One shared instance: the token mask's cache keys states by their grammar object, so
    // json_object requests then reuse each other's masks.
    static const std::shared_ptr<const Grammar> shared = [] {
        auto g = Grammar::parse(json_object_gbnf());
        // A fixed text: failing to parse it is a bug in this file, caught by the tests.
        return g.ok() ? *g : nullptr;
    }();
    return shared;
}

}  // namespace kvrag::sampling
