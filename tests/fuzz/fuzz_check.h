// Shared by the libFuzzer targets: an invariant check that reports what broke and aborts, so
// libFuzzer records the input as a crash. Invariants here are the promises the modules' headers
// make; a failure is a bug in the module, not in the input.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "tokenizer/unicode.h"

namespace kvrag::fuzz {

[[noreturn]] inline void fail(const char* target, const char* what) {
    std::fprintf(stderr, "%s: invariant broken: %s\n", target, what);
    std::abort();
}

#define KVRAG_FUZZ_CHECK(cond, what) \
    do {                               \
        if (!(cond)) ::kvrag::fuzz::fail(KVRAG_FUZZ_TARGET, what); \
    } while (0)

// Well-formed UTF-8 by RFC 3629 (no overlongs, no surrogates, nothing past U+10FFFF, nothing
// cut short): the tokenizer's strict validator, the one its StreamDecoder promises to.
inline bool is_valid_utf8(std::string_view s) {
    size_t bad = std::string_view::npos;
    return kvrag::tokenizer::detail::valid_utf8_prefix(s, &bad) == s.size();
}

}  // namespace kvrag::fuzz
