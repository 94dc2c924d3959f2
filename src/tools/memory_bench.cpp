#include "tools/memory_bench.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

#include "memory/memory.h"
#include "memory/vector_scan.h"

namespace kvrag::tools {

namespace fs = std::filesystem;

Result<void> run_memory_bench(const MemoryBenchConfig& a) {
    std::mt19937_64 rng(42);
    std::normal_distribution<float> nd;
    static const char* kWords[] = {"cache", "token", "vector", "memory", "kernel", "prompt", "engine", "sequence", "block", "prefix",
                                   "search", "chunk", "index", "model", "layer", "query", "answer", "source", "batch", "sample"};
    auto unit = [&](std::vector<float>& v) {
        double n = 0;
        for (auto& x : v) x = nd(rng), n += static_cast<double>(x) * x;
        const float inv = static_cast<float>(1.0 / std::sqrt(n));
        for (auto& x : v) x *= inv;
    };
    std::printf("exact scan vs. hybrid search, dim %d, %d queries each (times per query)\n", a.dim, a.queries);
    std::printf("%9s %12s %12s %12s %12s %12s\n", "chunks", "insert s", "load ms", "scan ms", "hybrid ms", "lexical ms");
    for (int64_t n : a.sizes) {
        if (n <= 0 || n > 2000000) return Error{Errc::cli_usage, "--chunks entries must be in [1, 2000000]"};
        const fs::path dir = a.dir.empty() ? fs::temp_directory_path() / ("kvrag-memory-bench-" + std::to_string(getpid()) + "-" + std::to_string(n))
                                           : fs::path(a.dir) / std::to_string(n);
        fs::remove_all(dir);
        auto store = memory::Store::open(dir.string());
        if (!store) return store.error();
        std::shared_ptr<memory::Store> st(std::move(*store));
        memory::EmbeddingModelInfo info{"bench", "random", a.dim};
        if (auto r = st->ensure_index("default", info); !r) return r.error();
        const auto t0 = std::chrono::steady_clock::now();
        const int64_t per_doc = 500;
        for (int64_t d = 0; d * per_doc < n; ++d) {
            memory::DocumentInput doc;
            doc.index = "default";
            doc.doc_id = "doc" + std::to_string(d);
            doc.name = doc.doc_id + ".txt";
            for (int64_t c = 0; c < per_doc && d * per_doc + c < n; ++c) {
                memory::ChunkInput ch;
                ch.position = static_cast<int32_t>(c);
                // 40 words: a few common ones and a Zipf-ish tail over 5000 rare ones
                for (int w = 0; w < 40; ++w) {
                    const uint64_t r = rng();
                    ch.text += (r % 4 == 0 ? std::string(kWords[(r >> 8) % 20]) : "w" + std::to_string(((r >> 8) % 5000) * ((r >> 24) % 5000) / 5000));
                    ch.text += w % 7 == 6 ? ". " : " ";
                }
                ch.text += "item" + std::to_string(d * per_doc + c);
                ch.n_tokens = 60;
                ch.embedding.resize(static_cast<size_t>(a.dim));
                unit(ch.embedding);
                doc.chunks.push_back(std::move(ch));
            }
            if (auto r = st->write_document(doc); !r) return r.error();
        }
        const double insert_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const auto t1 = std::chrono::steady_clock::now();
        auto vs = st->vectors("default");
        if (!vs) return vs.error();
        const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();

        memory::ModelHooks hooks;
        hooks.embed_model = info;
        hooks.embed = [&](std::string_view) -> Result<std::vector<float>> {
            std::vector<float> v(static_cast<size_t>(a.dim));
            unit(v);
            return v;
        };
        memory::Memory mem(st, hooks);
        double scan_ms = 0, hybrid_ms = 0, lexical_ms = 0;
        std::vector<float> q(static_cast<size_t>(a.dim));
        for (int32_t i = 0; i < a.queries; ++i) {
            unit(q);
            const auto ts = std::chrono::steady_clock::now();
            auto top = memory::top_k_scan((*vs)->data.data(), (*vs)->size(), a.dim, q.data(), 50);
            scan_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - ts).count();
            if (top.empty()) return Error{Errc::memory_store, "bench: empty scan"};
            memory::SearchOptions o;
            // a question-like query: one common word and two rarer ones
            const std::string query = std::string(kWords[i % 20]) + " w" + std::to_string(100 + rng() % 2000) + " w" + std::to_string(100 + rng() % 2000);
            auto h = mem.search(query, o);
            if (!h) return h.error();
            hybrid_ms += h->search_ms;
            o.mode = memory::SearchMode::lexical;
            auto l = mem.search(query, o);
            if (!l) return l.error();
            lexical_ms += l->search_ms;
        }
        std::printf("%9lld %12.2f %12.1f %12.2f %12.2f %12.2f\n", static_cast<long long>(n), insert_s, load_ms, scan_ms / a.queries,
                    hybrid_ms / a.queries, lexical_ms / a.queries);
        std::fflush(stdout);
        st.reset();
        if (a.dir.empty()) fs::remove_all(dir);
    }
    return {};
}

}  // namespace kvrag::tools
