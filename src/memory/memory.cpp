#include "memory/memory.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "memory/extract.h"
#include "memory/prompt_builder.h"
#include "memory/sha256.h"

namespace kvrag::memory {

const char* const kDefaultInstructions =
    "You answer questions using only the numbered sources given with each question. "
    "Cite the sources you use by their number in brackets, like [1]. "
    "If the sources do not contain the answer, say that you do not know.";

const char* const kSummaryInstructions =
    "Summarise the conversation below in a few sentences, keeping names, numbers and what was "
    "asked and answered. Write only the summary.";

Result<HistoryMode> parse_history_mode(std::string_view name) {
    if (name == "drop") return HistoryMode::drop;
    if (name == "summarize" || name == "summarise") return HistoryMode::summarize;
    return Error{Errc::memory_bad_input, "history mode '" + std::string(name) + "' is not one of drop, summarize"};
}

const char* const kNothingFound = "I found nothing relevant in memory to answer this question.";

namespace {

std::string source_text(const ChunkRow& c) {
    return (c.doc_name.empty() ? c.doc_id : c.doc_name) + " (part " +
           std::to_string(c.position + 1) + "):\n" + c.text;
}

Result<std::string> read_file_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return Error{Errc::memory_extract, "cannot open '" + path + "'"};
    std::ostringstream ss;
    ss << f.rdbuf();
    if (f.bad()) return Error{Errc::memory_extract, "cannot read '" + path + "'"};
    return ss.str();
}

std::string trim(std::string s) {
    const auto b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return {};
    const auto e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Hooks

Result<EmbeddingModelInfo> embedding_model_info(const std::string& gguf_path, std::string name, int32_t dim) {
    std::ifstream f(gguf_path, std::ios::binary);
    std::error_code ec;
    const auto size = std::filesystem::file_size(gguf_path, ec);
    if (!f || ec) return Error{Errc::memory_store, "cannot read model file '" + gguf_path + "' to fingerprint it"};
    constexpr uint64_t kHead = 4ull << 20, kBlock = 64ull << 10;
    Sha256 h;
    std::vector<char> buf(static_cast<size_t>(std::min<uint64_t>(size, kHead)));
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(f.gcount()));
    if (size > kHead + kBlock) {
        buf.resize(kBlock);
        for (uint64_t i = 0; i < 16; ++i) {
            const uint64_t off = kHead + (size - kHead - kBlock) * i / 15;
            f.clear();
            f.seekg(static_cast<std::streamoff>(off));
            f.read(buf.data(), static_cast<std::streamsize>(kBlock));
            h.update(buf.data(), static_cast<size_t>(f.gcount()));
        }
    }
    if (name.empty()) name = std::filesystem::path(gguf_path).filename().string();
    return EmbeddingModelInfo{std::move(name), "size:" + std::to_string(size) + " sha256:" + h.hex().substr(0, 32), dim};
}

Result<ModelHooks> engine_hooks(engine::Engine& gen, engine::Engine& embed_engine, const std::string& chat_template) {
    ModelHooks h;
    h.tokenizer = gen.model().tokenizer;
    const auto& emb_model = *embed_engine.model().model;
    auto info = embedding_model_info(emb_model.file().path(), emb_model.hparams().name, embed_engine.embedding_dim());
    if (!info) return info.error();
    h.embed_model = std::move(*info);
    h.embed = [&embed_engine](std::string_view text) { return embed_engine.embed(text, engine::Pooling::mean); };
    h.generate = [&gen](std::vector<int32_t> prompt, const engine::GenerateOptions& opt) {
        return gen.generate_tokens(std::move(prompt), opt);
    };
    auto tmpl = chat::ChatTemplate::for_model(gen.model().model->file(), chat_template);
    if (!tmpl) return tmpl.error();
    h.chat_template = std::move(*tmpl);
    h.n_ctx = gen.config().n_ctx_seq > 0 ? std::min(gen.config().n_ctx_seq, gen.config().n_ctx) : gen.config().n_ctx;
    return h;
}

Result<ModelHooks> engine_hooks(engine::Engine& gen, engine::Embedder& embedder, const std::string& chat_template) {
    auto h = engine_hooks(gen, gen, chat_template);
    if (!h) return h.error();
    const auto& m = *embedder.model().model;
    auto info = embedding_model_info(m.file().path(), m.hparams().name, embedder.dim());
    if (!info) return info.error();
    h->embed_model = std::move(*info);
    h->embed = [&embedder](std::string_view text) -> Result<std::vector<float>> {
        const std::string texts[] = {std::string(text)};
        auto r = embedder.embed(texts);
        if (!r) return r.error();
        return std::move(r->vectors.front());
    };
    h->embed_batch = [&embedder](std::span<const std::string> texts) -> Result<std::vector<std::vector<float>>> {
        auto r = embedder.embed(texts);
        if (!r) return r.error();
        return std::move(r->vectors);
    };
    return h;
}

RerankFn embedder_rerank_hook(engine::Embedder& reranker) {
    return [&reranker](std::string_view query, const std::vector<std::string_view>& documents) -> Result<std::vector<float>> {
        const std::vector<std::string> docs(documents.begin(), documents.end());
        auto r = reranker.rerank(query, docs, engine::PairLayout::server, /*truncate=*/true);
        if (!r) return r.error();
        return std::move(r->scores);
    };
}

// ---------------------------------------------------------------------------------------------
// Ingest

Memory::Memory(std::shared_ptr<Store> store, ModelHooks hooks, ChunkOptions chunking)
    : store_(std::move(store)), hooks_(std::move(hooks)), chunking_(chunking) {}

const char* job_end_name(JobEnd e) {
    switch (e) {
        case JobEnd::done: return "done";
        case JobEnd::failed: return "failed";
        case JobEnd::cancelled: return "cancelled";
        case JobEnd::interrupted: return "interrupted";
    }
    return "?";
}

std::string files_hash(const std::vector<SourceFile>& files) {
    if (files.size() == 1) return sha256_hex(files[0].bytes);
    Sha256 h;
    for (const auto& f : files) {
        const std::string head = f.name + '\0' + std::to_string(f.bytes.size()) + '\0';
        h.update(head.data(), head.size());
        h.update(f.bytes.data(), f.bytes.size());
    }
    return h.hex();
}

Result<EnqueueResult> Memory::enqueue(IngestRequest req) {
    EnqueueResult out;
    std::vector<SourceFile> files = std::move(req.files);
    if (files.empty()) files.push_back(SourceFile{req.name, req.mime, std::move(req.bytes)});
    out.index = req.index;
    out.doc_id = req.doc_id.empty() ? sanitize_id(files[0].name) : req.doc_id;
    if (!valid_id(out.index)) return Error{Errc::memory_bad_input, "index name '" + out.index + "' is not 1-128 characters of [A-Za-z0-9._-]"};
    if (!valid_id(out.doc_id)) return Error{Errc::memory_bad_input, "document id '" + out.doc_id + "' is not 1-128 characters of [A-Za-z0-9._-]"};
    for (const auto& [k, v] : req.tags) {
        if (k.empty() || k.find_first_of(",=") != std::string::npos || v.find(',') != std::string::npos) {
            return Error{Errc::memory_bad_input, "tag '" + k + "=" + v + "': keys may not be empty or hold ',' or '='; values may not hold ','"};
        }
    }
    if (!hooks_.tokenizer || (!hooks_.embed && !hooks_.embed_batch)) {
        return Error{Errc::memory_bad_input, "ingestion needs a model (tokenizer and embeddings)"};
    }
    if (auto v = validate(chunking_); !v) return v.error();
    // A binary file is refused now, before it is stored (the caller reports it per file).
    for (const auto& f : files) {
        if (auto b = sniff_binary(f.bytes, f.name); !b) return b.error();
    }
    const std::string hash = files_hash(files);
    const std::string settings = chunking_.settings();
    if (auto r = store_->ensure_index(out.index, hooks_.embed_model); !r) return r.error();
    auto pending = store_->find_job(out.index, out.doc_id);
    if (!pending) return pending.error();
    auto same = store_->is_unchanged(out.index, out.doc_id, hash, req.tags, settings);
    if (!same) return same.error();
    if (*same && !*pending) {
        auto doc = store_->get_document(out.index, out.doc_id);
        if (!doc) return doc.error();
        if (*doc) {
            out.n_chunks = (*doc)->n_chunks;
            out.n_tokens = (*doc)->n_tokens;
        }
        return out;
    }
    NewJob job;
    job.index = out.index;
    job.doc_id = out.doc_id;
    job.name = files[0].name;
    job.source = req.source;
    job.content_hash = hash;
    job.settings = settings;
    job.tags = req.tags;
    job.files = std::move(files);
    auto id = store_->enqueue(job);
    if (!id) return id.error();
    out.job_id = *id;
    return out;
}

JobReport Memory::run_job(const IngestJob& job, const std::atomic<bool>* stop, const ProgressFn& progress) {
    JobReport rep;
    rep.job = job;
    rep.result.index = job.index;
    rep.result.doc_id = job.doc_id;
    JobProgress p;
    p.job_id = job.job_id;
    p.doc_id = job.doc_id;
    auto stopped = [&] { return stop && stop->load(std::memory_order_relaxed); };
    // Records progress; false when the job is gone or the worker is stopping (rep.end set).
    // The job row is written at each step and at most every kProgressWriteInterval within a
    // step: each write is a synced commit, and one per chunk would cost more than embedding
    // a small model's chunk. A deleted job is thus noticed within that interval (and
    // finish_job never writes a gone job's document).
    auto last_write = std::chrono::steady_clock::now();
    int32_t last_steps = -1;
    auto report = [&]() -> bool {
        const auto now = std::chrono::steady_clock::now();
        Result<bool> alive = true;
        if (p.n_steps_done != last_steps || now - last_write >= kProgressWriteInterval) {
            alive = store_->update_job(job.job_id, p.n_steps_done, p.n_chunks_total, p.n_chunks_done, p.n_tokens_done);
            last_write = now;
            last_steps = p.n_steps_done;
        }
        if (alive && !*alive) {
            rep.end = JobEnd::cancelled;
            rep.error = Error{Errc::memory_not_found, "document '" + job.doc_id + "' was deleted or uploaded again while it was ingesting"};
            return false;
        }
        if (progress) progress(p);
        if (stopped()) {
            rep.end = JobEnd::interrupted;
            rep.error = Error{Errc::memory_store, "stopped; the job stays queued"};
            return false;
        }
        return true;
    };
    auto finish = [&]() -> JobReport {
        if (rep.end == JobEnd::interrupted) {
            if (auto r = store_->requeue_job(job.job_id); !r) rep.error = r.error();
        }
        return rep;
    };
    auto fail = [&](const Error& e) -> JobReport {
        rep.error = e;
        if (stopped()) {
            // An embedding cut short by the shutdown is not the document's fault.
            rep.end = JobEnd::interrupted;
            return finish();
        }
        rep.end = JobEnd::failed;
        if (auto r = store_->fail_job(job.job_id, e.what()); !r) rep.error = r.error();
        return rep;
    };

    // 1. extract: every file of the document, in order
    auto files = store_->source_files(job.index, job.doc_id);
    if (!files) return fail(files.error());
    if (files->empty()) return fail(Error{Errc::memory_not_found, "document '" + job.doc_id + "' has no stored file"});
    std::vector<std::string> texts;
    for (const auto& f : *files) {
        auto x = extract_document(f.bytes, f.name, f.content_type == "application/octet-stream" ? "" : f.content_type);
        if (!x) return fail(x.error());
        for (auto& w : x->warnings) rep.result.warnings.push_back(std::move(w));
        texts.push_back(std::move(x->text));
    }
    p.n_steps_done = 1;
    if (!report()) return finish();

    // 2. partition: each file's text on its own (a chunk never spans two files); positions run on
    std::vector<TextChunk> chunks;
    for (const auto& t : texts) {
        auto c = chunk_text(t, *hooks_.tokenizer, chunking_);
        if (!c) return fail(c.error());
        for (auto& ch : *c) {
            ch.position = static_cast<int32_t>(chunks.size());
            chunks.push_back(std::move(ch));
        }
    }
    p.n_steps_done = 2;
    p.n_chunks_total = static_cast<int32_t>(chunks.size());
    if (!report()) return finish();

    // 3. gen_embeddings: groups of chunks per call when the hooks can batch, else one by one
    DocumentInput doc;
    doc.index = job.index;
    doc.doc_id = job.doc_id;
    doc.name = job.name;
    doc.source = job.source;
    doc.content_hash = job.content_hash;
    doc.settings = job.settings;
    doc.tags = job.tags;
    doc.chunks.reserve(chunks.size());
    const size_t group = hooks_.embed_batch ? kEmbedBatchChunks : 1;
    for (size_t first = 0; first < chunks.size(); first += group) {
        const size_t last = std::min(chunks.size(), first + group);
        std::vector<std::vector<float>> vecs;
        if (hooks_.embed_batch) {
            std::vector<std::string> batch;
            for (size_t i = first; i < last; ++i) batch.push_back(chunks[i].text);
            auto e = hooks_.embed_batch(batch);
            if (!e) {
                return fail(Error{e.error().code, "embedding chunks " + std::to_string(chunks[first].position) + "-" +
                                                      std::to_string(chunks[last - 1].position) + " of '" + job.name + "': " + e.error().message});
            }
            if (e->size() != last - first) {
                return fail(Error{Errc::memory_model_mismatch, "the embedding hook returned " + std::to_string(e->size()) + " vectors for " +
                                                                   std::to_string(last - first) + " chunks"});
            }
            vecs = std::move(*e);
        } else {
            auto e = hooks_.embed(chunks[first].text);
            if (!e) return fail(Error{e.error().code, "embedding chunk " + std::to_string(chunks[first].position) + " of '" + job.name + "': " + e.error().message});
            vecs.push_back(std::move(*e));
        }
        for (size_t i = first; i < last; ++i) {
            auto& c = chunks[i];
            std::vector<float>& v = vecs[i - first];
            if (static_cast<int32_t>(v.size()) != hooks_.embed_model.dim) {
                return fail(Error{Errc::memory_model_mismatch, "embedding has " + std::to_string(v.size()) + " floats; the model info says " +
                                                                   std::to_string(hooks_.embed_model.dim)});
            }
            p.n_tokens_done += c.n_tokens;
            doc.chunks.push_back(ChunkInput{c.position, std::move(c.text), c.n_tokens, std::move(v)});
        }
        p.n_chunks_done = static_cast<int32_t>(last);
        if (!report()) return finish();
    }
    p.n_steps_done = 3;
    if (!report()) return finish();

    // 4. save_records: the document and the end of the job in one transaction
    auto w = store_->finish_job(job.job_id, doc);
    if (!w) return fail(w.error());
    if (!*w) {
        rep.end = JobEnd::cancelled;
        rep.error = Error{Errc::memory_not_found, "document '" + job.doc_id + "' was deleted or uploaded again while it was ingesting"};
        return rep;
    }
    p.n_steps_done = kNumIngestSteps;
    if (progress) progress(p);
    rep.end = JobEnd::done;
    rep.result.outcome = **w;
    rep.result.n_chunks = static_cast<int32_t>(doc.chunks.size());
    rep.result.n_tokens = p.n_tokens_done;
    return rep;
}

Result<IngestResult> Memory::ingest(const IngestRequest& req) {
    auto q = enqueue(req);
    if (!q) return q.error();
    if (q->job_id == 0) {
        IngestResult out;
        out.index = q->index;
        out.doc_id = q->doc_id;
        out.outcome = WriteOutcome::unchanged;
        out.n_chunks = q->n_chunks;
        out.n_tokens = q->n_tokens;
        return out;
    }
    auto job = store_->claim_job(q->job_id);
    if (!job) return job.error();
    if (!*job) return Error{Errc::memory_not_found, "the job of document '" + q->doc_id + "' was taken by another worker"};
    JobReport rep = run_job(**job);
    if (rep.end != JobEnd::done) return rep.error;
    return rep.result;
}

Result<IngestResult> Memory::ingest_file(const std::string& path, const std::string& index, const Tags& tags, const std::string& doc_id) {
    IngestRequest req;
    req.index = index;
    req.name = std::filesystem::path(path).filename().string();
    req.source = path;
    req.doc_id = doc_id.empty() ? sanitize_id(std::filesystem::path(path).lexically_normal().string()) : doc_id;
    req.tags = tags;
    auto bytes = read_file_bytes(path);
    if (!bytes) return bytes.error();
    req.bytes = std::move(*bytes);
    return ingest(req);
}

std::optional<SourceFile> Memory::read_source_file(const std::string& index, const std::string& document_id, const std::string& file_name) {
    auto files = store_->source_files(index, document_id);
    if (!files) return std::nullopt;
    for (auto& f : *files) {
        if (f.name == file_name) return std::move(f);
    }
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Ask (search is in memory_search.cpp)

Result<AskResult> Memory::ask(const std::string& question, const AskOptions& opt) {
    AskResult out;
    if (!hooks_.generate || !hooks_.chat_template || !hooks_.tokenizer || hooks_.n_ctx <= 0) {
        return Error{Errc::memory_bad_input, "ask needs a generating model (generate hook, chat template and context size)"};
    }
    if (opt.max_tokens < 1 || opt.max_tokens >= hooks_.n_ctx) {
        return Error{Errc::memory_bad_input, "max_tokens " + std::to_string(opt.max_tokens) + " must be in [1, context " +
                                                 std::to_string(hooks_.n_ctx) + ")"};
    }
    if (trim(question).empty()) return Error{Errc::memory_bad_input, "the question is empty"};
    if (!opt.conversation_id.empty() && !valid_id(opt.conversation_id)) {
        return Error{Errc::memory_bad_input, "conversation id '" + opt.conversation_id + "' is not 1-128 characters of [A-Za-z0-9._-]"};
    }
    out.n_ctx = hooks_.n_ctx;
    out.max_tokens = opt.max_tokens;

    // 1. retrieve
    SearchOptions so;
    so.index = opt.index;
    so.filter = opt.filter;
    so.any_of = opt.any_of;
    so.min_relevance = opt.min_relevance;
    so.limit = std::max(1, opt.n_candidates);
    so.rerank = opt.rerank;
    auto found = search(question, so);
    if (!found) return found.error();

    // 2. history (stored as user/assistant pairs)
    std::vector<Turn> turns;
    if (!opt.conversation_id.empty()) {
        auto t = store_->conversation(opt.conversation_id);
        if (!t) return t.error();
        turns = std::move(*t);
        if (turns.size() % 2) turns.erase(turns.begin());
    }
    auto remember = [&](const std::string& answer) -> Result<void> {
        if (opt.conversation_id.empty()) return {};
        const auto& tok = *hooks_.tokenizer;
        return store_->append_turns(opt.conversation_id,
                                    {Turn{"user", question, static_cast<int32_t>(tok.encode(question, false, false).size())},
                                     Turn{"assistant", answer, static_cast<int32_t>(tok.encode(answer, false, false).size())}});
    };

    if (found->hits.empty()) {
        // Nothing passed min_relevance: say so without calling the model.
        out.answer = kNothingFound;
        out.found = false;
        out.n_history_dropped = static_cast<int32_t>(turns.size());
        if (auto r = remember(out.answer); !r) return r.error();
        return out;
    }
    out.found = true;

    // 3. the prompt, within n_ctx - max_tokens
    PromptParts parts;
    parts.instructions = opt.instructions.empty() ? kDefaultInstructions : opt.instructions;
    for (const auto& t : turns) parts.history.push_back({t.role, t.content});
    for (const auto& h : found->hits) parts.sources.push_back(source_text(h.chunk));
    parts.question = question;
    PromptBudget budget;
    budget.n_ctx = hooks_.n_ctx;
    budget.max_tokens = opt.max_tokens;
    budget.history_tokens = static_cast<int32_t>(std::clamp(opt.history_share, 0.0f, 1.0f) * static_cast<float>(hooks_.n_ctx - opt.max_tokens));
    auto built = build_prompt(*hooks_.chat_template, *hooks_.tokenizer, parts, budget);
    if (!built) return built.error();
    out.n_history_used = built->n_history;
    out.n_history_dropped = static_cast<int32_t>(turns.size()) - built->n_history;
    if (opt.history_mode == HistoryMode::summarize && out.n_history_dropped > 0) {
        // The turns that did not fit are summarised by the model (a bounded request of its
        // own, whose transcript build_prompt cuts to fit), and the summary takes their place
        // at the head of the history; the prompt is then built again under the same budget.
        std::string transcript;
        for (int32_t i = 0; i < out.n_history_dropped; ++i) {
            transcript += parts.history[static_cast<size_t>(i)].role + ": " + parts.history[static_cast<size_t>(i)].content + "\n";
        }
        PromptParts sp;
        sp.instructions = kSummaryInstructions;
        sp.question = transcript;
        PromptBudget sb;
        sb.n_ctx = hooks_.n_ctx;
        sb.max_tokens = std::clamp(opt.summary_max_tokens, 1, std::max(1, hooks_.n_ctx / 4));
        auto sprompt = build_prompt(*hooks_.chat_template, *hooks_.tokenizer, sp, sb);
        if (!sprompt) return sprompt.error();
        engine::GenerateOptions sg;
        sg.begins_text = true;  // chat messages
        sg.max_tokens = sb.max_tokens;
        sg.sampling = AskOptions::greedy();
        sg.stop = hooks_.chat_template->end_of_turn_strings();
        auto summary = hooks_.generate(std::move(sprompt->tokens), sg);
        if (!summary) return summary.error();
        if (summary->finish == engine::FinishReason::error) return summary->error;
        out.history_summary = trim(summary->text);
        out.history_summarized = true;
        std::vector<chat::Message> kept(parts.history.end() - built->n_history, parts.history.end());
        parts.history = {{"user", "Summary of our earlier conversation: " + out.history_summary}, {"assistant", "Noted."}};
        parts.history.insert(parts.history.end(), kept.begin(), kept.end());
        built = build_prompt(*hooks_.chat_template, *hooks_.tokenizer, parts, budget);
        if (!built) return built.error();
        out.n_history_used = built->n_history;
    }
    out.n_prompt_tokens = static_cast<int32_t>(built->tokens.size());
    out.question_truncated = built->question_truncated;

    // 4. generate in its own sequence (the hook's; it is released when the request ends)
    engine::GenerateOptions g;
    g.begins_text = true;
    g.max_tokens = opt.max_tokens;
    g.sampling = opt.sampling;
    g.stop = hooks_.chat_template->end_of_turn_strings();
    g.stop_at_eog = true;
    g.policy = engine::ContextPolicy::error;
    for (int32_t i : built->included) out.sources.push_back(std::move(found->hits[static_cast<size_t>(i)]));  // [1], [2], ...
    Result<engine::GenerateResult> res = Error{Errc::memory_bad_input, "no generation"};
    if (opt.stream) {
        // Streamed: the sources first, then the pieces; leading blanks are held back so the
        // streamed text equals the trimmed answer up to trailing blanks.
        if (opt.stream->on_sources && !opt.stream->on_sources(out.sources)) return Error{Errc::request_cancelled, "the client stopped reading the answer"};
        bool started = false, stopped = false;
        auto on_piece = [&](std::string_view piece, int32_t) {
            if (!started) {
                const auto b = piece.find_first_not_of(" \t\r\n");
                if (b == std::string_view::npos) return true;
                piece.remove_prefix(b);
                started = true;
            }
            if (opt.stream->on_text && !opt.stream->on_text(piece)) stopped = true;
            return !stopped;
        };
        if (hooks_.generate_stream) {
            res = hooks_.generate_stream(std::move(built->tokens), g, on_piece);
        } else {
            res = hooks_.generate(std::move(built->tokens), g);
            if (res && res->finish != engine::FinishReason::error) on_piece(res->text, -1);
        }
        if (stopped) return Error{Errc::request_cancelled, "the client stopped reading the answer"};
    } else {
        res = hooks_.generate(std::move(built->tokens), g);
    }
    if (!res) return res.error();
    out.answer = trim(res->text);
    out.finish_reason = res->finish_reason();
    out.n_reused = res->n_reused;
    out.n_generated = static_cast<int32_t>(res->tokens.size());
    if (res->finish == engine::FinishReason::error) return res->error;
    if (auto r = remember(out.answer); !r) return r.error();
    return out;
}

}  // namespace kvrag::memory
