// Retrieval quality of a Memory, measured on an evaluation set: documents plus questions, each
// with the one document that answers it. `kvrag memory eval` runs it; docs/memory.md lists
// the figures for tests/data/memory/retrieval.
//
// Set layout (DIR):
//   DIR/docs/*          the documents, ingested with the file name as document id
//   DIR/questions.tsv   one question per line: doc_id <TAB> kind <TAB> question; '#' lines and
//                       blank lines are comments. kind is free text (the table groups by it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "memory/memory.h"

namespace kvrag::memory {

struct EvalQuestion {
    std::string doc_id;
    std::string kind;
    std::string question;
};

struct EvalSet {
    std::vector<std::string> doc_paths;  // sorted
    std::vector<std::string> doc_ids;    // (doc_paths) file names
    std::vector<EvalQuestion> questions;
};

// Errors: memory_not_found (no DIR/docs or DIR/questions.tsv, or no documents), memory_bad_input
// naming the line of a malformed question or one whose doc_id is not a file in DIR/docs.
Result<EvalSet> load_eval_set(const std::string& dir);

// Recall and MRR of one search configuration over a group of questions.
struct EvalScore {
    int32_t n = 0;        // questions
    int32_t n_at1 = 0;    // expected document first
    int32_t n_at5 = 0;    // expected document among the first 5 documents
    double rr_sum = 0.0;  // sum of 1 / rank of the expected document (0 when not within the depth)
    double recall1() const { return n ? static_cast<double>(n_at1) / n : 0.0; }
    double recall5() const { return n ? static_cast<double>(n_at5) / n : 0.0; }
    double mrr() const { return n ? rr_sum / n : 0.0; }
};

struct EvalRow {
    std::string name;                                 // "lexical", "vector", "hybrid", "hybrid+rerank"
    EvalScore all;
    std::vector<std::pair<std::string, EvalScore>> by_kind;  // in order of first appearance
};

struct EvalReport {
    int32_t n_documents = 0;
    int32_t n_chunks = 0;
    int32_t n_questions = 0;
    int32_t depth = 0;
    std::vector<EvalRow> rows;
};

struct EvalOptions {
    std::string index = "eval";
    // Chunks retrieved per question; documents are ranked by their best chunk, so recall@5
    // and MRR look at the distinct documents among these.
    int32_t depth = 20;
};

// Ingests the set into mem's store (index opt.index; a document that fails to ingest is an
// error: the set would be incomplete) and searches every question in lexical, vector and
// hybrid mode, and hybrid with the reranker when mem's hooks have one.
Result<EvalReport> run_eval(Memory& mem, const EvalSet& set, const EvalOptions& opt = {});

// The report as an aligned table (one row per mode, then recall@1 per kind and mode) and as one
// line "eval documents=42 questions=64 ... lexical_r1=0.750 ..." for scripts.
std::string format_eval_table(const EvalReport& r);
std::string format_eval_summary(const EvalReport& r);

}  // namespace kvrag::memory
