// Locations of test inputs. ../shared/data (beside the checkout) holds data no one on the
// project wrote: tokenizer vectors, the reference engine's outputs, a real tiny model. Tests
// that need it call shared_data_dir() and GTEST_SKIP when it is absent.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

namespace kvrag::testing {

inline std::optional<std::string> shared_data_dir() {
    if (const char* env = std::getenv("KVRAG_SHARED_DATA")) {
        if (std::filesystem::is_directory(env)) return std::string(env);
    }
    const std::filesystem::path p = std::filesystem::path(KVRAG_SOURCE_DIR) / ".." / "shared" / "data";
    if (std::filesystem::is_directory(p)) return std::filesystem::canonical(p).string();
    return std::nullopt;
}

#define KVRAG_REQUIRE_SHARED_DATA(var)                                                        \
    const auto var##_opt = ::kvrag::testing::shared_data_dir();                                \
    if (!var##_opt) GTEST_SKIP() << "../shared/data not found (set KVRAG_SHARED_DATA); skipping"; \
    const std::string var = *var##_opt

inline std::string source_dir() { return KVRAG_SOURCE_DIR; }

}  // namespace kvrag::testing
