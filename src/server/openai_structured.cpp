#include "server/openai_structured.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>

#include "sampling/json_schema.h"
#include "server/json_fields.h"

namespace kvrag::server {
namespace {

using ojson = nlohmann::ordered_json;

// The ordered twin of body[key] (or body[key] converted, when no ordered body was given).
ojson ordered_at(const json& v, const ojson* ordered_v) { return ordered_v ? *ordered_v : ojson::parse(v.dump()); }

// Function names as OpenAI allows them: a-z, A-Z, 0-9, _ and -, at most 64.
bool valid_function_name(const std::string& n) {
    if (n.empty() || n.size() > 64) return false;
    for (char c : n) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
    }
    return true;
}

// A token's text for the API: its bytes, or "bytes:\xHH..." when they are not valid UTF-8 on
// their own (a piece of a multi-byte character), as OpenAI writes such tokens.
std::string token_text(const std::string& piece) {
    if (!find_invalid_utf8(piece)) return piece;
    std::string out = "bytes:";
    char buf[8];
    for (unsigned char c : piece) {
        std::snprintf(buf, sizeof(buf), "\\x%02x", c);
        out += buf;
    }
    return out;
}

json bytes_json(const std::string& piece) {
    json b = json::array();
    for (unsigned char c : piece) b.push_back(static_cast<int>(c));
    return b;
}

// A logprob as JSON: -inf (a token the grammar or a bias ruled out) is not JSON; OpenAI's
// floor for "impossible" is -9999.0.
double finite_logprob(float lp) { return std::isfinite(lp) ? static_cast<double>(lp) : -9999.0; }

}  // namespace

std::optional<ApiError> parse_response_format(const json& body, const ojson* ordered, GenerationRequest& out) {
    auto it = body.find("response_format");
    if (it == body.end() || it->is_null()) return std::nullopt;
    const json& rf = *it;
    if (!rf.is_object()) return wrong_type("response_format", "an object", rf);
    auto type = rf.find("type");
    if (type == rf.end() || !type->is_string()) return ApiError::bad_request("'response_format' needs a string 'type' (text, json_object or json_schema)", "response_format");
    const std::string t = type->get<std::string>();
    for (const auto& [k, v] : rf.items()) {
        if (k != "type" && !(t == "json_schema" && k == "json_schema")) {
            return ApiError::bad_request("'response_format." + k + "' is not supported with type '" + t + "'", "response_format");
        }
    }
    out.response_format = t;
    if (t == "text") return std::nullopt;
    if (t == "json_object") {
        out.options.grammar = sampling::json_object_grammar();
        return std::nullopt;
    }
    if (t != "json_schema") return ApiError::bad_request("'response_format.type' '" + t + "' is not one of text, json_object, json_schema", "response_format");
    auto js = rf.find("json_schema");
    if (js == rf.end() || !js->is_object()) return ApiError::bad_request("'response_format.json_schema' must be an object {name, schema, strict}", "response_format");
    for (const auto& [k, v] : js->items()) {
        if (k != "name" && k != "schema" && k != "strict" && k != "description") {
            return ApiError::bad_request("'response_format.json_schema." + k + "' is not supported (name, description, schema, strict)", "response_format");
        }
    }
    auto name = js->find("name");
    if (name == js->end() || !name->is_string() || !valid_function_name(name->get<std::string>())) {
        return ApiError::bad_request("'response_format.json_schema.name' must be a string of a-z, A-Z, 0-9, _ or -, at most 64 characters", "response_format");
    }
    if (auto strict = js->find("strict"); strict != js->end() && !strict->is_null() && !strict->is_boolean()) {
        return wrong_type("response_format.json_schema.strict", "a boolean", *strict);
    }
    // strict true or false: the output follows the schema either way (a grammar cannot follow
    // it loosely), so both are accepted.
    auto schema = js->find("schema");
    if (schema == js->end() || schema->is_null()) {
        out.options.grammar = sampling::json_object_grammar();  // a schema-less json_schema is any object
        return std::nullopt;
    }
    const ojson* ordered_schema = nullptr;
    if (ordered && ordered->contains("response_format") && (*ordered)["response_format"].contains("json_schema")) {
        ordered_schema = &(*ordered)["response_format"]["json_schema"]["schema"];
    }
    auto g = sampling::compile_json_schema(ordered_at(*schema, ordered_schema));
    if (!g) return ApiError::bad_request("'response_format.json_schema.schema': " + g.error().message, "response_format");
    out.options.grammar = *g;
    return std::nullopt;
}

