// The CLI's flags default to the library's option structs (engine::GenerateOptions,
// sampling::SamplingParams, memory::AskOptions, memory::ChunkOptions), not to copies of their
// values. Checked through what the real binary's --help prints, so a default changed in the
// library but pinned in the CLI (or the other way round) fails here.
#include <gtest/gtest.h>

#include <cstdio>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "cli/run_kvrag.h"
#include "engine/engine.h"
#include "memory/chunker.h"
#include "memory/memory.h"
#include "sampling/sampler.h"

namespace kvrag {
namespace {

std::string help_of(const std::string& command) {
    const testing::RunResult r = testing::run_kvrag(command + " --help");
    EXPECT_EQ(r.exit_code, 0) << command << ": " << r.err;
    return r.out;
}

// The help entry of one flag: its line plus the next one when CLI11 wraps a long name's
// description onto it. Empty if the flag is not there.
std::string entry_of(const std::string& help, const std::string& flag) {
    std::istringstream in(help);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    const std::regex name("(^|[ ,])" + flag + "( |$)");
    for (size_t i = 0; i < lines.size(); ++i) {
        if (!std::regex_search(lines[i], name)) continue;
        std::string e = lines[i];
        if (i + 1 < lines.size() && lines[i + 1].find(" -") != 2) e += " " + lines[i + 1];
        return e;
    }
    return "";
}

// CLI11 prints a captured default after the type: "--temp FLOAT=0.8". The '=' follows a
// non-space, which keeps "0 = greedy" in a description from matching.
std::string captured_default(const std::string& help, const std::string& flag) {
    std::smatch m;
    const std::string e = entry_of(help, flag);
    return std::regex_search(e, m, std::regex(R"(\S=(\S+))")) ? m[1].str() : "";
}

// "(default 256)" in a description.
std::string described_default(const std::string& help, const std::string& flag) {
    std::smatch m;
    const std::string e = entry_of(help, flag);
    return std::regex_search(e, m, std::regex(R"(default (-?[0-9.]+))")) ? m[1].str() : "";
}

TEST(CliDefaults, GenerateFlagsDefaultToGenerateOptionsAndSamplingParams) {
    const std::string help = help_of("generate");
    ASSERT_NE(help.find("--temp"), std::string::npos) << help;
    const engine::GenerateOptions g;
    const sampling::SamplingParams& s = g.sampling;
    EXPECT_EQ(g.sampling.temperature, sampling::SamplingParams{}.temperature);  // GenerateOptions keeps the sampler's defaults
    const std::pair<const char*, double> numbers[] = {
        {"--n-predict", static_cast<double>(g.max_tokens)},
        {"--temp", s.temperature},
        {"--top-k", static_cast<double>(s.top_k)},
        {"--top-p", s.top_p},
        {"--min-p", s.min_p},
        {"--repeat-penalty", s.repeat_penalty},
        {"--presence-penalty", s.presence_penalty},
        {"--frequency-penalty", s.frequency_penalty},
        {"--n-keep", static_cast<double>(g.n_keep)},
    };
    for (const auto& [flag, want] : numbers) {
        const std::string got = captured_default(help, flag);
        ASSERT_FALSE(got.empty()) << flag << " prints no default in:\n" << entry_of(help, flag);
        // Compared as float: the CLI prints the float the library holds.
        EXPECT_EQ(std::stof(got), static_cast<float>(want)) << flag << ": CLI " << got << ", library " << want;
    }
    EXPECT_EQ(captured_default(help, "--context-policy"), engine::context_policy_name(g.policy));
}

TEST(CliDefaults, MemoryFlagsDefaultToAskSearchAndChunkOptions) {
    const memory::AskOptions ask;
    const memory::SearchOptions search;
    const memory::ChunkOptions chunk;
    const std::string ask_help = help_of("ask");
    EXPECT_EQ(described_default(ask_help, "--max-tokens"), std::to_string(ask.max_tokens)) << ask_help;
    EXPECT_EQ(described_default(ask_help, "--candidates"), std::to_string(ask.n_candidates)) << ask_help;
    EXPECT_EQ(described_default(ask_help, "--chunk-tokens"), std::to_string(chunk.max_tokens)) << ask_help;
    EXPECT_EQ(described_default(ask_help, "--chunk-overlap"), std::to_string(chunk.overlap)) << ask_help;
    EXPECT_EQ(described_default(help_of("search"), "--limit"), std::to_string(search.limit));
    EXPECT_EQ(ask.sampling.temperature, 0.0f) << "ask's help says its --temp defaults to 0 (greedy)";
}

}  // namespace
}  // namespace kvrag
