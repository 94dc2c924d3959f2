// The module layering of the house style (each module depends only on modules above it), checked on
// every build: CMake builds src/ as one library, so nothing else stops an upward #include.
// Every `#include "..."` under src/ is an edge from the including file's module (its first
// folder under src/) to the included header's module; an edge outside kAllowed fails the test,
// and every offending edge is listed, not just the first.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_paths.h"

namespace kvrag::layering {
namespace {

namespace fs = std::filesystem;

// Module -> the other modules it may include (its own files are always allowed). A new module
// must be added here before its files pass: an unknown module is itself a violation.
using AllowTable = std::map<std::string, std::set<std::string>>;

const AllowTable& allowed() {
    // Read top to bottom: each row lists only modules from the rows above it.
    static const AllowTable table = {
        {"core", {}},
        {"kernels", {"core"}},
        {"gguf", {"core"}},
        {"model", {"core", "kernels", "gguf"}},
        {"tokenizer", {"core", "gguf"}},
        {"sampling", {"core"}},
        {"chat", {"core", "gguf"}},  // renders the model's template; needs no tokenizer
        {"kvcache", {"core", "model"}},  // the model's hparams and KvView; never kernels
        {"engine", {"core", "kernels", "gguf", "model", "tokenizer", "sampling", "chat", "kvcache"}},
        // Knows nothing of RAG: no memory.
        {"server", {"core", "kernels", "gguf", "model", "tokenizer", "sampling", "chat", "kvcache", "engine"}},
        // Embeds and answers through the engine; never kernels, never server.
        {"memory", {"core", "gguf", "model", "tokenizer", "sampling", "chat", "kvcache", "engine"}},
        // The memory service's HTTP routes: the one module above both server and memory.
        {"memory_service", {"core", "kernels", "gguf", "model", "tokenizer", "sampling", "chat", "kvcache", "engine", "server", "memory"}},
        // Soak, synthetic models, benches: used by cli and tests only, never by the product path.
        {"tools", {"core", "kernels", "gguf", "model", "tokenizer", "sampling", "chat", "kvcache", "engine", "server", "memory",
                   "memory_service"}},
        {"cli", {"core", "kernels", "gguf", "model", "tokenizer", "sampling", "chat", "kvcache", "engine", "server", "memory",
                 "memory_service", "tools"}},
    };
    return table;
}

// path (as "src/<module>/...") -> file text.
using SourceTree = std::map<std::string, std::string>;

// The quoted includes of one file. Angle-bracket includes are system or third-party headers
// and are not edges. (An include inside a comment or #if 0 is still counted: none exist, and
// a false alarm is better than a missed edge.)
std::vector<std::string> quoted_includes(const std::string& text) {
    static const std::regex re(R"re(^\s*#\s*include\s*"([^"]+)")re");
    std::vector<std::string> out;  // the paths as written between the quotes
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        std::smatch m;
        if (std::regex_search(line, m, re)) out.push_back(m[1].str());
    }
    return out;
}

struct Check {
    std::vector<std::string> violations;  // "src/a/x.cpp -> b/y.h (a may not depend on b)"
    int n_files = 0;
    int n_edges = 0;  // includes between two different modules
};

Check check_layering(const SourceTree& tree, const AllowTable& table) {
    Check c;
    for (const auto& [path, text] : tree) {
        ++c.n_files;
        // path is "src/<module>/<rest>"
        const fs::path rel = fs::path(path).lexically_relative("src");
        const std::string from = rel.begin()->string();
        if (std::distance(rel.begin(), rel.end()) < 2) {
            c.violations.push_back(path + " is not inside a module folder under src/");
            continue;
        }
        const auto row = table.find(from);
        if (row == table.end()) {
            c.violations.push_back(path + " is in module '" + from + "', which the layering table does not list");
            continue;
        }
        for (const std::string& target : quoted_includes(text)) {
            const size_t slash = target.find('/');
            if (slash == std::string::npos) continue;  // beside the including file: same module
            const std::string to = target.substr(0, slash);
            if (to == from) continue;
            if (!table.count(to)) continue;  // not a src/ module (a third-party "lib/x.h")
            ++c.n_edges;
            if (!row->second.count(to)) {
                c.violations.push_back(path + " -> " + target + " (" + from + " may not depend on " + to + ")");
            }
        }
    }
    return c;
}

SourceTree read_src_tree() {
    SourceTree tree;
    const fs::path root = fs::path(testing::source_dir());
    for (const auto& e : fs::recursive_directory_iterator(root / "src")) {
        if (!e.is_regular_file()) continue;
        const std::string ext = e.path().extension().string();
        if (ext != ".h" && ext != ".hpp" && ext != ".cpp" && ext != ".cc") continue;
        std::ifstream in(e.path(), std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        tree[e.path().lexically_relative(root).generic_string()] = ss.str();
    }
    return tree;
}

std::string join(const std::vector<std::string>& lines) {
    std::string s;
    for (const auto& l : lines) s += "  " + l + "\n";
    return s;
}

// The checker itself, on a tree small enough to know every answer: so the real-tree test
// below cannot pass because the checker sees nothing.
TEST(Layering, CheckerFindsUpwardEdgesOnly) {
    const SourceTree tree = {
        {"src/core/a.h", "#pragma once\n#include <vector>\n"},
        {"src/model/m.h", "#include \"core/a.h\"\n#include \"kernels/ops.h\"\n"},   // allowed: model -> core, kernels
        {"src/model/m.cpp", "#include \"model/m.h\"\n#include \"m.h\"\n"},          // own module, both spellings
        {"src/core/bad.cpp", "// up\n  #  include \"model/m.h\"\n"},                // upward
        {"src/kvcache/k.cpp", "#include \"model/m.h\"\n#include \"kernels/ops.h\"\n"},  // kvcache -> kernels is not allowed
        {"src/kvcache/k2.cpp", "#include \"nlohmann/json.hpp\"\n"},                 // not a module: ignored
        {"src/mystery/x.cpp", "#include \"core/a.h\"\n"},                           // module missing from the table
    };
    const Check c = check_layering(tree, allowed());
    EXPECT_EQ(c.n_files, 7);
    EXPECT_EQ(c.n_edges, 5);
    const std::vector<std::string> want = {
        "src/core/bad.cpp -> model/m.h (core may not depend on model)",
        "src/kvcache/k.cpp -> kernels/ops.h (kvcache may not depend on kernels)",
        "src/mystery/x.cpp is in module 'mystery', which the layering table does not list",
    };
    EXPECT_EQ(c.violations, want) << join(c.violations);
}

TEST(Layering, TableIsAcyclic) {
    // A module must never be reachable from the modules it may include, or "above" means nothing.
    const AllowTable& t = allowed();
    for (const auto& [mod, deps] : t) {
        std::set<std::string> seen;
        std::vector<std::string> todo(deps.begin(), deps.end());
        while (!todo.empty()) {
            const std::string m = todo.back();
            todo.pop_back();
            ASSERT_NE(m, mod) << mod << " can reach itself through the table";
            ASSERT_TRUE(t.count(m)) << mod << " lists unknown module " << m;
            if (!seen.insert(m).second) continue;
            for (const auto& d : t.at(m)) todo.push_back(d);
        }
    }
}

TEST(Layering, EveryIncludeUnderSrcFollowsTheTable) {
    const SourceTree tree = read_src_tree();
    const Check c = check_layering(tree, allowed());
    ASSERT_GT(c.n_files, 50);   // the tree was found and read
    ASSERT_GT(c.n_edges, 100);  // and its includes were parsed
    EXPECT_TRUE(c.violations.empty()) << c.violations.size() << " include(s) break the module layering (the table is allowed() in "
                                      << "tests/layering_test.cpp):\n" << join(c.violations);
}

// STYLE.md asks for .cpp files of at most ~800 lines. A warning, not a failure: a file that
// grows past it should be split when next touched, not block an unrelated change.
TEST(Layering, WarnsAboutFilesOver800Lines) {
    const SourceTree tree = read_src_tree();
    std::vector<std::string> long_files;
    for (const auto& [path, text] : tree) {
        const auto n = std::count(text.begin(), text.end(), '\n');
        if (n > 800) long_files.push_back(path + " has " + std::to_string(n) + " lines");
    }
    if (!long_files.empty()) std::printf("warning: files over 800 lines:\n%s", join(long_files).c_str());
}

}  // namespace
}  // namespace kvrag::layering