std::optional<ApiError> parse_logit_bias(const json& body, GenerationRequest& out) {
    auto it = body.find("logit_bias");
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_object()) return wrong_type("logit_bias", "an object of token id -> bias", *it);
    if (it->size() > 1024) return ApiError::bad_request("'logit_bias' has " + std::to_string(it->size()) + " entries; the limit is 1024", "logit_bias");
    for (const auto& [k, v] : it->items()) {
        size_t used = 0;
        long long id = -1;
        try {
            id = std::stoll(k, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != k.size() || id < 0 || id > INT32_MAX) {
            return ApiError::bad_request("'logit_bias' key '" + k + "' is not a token id (a non-negative integer as a string)", "logit_bias");
        }
        if (!v.is_number() || v.get<double>() < -100.0 || v.get<double>() > 100.0) {
            return ApiError::bad_request("'logit_bias' of token " + k + " must be a number in [-100, 100]", "logit_bias");
        }
        out.options.logit_bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(v.get<double>()));
    }
    return std::nullopt;
}

std::optional<ApiError> parse_logprobs(const json& body, bool chat, GenerationRequest& out) {
    if (chat) {
        if (auto e = get_bool(body, "logprobs", out.logprobs)) return e;
        std::optional<int64_t> top;
        if (auto e = get_integer(body, "top_logprobs", top)) return e;
        if (top && (*top < 0 || *top > sampling::kMaxTopLogprobs)) {
            return ApiError::bad_request("'top_logprobs' " + std::to_string(*top) + " is outside [0, " + std::to_string(sampling::kMaxTopLogprobs) + "]", "top_logprobs");
        }
        if (top && !out.logprobs) return ApiError::bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
        if (out.logprobs) out.options.n_logprobs = static_cast<int32_t>(top.value_or(0));
        return std::nullopt;
    }
    std::optional<int64_t> n;
    if (auto e = get_integer(body, "logprobs", n)) return e;
    if (n && (*n < 0 || *n > sampling::kMaxTopLogprobs)) {
        return ApiError::bad_request("'logprobs' " + std::to_string(*n) + " is outside [0, " + std::to_string(sampling::kMaxTopLogprobs) + "]", "logprobs");
    }
    if (n) {
        out.logprobs = true;
        out.options.n_logprobs = static_cast<int32_t>(*n);
    }
    if (auto e = get_bool(body, "echo", out.echo)) return e;
    if (out.echo && out.logprobs) {
        // The engine computes logits for a prompt's last position only.
        return ApiError::bad_request("'echo' together with 'logprobs' is not supported: prompt tokens get no logprobs here; drop one of them", "echo");
    }
    return std::nullopt;
}

