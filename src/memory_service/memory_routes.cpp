#include "memory_service/memory_routes.h"

#include <httplib.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "memory/ingest_worker.h"
#include "memory/memory.h"
#include "memory_service/upload_form.h"
#include "server/http_io.h"

namespace kvrag::memory_service {

// The routes translate between HTTP and the memory module; its names are used unqualified here.
using namespace kvrag::memory;
namespace {

using nlohmann::json;

// State shared by the handlers; `mem` and `worker` are set by on_ready. The worker is
// declared last so it stops (and joins) before the memory it uses goes.
struct MemoryService {
    HttpMemoryConfig config;
    std::shared_ptr<std::atomic<bool>> stopping = std::make_shared<std::atomic<bool>>(false);  // on_stop: cancels embeddings in flight
    std::unique_ptr<Memory> mem;
    std::unique_ptr<IngestWorker> worker;
};

// Kernel Memory's filters: [{"key": ["value", ...]}, ...]; "__document_id" selects a document.
// kvrag supports one filter object (AND of its pairs); several are refused.
Result<SearchFilter> parse_filters(const json& body) {
    SearchFilter f;
    if (!body.contains("filters") || body["filters"].is_null()) return f;
    const json& fs = body["filters"];
    if (!fs.is_array()) return Error{Errc::memory_bad_input, "'filters' must be an array of objects"};
    if (fs.size() > 1) return Error{Errc::memory_bad_input, "only one filter object is supported; got " + std::to_string(fs.size())};
    for (const json& obj : fs) {
        if (!obj.is_object()) return Error{Errc::memory_bad_input, "each filter must be an object of key -> [values]"};
        for (const auto& [k, v] : obj.items()) {
            std::vector<std::string> values;
            if (v.is_string()) values.push_back(v.get<std::string>());
            else if (v.is_array()) {
                for (const auto& x : v) {
                    if (!x.is_string()) return Error{Errc::memory_bad_input, "filter '" + k + "' values must be strings"};
                    values.push_back(x.get<std::string>());
                }
            } else {
                return Error{Errc::memory_bad_input, "filter '" + k + "' must be a string or an array of strings"};
            }
            for (const auto& val : values) {
                if (k == "__document_id") f.doc_id = val;
                else f.tags.emplace_back(k, val);
            }
        }
    }
    return f;
}

json partition_json(const SearchHit& h) {
    json tags = json::object();
    for (const auto& [k, v] : h.chunk.tags) tags[k].push_back(v);
    return json{{"text", h.chunk.text}, {"relevance", h.relevance}, {"partitionNumber", h.chunk.position},
                {"sectionNumber", 0}, {"tokens", h.chunk.n_tokens}, {"tags", tags}};
}

// Kernel Memory's Citation: hits of the same document grouped, in rank order.
json citations_json(const std::vector<SearchHit>& hits) {
    json out = json::array();
    std::vector<std::string> order;
    std::map<std::string, json> by_doc;
    for (const auto& h : hits) {
        const std::string key = h.chunk.index + "/" + h.chunk.doc_id;
        if (!by_doc.count(key)) {
            order.push_back(key);
            by_doc[key] = json{{"link", key}, {"index", h.chunk.index}, {"documentId", h.chunk.doc_id},
                               {"fileId", h.chunk.doc_id}, {"sourceName", h.chunk.doc_name}, {"sourceUrl", h.chunk.source},
                               {"partitions", json::array()}};
        }
        by_doc[key]["partitions"].push_back(partition_json(h));
    }
    for (const auto& k : order) out.push_back(by_doc[k]);
    return out;
}

Result<json> parse_json(const std::string& body) {
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return Error{Errc::memory_bad_input, "the body is not a JSON object"};
    return j;
}

template <class T>
Result<T> get_or(const json& j, const char* key, T def) {
    if (!j.contains(key) || j[key].is_null()) return def;
    try {
        return j[key].get<T>();
    } catch (const std::exception&) {
        return Error{Errc::memory_bad_input, std::string("field '") + key + "' has the wrong type"};
    }
}

using server::send_error;
using server::send_json;

// The memory's model hooks over the server: embeddings from the embedding model when one is
// loaded (else the chat model), generation (ask) only with a chat model.
ModelHooks server_hooks(server::ServerContext& ctx, const HttpMemoryConfig& cfg, const std::shared_ptr<std::atomic<bool>>& stopping,
                        Result<void>& status) {
    engine::Engine* eng = ctx.engine();
    const engine::Embedder* emb = ctx.embedding_model();
    ModelHooks h;
    if (!eng && !emb) {
        status = Error{Errc::memory_bad_input, "--memory needs a model that embeds: a chat model (-m) or an embedding model (--embed-model)"};
        return h;
    }
    // Chunks are measured in the chat model's tokens when there is one (they go into its
    // prompts), else in the embedding model's.
    h.tokenizer = eng ? eng->model().tokenizer : emb->model().tokenizer;
    const model::Model& embedding = emb ? *emb->model().model : *eng->model().model;
    auto info = embedding_model_info(embedding.file().path(), embedding.hparams().name, emb ? emb->dim() : eng->embedding_dim());
    if (!info) {
        status = info.error();
        return h;
    }
    h.embed_model = std::move(*info);
    // Ingestion's embeddings end when the server stops (the job goes back to the queue).
    auto alive = [stopping] { return !stopping->load(); };
    h.embed = [&ctx, alive](std::string_view text) -> Result<std::vector<float>> {
        const std::string texts[] = {std::string(text)};
        auto v = ctx.embed_texts(texts, alive);
        if (!v) return v.error();
        return std::move(v->front());
    };
    // An encoder embeds a group of chunks in few forward passes; the chat model embeds one
    // sequence per chunk anyway, so it keeps the one-by-one hook.
    if (emb) h.embed_batch = [&ctx, alive](std::span<const std::string> texts) { return ctx.embed_texts(texts, alive); };
    if (ctx.rerank_model()) {
        h.rerank = [&ctx](std::string_view query, const std::vector<std::string_view>& documents) {
            const std::vector<std::string> docs(documents.begin(), documents.end());
            return ctx.rerank(query, docs);
        };
    }
    if (!eng) {
        h.n_ctx = emb->max_tokens();
        return h;
    }
    h.generate = [&ctx](std::vector<int32_t> prompt, const engine::GenerateOptions& o) { return ctx.submit(std::move(prompt), o); };
    auto tmpl = chat::ChatTemplate::for_model(eng->model().model->file(), cfg.chat_template);
    if (!tmpl) {
        status = tmpl.error();
        return h;
    }
    h.chat_template = std::move(*tmpl);
    const auto& c = eng->config();
    h.n_ctx = c.n_ctx_seq > 0 ? std::min(c.n_ctx_seq, c.n_ctx) : c.n_ctx;
    return h;
}

void add_routes(server::ServerContext& ctx, const std::shared_ptr<MemoryService>& svc) {
    auto& http = ctx.http();
    auto* c = &ctx;

    // POST /upload: multipart with one or more files and the fields index, documentId, tags
    // ("key:value", repeatable). The files are stored with a queued job before the answer (202:
    // durable, ingestion pending; a binary file is refused with 400 at once).
    http.Post("/upload", [svc](const httplib::Request& req, httplib::Response& res) {
        if (!req.is_multipart_form_data()) return send_error(res, Error{Errc::memory_bad_input, "/upload needs multipart/form-data"});
        auto form = parse_upload_form(req.files);
        if (!form) return send_error(res, form.error());
        const std::string& index = form->index;
        const std::string& doc_id = form->doc_id;
        std::vector<IngestRequest> docs;  // with a documentId: one document of all the files; else one per file
        for (const auto* f : form->files) {
            if (f->content.size() > svc->config.max_upload_bytes) {
                return send_error(res, Error{Errc::request_too_large, "file '" + f->filename + "' is " + std::to_string(f->content.size()) +
                                                          " bytes; the limit is " + std::to_string(svc->config.max_upload_bytes)});
            }
            if (docs.empty() || doc_id.empty()) {
                docs.emplace_back();
                docs.back().index = index;
                docs.back().doc_id = doc_id.empty() ? sanitize_id(f->filename) : doc_id;
                docs.back().source = "upload";
                docs.back().tags = form->tags;
            }
            docs.back().files.push_back(SourceFile{f->filename, f->content_type, f->content});
        }
        json results = json::array();
        for (const auto& d : docs) {
            auto r = svc->mem->enqueue(d);
            if (!r) return send_error(res, r.error());
            results.push_back(json{{"documentId", r->doc_id}, {"status", r->job_id ? "queued" : "unchanged"}});
        }
        if (svc->worker) svc->worker->notify();
        send_json(res, 202, json{{"index", index}, {"documentId", results[0]["documentId"]}, {"documents", results},
                                 {"message", "Document upload completed, ingestion pipeline started"}});
    });

    // GET /upload-status?index=&documentId=
    http.Get("/upload-status", [svc](const httplib::Request& req, httplib::Response& res) {
        const std::string index = req.has_param("index") ? req.get_param_value("index") : "default";
        const std::string doc_id = req.get_param_value("documentId");
        if (doc_id.empty()) return send_error(res, Error{Errc::memory_bad_input, "documentId is required"});
        auto d = svc->mem->store().get_document(index, doc_id);
        if (!d) return send_error(res, d.error());
        auto job = svc->mem->store().find_job(index, doc_id);
        if (!job) return send_error(res, job.error());
        if (!*d && !*job) return send_error(res, Error{Errc::memory_not_found, "no document '" + doc_id + "' in index '" + index + "'"});
        // A queued or running job is the document's latest upload: its progress is the status.
        json steps = json::array(), completed = json::array(), remaining = json::array();
        const int32_t n_done = *job ? (*job)->n_steps_done : (*d && (*d)->state == "ready" ? kNumIngestSteps : 0);
        for (int32_t i = 0; i < kNumIngestSteps; ++i) {
            steps.push_back(kIngestSteps[i]);
            (i < n_done ? completed : remaining).push_back(kIngestSteps[i]);
        }
        const std::string state = *job ? (*job)->state : (*d)->state;
        const bool failed = !*job && state == "failed";
        if (failed) remaining = json::array();
        const Tags& doc_tags = *job ? (*job)->tags : (*d)->tags;
        json tags = json::object();
        for (const auto& [k, v] : doc_tags) tags[k].push_back(v);
        const int32_t n_chunks = *job ? (*job)->n_chunks_total : (*d)->n_chunks;
        send_json(res, 200, json{{"completed", !*job && state == "ready"}, {"failed", failed}, {"empty", !*job && n_chunks == 0},
                                 {"index", index}, {"document_id", doc_id}, {"tags", tags},
                                 {"last_update", *job ? (*job)->updated_at : (*d)->updated_at}, {"state", state},
                                 {"steps", steps}, {"remaining_steps", remaining}, {"completed_steps", completed},
                                 {"error", *d && !*job ? (*d)->error : ""}, {"chunks", n_chunks},
                                 {"chunks_done", *job ? (*job)->n_chunks_done : n_chunks}, {"chunks_total", n_chunks}});
    });

    // GET /documents?index=
    http.Get("/documents", [svc](const httplib::Request& req, httplib::Response& res) {
        auto docs = svc->mem->store().list_documents(req.get_param_value("index"));
        if (!docs) return send_error(res, docs.error());
        json out = json::array();
        for (const auto& d : *docs) {
            json tags = json::object();
            for (const auto& [k, v] : d.tags) tags[k].push_back(v);
            out.push_back(json{{"index", d.index}, {"documentId", d.doc_id}, {"name", d.name}, {"state", d.state}, {"error", d.error},
                               {"chunks", d.n_chunks}, {"tokens", d.n_tokens}, {"contentHash", d.content_hash}, {"tags", tags},
                               {"lastUpdate", d.updated_at}});
        }
        send_json(res, 200, json{{"documents", out}});
    });

    // DELETE /documents?index=&documentId=
    http.Delete("/documents", [svc](const httplib::Request& req, httplib::Response& res) {
        const std::string index = req.has_param("index") ? req.get_param_value("index") : "default";
        const std::string doc_id = req.get_param_value("documentId");
        if (doc_id.empty()) return send_error(res, Error{Errc::memory_bad_input, "documentId is required"});
        auto n = svc->mem->store().delete_document(index, doc_id);
        if (!n) return send_error(res, n.error());
        if (*n == 0) return send_error(res, Error{Errc::memory_not_found, "no document '" + doc_id + "' in index '" + index + "'"});
        send_json(res, 200, json{{"index", index}, {"documentId", doc_id}, {"message", "Document deleted"}});
    });

    // POST /search {index, query, filters, minRelevance, limit, rerank (non-standard: false skips
    // the reranker of --rerank-model)}
    http.Post("/search", [svc](const httplib::Request& req, httplib::Response& res) {
        auto body = parse_json(req.body);
        if (!body) return send_error(res, body.error());
        auto query = get_or<std::string>(*body, "query", "");
        auto index = get_or<std::string>(*body, "index", "default");
        auto minrel = get_or<double>(*body, "minRelevance", 0.0);
        auto limit = get_or<int32_t>(*body, "limit", 5);
        auto rerank = get_or<bool>(*body, "rerank", true);
        auto filt = parse_filters(*body);
        for (const Error* e : {query ? nullptr : &query.error(), index ? nullptr : &index.error(), minrel ? nullptr : &minrel.error(),
                               limit ? nullptr : &limit.error(), filt ? nullptr : &filt.error(), rerank ? nullptr : &rerank.error()}) {
            if (e) return send_error(res, *e);
        }
        if (query->empty()) return send_error(res, Error{Errc::memory_bad_input, "'query' is required"});
        SearchOptions o;
        o.index = *index;
        o.filter = *filt;
        o.min_relevance = *minrel;
        o.limit = *limit <= 0 ? 5 : std::min(*limit, 1000);
        o.rerank = *rerank;
        auto r = svc->mem->search(*query, o);
        if (!r) return send_error(res, r.error());
        send_json(res, 200, json{{"index", o.index}, {"query", *query}, {"noResult", r->hits.empty()}, {"results", citations_json(r->hits)}});
    });

    // POST /ask {index, question, filters, minRelevance, conversationId, maxTokens, temperature, history}
    http.Post("/ask", [c, svc](const httplib::Request& req, httplib::Response& res) {
        auto body = parse_json(req.body);
        if (!body) return send_error(res, body.error());
        auto question = get_or<std::string>(*body, "question", "");
        auto index = get_or<std::string>(*body, "index", "default");
        auto minrel = get_or<double>(*body, "minRelevance", 0.0);
        auto conv = get_or<std::string>(*body, "conversationId", "");
        auto max_tokens = get_or<int32_t>(*body, "maxTokens", 256);
        auto temp = get_or<double>(*body, "temperature", 0.0);
        auto history = get_or<std::string>(*body, "history", "drop");
        auto rerank = get_or<bool>(*body, "rerank", true);
        auto filt = parse_filters(*body);
        for (const Error* e : {question ? nullptr : &question.error(), index ? nullptr : &index.error(), minrel ? nullptr : &minrel.error(),
                               conv ? nullptr : &conv.error(), max_tokens ? nullptr : &max_tokens.error(), temp ? nullptr : &temp.error(),
                               filt ? nullptr : &filt.error(), history ? nullptr : &history.error(), rerank ? nullptr : &rerank.error()}) {
            if (e) return send_error(res, *e);
        }
        auto mode = parse_history_mode(*history);
        if (!mode) return send_error(res, mode.error());
        AskOptions o;
        o.index = *index;
        o.filter = *filt;
        o.min_relevance = *minrel;
        o.conversation_id = *conv;
        o.max_tokens = *max_tokens;
        o.sampling.temperature = static_cast<float>(*temp);
        o.history_mode = *mode;
        o.rerank = *rerank;
        auto r = svc->mem->ask(*question, o);
        if (!r) return send_error(res, r.error());
        c->log_tokens(0);
        send_json(res, 200, json{{"question", *question}, {"noResult", !r->found},
                                 {"noResultReason", r->found ? "" : "No relevant memories found"}, {"text", r->answer},
                                 {"relevantSources", citations_json(r->sources)},
                                 {"tokenUsage", json{{"promptTokens", r->n_prompt_tokens}, {"contextSize", r->n_ctx}, {"maxTokens", r->max_tokens}}},
                                 {"historyUsed", r->n_history_used}, {"historyDropped", r->n_history_dropped},
                                 {"historySummarized", r->history_summarized},
                                 {"finishReason", r->finish_reason}});
    });
}

}  // namespace

server::ServerExtension memory_extension(const HttpMemoryConfig& config) {
    auto svc = std::make_shared<MemoryService>();
    svc->config = config;
    server::ServerExtension ext;
    ext.name = "memory";
    ext.add_routes = [svc](server::ServerContext& ctx) { add_routes(ctx, svc); };
    ext.on_ready = [svc](server::ServerContext& ctx) -> Result<void> {
        if (auto v = validate(svc->config.chunking); !v) return v;
        auto store = Store::open(svc->config.dir);
        if (!store) return store.error();
        Result<void> status;
        auto hooks = server_hooks(ctx, svc->config, svc->stopping, status);
        if (!status) return status;
        svc->mem = std::make_unique<Memory>(std::shared_ptr<Store>(std::move(*store)), std::move(hooks), svc->config.chunking);
        if (const int64_t n = svc->mem->store().n_requeued_at_open(); n > 0) {
            std::fprintf(stderr, "kvrag serve: memory: %lld interrupted ingestion job(s) queued again\n", static_cast<long long>(n));
        }
        // Queued documents (from this or an earlier run) are ingested in the background.
        svc->worker = std::make_unique<IngestWorker>(*svc->mem, 1, [](const JobReport& r) {
            if (r.end == JobEnd::failed) std::fprintf(stderr, "kvrag serve: memory: %s/%s failed: %s\n", r.job.index.c_str(), r.job.doc_id.c_str(), r.error.what().c_str());
        });
        svc->worker->start();
        return {};
    };
    ext.on_stop = [svc] {
        // The worker's flag first: an embedding the flag below cancels then reads as
        // "interrupted" (job queued again), never as the document failing.
        if (svc->worker) svc->worker->request_stop();
        svc->stopping->store(true);
        if (svc->worker) svc->worker->stop();
    };
    return ext;
}

}  // namespace kvrag::memory_service
