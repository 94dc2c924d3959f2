#include "server/openai_api.h"

#include "server/json_fields.h"
#include "server/openai_structured.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace kvrag::server {
namespace {

std::optional<ApiError> check_model(const json& body, const ApiLimits& limits, std::string& out) {
    auto it = body.find("model");
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) return wrong_type("model", "a string", *it);
    out = it->get<std::string>();
    if (out.empty() || out == limits.model_id) return std::nullopt;
    for (const auto& a : limits.model_aliases) {
        if (out == a) return std::nullopt;
    }
    if (!limits.strict_model_names) {
        out.clear();  // answered by the served model, under its own name
        return std::nullopt;
    }
    return api_error(Errc::request_model_not_found, "The model '" + out + "' does not exist; this server serves '" + limits.model_id + "' (--strict-model-names)", "model");
}

std::optional<ApiError> parse_prompt(const json& body, GenerationRequest& out) {
    auto it = body.find("prompt");
    if (it == body.end() || it->is_null()) return ApiError::bad_request("missing required field 'prompt'", "prompt");
    const json& p = *it;
    if (p.is_string()) {
        out.prompt_text = p.get<std::string>();
        return std::nullopt;
    }
    if (!p.is_array()) return wrong_type("prompt", "a string, an array of one string, or an array of token ids", p);
    if (p.empty()) return ApiError::bad_request("'prompt' is an empty array", "prompt");
    if (p[0].is_string()) {
        if (p.size() != 1) {
            return ApiError::bad_request("'prompt' has " + std::to_string(p.size()) + " strings; this server takes one prompt per request", "prompt");
        }
        out.prompt_text = p[0].get<std::string>();
        return std::nullopt;
    }
    if (p[0].is_array()) {
        if (p.size() != 1) {
            return ApiError::bad_request("'prompt' has " + std::to_string(p.size()) + " token arrays; this server takes one prompt per request", "prompt");
        }
        if (p[0].empty()) return ApiError::bad_request("'prompt' token array is empty", "prompt");
        out.has_token_prompt = true;
        return get_token_ids(p[0], "prompt", out.prompt_tokens);
    }
    out.has_token_prompt = true;
    return get_token_ids(p, "prompt", out.prompt_tokens);
}

std::optional<ApiError> parse_messages(const json& body, GenerationRequest& out) {
    auto it = body.find("messages");
    if (it == body.end() || it->is_null()) return ApiError::bad_request("missing required field 'messages'", "messages");
    if (!it->is_array()) return wrong_type("messages", "an array", *it);
    if (it->empty()) return ApiError::bad_request("'messages' is empty; give at least one message", "messages");
    for (size_t i = 0; i < it->size(); ++i) {
        const json& m = (*it)[i];
        const std::string at = "messages[" + std::to_string(i) + "]";
        if (!m.is_object()) return wrong_type(at, "an object", m);
        auto role = m.find("role");
        if (role == m.end() || !role->is_string()) return ApiError::bad_request(at + " needs a string 'role'", at + ".role");
        chat::Message msg;
        msg.role = role->get<std::string>();
        if (msg.role == "developer") msg.role = "system";
        if (msg.role != "system" && msg.role != "user" && msg.role != "assistant" && msg.role != "tool") {
            return ApiError::bad_request(at + ".role '" + msg.role + "' is not supported (system, developer, user, assistant, tool)", at + ".role");
        }
        if (msg.role == "tool") {
            auto id = m.find("tool_call_id");
            if (id == m.end() || !id->is_string()) return ApiError::bad_request(at + " (role tool) needs a string 'tool_call_id'", at + ".tool_call_id");
            msg.tool_call_id = id->get<std::string>();
        }
        if (auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null()) {
            if (msg.role != "assistant" || !calls->is_array()) return ApiError::bad_request(at + ".tool_calls must be an array on an assistant message", at + ".tool_calls");
            for (size_t k = 0; k < calls->size(); ++k) {
                const json& c = (*calls)[k];
                const std::string cat = at + ".tool_calls[" + std::to_string(k) + "]";
                if (!c.is_object() || !c.contains("function") || !c["function"].is_object() || !c["function"].contains("name") ||
                    !c["function"]["name"].is_string()) {
                    return ApiError::bad_request(cat + " must be {id, type: function, function: {name, arguments}}", cat);
                }
                chat::ToolCall call;
                call.id = c.contains("id") && c["id"].is_string() ? c["id"].get<std::string>() : "";
                call.name = c["function"]["name"].get<std::string>();
                const json& args = c["function"].value("arguments", json("{}"));
                call.arguments = args.is_string() ? args.get<std::string>() : args.dump();
                msg.tool_calls.push_back(std::move(call));
            }
        }
        auto content = m.find("content");
        if (content == m.end() || content->is_null()) {
            if (msg.role != "assistant") return ApiError::bad_request(at + " needs 'content'", at + ".content");
        } else if (content->is_string()) {
            msg.content = content->get<std::string>();
        } else if (content->is_array()) {
            // Content parts: only text parts are supported.
            for (size_t k = 0; k < content->size(); ++k) {
                const json& part = (*content)[k];
                const std::string pat = at + ".content[" + std::to_string(k) + "]";
                if (!part.is_object()) return wrong_type(pat, "an object", part);
                auto type = part.find("type");
                auto text = part.find("text");
                if (type == part.end() || !type->is_string() || type->get<std::string>() != "text" || text == part.end() || !text->is_string()) {
                    return ApiError::bad_request(pat + " must be {\"type\":\"text\",\"text\":\"...\"}; other content parts are not supported", pat);
                }
                msg.content += text->get<std::string>();
            }
        } else {
            return wrong_type(at + ".content", "a string or an array of text parts", *content);
        }
        out.messages.push_back(std::move(msg));
    }
    return std::nullopt;
}

