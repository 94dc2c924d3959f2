// Milliseconds between two steady-clock instants: the unit of every timing the engine and the
// scheduler report (prefill_ms, decode_ms, ttft_ms, queue ages).
#pragma once

#include <chrono>

namespace kvrag {

inline double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace kvrag
