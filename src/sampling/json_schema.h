// JSON Schema -> GBNF grammar, for structured output (response_format json_schema / json_object).
// Whatever a model writes under the grammar (random weights included) validates against the
// schema: a keyword the grammar cannot enforce is an error naming it, never silently ignored.
//
// Coverage:
//   type: object, array, string, integer, number, boolean, null, or an array of these. Without
//           `type`, the keywords present pick the kind (properties: object; items: array;
//           minLength/maxLength/format: string; bounds: number), else any value.
//   nullable: true (OpenAPI, what zod writes for .nullable() on scalars): the schema or null.
//           Beside enum/const, null is generated only when the list holds it (OpenAPI 3.0.3).
//   object: properties (emitted in schema order), required (the others may be omitted),
//           additionalProperties. Only the declared properties are generated, whether
//           additionalProperties is false, true or absent: declared-only output is valid in all
//           three cases; `properties: {}` thus gives "{}". With no `properties` keyword (or
//           `properties: {}` beside an additionalProperties schema) any string keys are
//           allowed, their values following additionalProperties (a schema) or any JSON value
//           (true / absent); false then means "{}".
//   array:  items (a schema; absent = any value), minItems, maxItems; tuples: prefixItems with
//           items as the schema of later elements (2020-12), or items as an array with
//           additionalItems (draft-07); false ends the array after the tuple
//   enum, const: any JSON values, matched as their compact serialisation. Only the values that
//           satisfy the keywords beside them (type, bounds, lengths, formats, item counts,
//           properties, ...) are generated; when none does, an error names the keyword.
//   string: minLength, maxLength (in code points; an escape counts as one; under a maxLength
//           only characters up to U+FFFF, which zod's UTF-16 count sees the same); format
//           date (real dates, Feb 29 only in leap years, years 0001-9999), time (RFC 3339),
//           date-time (UTC "Z" only: zod's .datetime() refuses offsets), uuid, and
//           conservative always-valid subsets of email, hostname, ipv4, ipv6 (the full
//           8-group form) and uri (https://host/path); docs/grammar.md spells them out.
//   integer: minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers, or draft-4
//           booleans beside minimum/maximum): exact, through rules on the decimal digits;
//           without bounds at most kMaxIntDigits digits
//   number: without bounds any JSON number with at most kMaxIntDigits integer digits,
//           kMaxFracDigits fraction digits and kMaxExpDigits exponent digits (so a model cannot
//           write digits forever, and every number is a finite double). With any bound the
//           number is written without an exponent and every bound (fractional, exclusive) holds
//           exactly for the double a parser makes of it.
//   anyOf, oneOf: alternatives (oneOf's exclusivity is not enforced)
//   $ref: "#/$defs/NAME" or "#/definitions/NAME" (recursion allowed); "#" (the root) is not
//           supported: tool parameters are compiled inside a larger schema, where "#" would
//           mean something else
//   ignored annotations: title, description, default, examples, $schema, $id, $comment,
//   deprecated, readOnly, writeOnly
// Not supported (an error): pattern, other formats, allOf, not, if/then/else, uniqueItems,
// multipleOf, contains, propertyNames, patternProperties, ...
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
