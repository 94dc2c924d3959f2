// /metrics (Prometheus text format 0.0.4) and /v1/kv (JSON) from the cache, engine and
// scheduler state. Pure functions of their inputs.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "engine/engine.h"
#include "kvcache/kv_cache.h"
#include "engine/scheduler_core.h"

namespace kvrag::server {

std::string render_metrics(const kvcache::KvStats& kv, const engine::Engine::Totals& totals, const engine::SchedulerSnapshot& sched);

// {"cache": {...}, "sequences": [...], "queued": [...]}. Live sequences come from the cache
// (the truth about cells), joined with the scheduler's view (request, state, age) by seq id;
// a sequence the scheduler does not know is an embedding in progress.
nlohmann::json render_kv(const kvcache::KvStats& kv, const engine::SchedulerSnapshot& sched);

}  // namespace kvrag::server
