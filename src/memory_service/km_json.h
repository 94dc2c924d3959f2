// Kernel Memory's wire types (microsoft/kernel-memory, archived/km-v1: service/Abstractions/
// Models) written from kvrag's results, and KM's request parts read into kvrag's options.
// The JSON names and types are KM's exactly (MemoryWebClient deserialises them with
// System.Text.Json: a list must be a list, a DateTimeOffset an ISO-8601 string); fields kvrag
// adds are documented in docs/api.md.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "memory/memory.h"

namespace kvrag::memory_service {

using nlohmann::json;

// "" and null mean Kernel Memory's default index.
std::string index_or_default(std::string index);

// Unix seconds -> "2024-11-23T10:00:00Z" (what .NET reads as a DateTimeOffset).
std::string iso8601(int64_t unix_seconds);

// Kernel Memory's TagCollection: {"key": ["value", ...]}; a tag stored without a value ("")
// lists the key with no value, as KM keeps a tag given as "key" alone.
json tags_json(const memory::Tags& tags);

// "filters": [{"key": ["v1", "v2"]}, ...] -> SearchOptions::any_of (OR of the objects, AND of
// the pairs in one object). null/absent/[] = no filter. A value null means the tag without a
// value. "__document_id" selects Kernel Memory's document: a kvrag document with that id, or
// one uploaded under it (tag __document_id). Errors (memory_bad_input) name the filter: not
// an array of objects, values that are not strings, another reserved "__" key.
Result<std::optional<std::vector<memory::SearchFilter>>> parse_km_filters(const json& body);

// The files of Kernel Memory's document `km_id` in `index`: the kvrag documents uploaded under
// it (tag __document_id) and a document whose own id is km_id without another KM id.
Result<std::vector<memory::DocumentInfo>> km_document_files(memory::Store& store, const std::string& index, const std::string& km_id);
// Kernel Memory's document id of a kvrag document or chunk (its __document_id tag, else its id).
std::string km_document_id(const std::string& doc_id, const memory::Tags& tags);

// The queued or running ingestion jobs of Kernel Memory's document `km_id` (as km_document_files).
Result<std::vector<memory::IngestJob>> km_document_jobs(memory::Store& store, const std::string& index, const std::string& km_id);

// DataPipelineStatus of a KM document from its stored files and their pending jobs (not both
// empty). A job is its file's latest upload, so it stands for that file until it finishes:
// completed when no job is pending and every file is ready; completed_steps are the steps every
// pending job has done; chunks_done / chunks_total count embedded chunks over all files.
json pipeline_status_json(const std::string& index, const std::string& km_id, const std::vector<memory::DocumentInfo>& files,
                          const std::vector<memory::IngestJob>& jobs);

// Citation list (one per file, in rank order of its best chunk). updated_at gives a kvrag
// document's last update (unix seconds) for Partition.lastUpdate.
json citations_json(const std::vector<memory::SearchHit>& hits, const std::function<int64_t(const memory::ChunkRow&)>& updated_at);

// TokenUsage list of one ask.
json token_usage_json(const memory::AskResult& r, const std::string& model_name);

// "args" of /ask: Kernel Memory's custom_rag_* context arguments mapped onto AskOptions.
// empty_answer receives custom_rag_empty_answer_str. Errors name the argument: an unknown one,
// or a value of the wrong type or range.
Result<void> apply_ask_args(const json& body, memory::AskOptions& o, std::string& empty_answer);
// "args" of /search: Kernel Memory's search reads none; any argument is refused by name.
Result<void> check_search_args(const json& body);

// Refuses a body key not in `known`, naming it and the route.
Result<void> check_known_fields(const json& body, std::initializer_list<const char*> known, const char* route);

}  // namespace kvrag::memory_service