std::optional<ApiError> parse_tools(const json& body, const ojson* ordered, GenerationRequest& out) {
    auto it = body.find("tools");
    const bool has_tools = it != body.end() && !it->is_null();
    if (has_tools) {
        if (!it->is_array()) return wrong_type("tools", "an array", *it);
        if (it->size() > 128) return ApiError::bad_request("'tools' has " + std::to_string(it->size()) + " entries; the limit is 128", "tools");
        for (size_t i = 0; i < it->size(); ++i) {
            const json& t = (*it)[i];
            const std::string at = "tools[" + std::to_string(i) + "]";
            if (!t.is_object() || !t.contains("type") || t["type"] != "function" || !t.contains("function") || !t["function"].is_object()) {
                return ApiError::bad_request(at + " must be {\"type\": \"function\", \"function\": {name, description, parameters}}", "tools");
            }
            const json& f = t["function"];
            for (const auto& [k, v] : f.items()) {
                if (k != "name" && k != "description" && k != "parameters" && k != "strict") {
                    return ApiError::bad_request(at + ".function." + k + " is not supported (name, description, parameters, strict)", "tools");
                }
            }
            chat::ToolFunction tf;
            if (!f.contains("name") || !f["name"].is_string() || !valid_function_name(f["name"].get<std::string>())) {
                return ApiError::bad_request(at + ".function.name must be a string of a-z, A-Z, 0-9, _ or -, at most 64 characters", "tools");
            }
            tf.name = f["name"].get<std::string>();
            for (const auto& other : out.tools) {
                if (other.name == tf.name) return ApiError::bad_request(at + ": the function name '" + tf.name + "' is given twice", "tools");
            }
            if (f.contains("description") && !f["description"].is_null()) {
                if (!f["description"].is_string()) return wrong_type(at + ".function.description", "a string", f["description"]);
                tf.description = f["description"].get<std::string>();
            }
            // A function's arguments are a JSON object (OpenAI's rule), so a forced call always
            // writes one: parameters absent or {} means no arguments (always "{}"), a schema
            // with properties but no type is an object's, any other type is refused.
            const std::string params_at = at + ".function.parameters";
            const bool no_params = !f.contains("parameters") || f["parameters"].is_null() || (f["parameters"].is_object() && f["parameters"].empty());
            if (!no_params) {
                if (!f["parameters"].is_object()) return wrong_type(params_at, "a JSON schema object", f["parameters"]);
                const ojson* op = ordered && (*ordered)["tools"].size() > i ? &(*ordered)["tools"][i]["function"]["parameters"] : nullptr;
                ojson params = ordered_at(f["parameters"], op);
                if (!params.contains("type") && params.contains("properties")) {
                    params["type"] = "object";
                } else if (!params.contains("type") || params["type"] != "object") {
                    return ApiError::bad_request("'" + params_at + "' must be an object schema ({\"type\": \"object\", \"properties\": {...}}): a function's arguments are a JSON object; got " +
                                                     (params.contains("type") ? "type " + params["type"].dump() : std::string("a schema without a type")),
                                                 params_at);
                }
                // Checked now, so a schema the grammar cannot enforce is refused before any work.
                if (auto g = sampling::json_schema_to_gbnf(params); !g) {
                    return ApiError::bad_request(params_at + ": " + g.error().message, params_at);
                }
                tf.parameters = params.dump();
            } else {
                tf.parameters = R"({"type":"object","properties":{},"additionalProperties":false})";
            }
            out.tools.push_back(std::move(tf));
        }
    }
    auto tc = body.find("tool_choice");
    if (tc == body.end() || tc->is_null()) {
        out.tool_choice = ToolChoice::automatic;
    } else if (tc->is_string()) {
        const std::string c = tc->get<std::string>();
        if (c == "none") out.tool_choice = ToolChoice::none;
        else if (c == "auto") out.tool_choice = ToolChoice::automatic;
        else if (c == "required") out.tool_choice = ToolChoice::required;
        else return ApiError::bad_request("'tool_choice' '" + c + "' is not one of none, auto, required, or {\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice");
    } else if (tc->is_object() && tc->contains("function") && (*tc)["function"].is_object() && (*tc)["function"].contains("name") &&
               (*tc)["function"]["name"].is_string()) {
        out.tool_choice = ToolChoice::named;
        out.tool_choice_name = (*tc)["function"]["name"].get<std::string>();
        bool found = false;
        for (const auto& t : out.tools) found = found || t.name == out.tool_choice_name;
        if (!found) return ApiError::bad_request("'tool_choice' names the function '" + out.tool_choice_name + "', which is not in 'tools'", "tool_choice");
    } else {
        return wrong_type("tool_choice", "\"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}", *tc);
    }
    if (out.tool_choice == ToolChoice::required && out.tools.empty()) {
        return ApiError::bad_request("'tool_choice' is 'required' but 'tools' is empty", "tool_choice");
    }
    if (auto ptc = body.find("parallel_tool_calls"); ptc != body.end() && !ptc->is_null()) {
        if (!ptc->is_boolean()) return wrong_type("parallel_tool_calls", "a boolean", *ptc);
        out.parallel_tool_calls = ptc->get<bool>();
    }
    if (out.tool_choice == ToolChoice::none) out.tools.clear();  // not offered, not parsed
    if (!out.tools.empty() && out.options.grammar) {
        return ApiError::bad_request("'response_format' json_object/json_schema together with 'tools' is not supported; the answer is either a call or the schema's JSON", "response_format");
    }
    return std::nullopt;
}

