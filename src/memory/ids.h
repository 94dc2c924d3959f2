// The memory service's names: document tags ("k=v,k2=v2") and the id rule shared by
// document ids, index names and conversation ids.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"

namespace kvrag::memory {

using Tags = std::vector<std::pair<std::string, std::string>>;  // key=value, a key may repeat

// "k=v,k2=v2" -> tags, in the order given. Empty entries (",,") are skipped; a value may be
// empty and may hold '='. Error memory_bad_input for an entry without '=' or an empty key.
Result<Tags> parse_tags(const std::string& s);
// Sorted by (key, value) with exact repeats removed: the one form a document's tags are
// stored and compared in.
Tags sorted_tags(Tags tags);
std::string format_tags(const Tags& tags);  // "k=v,k2=v2", of sorted_tags(tags)
// Ids and index names: 1-128 characters of [A-Za-z0-9._-] (Kernel Memory's rule).
bool valid_id(const std::string& id);
// Makes an id from any text (a file path): invalid characters become '_', leading '_' and
// '.' are dropped (one character always stays), a long one keeps its last 128 characters
// (the file-name end of a path), and empty text gives "doc".
std::string sanitize_id(const std::string& text);
// A file's document id (the CLI's rule, docs/memory.md "Document ids"): the file's path
// relative to `cwd` (an absolute directory) when it lies under it, else its absolute path,
// lexically normalised, through sanitize_id. So a file gets the same id whether it is named
// or found under a folder that is named, and files with the same name in different folders
// get different ids. `path` may be relative (to cwd) or absolute.
std::string file_doc_id(const std::string& path, const std::string& cwd);
// `id` with "-" and 8 hex digits of `key`'s SHA-256 appended (cut to stay within 128
// characters): the id a file gets when file_doc_id's is taken by another file.
std::string disambiguated_id(const std::string& id, std::string_view key);

}  // namespace kvrag::memory
