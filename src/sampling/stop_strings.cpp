#include "sampling/stop_strings.h"

#include <algorithm>
#include <utility>

namespace kvrag::sampling {

namespace {

// Length of `s` without a trailing UTF-8 sequence whose lead byte promises more continuation
// bytes than are present. Malformed bytes are passed through untouched: holding them back
// would never release them before flush().
size_t complete_utf8_prefix(std::string_view s) {
    size_t i = s.size();
    size_t n_cont = 0;
    while (i > 0 && n_cont < 3 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) {
        --i;
        ++n_cont;
    }
    if (i == 0) return s.size();
    const auto lead = static_cast<unsigned char>(s[i - 1]);
    size_t need = 1;
    if ((lead & 0xE0) == 0xC0) need = 2;
    else if ((lead & 0xF0) == 0xE0) need = 3;
    else if ((lead & 0xF8) == 0xF0) need = 4;
    return (need > 1 && n_cont + 1 < need) ? i - 1 : s.size();
}

}  // namespace

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) {
    for (std::string& s : stops) {
        if (s.empty()) continue;
        max_stop_len_ = std::max(max_stop_len_, s.size());
        stops_.push_back(std::move(s));
    }
}

StopStringMatcher::Step StopStringMatcher::feed(std::string_view piece, const AcceptFn& accept) {
    Step step;
    if (stopped_) {
        step.stopped = true;
        return step;
    }
    pending_.append(piece);

    // Any match lies wholly inside pending_: its start was held back by the prefix rule below
    // until the match could be decided.
    size_t match = std::string::npos;
    if (!accept) {
        for (const std::string& s : stops_) match = std::min(match, pending_.find(s));
    } else {
        // Every place a stop string starts, earliest first, until one is accepted.
        std::vector<size_t> starts;
        for (const std::string& s : stops_) {
            for (size_t at = pending_.find(s); at != std::string::npos; at = pending_.find(s, at + 1)) starts.push_back(at);
        }
        std::sort(starts.begin(), starts.end());
        starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
        for (size_t at : starts) {
            if (accept(std::string_view(pending_).substr(0, at))) {
                match = at;
                break;
            }
        }
    }
    if (match != std::string::npos) {
        step.emit = pending_.substr(0, match);
        step.stopped = true;
        stopped_ = true;
        pending_.clear();
        return step;
    }

    // Hold back the longest tail that could still grow into a stop string. A full-length tail
    // would have been a match above, so only proper prefixes need checking.
    size_t hold = 0;
    const size_t max_tail = std::min(pending_.size(), max_stop_len_ > 0 ? max_stop_len_ - 1 : 0);
    for (size_t len = max_tail; len > 0 && hold == 0; --len) {
        const std::string_view tail = std::string_view(pending_).substr(pending_.size() - len);
        for (const std::string& s : stops_) {
            if (s.size() > len && std::string_view(s).substr(0, len) == tail) {
                hold = len;
                break;
            }
        }
    }
    const size_t n_emit = complete_utf8_prefix(std::string_view(pending_).substr(0, pending_.size() - hold));
    step.emit = pending_.substr(0, n_emit);
    pending_.erase(0, n_emit);
    return step;
}

std::string StopStringMatcher::flush() {
    std::string out = std::move(pending_);
    pending_.clear();
    return out;
}

}  // namespace kvrag::sampling
