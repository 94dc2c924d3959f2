// Stop strings over streamed text.
//
// Generated text arrives as decoded pieces, and a stop string can straddle pieces ("</s" then
// "top>"), so text that might be the start of a stop string is held back until the next piece
// decides it. Matching is on bytes.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace kvrag::sampling {

class StopStringMatcher {
public:
    // Empty strings are dropped: they would match before any text. No stops => everything
    // passes straight through (apart from the UTF-8 rule below).
    explicit StopStringMatcher(std::vector<std::string> stops);

    struct Step {
        std::string emit;      // text safe to send now
        bool stopped = false;  // a stop string matched; generation should end
    };

    // Appends `piece` and returns what can be emitted. Held back: the longest tail that is a
    // proper prefix of some stop string, and a trailing incomplete UTF-8 sequence (so a
    // streamed chunk never splits a character). On a match, emit is the text up to, not
    // including, the stop string and the rest is dropped; if several stops complete in the
    // same piece, the one starting earliest wins. After a stop, feed() returns {"", true}.
    Step feed(std::string_view piece) { return feed(piece, {}); }

    // accept, when given, decides whether a match counts: it gets the text before the stop
    // string that this matcher still holds (the caller knows what was emitted before it). A
    // match it declines is text like any other; the next match (in order of where they
    // start) is asked in turn. The engine declines a match that would cut grammar-constrained
    // output where the grammar is not complete (docs/grammar.md).
    using AcceptFn = std::function<bool(std::string_view before)>;
    Step feed(std::string_view piece, const AcceptFn& accept);

    // Returns the held-back text at the end of generation ("" after a stop) and clears it.
    std::string flush();

    bool stopped() const { return stopped_; }

private:
    std::vector<std::string> stops_;
    size_t max_stop_len_ = 0;
    std::string pending_;  // fed but not yet emitted
    bool stopped_ = false;
};

}  // namespace kvrag::sampling
