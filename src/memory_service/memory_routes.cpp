#include "memory_service/memory_routes.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "memory/ingest_worker.h"
#include "memory/memory.h"
#include "memory/pg_db.h"
#include "memory_service/km_json.h"
#include "memory_service/upload_body.h"
#include "memory_service/upload_form.h"
#include "server/http_io.h"

namespace kvrag::memory_service {

// The routes translate between HTTP and the memory module; its names are used unqualified here.
using namespace kvrag::memory;
namespace {

// What a search limit of -1 or 0 means: Kernel Memory's MaxMatchesCount default.
constexpr int32_t kDefaultSearchLimit = 100;

// State shared by the handlers; `mem` and `worker` are set by on_ready. The worker is
// declared last so it stops (and joins) before the memory it uses goes.
struct MemoryService {
    HttpMemoryConfig config;
    std::shared_ptr<std::atomic<bool>> stopping = std::make_shared<std::atomic<bool>>(false);  // on_stop: cancels embeddings in flight
    std::unique_ptr<Memory> mem;
    std::unique_ptr<IngestWorker> worker;
};

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
    h.generate_stream = [&ctx](std::vector<int32_t> prompt, const engine::GenerateOptions& o, const engine::TextCallback& on_piece) {
        return ctx.submit_streaming(std::move(prompt), o, on_piece);
    };
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

// Where an upload's body is written while it is parsed and stored (upload_body.h): the
// configured directory, else the store's own directory; a PostgreSQL store has no directory
// here, so the system's temporary directory ($TMPDIR or /tmp).
std::string upload_temp_dir(const HttpMemoryConfig& cfg) {
    if (!cfg.upload_temp_dir.empty()) return cfg.upload_temp_dir;
    if (pg::is_postgres_uri(cfg.dir)) return std::filesystem::temp_directory_path().string();
    return cfg.dir;
}

// Streams the /upload body through httplib's content reader into a temporary file.
// cpp-httplib 0.11 runs its own multipart parser on any request whose Content-Type is
// multipart/form-data, and that parser loses .NET's unquoted part names (upload_form.h). While
// the body is read, the request's Content-Type is set to application/octet-stream so httplib
// hands over the bytes unparsed; it is put back afterwards. The Request is the server's own
// non-const object (httplib passes it to handlers as const), so writing through const_cast is
// defined.
Result<UploadBody> receive_upload(const httplib::Request& req, const httplib::ContentReader& content_reader, const MemoryService& svc) {
    auto body = UploadBody::create(upload_temp_dir(svc.config));
    if (!body) return body.error();
    auto& writable = const_cast<httplib::Request&>(req);
    auto it = writable.headers.find("Content-Type");
    std::string original;
    if (it != writable.headers.end()) {
        original = it->second;
        it->second = "application/octet-stream";
    }
    const uint64_t limit = static_cast<uint64_t>(svc.config.max_upload_bytes) * 4;
    auto r = body->receive([&](const ChunkSink& sink) { return content_reader(sink); }, limit,
                           "4 times the per-file limit of " + std::to_string(svc.config.max_upload_bytes) + " bytes", svc.stopping.get());
    if (it != writable.headers.end()) it->second = original;
    if (!r) return r.error();
    return body;
}

// Deletes the kvrag documents of Kernel Memory's document km_id in `index` and its kept
// files, except the kvrag ids in `keep`. Returns how many documents went.
Result<int64_t> delete_km_document(Memory& mem, const std::string& index, const std::string& km_id, const std::vector<std::string>& keep) {
    auto files = km_document_files(mem.store(), index, km_id);
    if (!files) return files.error();
    int64_t n = 0;
    for (const auto& f : *files) {
        if (std::find(keep.begin(), keep.end(), f.doc_id) != keep.end()) continue;
        auto d = mem.store().delete_document(index, f.doc_id);
        if (!d) return d.error();
        n += *d;
    }
    return n;
}

struct AskRequest {
    std::string question;
    AskOptions options;
    std::string empty_answer = kNothingFound;
    bool stream = false;
};

Result<AskRequest> parse_ask(const json& body) {
    if (auto k = check_known_fields(body, {"index", "question", "filters", "minRelevance", "stream", "args", "conversationId", "maxTokens",
                                           "temperature", "history", "rerank"},
                                    "/ask");
        !k) {
        return k.error();
    }
    AskRequest r;
    auto question = get_or<std::string>(body, "question", "");
    auto index = get_or<std::string>(body, "index", "");
    auto minrel = get_or<double>(body, "minRelevance", 0.0);
    auto conv = get_or<std::string>(body, "conversationId", "");
    auto max_tokens = get_or<int32_t>(body, "maxTokens", 256);
    auto temp = get_or<double>(body, "temperature", 0.0);
    auto history = get_or<std::string>(body, "history", "drop");
    auto rerank = get_or<bool>(body, "rerank", true);
    auto stream = get_or<bool>(body, "stream", false);
    auto filt = parse_km_filters(body);
    for (const Error* e : {question ? nullptr : &question.error(), index ? nullptr : &index.error(), minrel ? nullptr : &minrel.error(),
                           conv ? nullptr : &conv.error(), max_tokens ? nullptr : &max_tokens.error(), temp ? nullptr : &temp.error(),
                           filt ? nullptr : &filt.error(), history ? nullptr : &history.error(), rerank ? nullptr : &rerank.error(),
                           stream ? nullptr : &stream.error()}) {
        if (e) return *e;
    }
    auto mode = parse_history_mode(*history);
    if (!mode) return mode.error();
    r.question = *question;
    r.stream = *stream;
    AskOptions& o = r.options;
    o.index = index_or_default(*index);
    o.any_of = std::move(*filt);
    o.min_relevance = *minrel;
    o.conversation_id = *conv;
    o.max_tokens = *max_tokens;
    o.sampling.temperature = static_cast<float>(*temp);
    o.history_mode = *mode;
    o.rerank = *rerank;
    if (auto a = apply_ask_args(body, o, r.empty_answer); !a) return a.error();
    return r;
}

// Kernel Memory's MemoryAnswer for a finished ask (no streamState: the non-streaming form).
json answer_json(const AskRequest& q, const AskResult& r, const json& sources, const std::string& model) {
    json a = json{{"question", q.question}, {"noResult", !r.found}, {"text", r.found ? r.answer : q.empty_answer},
                  {"tokenUsage", token_usage_json(r, model)}, {"relevantSources", sources},
                  {"historyUsed", r.n_history_used}, {"historyDropped", r.n_history_dropped},
                  {"historySummarized", r.history_summarized}, {"finishReason", r.finish_reason}};
    if (!r.found) a["noResultReason"] = "No relevant memories available";
    return a;
}

void add_routes(server::ServerContext& ctx, const std::shared_ptr<MemoryService>& svc) {
    auto& http = ctx.http();
    auto* c = &ctx;

    // A kvrag document's last update, for citations (one lookup per document per answer).
    auto updated_at_fn = [svc](std::shared_ptr<std::map<std::string, int64_t>> cache) {
        return [svc, cache](const ChunkRow& row) -> int64_t {
            const std::string key = row.index + "/" + row.doc_id;
            auto it = cache->find(key);
            if (it != cache->end()) return it->second;
            int64_t t = 0;
            if (auto d = svc->mem->store().get_document(row.index, row.doc_id); d && *d) t = (**d).updated_at;
            (*cache)[key] = t;
            return t;
        };
    };

    // POST /upload: Kernel Memory's form (upload_form.h). Each file is stored with a queued
    // ingestion job in one transaction before the answer (202 UploadAccepted: durable, ingestion
    // pending; /upload-status shows the progress); files a previous upload of the same document
    // had and this one lacks are removed. A binary file is refused with 400 at once.
    http.Post("/upload", [svc](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& content_reader) {
        auto boundary = multipart_boundary(req.get_header_value("Content-Type"));
        if (!boundary) return send_error(res, boundary.error());
        // The body goes to an unlinked temporary file (gone however this handler ends) and is
        // parsed from there a window at a time; only the file being stored is read into memory.
        auto body = receive_upload(req, content_reader, *svc);
        if (!body) return send_error(res, body.error());
        auto parts = parse_multipart(*body, *boundary);
        if (!parts) return send_error(res, parts.error());
        auto form = parse_upload_form(*parts, *body);
        if (!form) return send_error(res, form.error());
        const std::string& index = form->index;
        const auto docs = file_documents(*form);
        for (const auto& d : docs) {
            if (d.file->size > svc->config.max_upload_bytes) {
                return send_error(res, Error{Errc::request_too_large, "file '" + d.file->filename + "' is " + std::to_string(d.file->size) +
                                                                          " bytes; the limit is " + std::to_string(svc->config.max_upload_bytes)});
            }
            if (!valid_id(d.doc_id)) {
                return send_error(res, Error{Errc::memory_bad_input, "document id '" + d.doc_id + "' (for file '" + d.file->filename +
                                                                         "') is not 1-128 characters of [A-Za-z0-9._-]"});
            }
        }
        if (!valid_id(index)) return send_error(res, Error{Errc::memory_bad_input, "index name '" + index + "' is not 1-128 characters of [A-Za-z0-9._-]"});
        // A kvrag id of one Kernel Memory document's file ("D__0") may be another document's
        // own id: refuse rather than replace that document.
        // The same for a file still queued for ingestion. The job is looked up first: a worker
        // finishing it writes the document and removes the job in one transaction, so a job
        // gone by the first lookup has its document there for the second (the other order let
        // a job finishing between the two lookups pass unseen).
        for (const auto& d : docs) {
            auto job = svc->mem->store().find_job(index, d.doc_id);
            if (!job) return send_error(res, job.error());
            auto existing = svc->mem->store().get_document(index, d.doc_id);
            if (!existing) return send_error(res, existing.error());
            std::string holder;
            if (*job) holder = km_document_id((*job)->doc_id, (*job)->tags);
            else if (*existing) holder = km_document_id((*existing)->doc_id, (*existing)->tags);
            if (!holder.empty() && holder != d.km_document_id) {
                return send_error(res, Error{Errc::memory_bad_input, "file '" + d.file->filename + "' of document '" + d.km_document_id +
                                                                         "' would be stored as '" + d.doc_id + "', which holds document '" +
                                                                         holder + "'; delete that one or choose another documentId"});
            }
        }
        json results = json::array();
        std::vector<std::string> kept;
        std::vector<std::string> km_ids;
        for (const auto& d : docs) {
            if (std::find(km_ids.begin(), km_ids.end(), d.km_document_id) == km_ids.end()) km_ids.push_back(d.km_document_id);
            IngestRequest ir;
            ir.index = index;
            ir.doc_id = d.doc_id;
            ir.name = d.file->filename;
            ir.source = "upload";
            ir.mime = d.content_type;
            // The one copy of the file in memory: the store takes its bytes as a string
            // (SourceFile); moved, not copied, into the job.
            auto bytes = body->read_string(d.file->offset, static_cast<size_t>(d.file->size));
            if (!bytes) return send_error(res, bytes.error());
            ir.bytes = std::move(*bytes);
            ir.tags = form->tags;
            ir.tags.emplace_back(kDocumentIdTag, d.km_document_id);
            if (!d.content_type.empty()) ir.tags.emplace_back(kFileTypeTag, d.content_type);
            auto r = svc->mem->enqueue(std::move(ir));
            if (!r) return send_error(res, r.error());
            kept.push_back(r->doc_id);
            results.push_back(json{{"documentId", d.km_document_id}, {"fileId", r->doc_id}, {"fileName", d.file->filename},
                                   {"status", r->job_id ? "queued" : "unchanged"}});
        }
        if (svc->worker) svc->worker->notify();
        for (const auto& km_id : km_ids) {
            if (auto r = delete_km_document(*svc->mem, index, km_id, kept); !r) return send_error(res, r.error());
        }
        res.set_header("Location", "/upload-status?index=" + index + "&documentId=" + docs.front().km_document_id);
        send_json(res, 202, json{{"index", index}, {"documentId", docs.front().km_document_id},
                                 {"message", "Document upload completed, ingestion pipeline started"}, {"documents", results}});
    });

    // GET /upload-status?index=&documentId=: DataPipelineStatus over the document's files.
    http.Get("/upload-status", [svc](const httplib::Request& req, httplib::Response& res) {
        const std::string index = index_or_default(req.get_param_value("index"));
        const std::string doc_id = req.get_param_value("documentId");
        if (doc_id.empty()) return send_error(res, Error{Errc::memory_bad_input, "'documentId' query parameter is missing or has no value"});
        auto files = km_document_files(svc->mem->store(), index, doc_id);
        if (!files) return send_error(res, files.error());
        auto jobs = km_document_jobs(svc->mem->store(), index, doc_id);
        if (!jobs) return send_error(res, jobs.error());
        if (files->empty() && jobs->empty()) return send_error(res, Error{Errc::memory_not_found, "no document '" + doc_id + "' in index '" + index + "'"});
        send_json(res, 200, pipeline_status_json(index, doc_id, *files, *jobs));
    });

    // GET /documents[?index=] (kvrag's own): absent index = every index.
    http.Get("/documents", [svc](const httplib::Request& req, httplib::Response& res) {
        auto docs = svc->mem->store().list_documents(req.has_param("index") ? index_or_default(req.get_param_value("index")) : "");
        if (!docs) return send_error(res, docs.error());
        json out = json::array();
        for (const auto& d : *docs) {
            out.push_back(json{{"index", d.index}, {"documentId", km_document_id(d.doc_id, d.tags)}, {"fileId", d.doc_id}, {"name", d.name},
                               {"state", d.state}, {"error", d.error}, {"chunks", d.n_chunks}, {"tokens", d.n_tokens},
                               {"contentHash", d.content_hash}, {"tags", tags_json(d.tags)}, {"lastUpdate", iso8601(d.updated_at)}});
        }
        send_json(res, 200, json{{"documents", out}});
    });

    // DELETE /documents?index=&documentId=: 202 DeleteAccepted; 404 for an unknown document
    // (MemoryWebClient treats both as success).
    http.Delete("/documents", [svc](const httplib::Request& req, httplib::Response& res) {
        const std::string index = index_or_default(req.get_param_value("index"));
        const std::string doc_id = req.get_param_value("documentId");
        if (doc_id.empty()) return send_error(res, Error{Errc::memory_bad_input, "'documentId' query parameter is missing or has no value"});
        // Deleting cancels the files' queued or running ingestion (Store::delete_document).
        auto n = delete_km_document(*svc->mem, index, doc_id, {});
        if (!n) return send_error(res, n.error());
        if (*n == 0) return send_error(res, Error{Errc::memory_not_found, "no document '" + doc_id + "' in index '" + index + "'"});
        send_json(res, 202, json{{"index", index}, {"documentId", doc_id}, {"message", "Document deleted"}});
    });

    // GET /indexes: IndexCollection.
    http.Get("/indexes", [svc](const httplib::Request&, httplib::Response& res) {
        auto list = svc->mem->store().list_indexes();
        if (!list) return send_error(res, list.error());
        json results = json::array();
        for (const auto& i : *list) results.push_back(json{{"name", i.name}, {"documents", i.n_documents}, {"chunks", i.n_chunks}});
        send_json(res, 200, json{{"results", results}});
    });

    // DELETE /indexes?index=: 202 DeleteAccepted; 404 for an unknown index.
    http.Delete("/indexes", [svc](const httplib::Request& req, httplib::Response& res) {
        const std::string index = index_or_default(req.get_param_value("index"));
        auto found = svc->mem->store().find_index(index);
        if (!found) return send_error(res, found.error());
        if (!*found) return send_error(res, Error{Errc::memory_not_found, "no index '" + index + "'"});
        auto n = svc->mem->store().delete_index(index);
        if (!n) return send_error(res, n.error());
        send_json(res, 202, json{{"index", index}, {"message", "Index deleted"}});
    });

    // GET /download?index=&documentId=&filename=: the uploaded file's bytes.
    http.Get("/download", [svc](const httplib::Request& req, httplib::Response& res) {
        const std::string index = index_or_default(req.get_param_value("index"));
        const std::string doc_id = req.get_param_value("documentId");
        const std::string name = req.get_param_value("filename");
        if (doc_id.empty() || name.empty()) {
            return send_error(res, Error{Errc::memory_bad_input, "/download needs the query parameters documentId and filename"});
        }
        // The Kernel Memory document's files are kvrag documents (D, or D__0, D__1, ...).
        std::optional<SourceFile> f;
        auto files = km_document_files(svc->mem->store(), index, doc_id);
        if (!files) return send_error(res, files.error());
        for (const auto& d : *files) {
            if (!f) f = svc->mem->read_source_file(index, d.doc_id, name);
        }
        if (!f) {  // a file still queued for ingestion is stored already
            if (auto jobs = km_document_jobs(svc->mem->store(), index, doc_id); jobs) {
                for (const auto& j : *jobs) {
                    if (!f) f = svc->mem->read_source_file(index, j.doc_id, name);
                }
            }
        }
        if (!f) {
            return send_error(res, Error{Errc::memory_not_found, "no file '" + name + "' of document '" + doc_id + "' in index '" + index +
                                                                     "' (only files uploaded through /upload are kept)"});
        }
        int64_t updated = 0;
        for (const auto& d : *files) updated = std::max(updated, d.updated_at);
        if (updated > 0) {
            char buf[64];
            const std::time_t t = static_cast<std::time_t>(updated);
            std::tm tm{};
            gmtime_r(&t, &tm);
            std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
            res.set_header("Last-Modified", buf);
        }
        res.set_header("Content-Disposition", "attachment; filename=\"" + memory::sanitize_id(name) + "\"");
        res.status = 200;
        res.set_content(std::move(f->bytes), f->content_type.empty() ? "application/octet-stream" : f->content_type.c_str());
    });

    // POST /search: Kernel Memory's SearchQuery {index, query, filters, minRelevance, limit,
    // args} plus kvrag's rerank (false skips --rerank-model). SearchResult.
    http.Post("/search", [svc, updated_at_fn](const httplib::Request& req, httplib::Response& res) {
        auto body = parse_json(req.body);
        if (!body) return send_error(res, body.error());
        if (auto k = check_known_fields(*body, {"index", "query", "filters", "minRelevance", "limit", "args", "rerank"}, "/search"); !k) {
            return send_error(res, k.error());
        }
        auto query = get_or<std::string>(*body, "query", "");
        auto index = get_or<std::string>(*body, "index", "");
        auto minrel = get_or<double>(*body, "minRelevance", 0.0);
        auto limit = get_or<int32_t>(*body, "limit", -1);
        auto rerank = get_or<bool>(*body, "rerank", true);
        auto filt = parse_km_filters(*body);
        auto args = check_search_args(*body);
        for (const Error* e : {query ? nullptr : &query.error(), index ? nullptr : &index.error(), minrel ? nullptr : &minrel.error(),
                               limit ? nullptr : &limit.error(), filt ? nullptr : &filt.error(), rerank ? nullptr : &rerank.error(),
                               args ? nullptr : &args.error()}) {
            if (e) return send_error(res, *e);
        }
        if (query->empty()) return send_error(res, Error{Errc::memory_bad_input, "'query' is required (kvrag does not list by filters alone)"});
        SearchOptions o;
        o.index = index_or_default(*index);
        o.any_of = std::move(*filt);
        o.min_relevance = *minrel;
        o.limit = *limit <= 0 ? kDefaultSearchLimit : std::min(*limit, 1000);
        o.rerank = *rerank;
        auto r = svc->mem->search(*query, o);
        if (!r) return send_error(res, r.error());
        send_json(res, 200, json{{"query", *query}, {"noResult", r->hits.empty()},
                                 {"results", citations_json(r->hits, updated_at_fn(std::make_shared<std::map<std::string, int64_t>>()))},
                                 {"index", o.index}});
    });

    // POST /ask: Kernel Memory's MemoryQuery {index, question, filters, minRelevance, stream,
    // args} plus kvrag's conversationId, maxTokens, temperature, history, rerank. MemoryAnswer,
    // or with stream: true server-sent events of MemoryAnswer parts (reset with the sources,
    // append per piece, last with the token usage; one reset when nothing is found; error on
    // failure), then [DONE].
    http.Post("/ask", [c, svc, updated_at_fn](const httplib::Request& req, httplib::Response& res) {
        auto body = parse_json(req.body);
        if (!body) return send_error(res, body.error());
        auto q = parse_ask(*body);
        if (!q) return send_error(res, q.error());
        const std::string model = c->model_id();
        if (!q->stream) {
            auto r = svc->mem->ask(q->question, q->options);
            if (!r) return send_error(res, r.error());
            c->log_tokens(r->n_generated);
            send_json(res, 200, answer_json(*q, *r, citations_json(r->sources, updated_at_fn(std::make_shared<std::map<std::string, int64_t>>())), model));
            return;
        }
        auto shared_q = std::make_shared<AskRequest>(std::move(*q));
        res.status = 200;
        res.set_header("Cache-Control", "no-cache");
        res.set_chunked_content_provider("text/event-stream; charset=utf-8", [svc, shared_q, model, updated_at_fn](size_t, httplib::DataSink& sink) {
            const AskRequest& q = *shared_q;
            auto send = [&sink](const json& part) {
                const std::string ev = "data: " + server::dump(part) + "\n\n";  // invalid UTF-8 replaced, never thrown
                return sink.write(ev.data(), ev.size());
            };
            AskStream stream;
            stream.on_sources = [&](const std::vector<SearchHit>& sources) {
                return send(json{{"streamState", "reset"}, {"question", q.question}, {"noResult", false}, {"text", ""},
                                 {"relevantSources", citations_json(sources, updated_at_fn(std::make_shared<std::map<std::string, int64_t>>()))}});
            };
            stream.on_text = [&](std::string_view piece) {
                return send(json{{"streamState", "append"}, {"noResult", false}, {"text", std::string(piece)}});
            };
            AskOptions o = q.options;
            o.stream = &stream;
            auto r = svc->mem->ask(q.question, o);
            bool ok = true;
            if (!r) {
                ok = send(json{{"streamState", "error"}, {"question", q.question}, {"noResult", true}, {"text", ""},
                               {"noResultReason", "Error: " + r.error().what()}});
            } else if (!r->found) {
                json a = answer_json(q, *r, json::array(), model);
                a["streamState"] = "reset";
                ok = send(a);
            } else {
                ok = send(json{{"streamState", "last"}, {"noResult", false}, {"text", ""}, {"tokenUsage", token_usage_json(*r, model)},
                               {"finishReason", r->finish_reason}});
            }
            if (ok) {
                const std::string done = "data: [DONE]\n\n";
                sink.write(done.data(), done.size());
            }
            sink.done();
            return true;
        });
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
