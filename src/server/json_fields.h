// Reading typed fields from a JSON request body, with errors that name the field.
//
// Shared by every request parser (OpenAI generation and embeddings, rerank): a field of the
// wrong type, out of range or unknown becomes an ApiError whose `param` is the field's name.
// Absent and null fields leave the output unchanged.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "server/api_error.h"

namespace kvrag::server {

// The JSON type as a word for messages ("string", "integer", "array", ...).
const char* type_name(const json& v);

// "'FIELD' must be WANT, got TYPE".
ApiError wrong_type(const std::string& field, const char* want, const json& got);

// An optional number within [lo, hi].
std::optional<ApiError> get_number(const json& body, const char* field, double lo, double hi, double& out);

// An optional integer field (any JSON integer; huge values saturate to int64).
std::optional<ApiError> get_integer(const json& body, const char* field, std::optional<int64_t>& out);

std::optional<ApiError> get_bool(const json& body, const char* field, bool& out);

// A token-id array: every element an integer in int32 range (the engine checks the vocabulary).
std::optional<ApiError> get_token_ids(const json& arr, const std::string& field, std::vector<int32_t>& out);

// Refuses the first field of `body` that is not in `known` (nothing is silently ignored):
// "'FIELD' is not supported by /ENDPOINT (supported: a, b, c)".
std::optional<ApiError> refuse_unknown_fields(const json& body, std::initializer_list<const char*> known, const char* endpoint);

}  // namespace kvrag::server
