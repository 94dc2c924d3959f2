// Helpers shared by the grammar and JSON-schema tests (one definition, so the unity build of
// the suite never meets two copies).
#pragma once

#include <memory>
#include <string>

#include "sampling/grammar.h"

namespace kvrag::sampling {

// Whole-input match: every byte advances and the grammar accepts at the end.
inline bool matches(const std::shared_ptr<const Grammar>& g, const std::string& input) {
    GrammarMatcher m(g);
    return m.advance(input) && m.accepting();
}

}  // namespace kvrag::sampling
