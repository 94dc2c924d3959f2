#include "server/json_fields.h"

#include <cmath>
#include <cstdio>
#include <limits>

namespace kvrag::server {

const char* type_name(const json& v) {
    switch (v.type()) {
        case json::value_t::null: return "null";
        case json::value_t::boolean: return "boolean";
        case json::value_t::string: return "string";
        case json::value_t::number_integer:
        case json::value_t::number_unsigned: return "integer";
        case json::value_t::number_float: return "number";
        case json::value_t::array: return "array";
        case json::value_t::object: return "object";
        default: return "value";
    }
}

ApiError wrong_type(const std::string& field, const char* want, const json& got) {
    return ApiError::bad_request("'" + field + "' must be " + want + ", got " + type_name(got), field);
}

std::optional<ApiError> get_number(const json& body, const char* field, double lo, double hi, double& out) {
    auto it = body.find(field);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) return wrong_type(field, "a number", *it);
    const double v = it->get<double>();
    if (!std::isfinite(v) || v < lo || v > hi) {
        char buf[160];
        std::snprintf(buf, sizeof(buf), "'%s' %g is outside [%g, %g]", field, v, lo, hi);
        return ApiError::bad_request(buf, field);
    }
    out = v;
    return std::nullopt;
}

std::optional<ApiError> get_integer(const json& body, const char* field, std::optional<int64_t>& out) {
    auto it = body.find(field);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (it->is_number_unsigned()) {
        const uint64_t u = it->get<uint64_t>();
        out = u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max()
                                                                             : static_cast<int64_t>(u);
        return std::nullopt;
    }
    if (it->is_number_integer()) {
        out = it->get<int64_t>();
        return std::nullopt;
    }
    return wrong_type(field, "an integer", *it);
}

std::optional<ApiError> get_bool(const json& body, const char* field, bool& out) {
    auto it = body.find(field);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean()) return wrong_type(field, "a boolean", *it);
    out = it->get<bool>();
    return std::nullopt;
}

std::optional<ApiError> get_token_ids(const json& arr, const std::string& field, std::vector<int32_t>& out) {
    out.clear();
    for (size_t i = 0; i < arr.size(); ++i) {
        const json& t = arr[i];
        if (!t.is_number_integer()) {
            return ApiError::bad_request("'" + field + "' element " + std::to_string(i) + " must be an integer token id, got " + type_name(t), field);
        }
        const int64_t v = t.get<int64_t>();
        if (v < 0 || v > std::numeric_limits<int32_t>::max()) {
            return ApiError::bad_request("'" + field + "' element " + std::to_string(i) + " is token id " + std::to_string(v) + ", outside the vocabulary", field);
        }
        out.push_back(static_cast<int32_t>(v));
    }
    return std::nullopt;
}

std::optional<ApiError> refuse_unknown_fields(const json& body, std::initializer_list<const char*> known, const char* endpoint) {
    for (auto it = body.begin(); it != body.end(); ++it) {
        bool ok = false;
        for (const char* k : known) ok = ok || it.key() == k;
        if (ok) continue;
        std::string list;
        for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
        return ApiError::bad_request("'" + it.key() + "' is not supported by " + endpoint + " (supported: " + list + ")", it.key());
    }
    return std::nullopt;
}

}  // namespace kvrag::server