std::optional<ApiError> parse_stop(const json& body, std::vector<std::string>& out) {
    auto it = body.find("stop");
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (it->is_string()) {
        if (!it->get<std::string>().empty()) out.push_back(it->get<std::string>());
        return std::nullopt;
    }
    if (!it->is_array()) return wrong_type("stop", "a string or an array of strings", *it);
    if (it->size() > 16) return ApiError::bad_request("'stop' has " + std::to_string(it->size()) + " strings; the limit is 16", "stop");
    for (size_t i = 0; i < it->size(); ++i) {
        const json& s = (*it)[i];
        if (!s.is_string()) return wrong_type("stop[" + std::to_string(i) + "]", "a string", s);
        if (!s.get<std::string>().empty()) out.push_back(s.get<std::string>());
    }
    return std::nullopt;
}

}  // namespace


std::optional<size_t> find_invalid_utf8(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        const unsigned char c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
        else return i;
        if (i + len > n) return i;
        for (size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        // Overlong forms, surrogates and values past U+10FFFF are invalid too.
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF)) {
            return i;
        }
        i += len;
    }
    return std::nullopt;
}

std::optional<ApiError> parse_body(const std::string& body, json& out) {
    if (auto bad = find_invalid_utf8(body)) {
        return ApiError::bad_request("the request body is not valid UTF-8 (first bad byte at offset " + std::to_string(*bad) + ")");
    }
    out = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (out.is_discarded()) {
        // Parse again with exceptions only to get the position and reason into the message.
        // Any json::exception: a number past double's range is out_of_range.406, not a
        // parse_error, and must be a 400 like any other bad body.
        try {
            json again = json::parse(body);
            (void)again;
        } catch (const json::exception& e) {
            return ApiError::bad_request(std::string("the request body is not valid JSON: ") + e.what());
        }
        return ApiError::bad_request("the request body is not valid JSON");
    }
    if (!out.is_object()) return ApiError::bad_request(std::string("the request body must be a JSON object, got ") + type_name(out));
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Requests

std::optional<ApiError> parse_generation_request(const json& body, bool chat, const ApiLimits& limits, GenerationRequest& out,
                                                 std::string_view raw_body) {
    out = GenerationRequest{};
    out.chat = chat;
    if (auto e = check_model(body, limits, out.model)) return e;
    if (auto e = chat ? parse_messages(body, out) : parse_prompt(body, out)) return e;

    // n: choices, each its own sequence sharing the prompt's cells (openai_routes.cpp).
    std::optional<int64_t> n;
    if (auto e = get_integer(body, "n", n)) return e;
    if (n && (*n < 1 || *n > kMaxChoices)) {
        return ApiError::bad_request("'n' " + std::to_string(*n) + " is outside [1, " + std::to_string(kMaxChoices) + "]", "n");
    }
    out.n = static_cast<int32_t>(n.value_or(1));
    if (!chat && body.contains("top_logprobs")) return ApiError::bad_request("'top_logprobs' is a chat field; completions take 'logprobs': N", "top_logprobs");
    if (!chat && body.contains("tools")) return ApiError::bad_request("'tools' is a chat completions field", "tools");
    for (const char* f : {"tool_choice", "parallel_tool_calls"}) {
        if (!chat && body.contains(f)) return ApiError::bad_request(std::string("'") + f + "' is a chat completions field", f);
    }
    if (chat && body.contains("echo")) return ApiError::bad_request("'echo' is a completions field; chat completions do not echo", "echo");
    if (auto it = body.find("chat_template_kwargs"); it != body.end() && !it->is_null()) {
        if (!chat) return ApiError::bad_request("'chat_template_kwargs' is a chat completions field", "chat_template_kwargs");
        if (!it->is_object()) return wrong_type("chat_template_kwargs", "an object", *it);
        for (auto kv = it->begin(); kv != it->end(); ++kv) {
            const std::string field = "chat_template_kwargs." + kv.key();
            if (kv.key() != "enable_thinking") {
                return ApiError::bad_request("'" + field + "' is not supported; the one chat template argument is enable_thinking (true/false)", field);
            }
            if (!kv.value().is_boolean()) return wrong_type(field, "a boolean", kv.value());
            out.enable_thinking = kv.value().get<bool>();
        }
    }

    // JSON schemas are generated in their written key order: read them from the text again.
    nlohmann::ordered_json ordered;
    const nlohmann::ordered_json* ordered_ptr = nullptr;
    if (!raw_body.empty() && (body.contains("response_format") || body.contains("tools"))) {
        ordered = nlohmann::ordered_json::parse(raw_body, nullptr, false);
        if (!ordered.is_discarded()) ordered_ptr = &ordered;
    }
    if (auto e = parse_response_format(body, ordered_ptr, out)) return e;
    if (auto e = parse_logit_bias(body, out)) return e;
    if (auto e = parse_logprobs(body, chat, out)) return e;
    if (chat) {
        if (auto e = parse_tools(body, ordered_ptr, out)) return e;
    }
    if (auto e = refuse_unknown_fields(body,
                                       {"model", chat ? "messages" : "prompt", "max_tokens", "max_completion_tokens", "n", "stream", "stream_options",
                                        "temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p", "repeat_penalty", "top_k", "seed",
                                        "ignore_eos", "stop", "logprobs", "echo", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls",
                                        "response_format", "logit_bias", "user", "store", "metadata", chat ? "chat_history" : "model",
                                        chat ? "chat_template_kwargs" : "model"},
                                       chat ? "/v1/chat/completions" : "/v1/completions")) {
        return e;
    }
    if (auto it = body.find("chat_history"); chat && it != body.end() && !it->is_null()) {
        if (!it->is_string()) return wrong_type("chat_history", "a string", *it);
        auto p = parse_history_policy(it->get<std::string>());
        if (!p) return api_error_from(p.error(), "chat_history");
        out.history = *p;
    }
    if (auto it = body.find("user"); it != body.end() && !it->is_null() && !it->is_string()) return wrong_type("user", "a string", *it);

    // store: nothing is stored here, so false (the default) is accepted and true refused, for a
    // client that means to read the completion back later. metadata: tags for stored
    // completions; checked (OpenAI's shape: at most 16 string values) and otherwise unused.
    if (auto it = body.find("store"); it != body.end() && !it->is_null()) {
        if (!it->is_boolean()) return wrong_type("store", "a boolean", *it);
        if (it->get<bool>()) return ApiError::bad_request("'store' true is not supported: this server stores no completions; drop it or send false", "store");
    }
    if (auto it = body.find("metadata"); it != body.end() && !it->is_null()) {
        if (!it->is_object()) return wrong_type("metadata", "an object of strings", *it);
        if (it->size() > 16) return ApiError::bad_request("'metadata' has " + std::to_string(it->size()) + " keys; the limit is 16", "metadata");
        for (const auto& [k, v] : it->items()) {
            if (!v.is_string()) return wrong_type("metadata." + k, "a string", v);
        }
    }

    if (auto e = get_bool(body, "stream", out.stream)) return e;
    if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
        if (!it->is_object()) return wrong_type("stream_options", "an object", *it);
        if (!out.stream) return ApiError::bad_request("'stream_options' needs 'stream': true", "stream_options");
        if (auto u = it->find("include_usage"); u != it->end() && !u->is_null()) {
            if (!u->is_boolean()) return wrong_type("stream_options.include_usage", "a boolean", *u);
            out.include_usage = u->get<bool>();
        }
    }

    // max_tokens (max_completion_tokens is the newer chat name; max_tokens wins when both).
    std::optional<int64_t> max_tokens;
    if (auto e = get_integer(body, "max_completion_tokens", max_tokens)) return e;
    std::optional<int64_t> mt;
    if (auto e = get_integer(body, "max_tokens", mt)) return e;
    if (mt) max_tokens = mt;
    const char* mt_name = mt ? "max_tokens" : "max_completion_tokens";
    if (max_tokens) {
        if (*max_tokens < 1) {
            return ApiError::bad_request(std::string("'") + mt_name + "' " + std::to_string(*max_tokens) + " must be >= 1", mt_name);
        }
        if (*max_tokens > limits.n_ctx_seq) {
            return api_error(Errc::request_too_long, std::string("'") + mt_name + "' " + std::to_string(*max_tokens) + " > context " +
                                                         std::to_string(limits.n_ctx_seq) + " (the most one request can hold)",
                             mt_name);
        }
        out.max_tokens = max_tokens;
    }

    engine::GenerateOptions& o = out.options;
    o.policy = limits.policy;
    o.keep_for_followup = chat;  // a chat's next turn extends this one: keep it cached (docs/kv-cache.md)
    // OpenAI semantics: temperature and top_p only, so top_k and min_p are off unless asked for.
    o.sampling.temperature = 1.0f;
    o.sampling.top_p = 1.0f;
    o.sampling.top_k = 0;
    o.sampling.min_p = 0.0f;
    double v;
    v = 1.0;
    if (auto e = get_number(body, "temperature", 0.0, 2.0, v)) return e;
    o.sampling.temperature = static_cast<float>(v);
    v = 1.0;
    if (auto e = get_number(body, "top_p", 0.0, 1.0, v)) return e;
    o.sampling.top_p = static_cast<float>(v);
    v = 0.0;
    if (auto e = get_number(body, "presence_penalty", -2.0, 2.0, v)) return e;
    o.sampling.presence_penalty = static_cast<float>(v);
    v = 0.0;
    if (auto e = get_number(body, "frequency_penalty", -2.0, 2.0, v)) return e;
    o.sampling.frequency_penalty = static_cast<float>(v);
    // Non-standard, as in llama.cpp's server.
    v = 0.0;
    if (auto e = get_number(body, "min_p", 0.0, 1.0, v)) return e;
    o.sampling.min_p = static_cast<float>(v);
    v = 1.0;
    if (auto e = get_number(body, "repeat_penalty", 0.01, 100.0, v)) return e;
    o.sampling.repeat_penalty = static_cast<float>(v);
    std::optional<int64_t> top_k;
    if (auto e = get_integer(body, "top_k", top_k)) return e;
    if (top_k) o.sampling.top_k = static_cast<int32_t>(std::clamp<int64_t>(*top_k, 0, std::numeric_limits<int32_t>::max()));
    std::optional<int64_t> seed;
    if (auto e = get_integer(body, "seed", seed)) return e;
    if (seed) {
        o.sampling.seed = static_cast<uint64_t>(*seed);
        out.seed_given = true;
    }
    bool ignore_eos = false;
    if (auto e = get_bool(body, "ignore_eos", ignore_eos)) return e;
    o.stop_at_eog = !ignore_eos;
    if (auto e = parse_stop(body, o.stop)) return e;
    if (auto valid = sampling::validate(o.sampling); !valid) return api_error_from(valid.error());
    return std::nullopt;
}

