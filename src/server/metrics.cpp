#include "server/metrics.h"

#include <cstdio>
#include <unordered_map>

namespace kvrag::server {
namespace {

class PromWriter {
public:
    void metric(const char* name, const char* type, const char* help) {
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        out_ += help;
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }
    void sample(const char* name, double v, const std::string& labels = "") {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%.17g", v);
        out_ += name;
        if (!labels.empty()) out_ += "{" + labels + "}";
        out_ += ' ';
        out_ += buf;
        out_ += '\n';
    }
    void one(const char* name, const char* type, const char* help, double v) {
        metric(name, type, help);
        sample(name, v);
    }
    std::string take() { return std::move(out_); }

private:
    std::string out_;
};

}  // namespace

std::string render_metrics(const kvcache::KvStats& kv, const engine::Engine::Totals& t, const engine::SchedulerSnapshot& s) {
    PromWriter w;
    w.one("kvrag_kv_cells_total", "gauge", "KV cache cells in all (--ctx).", kv.total);
    w.one("kvrag_kv_cells_used", "gauge", "KV cells held by running sequences.", kv.used);
    w.one("kvrag_kv_cells_cached", "gauge", "KV cells held by the prefix cache.", kv.cached);
    w.one("kvrag_kv_cells_free", "gauge", "KV cells nobody holds.", kv.free);
    w.one("kvrag_kv_cells_shared", "gauge", "KV cells with two or more holders.", kv.shared);
    w.one("kvrag_kv_cells_reserved", "gauge", "KV cells promised to admitted requests, not yet used.", kv.reserved);
    w.one("kvrag_kv_cells_peak_used", "gauge", "Most KV cells running sequences held at once.", kv.peak_used);
    w.one("kvrag_kv_usage_ratio", "gauge", "Cells held (sequences and prefix cache) / total.",
          kv.total > 0 ? static_cast<double>(kv.total - kv.free) / kv.total : 0.0);
    w.one("kvrag_kv_cache_bytes", "gauge", "K/V memory in bytes.", static_cast<double>(kv.bytes));
    if (kv.local_total > 0) {
        // Sliding-window models: the local layers' cells, held only for each sequence's window.
        w.one("kvrag_kv_local_cells_total", "gauge", "Local-layer KV cells in all (sliding-window models).", kv.local_total);
        w.one("kvrag_kv_local_cells_used", "gauge", "Local-layer KV cells held by running sequences (their last window positions).", kv.local_used);
        w.one("kvrag_kv_local_cells_cached", "gauge", "Local-layer KV cells carried by cached prefix blocks.", kv.local_cached);
        w.one("kvrag_kv_local_cells_free", "gauge", "Local-layer KV cells nobody holds.", kv.local_free);
        w.one("kvrag_kv_local_cells_reserved", "gauge", "Local-layer KV cells promised to admitted requests.", kv.local_reserved);
        w.one("kvrag_kv_local_cells_peak_used", "gauge", "Most local-layer KV cells running sequences held at once.", kv.local_peak_used);
        w.one("kvrag_kv_window", "gauge", "Sliding window of the local layers, in positions.", kv.window);
    }
    w.one("kvrag_prefix_cache_hit_tokens_total", "counter", "Prompt tokens whose prefill was skipped by prefix reuse.",
          static_cast<double>(kv.prefix_hit_tokens));
    w.one("kvrag_prefix_cache_hits_total", "counter", "Admissions that reused at least one prefix block.", static_cast<double>(kv.prefix_hits));
    w.one("kvrag_requests_running", "gauge", "Requests admitted and running.", s.n_running);
    w.one("kvrag_requests_queued", "gauge", "Requests waiting for admission.", s.n_queued);
    w.one("kvrag_requests_submitted_total", "counter", "Jobs (generations and embeddings) accepted into the queue.", static_cast<double>(s.n_submitted));
    w.metric("kvrag_requests_ended_total", "counter", "Jobs ended, by outcome.");
    for (size_t e = 0; e < engine::kJobOutcomeNames.size(); ++e) {
        w.sample("kvrag_requests_ended_total", static_cast<double>(s.ends[e]), "outcome=\"" + std::string(engine::kJobOutcomeNames[e]) + "\"");
    }
    w.one("kvrag_prompt_tokens_total", "counter", "Prompt tokens computed (reused ones excluded).", static_cast<double>(t.prompt_tokens));
    w.one("kvrag_generated_tokens_total", "counter", "Tokens generated.", static_cast<double>(t.generated_tokens));
    w.one("kvrag_steps_total", "counter", "Forward steps run by the scheduler.", static_cast<double>(t.steps));
    w.metric("kvrag_rejections_total", "counter", "Requests refused, by reason (never_fits: 400; busy: queue full, 429; timeout: no room in time).");
    for (int r = 0; r < static_cast<int>(kvcache::RejectReason::count); ++r) {
        w.sample("kvrag_rejections_total", static_cast<double>(kv.rejections[r]),
                 std::string("reason=\"") + kvcache::reject_reason_name(static_cast<kvcache::RejectReason>(r)) + "\"");
    }
    w.one("kvrag_context_shifts_total", "counter", "Context shifts during generation.", static_cast<double>(kv.shifts));
    w.one("kvrag_context_truncations_total", "counter", "Prompts truncated to fit the context.", static_cast<double>(kv.truncations));
    w.one("kvrag_decode_tokens_per_second", "gauge", "Decode tokens per second of step time since start (all sequences together).",
          t.decode_seconds > 0 ? static_cast<double>(t.decode_tokens) / t.decode_seconds : 0.0);
    return w.take();
}

nlohmann::json render_kv(const kvcache::KvStats& kv, const engine::SchedulerSnapshot& s) {
    using nlohmann::json;
    json cache{{"cells_total", kv.total},
               {"cells_used", kv.used},
               {"cells_cached", kv.cached},
               {"cells_free", kv.free},
               {"cells_shared", kv.shared},
               {"cells_reserved", kv.reserved},
               {"cells_peak_used", kv.peak_used},
               {"usage_ratio", kv.total > 0 ? static_cast<double>(kv.total - kv.free) / kv.total : 0.0},
               {"bytes", kv.bytes},
               {"bytes_per_cell", kv.bytes_per_cell},
               {"sequences", kv.n_sequences},
               {"prefix_blocks", kv.prefix_blocks},
               {"prefix_hit_tokens", kv.prefix_hit_tokens},
               {"summary", kv.summary()}};
    if (kv.local_total > 0) {
        cache["window"] = kv.window;
        cache["local"] = json{{"cells_total", kv.local_total},     {"cells_used", kv.local_used},
                              {"cells_cached", kv.local_cached},   {"cells_free", kv.local_free},
                              {"cells_reserved", kv.local_reserved}, {"cells_peak_used", kv.local_peak_used},
                              {"bytes", kv.local_bytes},           {"bytes_per_cell", kv.bytes_per_local_cell}};
    }
    std::unordered_map<int64_t, const engine::SchedulerSnapshot::Entry*> by_seq;
    for (const auto& e : s.entries) {
        if (e.seq_id != 0) by_seq[e.seq_id] = &e;
    }
    json seqs = json::array();
    for (const auto& u : kv.sequences) {
        json j{{"id", u.seq_id}, {"tokens", u.n_tokens}, {"cells", u.n_tokens}, {"shared_cells", u.n_shared}, {"reserved_cells", u.reserved}};
        if (kv.local_total > 0) j["local_cells"] = u.n_local;
        auto it = by_seq.find(u.seq_id);
        if (it != by_seq.end()) {
            const auto& e = *it->second;
            j["request_id"] = e.label;
            j["state"] = e.state;
            j["prompt_tokens"] = e.n_prompt;
            j["generated_tokens"] = e.n_generated;
            j["age_ms"] = e.age_ms;
        } else {
            j["request_id"] = nullptr;
            j["state"] = "embedding";
            j["age_ms"] = nullptr;
        }
        seqs.push_back(std::move(j));
    }
    json queued = json::array();
    for (const auto& e : s.entries) {
        if (e.state != "queued") continue;
        queued.push_back(json{{"request_id", e.label}, {"state", "queued"}, {"prompt_tokens", e.n_prompt}, {"age_ms", e.age_ms}});
    }
    return json{{"object", "kv"},
                {"cache", cache},
                {"requests_running", s.n_running},
                {"requests_queued", s.n_queued},
                {"sequences", seqs},
                {"queued", queued}};
}

}  // namespace kvrag::server
