// Internals of the JSON Schema compiler, shared by its .cpp files (json_schema.cpp: the
// compiler; json_schema_ranges.cpp: digit rules for bounded numbers; json_schema_check.cpp:
// checking a JSON value against a schema, to filter enum/const values). Not a public API: the
// server and the tests use json_schema.h.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "sampling/grammar.h"

namespace kvrag::sampling::schema_detail {

using ojson = nlohmann::ordered_json;

// The largest magnitude an integer (or a bounded number's integer part) may take when the
// schema gives no bound: kMaxIntDigits nines.
inline constexpr int64_t kIntLimit = 9999999999999999LL;

// GBNF string literal for raw bytes (UTF-8 passes through; quotes, backslashes and control
// bytes are escaped).
std::string literal(std::string_view bytes);

// ---- digit rules (json_schema_ranges.cpp)

// Every integer in [lo, hi] as JSON writes it (no leading zeros, "-0" excluded).
// Precondition: -kIntLimit <= lo <= hi <= kIntLimit.
std::string int_range(int64_t lo, int64_t hi);
// Canonical decimals of every n in [lo, hi]. Precondition: 0 <= lo <= hi <= kIntLimit.
std::string nonneg_range(int64_t lo, int64_t hi);
// Every JSON number without exponent (at most kMaxIntDigits integer digits and kMaxFracDigits
// fraction digits) whose decimal value x has lo <= x <= hi, where lo and hi are the doubles a
// validator parses the bounds to (an exclusive bound arrives as the next double inward; an
// unbounded side as an infinity). Exact as decimals against the shortest decimal that rounds to
// each bound, so the double a parser makes of the output also lies in [lo, hi] (rounding is
// monotonic). nullopt when no such number has at most kMaxFracDigits fraction digits.
std::optional<std::string> number_range(double lo, double hi);

// ---- formats (json_schema.cpp)

// The grammar of one string (quotes included) of a supported format; nullptr for any other
// format name. Shared instances, built once.
std::shared_ptr<const Grammar> format_grammar(const std::string& name);

// ---- checking values (json_schema_check.cpp)

// Does `value` satisfy `schema` (root: where "#/$defs/..." references resolve)? Covers the
// keywords the compiler supports; formats are checked against the subset the compiler
// generates (format_grammar). When false and `why` is set, *why says which keyword failed, e.g.
// "\"abc\" is longer than maxLength 2". Precondition: the compiler has accepted `schema`
// (unknown keywords and malformed values were refused before).
bool admits(const ojson& schema, const ojson& value, const ojson& root, std::string* why);

}  // namespace kvrag::sampling::schema_detail