Result<std::shared_ptr<const sampling::Grammar>> tool_call_grammar(const GenerationRequest& req, chat::ToolFormat format) {
    const chat::ToolCallSyntax syn = chat::tool_call_syntax(format);
    // One schema per allowed function: {"name": const, args_key: parameters}. $defs of the
    // parameters are hoisted to the root, where their "#/$defs/..." references resolve.
    ojson alts = ojson::array();
    ojson defs = ojson::object();
    for (const auto& t : req.tools) {
        if (req.tool_choice == ToolChoice::named && t.name != req.tool_choice_name) continue;
        ojson params = ojson::parse(t.parameters);
        for (const char* section : {"$defs", "definitions"}) {
            if (!params.contains(section)) continue;
            for (const auto& [k, v] : params[section].items()) {
                if (defs.contains(k) && defs[k] != v) {
                    return Error{Errc::request_invalid, "tools: the schema definition '" + k + "' is defined differently by two tools; rename one"};
                }
                defs[k] = v;
            }
            params.erase(section);
        }
        alts.push_back(ojson{{"type", "object"},
                             {"properties", ojson{{"name", ojson{{"const", t.name}}}, {syn.args_key, params}}},
                             {"required", ojson::array({"name", syn.args_key})},
                             {"additionalProperties", false}});
    }
    ojson schema = alts.size() == 1 ? alts[0] : ojson{{"anyOf", alts}};
    if (!defs.empty()) {
        // "#/definitions/X" references are rewritten to the one section kept.
        std::string text = schema.dump();
        for (size_t at = 0; (at = text.find("\"#/definitions/", at)) != std::string::npos;) text.replace(at, 15, "\"#/$defs/");
        schema = ojson::parse(text);
        schema["$defs"] = defs;
    }
    auto gbnf = sampling::json_schema_to_gbnf(schema);
    if (!gbnf) return Error{Errc::request_invalid, "tools: " + gbnf.error().message};
    // The compiler's start rule becomes "call"; the format's text goes around it.
    std::string text = *gbnf;
    if (text.rfind("root ::= ", 0) != 0) return Error{Errc::engine_internal, "json_schema_to_gbnf did not start with the root rule"};
    text = "call" + text.substr(4);
    std::string root = "root ::= " + json(syn.prefix).dump();
    // One call, except for tool_choice required with parallel calls allowed in a format whose
    // calls are an array (Mistral's): a named function is called once, as OpenAI does.
    const bool several = syn.array && req.tool_choice == ToolChoice::required && req.parallel_tool_calls;
    if (syn.array) root += several ? " \"[\" ws call ws (\",\" ws call ws)* \"]\"" : " \"[\" ws call ws \"]\"";
    else root += " call";
    root += " " + json(syn.suffix).dump() + "\n";
    // json(...).dump() writes a JSON string literal; GBNF literals take the same escapes.
    return sampling::Grammar::parse(root + text);
}

std::string new_tool_call_id() {
    static const char* kAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::string id = "call_";
    for (int i = 0; i < 24; ++i) id += kAlnum[rng() % 62];
    return id;
}

size_t utf8_chars(std::string_view bytes) {
    size_t n = 0;
    for (char c : bytes) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
}

json logprobs_json(bool chat, std::span<const sampling::TokenLogprobs> lps, const tokenizer::Tokenizer& tok, size_t* text_chars) {
    if (chat) {
        json content = json::array();
        for (const auto& lp : lps) {
            const std::string piece = tok.token_to_piece(lp.token.id);
            json top = json::array();
            for (const auto& t : lp.top) {
                const std::string p = tok.token_to_piece(t.id);
                top.push_back(json{{"token", token_text(p)}, {"logprob", finite_logprob(t.logprob)}, {"bytes", bytes_json(p)}});
            }
            content.push_back(json{{"token", token_text(piece)}, {"logprob", finite_logprob(lp.token.logprob)}, {"bytes", bytes_json(piece)}, {"top_logprobs", top}});
        }
        return json{{"content", content}, {"refusal", nullptr}};
    }
    json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(), offsets = json::array();
    size_t chars = text_chars ? *text_chars : 0;
    for (const auto& lp : lps) {
        const std::string piece = tok.token_to_piece(lp.token.id);
        tokens.push_back(token_text(piece));
        token_logprobs.push_back(finite_logprob(lp.token.logprob));
        json top = json::object();
        for (const auto& t : lp.top) top[token_text(tok.token_to_piece(t.id))] = finite_logprob(t.logprob);
        top_logprobs.push_back(top);
        // Inside a character (its first byte came before): that character's offset.
        const bool inside = !piece.empty() && (static_cast<unsigned char>(piece[0]) & 0xC0) == 0x80 && chars > 0;
        offsets.push_back(inside ? chars - 1 : chars);
        chars += utf8_chars(piece);
    }
    if (text_chars) *text_chars = chars;
    return json{{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top_logprobs}, {"text_offset", offsets}};
}

json tool_calls_json(const std::vector<chat::ToolCall>& calls) {
    json out = json::array();
    for (size_t i = 0; i < calls.size(); ++i) {
        out.push_back(json{{"index", i},
                           {"id", calls[i].id},
                           {"type", "function"},
                           {"function", json{{"name", calls[i].name}, {"arguments", calls[i].arguments}}}});
    }
    return out;
}

json tool_call_delta_json(const chat::ToolCallEvent& e, const std::string& id) {
    if (e.kind == chat::ToolCallEvent::Kind::call_begin) {
        return json::array({json{{"index", e.index}, {"id", id}, {"type", "function"}, {"function", json{{"name", e.text}, {"arguments", ""}}}}});
    }
    return json::array({json{{"index", e.index}, {"function", json{{"arguments", e.text}}}}});
}

}  // namespace kvrag::server
