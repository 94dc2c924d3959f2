// KVRAG_CHECK: a precondition or internal invariant that only a bug can break.
//
// Always on, also in Release builds: a broken precondition means the caller's bookkeeping is
// already wrong (a foreign handle, a position past the end, a double release), and carrying on
// would corrupt shared state (other sequences' cells) far from the cause. So it stops the
// process at once and names the line.
//
// Never use it on user input (files, HTTP bodies, prompts, parameters): those get an Error with
// a number (core/error.h). And never for "no room": a full cache is an empty return.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace kvrag::detail {

[[noreturn]] inline void check_failed(const char* file, int line, const char* cond, const char* msg) {
    std::fprintf(stderr, "kvrag: internal error: %s:%d: check failed: %s: %s\n", file, line, cond, msg);
    std::fflush(stderr);
    std::abort();
}

}  // namespace kvrag::detail

// cond: any boolean expression, evaluated once. msg: a C string saying what the caller got wrong.
#define KVRAG_CHECK(cond, msg)                                                  \
    do {                                                                        \
        if (!(cond)) [[unlikely]] ::kvrag::detail::check_failed(__FILE__, __LINE__, #cond, (msg)); \
    } while (0)
