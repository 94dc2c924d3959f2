#include "tools/soak.h"

#include <algorithm>

namespace kvrag::tools {

using engine::Engine;
using engine::GenerateOptions;

namespace {

const char* const kSystem =
    "You are a helpful assistant. Answer the question using only the context below. "
    "If the context does not contain the answer, say that you do not know.\n\nContext:\n";

const char* const kSoakWords[] = {
    "the", "cache", "model", "token", "context", "memory", "request", "answer", "question", "document",
    "search", "time", "people", "year", "good", "work", "first", "day", "little", "girl", "boy", "dog",
    "cat", "play", "happy", "sun", "tree", "park", "friend", "once", "upon", "new", "way", "back", "after",
    "think", "also", "come", "look", "only", "other", "than", "then", "now", "because", "give", "most",
};
constexpr size_t kSoakNumWords = sizeof(kSoakWords) / sizeof(kSoakWords[0]);

uint64_t next_rand(uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

}  // namespace

std::string SoakReport::summary() const {
    return "requests=" + std::to_string(requests) + " failures=" + std::to_string(failures) +
           " baseline_cells=" + std::to_string(baseline_cells) + " max_cells_between=" + std::to_string(max_cells_between) +
           " final_cells=" + std::to_string(final_cells) + " peak_cells=" + std::to_string(peak_cells) +
           " cached_cells=" + std::to_string(cached_cells) +
           " prompt_tokens=" + std::to_string(prompt_tokens) + " reused_tokens=" + std::to_string(reused_tokens) +
           " generated_tokens=" + std::to_string(generated_tokens);
}

SoakReport run_soak(Engine& engine, const SoakConfig& cfg, const std::function<bool(int32_t)>& progress) {
    SoakReport rep;
    uint64_t rng = cfg.seed;
    GenerateOptions opt;
    opt.max_tokens = cfg.max_tokens;
    opt.sampling.temperature = 0.0f;
    opt.policy = cfg.policy;
    opt.stop_at_eog = false;  // every request runs its full max_tokens: the worst case for the cache

    // The system prompt is tokenised once with BOS; chunks and questions without specials, so
    // every request starts with exactly the same tokens (what prefix reuse can share).
    const std::vector<int32_t> system = engine.tokenize(kSystem, opt);
    GenerateOptions plain = opt;
    plain.add_special = false;
    const int32_t limit = engine.config().n_ctx_seq > 0 ? engine.config().n_ctx_seq : engine.config().n_ctx;
    const int32_t room = limit - cfg.max_tokens - static_cast<int32_t>(system.size()) - 24;

    for (int32_t i = 0; i < cfg.n_requests; ++i) {
        // A chunk of 1/8 .. 1/2 of the room left after the system prompt, then a question.
        const int32_t lo = cfg.min_chunk_tokens > 0 ? cfg.min_chunk_tokens : std::max(8, room / 8);
        const int32_t hi = cfg.max_chunk_tokens > 0 ? cfg.max_chunk_tokens : std::max(lo, room / 2);
        const int32_t target = lo + static_cast<int32_t>(next_rand(rng) % static_cast<uint64_t>(hi - lo + 1));
        std::vector<int32_t> prompt = system;
        std::string chunk;
        std::vector<int32_t> chunk_tokens;
        while (static_cast<int32_t>(chunk_tokens.size()) < target) {
            std::string sentence;
            for (int w = 0; w < 12; ++w) sentence += std::string(w ? " " : "") + kSoakWords[next_rand(rng) % kSoakNumWords];
            sentence += ". ";
            const auto t = engine.tokenize(sentence, plain);
            chunk_tokens.insert(chunk_tokens.end(), t.begin(), t.end());
        }
        chunk_tokens.resize(static_cast<size_t>(target));
        prompt.insert(prompt.end(), chunk_tokens.begin(), chunk_tokens.end());
        const std::string question = std::string("\n\nQuestion: what about the ") + kSoakWords[next_rand(rng) % kSoakNumWords] + "?\nAnswer:";
        const auto q = engine.tokenize(question, plain);
        prompt.insert(prompt.end(), q.begin(), q.end());

        const uint64_t n_prompt = prompt.size();
        auto r = engine.generate_tokens(std::move(prompt), opt);
        ++rep.requests;
        if (!r) {
            ++rep.failures;
            if (rep.first_error.empty()) rep.first_error = r.error().what();
        } else {
            rep.prompt_tokens += n_prompt;
            rep.reused_tokens += static_cast<uint64_t>(r->n_reused);
            rep.generated_tokens += r->tokens.size();
        }
        const auto st = engine.cache().stats();
        rep.peak_cells = st.peak_used;
        if (i + 1 == cfg.warmup || (cfg.warmup <= 0 && i == 0)) rep.baseline_cells = st.used;
        if (i + 1 >= cfg.warmup) rep.max_cells_between = std::max(rep.max_cells_between, st.used);
        rep.final_cells = st.used;
        rep.cached_cells = st.cached;
        if (progress && !progress(i + 1)) break;
    }
    return rep;
}

}  // namespace kvrag::tools
