// The memory service's names: document tags ("k=v,k2=v2") and the id rule shared by
// document ids, index names and conversation ids.
#pragma once

#include <string>
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

}  // namespace kvrag::memory
