#include "server/tokenize_routes.h"

#include <httplib.h>

#include <algorithm>

#include "server/http_io.h"
#include "server/json_fields.h"
#include "server/openai_api.h"

namespace kvrag::server {
namespace {

// The tokenizer a request names: an encoder model by name, else the chat model, else the only
// encoder model.
const tokenizer::Tokenizer* pick_tokenizer(const ServerState& st, const json& body, std::optional<ApiError>& err) {
    std::string name;
    if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
        if (!it->is_string()) {
            err = wrong_type("model", "a string", *it);
            return nullptr;
        }
        name = it->get<std::string>();
    }
    for (const EncoderModel* m : {st.embed_model.get(), st.rerank_model.get()}) {
        if (m && !name.empty() && m->answers_to(name)) return m->embedder->model().tokenizer.get();
    }
    // A name no model answers to: 404 under --strict-model-names, as the chat routes answer it.
    const bool chat_name = st.engine && (name == st.model_id || std::find(st.aliases.begin(), st.aliases.end(), name) != st.aliases.end());
    if (!name.empty() && !chat_name && st.cfg.strict_model_names) {
        err = api_error(Errc::request_model_not_found, "The model '" + name + "' does not exist on this server (--strict-model-names)", "model");
        return nullptr;
    }
    if (st.engine) return st.engine->model().tokenizer.get();
    for (const EncoderModel* m : {st.embed_model.get(), st.rerank_model.get()}) {
        if (m) return m->embedder->model().tokenizer.get();
    }
    err = ApiError::bad_request("no model is loaded", "model");
    return nullptr;
}

bool valid_utf8(const std::string& s) { return !find_invalid_utf8(s).has_value(); }

void handle_tokenize(ServerState& st, const httplib::Request& req, httplib::Response& res) {
    json body;
    if (auto e = parse_body(req.body, body)) return send_error(res, *e);
    if (auto e = refuse_unknown_fields(body, {"content", "add_special", "parse_special", "with_pieces", "model"}, "/tokenize")) return send_error(res, *e);
    auto c = body.find("content");
    if (c == body.end() || c->is_null()) return send_error(res, ApiError::bad_request("missing required field 'content'", "content"));
    if (!c->is_string()) return send_error(res, wrong_type("content", "a string", *c));
    bool add_special = false, parse_special = true, with_pieces = false;
    for (auto [field, out] : {std::pair{"add_special", &add_special}, {"parse_special", &parse_special}, {"with_pieces", &with_pieces}}) {
        if (auto e = get_bool(body, field, *out)) return send_error(res, *e);
    }
    std::optional<ApiError> err;
    const tokenizer::Tokenizer* tok = pick_tokenizer(st, body, err);
    if (!tok) return send_error(res, *err);
    const auto ids = tok->encode(c->get<std::string>(), add_special, parse_special);
    json tokens = json::array();
    for (int32_t id : ids) {
        if (!with_pieces) {
            tokens.push_back(id);
            continue;
        }
        const std::string piece = tok->token_to_piece(id, /*special=*/true);
        if (valid_utf8(piece)) {
            tokens.push_back(json{{"id", id}, {"piece", piece}});
        } else {
            json bytes = json::array();
            for (unsigned char b : piece) bytes.push_back(static_cast<int>(b));
            tokens.push_back(json{{"id", id}, {"piece", bytes}});
        }
    }
    send_json(res, 200, json{{"tokens", tokens}});
}

void handle_detokenize(ServerState& st, const httplib::Request& req, httplib::Response& res) {
    json body;
    if (auto e = parse_body(req.body, body)) return send_error(res, *e);
    if (auto e = refuse_unknown_fields(body, {"tokens", "model"}, "/detokenize")) return send_error(res, *e);
    auto t = body.find("tokens");
    if (t == body.end() || t->is_null()) return send_error(res, ApiError::bad_request("missing required field 'tokens'", "tokens"));
    if (!t->is_array()) return send_error(res, wrong_type("tokens", "an array of token ids", *t));
    std::vector<int32_t> ids;
    if (auto e = get_token_ids(*t, "tokens", ids)) return send_error(res, *e);
    std::optional<ApiError> err;
    const tokenizer::Tokenizer* tok = pick_tokenizer(st, body, err);
    if (!tok) return send_error(res, *err);
    for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] >= tok->n_vocab()) {
            return send_error(res, ApiError::bad_request("'tokens' element " + std::to_string(i) + " is token id " + std::to_string(ids[i]) +
                                                             ", outside the vocabulary of " + std::to_string(tok->n_vocab()) + " tokens",
                                                         "tokens"));
        }
    }
    // Invalid UTF-8 (ids that split a character) reaches the client as U+FFFD through dump().
    send_json(res, 200, json{{"content", tok->decode(ids)}});
}

}  // namespace

void add_tokenize_routes(httplib::Server& http, ServerState& st) {
    http.Post("/tokenize", [&st](const httplib::Request& req, httplib::Response& res) { handle_tokenize(st, req, res); });
    http.Post("/detokenize", [&st](const httplib::Request& req, httplib::Response& res) { handle_detokenize(st, req, res); });
}

}  // namespace kvrag::server