std::optional<ApiError> resolve_max_tokens(GenerationRequest& req, int32_t n_prompt, const ApiLimits& limits, int32_t default_budget) {
    if (req.max_tokens) {
        req.options.max_tokens = static_cast<int32_t>(*req.max_tokens);
        return std::nullopt;
    }
    // No limit given: the default, capped to what fits after the prompt (at least 1, so a prompt
    // that fills the context still gets the engine's error with the numbers).
    int32_t budget = std::min(default_budget >= 0 ? default_budget : limits.default_max_tokens, limits.n_ctx_seq - n_prompt);
    if (req.n > 1 && limits.n_cache_cells > 0) {
        // Engine::start reserves prompt + max_tokens for the first choice and max_tokens + 1
        // for each fork (its own last prompt position): prompt + n x max_tokens + n - 1.
        const int64_t room = static_cast<int64_t>(limits.n_cache_cells) - n_prompt - (req.n - 1);
        budget = static_cast<int32_t>(std::min<int64_t>(budget, room / req.n));
    }
    req.options.max_tokens = std::max(1, budget);
    return std::nullopt;
}

std::optional<ApiError> parse_embedding_request(const json& body, const ApiLimits& limits, EmbeddingRequest& out) {
    out = EmbeddingRequest{};
    if (auto e = refuse_unknown_fields(body, {"model", "input", "encoding_format", "pooling", "dimensions", "user"}, "/v1/embeddings")) return e;
    if (auto it = body.find("user"); it != body.end() && !it->is_null() && !it->is_string()) return wrong_type("user", "a string", *it);
    if (auto e = check_model(body, limits, out.model)) return e;
    auto it = body.find("input");
    if (it == body.end() || it->is_null()) return ApiError::bad_request("missing required field 'input'", "input");
    const json& in = *it;
    constexpr size_t kMaxInputs = 2048;
    if (in.is_string()) {
        out.texts.push_back(in.get<std::string>());
    } else if (in.is_array()) {
        if (in.empty()) return ApiError::bad_request("'input' is an empty array", "input");
        if (in.size() > kMaxInputs) {
            return ApiError::bad_request("'input' has " + std::to_string(in.size()) + " items; the limit is " + std::to_string(kMaxInputs), "input");
        }
        if (in[0].is_string()) {
            for (size_t i = 0; i < in.size(); ++i) {
                if (!in[i].is_string()) return wrong_type("input[" + std::to_string(i) + "]", "a string", in[i]);
                out.texts.push_back(in[i].get<std::string>());
            }
        } else if (in[0].is_array()) {
            for (size_t i = 0; i < in.size(); ++i) {
                if (!in[i].is_array()) return wrong_type("input[" + std::to_string(i) + "]", "an array of token ids", in[i]);
                if (in[i].empty()) return ApiError::bad_request("'input[" + std::to_string(i) + "]' is an empty token array", "input");
                std::vector<int32_t> ids;
                if (auto e = get_token_ids(in[i], "input", ids)) return e;
                out.token_inputs.push_back(std::move(ids));
            }
        } else {
            std::vector<int32_t> ids;
            if (auto e = get_token_ids(in, "input", ids)) return e;
            out.token_inputs.push_back(std::move(ids));
        }
    } else {
        return wrong_type("input", "a string, an array of strings, or token ids", in);
    }
    for (size_t i = 0; i < out.texts.size(); ++i) {
        if (out.texts[i].empty()) return ApiError::bad_request("'input' item " + std::to_string(i) + " is an empty string", "input");
    }
    if (auto f = body.find("encoding_format"); f != body.end() && !f->is_null()) {
        if (!f->is_string()) return wrong_type("encoding_format", "a string", *f);
        const std::string fmt = f->get<std::string>();
        if (fmt == "base64") out.base64 = true;
        else if (fmt != "float") return ApiError::bad_request("'encoding_format' '" + fmt + "' is not one of float, base64", "encoding_format");
    }
    if (auto p = body.find("pooling"); p != body.end() && !p->is_null()) {
        if (!p->is_string()) return wrong_type("pooling", "a string", *p);
        out.pooling = p->get<std::string>();
    }
    if (auto d = body.find("dimensions"); d != body.end() && !d->is_null()) {
        return ApiError::bad_request("'dimensions' is not supported; embeddings have the model's width", "dimensions");
    }
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Responses

json Usage::to_json() const {
    return json{{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens}, {"total_tokens", prompt_tokens + completion_tokens}};
}

const char* openai_finish_reason(const engine::GenerateResult& r) {
    return r.finish == engine::FinishReason::length ? "length" : "stop";
}

json completion_response(const std::string& id, int64_t created, const std::string& model, bool chat,
                         const engine::GenerateResult& r, const json& logprobs, const chat::ParsedToolCalls* calls,
                         const std::string& echo_prefix) {
    json choice;
    choice["index"] = 0;
    const char* finish = openai_finish_reason(r);
    if (chat) {
        if (calls && !calls->calls.empty()) {
            choice["message"] = json{{"role", "assistant"},
                                     {"content", calls->content.empty() ? json(nullptr) : json(calls->content)},
                                     {"tool_calls", tool_calls_json(calls->calls)}};
            // An answer cut by max_tokens says so, whole calls or not (as OpenAI's does): the
            // client must not take a cut answer for a finished one.
            if (r.finish != engine::FinishReason::length) finish = "tool_calls";
        } else {
            // With tools offered, the text as the tool-call parser gave it (trimmed), as a
            // stream of the same answer sends it.
            choice["message"] = json{{"role", "assistant"}, {"content", calls ? calls->content : r.text}};
        }
    } else {
        choice["text"] = echo_prefix + r.text;
    }
    choice["logprobs"] = logprobs;
    choice["finish_reason"] = finish;
    Usage u{static_cast<int64_t>(r.prompt_tokens.size()), static_cast<int64_t>(r.tokens.size())};
    return json{{"id", id},
                {"object", chat ? "chat.completion" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array({choice})},
                {"usage", u.to_json()}};
}

json stream_chunk(const std::string& id, int64_t created, const std::string& model, bool chat, const std::string& text,
                  bool with_role, const char* finish, const Usage* usage, const json& logprobs) {
    json choice;
    choice["index"] = 0;
    if (chat) {
        json delta = json::object();
        if (with_role) delta["role"] = "assistant";
        if (!text.empty() || with_role) delta["content"] = text;
        choice["delta"] = delta;
    } else {
        choice["text"] = text;
    }
    choice["logprobs"] = logprobs;
    choice["finish_reason"] = finish ? json(finish) : json(nullptr);
    json j{{"id", id},
           {"object", chat ? "chat.completion.chunk" : "text_completion"},
           {"created", created},
           {"model", model},
           {"choices", json::array({choice})}};
    if (usage) j["usage"] = usage->to_json();
    return j;
}

std::string base64_encode(std::string_view bytes) {
    static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= bytes.size(); i += 3) {
        const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += kAlphabet[(v >> 6) & 63];
        out += kAlphabet[v & 63];
    }
    const size_t rest = bytes.size() - i;
    if (rest > 0) {
        uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
        if (rest == 2) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

json embedding_response(const std::string& model, const std::vector<std::vector<float>>& vectors, bool base64, int64_t prompt_tokens) {
    json data = json::array();
    for (size_t i = 0; i < vectors.size(); ++i) {
        json item{{"object", "embedding"}, {"index", i}};
        if (base64) {
            // Little-endian float32, as OpenAI sends it (x86-64 and arm64 are little-endian).
            std::string raw(vectors[i].size() * sizeof(float), '\0');
            std::memcpy(raw.data(), vectors[i].data(), raw.size());
            item["embedding"] = base64_encode(raw);
        } else {
            item["embedding"] = vectors[i];
        }
        data.push_back(std::move(item));
    }
    return json{{"object", "list"},
                {"data", data},
                {"model", model},
                {"usage", json{{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}


}  // namespace kvrag::server
