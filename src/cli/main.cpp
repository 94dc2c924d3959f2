// kvrag: local LLM runtime for RAG. `kvrag --help` lists the subcommands.
#include <cstdio>
#include <exception>
#include <map>

#include "cli/commands.h"

int main(int argc, char** argv) {
    CLI::App app{"kvrag: a local LLM runtime for RAG whose KV cache cannot leak or overflow"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "kvrag 0.1.0");
    std::map<CLI::App*, kvrag::cli::Runner> runners;
    auto add = [&](const char* name, const char* desc, kvrag::cli::Runner (*reg)(CLI::App&)) {
        CLI::App* sub = app.add_subcommand(name, desc);
        runners[sub] = reg(*sub);
    };
    add("generate", "generate text from a prompt", kvrag::cli::add_generate);
    add("tokenize", "print the token ids of a text", kvrag::cli::add_tokenize);
    add("info", "describe a GGUF model file", kvrag::cli::add_info);
    add("demo", "RAG end to end on models it writes (random weights, no download): ingest docs/, many asks and a long chat on a 1024-token context, KV cells watched", kvrag::cli::add_demo);
    add("make-model", "write a synthetic GGUF model with random weights", kvrag::cli::add_make_model);
    add("embed", "print embeddings of texts, one JSON array per line (BERT-family or chat model)", kvrag::cli::add_embed);
    add("rerank", "score documents against a query with a reranker, one score per line", kvrag::cli::add_rerank);
    add("bench-embed", "measure embedding throughput (tokens/s) on batches of chunk-sized texts", kvrag::cli::add_bench_embed);
    add("bench", "measure prefill and decode speed", kvrag::cli::add_bench);
    add("soak", "run many sequential RAG-shaped requests and check the KV cache stays flat", kvrag::cli::add_soak);
    add("ingest", "add files or directories to a memory store (extract, chunk, embed)", kvrag::cli::add_ingest);
    add("search", "search a memory store (vectors + BM25, fused)", kvrag::cli::add_search);
    add("ask", "answer a question from a memory store, with sources", kvrag::cli::add_ask);
    add("docs", "list or delete the documents of a memory store", kvrag::cli::add_docs);
    add("memory", "memory tools: eval (retrieval recall per search mode on a question set)", kvrag::cli::add_memory);
    add("memory-bench", "measure memory search time at 10k and 100k chunks", kvrag::cli::add_memory_bench);
    add("serve", "OpenAI-compatible HTTP server with continuous batching", kvrag::cli::add_serve);
    add("bench-server", "concurrent streaming clients against a running server: tokens/s, TTFT, KV usage", kvrag::cli::add_bench_server);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        for (auto& [sub, run] : runners) {
            if (sub->parsed()) return run();
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "kvrag: internal error: %s\n", e.what());
        return 2;
    }
    return 0;
}
