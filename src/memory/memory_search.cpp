// Memory::search: the exact vector scan and FTS5 BM25, fused by reciprocal rank fusion with
// rare exact query terms first (hybrid), then an optional rerank. The rules and why are in
// docs/memory.md ("Search").
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "memory/lexical_query.h"
#include "memory/memory.h"
#include "memory/vector_scan.h"

namespace kvrag::memory {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string cut_to_tokens(const tokenizer::Tokenizer& tok, std::string_view text, int32_t n) {
    const auto ids = tok.encode(text, false, false);
    if (static_cast<int32_t>(ids.size()) <= n) return std::string(text);
    return tok.decode(std::span<const int32_t>(ids.data(), static_cast<size_t>(n)));
}

// The constant from Cormack, Clarke and Buettcher (2009): large enough that the first ranks
// of one list do not drown the other list, the usual choice of hybrid search engines.
constexpr double kRrfK = 60.0;

// Exact terms looked up per query: each costs one bounded FTS5 query.
constexpr size_t kMaxExactTerms = 16;

struct Cand {
    double rrf = 0.0;
    double relevance = 0.0;
    int32_t vrank = 0, lrank = 0;
    int32_t n_exact = 0;
};

}  // namespace

Result<SearchMode> parse_search_mode(std::string_view s) {
    if (s == "hybrid") return SearchMode::hybrid;
    if (s == "vector") return SearchMode::vector;
    if (s == "lexical") return SearchMode::lexical;
    return Error{Errc::memory_bad_input, "search mode '" + std::string(s) + "' is not one of hybrid, vector, lexical"};
}

Result<void> Memory::check_index_model(const std::string& index) {
    auto info = store_->find_index(index);
    if (!info) return info.error();
    if (!*info) return {};
    const auto& m = (*info)->model;
    if (m.fingerprint != hooks_.embed_model.fingerprint || m.dim != hooks_.embed_model.dim) {
        return Error{Errc::memory_model_mismatch, "index '" + index + "' was embedded by model '" + m.name + "' (" + m.fingerprint + ", dim " +
                                                      std::to_string(m.dim) + "); the model in use is '" + hooks_.embed_model.name + "' (" +
                                                      hooks_.embed_model.fingerprint + ", dim " + std::to_string(hooks_.embed_model.dim) +
                                                      "). Search with the model that ingested it (or --embed-model)"};
    }
    return {};
}

