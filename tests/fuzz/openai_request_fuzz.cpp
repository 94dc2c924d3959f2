// libFuzzer target: the server's request parsing on arbitrary bytes as the body, as the routes
// run it: parse_body, then parse_generation_request (chat or completions) with
// resolve_max_tokens, parse_embedding_request, parse_rerank_request, and for a valid chat the
// history policy (fit_history) over a renderer that needs no model.
//
// Input: 4 header bytes, then the body. Byte 0: bit 0 chat, bits 1-2 the server's history
// policy, bits 3-4 its context policy; bytes 1-2: the per-request context n_ctx_seq (1..4096);
// byte 3: --default-max-tokens (1..256). Seeds: tests/fuzz/corpus/openai_request_fuzz/.
//
// Invariants (openai_api.h, rerank_api.h, chat_history.h): parsing never throws and a refusal is
// a 4xx ApiError whose JSON can be written; an accepted request holds only what the validation
// allows (the fields checked below); fit_history's prompt leaves room for the answer budget and
// keeps the leading system messages and the last message.
#define KVRAG_FUZZ_TARGET "openai_request_fuzz"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "fuzz_check.h"
#include "server/api_error.h"
#include "server/chat_history.h"
#include "server/openai_api.h"
#include "server/rerank_api.h"

namespace {

using namespace kvrag::server;
using kvrag::chat::Message;

void check_refusal(const ApiError& e) {
    KVRAG_FUZZ_CHECK(e.status >= 400 && e.status < 500, "a request parser refused with a non-4xx status");
    KVRAG_FUZZ_CHECK(!e.message.empty(), "a refusal without a message");
    // Messages quote the client's bytes; writing them must not throw (api_error.h's dump()).
    (void)dump(e.to_json());
}

// The prompt a model-free server would build: the chatml text, one token per 4 bytes (rounded
// up), each id the text's first byte of the group so the ids depend on the content.
kvrag::Result<std::vector<int32_t>> fake_render(std::span<const Message> msgs) {
    static const auto tmpl = kvrag::chat::ChatTemplate::by_name("chatml");
    auto text = tmpl->render(msgs, true);
    if (!text) return text.error();
    std::vector<int32_t> ids;
    for (size_t i = 0; i < text->size(); i += 4) ids.push_back(static_cast<uint8_t>((*text)[i]));
    return ids;
}

void check_history(const GenerationRequest& req, const ApiLimits& limits) {
    const HistoryPolicy policy = req.history.value_or(limits.history);
    const int32_t budget = req.max_tokens ? static_cast<int32_t>(*req.max_tokens)
                                          : default_answer_budget(limits.default_max_tokens, limits.n_ctx_seq);
    KVRAG_FUZZ_CHECK(budget >= 1 && budget <= limits.n_ctx_seq, "answer budget outside [1, n_ctx]");
    const RenderFn render = fake_render;
    auto fit = fit_history(req.messages, budget, "max_tokens", limits.n_ctx_seq, policy, render);
    if (!fit) {
        KVRAG_FUZZ_CHECK(fit.error().code == kvrag::Errc::request_too_long, "fit_history failed with another code than E5002");
        return;
    }
    const auto& m = req.messages;
    KVRAG_FUZZ_CHECK(static_cast<int64_t>(fit->prompt.size()) + budget <= limits.n_ctx_seq, "the fitted prompt leaves no room for the answer");
    KVRAG_FUZZ_CHECK(fit->kept.size() + fit->dropped.size() == m.size(), "kept + dropped is not the whole conversation");
    KVRAG_FUZZ_CHECK(!fit->kept.empty() && fit->kept.back().role == m.back().role && fit->kept.back().content == m.back().content,
                     "the last message was dropped");
    for (size_t i = 0; i < m.size() && m[i].role == "system"; ++i) {
        KVRAG_FUZZ_CHECK(fit->kept[i].role == "system" && fit->kept[i].content == m[i].content, "a leading system message was dropped");
    }
    if (policy == HistoryPolicy::error) KVRAG_FUZZ_CHECK(fit->dropped.empty(), "chat_history 'error' dropped messages");
    auto again = fake_render(fit->kept);
    KVRAG_FUZZ_CHECK(again && *again == fit->prompt, "the fitted prompt is not render(kept)");
}

void fuzz_generation(const json& body, bool chat, const ApiLimits& limits, uint16_t n_prompt) {
    GenerationRequest req;
    if (auto e = parse_generation_request(body, chat, limits, req)) {
        check_refusal(*e);
        return;
    }
    const auto& s = req.options.sampling;
    KVRAG_FUZZ_CHECK(s.temperature >= 0.0f && s.temperature <= 2.0f, "temperature outside [0, 2]");
    KVRAG_FUZZ_CHECK(s.top_p >= 0.0f && s.top_p <= 1.0f, "top_p outside [0, 1]");
    KVRAG_FUZZ_CHECK(s.top_k >= 0, "negative top_k");
    KVRAG_FUZZ_CHECK(!req.max_tokens || (*req.max_tokens >= 1 && *req.max_tokens <= limits.n_ctx_seq), "max_tokens outside [1, n_ctx]");
    KVRAG_FUZZ_CHECK(req.options.stop.size() <= 16, "more than 16 stop strings");
    for (const auto& st : req.options.stop) KVRAG_FUZZ_CHECK(!st.empty(), "an empty stop string");
    if (chat) {
        KVRAG_FUZZ_CHECK(!req.messages.empty(), "a chat request without messages");
        for (const auto& m : req.messages) {
            KVRAG_FUZZ_CHECK(m.role == "system" || m.role == "user" || m.role == "assistant", "a message with an unknown role");
        }
        check_history(req, limits);
    } else {
        KVRAG_FUZZ_CHECK(!req.has_token_prompt || !req.prompt_tokens.empty(), "an empty token prompt");
        for (int32_t id : req.prompt_tokens) KVRAG_FUZZ_CHECK(id >= 0, "a negative prompt token id");
    }
    const std::optional<int64_t> asked = req.max_tokens;
    if (auto e = resolve_max_tokens(req, n_prompt, limits)) {
        check_refusal(*e);
        return;
    }
    KVRAG_FUZZ_CHECK(req.options.max_tokens >= 1, "resolved max_tokens < 1");
    if (asked) {
        KVRAG_FUZZ_CHECK(req.options.max_tokens == *asked, "resolve_max_tokens changed the client's max_tokens");
    } else {
        KVRAG_FUZZ_CHECK(req.options.max_tokens <= limits.default_max_tokens, "the default max_tokens exceeds --default-max-tokens");
        if (n_prompt < limits.n_ctx_seq) {
            KVRAG_FUZZ_CHECK(n_prompt + req.options.max_tokens <= limits.n_ctx_seq, "the default max_tokens overflows the context");
        }
    }
}

void fuzz_embedding(const json& body, const ApiLimits& limits) {
    EmbeddingRequest req;
    if (auto e = parse_embedding_request(body, limits, req)) {
        check_refusal(*e);
        return;
    }
    const size_t n = req.texts.size() + req.token_inputs.size();
    KVRAG_FUZZ_CHECK(n >= 1 && n <= 2048, "embedding inputs outside [1, 2048]");
    KVRAG_FUZZ_CHECK(req.texts.empty() || req.token_inputs.empty(), "embedding inputs mix texts and token ids");
    for (const auto& t : req.texts) KVRAG_FUZZ_CHECK(!t.empty(), "an empty embedding input");
    for (const auto& ids : req.token_inputs) {
        KVRAG_FUZZ_CHECK(!ids.empty(), "an empty token input");
        for (int32_t id : ids) KVRAG_FUZZ_CHECK(id >= 0, "a negative token id");
    }
}

void fuzz_rerank(const json& body) {
    RerankRequest req;
    if (auto e = parse_rerank_request(body, req)) {
        check_refusal(*e);
        return;
    }
    const auto n_docs = static_cast<int64_t>(req.documents.size());
    KVRAG_FUZZ_CHECK(!req.query.empty(), "an empty rerank query");
    KVRAG_FUZZ_CHECK(n_docs >= 1 && n_docs <= static_cast<int64_t>(kMaxRerankDocuments), "documents outside [1, 1024]");
    KVRAG_FUZZ_CHECK(req.top_n >= 1 && req.top_n <= n_docs, "top_n outside [1, documents]");
    for (const auto& d : req.documents) KVRAG_FUZZ_CHECK(!d.empty(), "an empty rerank document");
    // Scores with ties (every third equal) so the response's order rule is exercised too.
    std::vector<float> scores(req.documents.size());
    for (size_t i = 0; i < scores.size(); ++i) scores[i] = static_cast<float>(i % 3);
    const json r = rerank_response(req, "m", scores, 7);
    const json& results = r["results"];
    KVRAG_FUZZ_CHECK(static_cast<int64_t>(results.size()) == req.top_n, "rerank results are not top_n long");
    std::set<size_t> seen;
    float prev = 1e30f;
    for (const auto& x : results) {
        const size_t i = x["index"].get<size_t>();
        KVRAG_FUZZ_CHECK(i < req.documents.size() && seen.insert(i).second, "a rerank index is out of range or repeated");
        KVRAG_FUZZ_CHECK(scores[i] <= prev, "rerank results are not best first");
        prev = scores[i];
    }
    (void)dump(r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 4) return 0;
    const bool chat = data[0] & 1;
    ApiLimits limits;
    limits.model_id = "kvrag-test";
    limits.model_aliases = {"alias"};
    limits.history = static_cast<HistoryPolicy>(std::min((data[0] >> 1) & 3, 2));
    limits.policy = (data[0] >> 3) & 1 ? kvrag::engine::ContextPolicy::truncate : kvrag::engine::ContextPolicy::error;
    limits.n_ctx_seq = 1 + ((data[1] | (data[2] << 8)) % 4096);
    limits.default_max_tokens = 1 + data[3];
    const std::string raw(reinterpret_cast<const char*>(data + 4), size - 4);
    // The prompt length resolve_max_tokens sees: derived from the body so it varies with it.
    const auto n_prompt = static_cast<uint16_t>(raw.size() * 3 % 5000);

    json body;
    const bool bad_utf8 = find_invalid_utf8(raw).has_value();
    if (auto e = parse_body(raw, body)) {
        check_refusal(*e);
        return 0;
    }
    // parse_body's promise: a body that is not valid UTF-8 never reaches the JSON parser.
    KVRAG_FUZZ_CHECK(!bad_utf8, "parse_body accepted invalid UTF-8");
    KVRAG_FUZZ_CHECK(body.is_object(), "parse_body accepted a non-object");
    fuzz_generation(body, chat, limits, n_prompt);
    fuzz_embedding(body, limits);
    fuzz_rerank(body);
    return 0;
}
