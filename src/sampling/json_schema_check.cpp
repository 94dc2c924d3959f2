// Checking a JSON value against a schema, for the keywords the compiler supports. The compiler
// uses it to keep only the enum/const values that the keywords beside them allow: those values
// are written as literals, so nothing else would stop {"type":"string","enum":["a",5]} from
// writing 5.
#include <algorithm>
#include <cmath>

#include "sampling/json_schema_detail.h"

namespace kvrag::sampling::schema_detail {

namespace {

size_t check_n_chars(const std::string& s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;  // UTF-8 lead bytes
    return n;
}

bool check_is_type(const ojson& v, const std::string& type) {
    if (type == "null") return v.is_null();
    if (type == "boolean") return v.is_boolean();
    if (type == "string") return v.is_string();
    if (type == "array") return v.is_array();
    if (type == "object") return v.is_object();
    if (type == "number") return v.is_number();
    // JSON Schema: an integer is any number with a zero fraction (5.0 included).
    if (type == "integer") return v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
    return false;
}

bool check_fail(std::string* why, const std::string& msg) {
    if (why) *why = msg;
    return false;
}

bool check_numeric(const ojson& s, const ojson& v, std::string* why) {
    const double x = v.get<double>();
    const std::string shown = v.dump();
    for (const auto& [key, lower] : {std::pair{"minimum", true}, std::pair{"maximum", false}}) {
        if (!s.contains(key)) continue;
        const char* excl = lower ? "exclusiveMinimum" : "exclusiveMaximum";
        const bool strict = s.contains(excl) && s[excl].is_boolean() && s[excl].get<bool>();  // draft 4
        const double b = s[key].get<double>();
        const bool ok = lower ? (strict ? x > b : x >= b) : (strict ? x < b : x <= b);
        if (!ok) return check_fail(why, shown + (lower ? " < " : " > ") + key + " " + s[key].dump() + (strict ? " (exclusive)" : ""));
    }
    for (const auto& [key, lower] : {std::pair{"exclusiveMinimum", true}, std::pair{"exclusiveMaximum", false}}) {
        if (!s.contains(key) || !s[key].is_number()) continue;
        const double b = s[key].get<double>();
        if (lower ? !(x > b) : !(x < b)) return check_fail(why, shown + (lower ? " <= " : " >= ") + key + " " + s[key].dump());
    }
    return true;
}

bool check_string(const ojson& s, const ojson& v, std::string* why) {
    const size_t n = check_n_chars(v.get<std::string>());
    if (s.contains("minLength") && n < s["minLength"].get<size_t>()) return check_fail(why, v.dump() + " is shorter than minLength " + s["minLength"].dump());
    if (s.contains("maxLength") && n > s["maxLength"].get<size_t>()) return check_fail(why, v.dump() + " is longer than maxLength " + s["maxLength"].dump());
    if (s.contains("format")) {
        const std::string f = s["format"].get<std::string>();
        const auto g = format_grammar(f);
        GrammarMatcher m(g);
        // The compiler's subset of the format: a listed value outside it is not generated.
        if (!g || !m.advance(v.dump()) || !m.accepting()) return check_fail(why, v.dump() + " is not a " + f + " the grammar writes");
    }
    return true;
}

bool check_value(const ojson& s, const ojson& v, const ojson& root, std::string* why, int depth);

bool check_array(const ojson& s, const ojson& v, const ojson& root, std::string* why, int depth) {
    const size_t n = v.size();
    if (s.contains("minItems") && n < s["minItems"].get<size_t>()) return check_fail(why, v.dump() + " has fewer than minItems " + s["minItems"].dump() + " items");
    if (s.contains("maxItems") && n > s["maxItems"].get<size_t>()) return check_fail(why, v.dump() + " has more than maxItems " + s["maxItems"].dump() + " items");
    // Element i follows prefixItems[i] / items[i] (a tuple), then items / additionalItems.
    const ojson* prefix = nullptr;
    const ojson* later = nullptr;
    if (s.contains("prefixItems")) {
        prefix = &s["prefixItems"];
        if (s.contains("items")) later = &s["items"];
    } else if (s.contains("items") && s["items"].is_array()) {
        prefix = &s["items"];
        if (s.contains("additionalItems")) later = &s["additionalItems"];
    } else if (s.contains("items")) {
        later = &s["items"];
    }
    for (size_t i = 0; i < n; ++i) {
        const ojson* sub = prefix && i < prefix->size() ? &(*prefix)[i] : later;
        if (sub && !check_value(*sub, v[i], root, why, depth + 1)) return false;
    }
    return true;
}

bool check_object(const ojson& s, const ojson& v, const ojson& root, std::string* why, int depth) {
    for (const auto& r : s.value("required", ojson::array())) {
        if (!v.contains(r.get<std::string>())) return check_fail(why, v.dump() + " lacks the required property " + r.dump());
    }
    const ojson none = ojson::object();
    const ojson& props = s.contains("properties") ? s["properties"] : none;
    for (const auto& [k, x] : v.items()) {
        if (props.contains(k)) {
            if (!check_value(props[k], x, root, why, depth + 1)) return false;
        } else if (s.contains("additionalProperties") && !check_value(s["additionalProperties"], x, root, why, depth + 1)) {
            return check_fail(why, v.dump() + " has the property \"" + k + "\" that additionalProperties does not allow");
        }
    }
    return true;
}

bool check_value(const ojson& s, const ojson& v, const ojson& root, std::string* why, int depth) {
    // The compiler has bounded the schema's depth, but a recursive $ref over a deep value
    // is bounded only here.
    if (depth > 256) return check_fail(why, "the value nests deeper than 256 levels");
    if (s.is_boolean()) return s.get<bool>() || check_fail(why, v.dump() + " is refused by the schema 'false'");
    if (s.contains("$ref")) {
        const std::string ref = s["$ref"].get<std::string>();
        const std::string section = ref.rfind("#/$defs/", 0) == 0 ? "$defs" : "definitions";
        return check_value(root[section][ref.substr(section.size() + 3)], v, root, why, depth + 1);
    }
    if (s.contains("anyOf")) {
        for (const auto& alt : s["anyOf"]) {
            if (check_value(alt, v, root, nullptr, depth + 1)) return true;
        }
        return check_fail(why, v.dump() + " matches none of anyOf");
    }
    if (s.contains("oneOf")) {
        int n_match = 0;
        for (const auto& alt : s["oneOf"]) n_match += check_value(alt, v, root, nullptr, depth + 1);
        return n_match == 1 || check_fail(why, v.dump() + " matches " + std::to_string(n_match) + " of oneOf, not exactly one");
    }
    if (s.contains("const") && s["const"] != v) return check_fail(why, v.dump() + " is not the const " + s["const"].dump());
    if (s.contains("enum") && std::find(s["enum"].begin(), s["enum"].end(), v) == s["enum"].end()) {
        return check_fail(why, v.dump() + " is not in the enum");
    }
    const bool null_ok = v.is_null() && s.value("nullable", false);
    if (s.contains("type") && !null_ok) {
        bool typed = false;
        if (s["type"].is_array()) {
            for (const auto& t : s["type"]) typed = typed || check_is_type(v, t.get<std::string>());
        } else {
            typed = check_is_type(v, s["type"].get<std::string>());
        }
        if (!typed) return check_fail(why, v.dump() + " is not of type " + s["type"].dump());
    }
    // Each kind's keywords apply only to values of that kind.
    if (v.is_number()) return check_numeric(s, v, why);
    if (v.is_string()) return check_string(s, v, why);
    if (v.is_array()) return check_array(s, v, root, why, depth);
    if (v.is_object()) return check_object(s, v, root, why, depth);
    return true;
}

}  // namespace

bool admits(const ojson& schema, const ojson& value, const ojson& root, std::string* why) { return check_value(schema, value, root, why, 0); }

}  // namespace kvrag::sampling::schema_detail