Result<SearchResult> Memory::search(const std::string& query, const SearchOptions& opt) {
    SearchResult out;
    if (opt.limit <= 0) return out;
    if (!hooks_.embed) return Error{Errc::memory_bad_input, "search needs a model (embeddings)"};
    if (auto r = check_index_model(opt.index); !r) return r.error();
    auto info = store_->find_index(opt.index);
    if (!info) return info.error();
    if (!*info) return out;  // nothing ingested into that index yet

    const bool rerank = hooks_.rerank && opt.rerank;
    std::vector<float> q;
    const auto t0 = std::chrono::steady_clock::now();
    {
        // bounded: the query is embedded like a chunk, at most one chunk's worth of tokens
        // (chunks fit the embedding context by construction)
        auto e = hooks_.embed(hooks_.tokenizer ? cut_to_tokens(*hooks_.tokenizer, query, chunking_.max_tokens) : query);
        if (!e) return e.error();
        q = std::move(*e);
    }
    if (static_cast<int32_t>(q.size()) != (*info)->model.dim) {
        return Error{Errc::memory_model_mismatch, "query embedding has " + std::to_string(q.size()) + " floats; index '" + opt.index +
                                                      "' holds " + std::to_string((*info)->model.dim)};
    }
    out.embed_ms = ms_since(t0);
    const auto t1 = std::chrono::steady_clock::now();

    auto vs = store_->vectors(opt.index);
    if (!vs) return vs.error();
    const VectorSet& set = **vs;
    auto allowed = store_->filter_documents(opt.index, opt.filter.doc_id, opt.filter.tags);
    if (!allowed) return allowed.error();
    if (opt.any_of) {
        // OR of the filter objects (a filter with no condition passes every document), then
        // AND with `filter`.
        std::optional<std::unordered_set<int64_t>> any = std::unordered_set<int64_t>{};
        for (const SearchFilter& f : *opt.any_of) {
            auto one = store_->filter_documents(opt.index, f.doc_id, f.tags);
            if (!one) return one.error();
            if (!one->has_value()) {
                any.reset();
                break;
            }
            any->insert((*one)->begin(), (*one)->end());
        }
        if (any) {
            if (allowed->has_value()) {
                std::unordered_set<int64_t> both;
                for (int64_t d : **allowed) {
                    if (any->count(d)) both.insert(d);
                }
                *allowed = std::move(both);
            } else {
                *allowed = std::move(any);
            }
        }
    }
    const std::unordered_set<int64_t>* allow = allowed->has_value() ? &**allowed : nullptr;
    // The final list: `limit` hits, or the pool the reranker chooses them from; each list
    // contributes 4 x that many candidates. Both are bounded by the index size, so a huge
    // limit cannot overflow the products here or in the lexical query.
    const int64_t n_chunks = static_cast<int64_t>(set.size());
    const int32_t n_keep = static_cast<int32_t>(std::min<int64_t>(rerank ? rerank_candidates(opt.limit) : opt.limit, n_chunks));
    const int32_t n_cand = static_cast<int32_t>(std::min<int64_t>(std::max<int64_t>(int64_t{n_keep} * 4, 50), n_chunks + 50));

    std::unordered_map<int64_t, Cand> cands;  // chunk id -> candidate
    // A chunk reached only through the lexical side gets its cosine computed here, so
    // min_relevance and the reported relevance mean the same for every hit.
    auto cosine_of = [&](size_t row) {
        const float* v = set.data.data() + row * static_cast<size_t>(set.dim);
        return std::clamp(static_cast<double>(dot_f32(v, q.data(), set.dim)), 0.0, 1.0);
    };

    // 1. vector: exact scan
    if (opt.mode != SearchMode::lexical) {
        const auto top = top_k_scan(set.data.data(), set.size(), set.dim, q.data(), static_cast<size_t>(n_cand), &set.doc_rowids, allow);
        out.n_scanned = allow ? 0 : set.size();
        for (size_t r = 0; r < top.size(); ++r) {
            Cand& c = cands[set.chunk_ids[top[r].first]];
            c.vrank = static_cast<int32_t>(r + 1);
            c.rrf += 1.0 / (kRrfK + static_cast<double>(r + 1));
            c.relevance = std::clamp(static_cast<double>(top[r].second), 0.0, 1.0);
        }
    }
    // 2. lexical: BM25
    if (opt.mode != SearchMode::vector) {
        auto lex = store_->lexical(opt.index, query, allow ? n_cand * 8 : n_cand);
        if (!lex) return lex.error();
        int32_t rank = 0;
        for (const auto& [id, bm25] : *lex) {
            auto row = set.row_of.find(id);
            if (row == set.row_of.end()) continue;
            if (allow && !allow->count(set.doc_rowids[row->second])) continue;
            if (++rank > n_cand) break;
            Cand& c = cands[id];
            c.lrank = rank;
            c.rrf += 1.0 / (kRrfK + rank);
            if (c.vrank == 0) c.relevance = cosine_of(row->second);
        }
    }
    // 3. hybrid: the exact-term rule. RRF alone lets chunks that rank near the top of the
    // vector list and somewhere in the lexical one (on common words) outscore the one chunk
    // that holds the rare identifier or name the user typed; a rare exact term is the
    // strongest evidence a query can carry, so chunks holding more of them rank first.
    if (opt.mode == SearchMode::hybrid) {
        const int32_t rare_max = rare_term_max_chunks(set.size());
        size_t n_looked = 0;
        for (const auto& term : parse_query_terms(query)) {
            if (!term.exact || n_looked++ >= kMaxExactTerms) continue;
            auto ids = store_->term_chunks(opt.index, fts_phrase(term), rare_max + 1);
            if (!ids) return ids.error();
            if (static_cast<int32_t>(ids->size()) > rare_max) continue;  // common: the fusion judges it
            for (int64_t id : *ids) {
                auto row = set.row_of.find(id);
                if (row == set.row_of.end()) continue;
                if (allow && !allow->count(set.doc_rowids[row->second])) continue;
                auto [it, fresh] = cands.try_emplace(id);
                if (fresh) it->second.relevance = cosine_of(row->second);
                ++it->second.n_exact;
            }
        }
    }

    std::vector<std::pair<int64_t, Cand>> ranked;
    for (const auto& [id, c] : cands) {
        if (c.relevance >= opt.min_relevance) ranked.emplace_back(id, c);
    }
    std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
        if (a.second.n_exact != b.second.n_exact) return a.second.n_exact > b.second.n_exact;
        if (a.second.rrf != b.second.rrf) return a.second.rrf > b.second.rrf;
        if (a.second.relevance != b.second.relevance) return a.second.relevance > b.second.relevance;
        return a.first < b.first;
    });
    if (ranked.size() > static_cast<size_t>(n_keep)) ranked.resize(static_cast<size_t>(n_keep));
    std::vector<int64_t> ids;
    for (const auto& r : ranked) ids.push_back(r.first);
    auto rows = store_->chunks(ids);
    if (!rows) return rows.error();
    std::unordered_map<int64_t, ChunkRow*> by_id;
    for (auto& r : *rows) by_id[r.chunk_id] = &r;
    for (const auto& [id, c] : ranked) {
        auto it = by_id.find(id);
        if (it == by_id.end()) continue;  // deleted between the scan and now
        SearchHit h;
        h.chunk = std::move(*it->second);
        h.relevance = c.relevance;
        h.score = c.rrf;
        h.vector_rank = c.vrank;
        h.lexical_rank = c.lrank;
        h.n_exact = c.n_exact;
        out.hits.push_back(std::move(h));
    }
    out.search_ms = ms_since(t1);

    // 4. rerank the pool and keep the best `limit`
    if (rerank && !out.hits.empty()) {
        const auto t2 = std::chrono::steady_clock::now();
        std::vector<std::string_view> docs;
        docs.reserve(out.hits.size());
        for (const auto& h : out.hits) docs.push_back(h.chunk.text);
        auto scores = hooks_.rerank(query, docs);
        if (!scores) return Error{scores.error().code, "reranking " + std::to_string(docs.size()) + " chunks: " + scores.error().message};
        if (scores->size() != docs.size()) {
            return Error{Errc::memory_model_mismatch, "the reranker returned " + std::to_string(scores->size()) + " scores for " +
                                                          std::to_string(docs.size()) + " chunks"};
        }
        for (size_t i = 0; i < docs.size(); ++i) {
            out.hits[i].reranked = true;
            out.hits[i].rerank_score = static_cast<double>((*scores)[i]);
        }
        // A NaN score (a broken model) sorts last instead of breaking the ordering; equal
        // scores keep the fused order (stable sort).
        auto key = [](const SearchHit& h) { return std::isnan(h.rerank_score) ? -std::numeric_limits<double>::infinity() : h.rerank_score; };
        std::stable_sort(out.hits.begin(), out.hits.end(), [&](const SearchHit& a, const SearchHit& b) { return key(a) > key(b); });
        out.n_reranked = static_cast<int32_t>(docs.size());
        out.rerank_ms = ms_since(t2);
    }
    if (out.hits.size() > static_cast<size_t>(opt.limit)) out.hits.resize(static_cast<size_t>(opt.limit));
    return out;
}

}  // namespace kvrag::memory
