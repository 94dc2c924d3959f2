// The kvrag subcommands. Each registers its options on a CLI11 app and runs when chosen;
// run functions return the process exit code and print errors to stderr.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "core/error.h"
#include "model/model.h"

namespace kvrag::cli {

// A subcommand's run function, bound to its parsed options.
using Runner = std::function<int()>;

Runner add_generate(CLI::App& app);
Runner add_tokenize(CLI::App& app);
Runner add_info(CLI::App& app);
Runner add_demo(CLI::App& app);
Runner add_make_model(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_soak(CLI::App& app);
// embeddings and rerank scores (BERT-family models): cmd_embed.cpp
Runner add_embed(CLI::App& app);
Runner add_rerank(CLI::App& app);
Runner add_bench_embed(CLI::App& app);  // cmd_bench_embed.cpp
// memory (RAG): cmd_memory.cpp
Runner add_ingest(CLI::App& app);
Runner add_search(CLI::App& app);
Runner add_ask(CLI::App& app);
Runner add_docs(CLI::App& app);
Runner add_memory_bench(CLI::App& app);
Runner add_memory(CLI::App& app);  // memory eval
Runner add_serve(CLI::App& app);
Runner add_bench_server(CLI::App& app);

// Parses --kv-type (f16, q8_0, f32); Errc::cli_usage naming the value otherwise.
Result<GgmlType> parse_kv_type(const std::string& name);

// The warning for a --threads value above available_cpu_count(), naming both and the default;
// empty when n_threads fits (0, the default, always does). Pure: the machine comes in as n_cpus.
std::string threads_warning(int32_t n_threads, int n_cpus, int n_physical);
// Every command with --threads calls this before loading: prints threads_warning() for this
// machine to stderr, at most once per process (ask may build two engines, serve many).
void warn_threads(int32_t n_threads);

// Prints "kvrag: E1004 ..." to stderr and returns 1.
int fail(const Error& err);
// A load-progress callback that draws on stderr when it is a terminal, else nothing.
model::LoadProgress terminal_progress(const std::string& label);

}  // namespace kvrag::cli
