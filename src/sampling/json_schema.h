// JSON Schema -> GBNF grammar, for structured output (response_format json_schema / json_object).
//
// Coverage (anything else is an error naming the keyword, never silently ignored):
//   type: object, array, string, integer, number, boolean, null, or an array of these
//   object: properties (emitted in schema order), required (the others may be omitted),
//           additionalProperties. The grammar generates only the declared properties whether
//           additionalProperties is false, true or absent: declared-only output is valid in all
//           three cases. With no `properties`, any string keys are allowed, their values
//           following additionalProperties (a schema) or any JSON value (true / absent); false
//           then means "{}".
//   array:  items (a schema; absent = any value), minItems, maxItems
//   enum, const: any JSON values, matched as their compact serialisation
//   string: minLength, maxLength (in characters; an escape counts as one), format date, time,
//           date-time, uuid
//   integer: minimum, maximum, exclusiveMinimum, exclusiveMaximum: exact, through rules on
//           the decimal digits; without bounds at most kMaxIntDigits digits
//   number: without bounds any JSON number (at most kMaxIntDigits integer digits, 16 fraction
//           digits, 3 exponent digits, so a model cannot write digits forever); with bounds,
//           the bounds must be integers and the number is written without an exponent: exact
//   anyOf, oneOf: alternatives (oneOf's exclusivity is not enforced)
//   $ref: "#/$defs/NAME" or "#/definitions/NAME" (recursion allowed)
//   ignored annotations: title, description, default, examples, $schema, $id, $comment,
//   deprecated, readOnly, writeOnly
// Whitespace between tokens is at most kMaxWs characters of [ \t\n] at each place, so output
// is always finite.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "sampling/grammar.h"

namespace kvrag::sampling {

inline constexpr int kMaxWs = 8;
inline constexpr int kMaxIntDigits = 16;
inline constexpr int kMaxFracDigits = 16;
// 16 integer digits with a 2-digit exponent stay below 1e116: far from a double's 1.8e308.
inline constexpr int kMaxExpDigits = 2;

// GBNF text for the schema (start rule "root"). Errors: request_invalid naming the keyword
// and its JSON pointer, e.g. "json_schema keyword 'pattern' at #/properties/id is not supported".
// Properties are generated in the order of `schema`'s keys: an ordered_json keeps the source
// text's order; the nlohmann::json overload sees keys sorted (still valid output).
Result<std::string> json_schema_to_gbnf(const nlohmann::ordered_json& schema);
Result<std::string> json_schema_to_gbnf(const nlohmann::json& schema);
// json_schema_to_gbnf then Grammar::parse.
Result<std::shared_ptr<const Grammar>> compile_json_schema(const nlohmann::ordered_json& schema);
Result<std::shared_ptr<const Grammar>> compile_json_schema(const nlohmann::json& schema);
// Any JSON object (response_format json_object), with the same whitespace bound.
std::string json_object_gbnf();
std::shared_ptr<const Grammar> json_object_grammar();

}  // namespace kvrag::sampling
