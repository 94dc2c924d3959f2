#include "memory/retrieval_eval.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unordered_set>

namespace kvrag::memory {
namespace {

namespace fs = std::filesystem;

std::string fmt3(double v) {
    char b[32];
    std::snprintf(b, sizeof(b), "%.3f", v);
    return b;
}

void add(EvalScore& s, int32_t rank) {  // rank: 1-based document rank, 0 = not found
    ++s.n;
    if (rank == 1) ++s.n_at1;
    if (rank >= 1 && rank <= 5) ++s.n_at5;
    if (rank >= 1) s.rr_sum += 1.0 / rank;
}

std::string pad(std::string s, size_t w) {
    if (s.size() < w) s.append(w - s.size(), ' ');
    return s;
}

}  // namespace

Result<EvalSet> load_eval_set(const std::string& dir) {
    EvalSet set;
    const fs::path docs = fs::path(dir) / "docs", qpath = fs::path(dir) / "questions.tsv";
    std::error_code ec;
    if (!fs::is_directory(docs, ec)) return Error{Errc::memory_not_found, "evaluation set '" + dir + "' has no docs/ directory"};
    for (const auto& e : fs::directory_iterator(docs, ec)) {
        const auto name = e.path().filename().string();
        if (e.is_regular_file() && !name.empty() && name[0] != '.') set.doc_paths.push_back(e.path().string());
    }
    if (ec) return Error{Errc::memory_not_found, "cannot list '" + docs.string() + "': " + ec.message()};
    std::sort(set.doc_paths.begin(), set.doc_paths.end());
    if (set.doc_paths.empty()) return Error{Errc::memory_not_found, "evaluation set '" + dir + "' has no documents in docs/"};
    std::unordered_set<std::string> ids;
    for (const auto& p : set.doc_paths) {
        set.doc_ids.push_back(fs::path(p).filename().string());
        ids.insert(set.doc_ids.back());
    }

    std::ifstream f(qpath);
    if (!f) return Error{Errc::memory_not_found, "evaluation set '" + dir + "' has no readable questions.tsv"};
    std::string line;
    for (int32_t n_line = 1; std::getline(f, line); ++n_line) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty() || line[0] == '#') continue;
        const auto t1 = line.find('\t');
        const auto t2 = t1 == std::string::npos ? t1 : line.find('\t', t1 + 1);
        if (t2 == std::string::npos || t2 + 1 >= line.size()) {
            return Error{Errc::memory_bad_input, qpath.string() + ":" + std::to_string(n_line) +
                                                     ": expected doc_id<TAB>kind<TAB>question (3 fields), got '" + line.substr(0, 80) + "'"};
        }
        EvalQuestion q{line.substr(0, t1), line.substr(t1 + 1, t2 - t1 - 1), line.substr(t2 + 1)};
        if (!ids.count(q.doc_id)) {
            return Error{Errc::memory_bad_input, qpath.string() + ":" + std::to_string(n_line) + ": document '" + q.doc_id +
                                                     "' is not a file in " + docs.string()};
        }
        set.questions.push_back(std::move(q));
    }
    if (set.questions.empty()) return Error{Errc::memory_not_found, qpath.string() + " holds no questions"};
    return set;
}

Result<EvalReport> run_eval(Memory& mem, const EvalSet& set, const EvalOptions& opt) {
    EvalReport rep;
    rep.depth = std::max(1, opt.depth);
    rep.n_questions = static_cast<int32_t>(set.questions.size());
    for (size_t i = 0; i < set.doc_paths.size(); ++i) {
        auto r = mem.ingest_file(set.doc_paths[i], opt.index, {}, set.doc_ids[i]);
        if (!r) return Error{r.error().code, "evaluation document '" + set.doc_paths[i] + "': " + r.error().message};
        ++rep.n_documents;
        rep.n_chunks += r->n_chunks;
    }

    struct Config {
        const char* name;
        SearchMode mode;
        bool rerank;
    };
    std::vector<Config> configs = {{"lexical", SearchMode::lexical, false}, {"vector", SearchMode::vector, false},
                                   {"hybrid", SearchMode::hybrid, false}};
    if (mem.hooks().rerank) configs.push_back({"hybrid+rerank", SearchMode::hybrid, true});
    for (const auto& c : configs) {
        EvalRow row;
        row.name = c.name;
        SearchOptions so;
        so.index = opt.index;
        so.limit = rep.depth;
        so.mode = c.mode;
        so.rerank = c.rerank;
        for (const auto& q : set.questions) {
            auto res = mem.search(q.question, so);
            if (!res) return Error{res.error().code, std::string(c.name) + " search for '" + q.question + "': " + res.error().message};
            // Documents in the order of their best chunk.
            std::vector<std::string> docs;
            for (const auto& h : res->hits) {
                if (std::find(docs.begin(), docs.end(), h.chunk.doc_id) == docs.end()) docs.push_back(h.chunk.doc_id);
            }
            const auto it = std::find(docs.begin(), docs.end(), q.doc_id);
            const int32_t rank = it == docs.end() ? 0 : static_cast<int32_t>(it - docs.begin()) + 1;
            add(row.all, rank);
            auto k = std::find_if(row.by_kind.begin(), row.by_kind.end(), [&](const auto& p) { return p.first == q.kind; });
            if (k == row.by_kind.end()) {
                row.by_kind.emplace_back(q.kind, EvalScore{});
                k = row.by_kind.end() - 1;
            }
            add(k->second, rank);
        }
        rep.rows.push_back(std::move(row));
    }
    return rep;
}

std::string format_eval_table(const EvalReport& r) {
    std::string out = "retrieval eval: " + std::to_string(r.n_documents) + " documents (" + std::to_string(r.n_chunks) + " chunks), " +
                      std::to_string(r.n_questions) + " questions, " + std::to_string(r.depth) + " chunks retrieved per question\n\n";
    out += "| mode | recall@1 | recall@5 | MRR |\n|---|---|---|---|\n";
    for (const auto& row : r.rows) {
        out += "| " + pad(row.name, 13) + " | " + fmt3(row.all.recall1()) + " | " + fmt3(row.all.recall5()) + " | " + fmt3(row.all.mrr()) + " |\n";
    }
    if (r.rows.empty()) return out;
    // recall@1 by question kind: where each mode wins and loses.
    out += "\n| kind (questions) |";
    for (const auto& row : r.rows) out += " " + row.name + " |";
    out += "\n|---|";
    for (size_t i = 0; i < r.rows.size(); ++i) out += "---|";
    out += "\n";
    for (size_t k = 0; k < r.rows[0].by_kind.size(); ++k) {
        const auto& [kind, s] = r.rows[0].by_kind[k];
        out += "| " + pad(kind + " (" + std::to_string(s.n) + ")", 16) + " |";
        for (const auto& row : r.rows) out += " " + fmt3(row.by_kind[k].second.recall1()) + " |";
        out += "\n";
    }
    return out;
}

std::string format_eval_summary(const EvalReport& r) {
    std::string out = "eval documents=" + std::to_string(r.n_documents) + " chunks=" + std::to_string(r.n_chunks) +
                      " questions=" + std::to_string(r.n_questions);
    for (const auto& row : r.rows) {
        std::string key = row.name;
        std::replace(key.begin(), key.end(), '+', '_');
        out += " " + key + "_r1=" + fmt3(row.all.recall1()) + " " + key + "_r5=" + fmt3(row.all.recall5()) + " " + key + "_mrr=" + fmt3(row.all.mrr());
    }
    return out;
}

}  // namespace kvrag::memory
