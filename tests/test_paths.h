// Locations of test inputs. ../shared/data (beside the checkout) holds data no one on the
// project wrote: tokenizer vectors, the reference engine's outputs, a real tiny model. Tests
// that need it call shared_data_dir() and skip when it is absent, through
// KVRAG_SKIP_UNLESS_SHARED, which fails instead under KVRAG_REQUIRE_SHARED=1 (CI).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

namespace kvrag::testing {

// KVRAG_SHARED_DATA, when set, is the only place looked at: a set but missing directory means
// "no shared data" (how the skip/fail modes are tried locally), not "look beside the checkout".
inline std::optional<std::string> shared_data_dir() {
    if (const char* env = std::getenv("KVRAG_SHARED_DATA"); env && *env) {
        if (std::filesystem::is_directory(env)) return std::string(env);
        return std::nullopt;
    }
    const std::filesystem::path p = std::filesystem::path(KVRAG_SOURCE_DIR) / ".." / "shared" / "data";
    if (std::filesystem::is_directory(p)) return std::filesystem::canonical(p).string();
    return std::nullopt;
}

// KVRAG_REQUIRE_SHARED=1: CI has ../shared (and numpy) beside the checkout, so a missing input
// there is a broken setup. A skip would let the suite go green with the oracle, golden and
// reference-forward tests never run; a failure makes the gap visible.
inline bool shared_required() {
    const char* env = std::getenv("KVRAG_REQUIRE_SHARED");
    return env && std::strcmp(env, "1") == 0;
}

inline ::testing::TestPartResult::Type missing_shared_result() {
    return shared_required() ? ::testing::TestPartResult::kFatalFailure : ::testing::TestPartResult::kSkip;
}

inline const char* missing_shared_prefix() {
    return shared_required() ? "KVRAG_REQUIRE_SHARED=1 turns this skip into a failure:" : "";
}

// KVRAG_SKIP_UNLESS_SHARED(cond) << "what is missing";
// For inputs CI always has (../shared data, one of its files, numpy): when cond is false, ends
// the test as skipped with the streamed message, or, under KVRAG_REQUIRE_SHARED=1, as failed
// with the same message. Like GTEST_SKIP it returns from the enclosing void function. Not for
// skips CI may legitimately take (a CPU without AVX2, a vocabulary type kvrag does not support).
#define KVRAG_SKIP_UNLESS_SHARED(cond)                                                               \
    GTEST_AMBIGUOUS_ELSE_BLOCKER_                                                                    \
    if (cond) {                                                                                      \
    } else                                                                                           \
        return GTEST_MESSAGE_AT_(__FILE__, __LINE__, ::kvrag::testing::missing_shared_prefix(),      \
                                 ::kvrag::testing::missing_shared_result())

// Declares `const std::string var`, the shared data directory, or skips (fails under
// KVRAG_REQUIRE_SHARED=1) when there is none.
#define KVRAG_REQUIRE_SHARED_DATA(var)                                                               \
    const auto var##_opt = ::kvrag::testing::shared_data_dir();                                      \
    KVRAG_SKIP_UNLESS_SHARED(var##_opt) << "../shared/data not found (set KVRAG_SHARED_DATA); skipping"; \
    const std::string var = *var##_opt

inline std::string source_dir() { return KVRAG_SOURCE_DIR; }

}  // namespace kvrag::testing
