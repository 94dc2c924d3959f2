#include "sampling/grammar.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

namespace kvrag::sampling {

// ---------------------------------------------------------------------------------------------
// Parser: GBNF text -> rules of alternatives of elements, with generated rules for groups and
// repetition, then flattened into Grammar::elems_.

class GrammarBuilder {
public:
    explicit GrammarBuilder(std::string_view text) : src_(text) {}

    Result<std::shared_ptr<const Grammar>> run(std::string_view start_rule) {
        if (src_.size() > kMaxGrammarBytes) {
            return Error{Errc::request_invalid, "grammar is " + std::to_string(src_.size()) + " bytes, over the limit of " +
                                                    std::to_string(kMaxGrammarBytes)};
        }
        try {
            skip_space();
            while (pos_ < src_.size()) {
                parse_rule();
                skip_space();
            }
        } catch (const Exception& e) {
            return e.error();
        }
        if (rules_.empty()) return Error{Errc::request_invalid, "grammar has no rules"};
        for (size_t r = 0; r < rules_.size(); ++r) {
            if (!defined_[r]) {
                return Error{Errc::request_invalid, "grammar " + where(first_ref_[r]) + ": rule '" + names_[r] +
                                                        "' is referenced but never defined"};
            }
        }
        const auto it = index_.find(std::string(start_rule));
        if (it == index_.end()) {
            return Error{Errc::request_invalid, "grammar has no start rule '" + std::string(start_rule) + "'"};
        }
        if (auto lr = check_left_recursion(); !lr.ok()) return lr.error();
        return flatten(it->second);
    }

private:
    using Seq = std::vector<Grammar::Elem>;
    using Alts = std::vector<Seq>;

    // ---- errors and positions
    std::string where(size_t at) const {
        size_t line = 1, col = 1;
        for (size_t i = 0; i < at && i < src_.size(); ++i) {
            if (src_[i] == '\n') {
                ++line;
                col = 1;
            } else {
                ++col;
            }
        }
        return "line " + std::to_string(line) + " col " + std::to_string(col);
    }
    [[noreturn]] void fail(const std::string& expected) const {
        std::string got = pos_ >= src_.size() ? "end of input" : "'" + std::string(src_.substr(pos_, 1)) + "'";
        throw Exception(Errc::request_invalid, "grammar " + where(pos_) + ": expected " + expected + ", got " + got);
    }

    // ---- lexing
    void skip_space() {
        while (pos_ < src_.size()) {
            const char c = src_[pos_];
            if (c == '#') {
                while (pos_ < src_.size() && src_[pos_] != '\n') ++pos_;
            } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
                ++pos_;
            } else {
                break;
            }
        }
    }
    static bool is_name_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    }
    std::string_view peek_name(size_t at) const {
        size_t e = at;
        while (e < src_.size() && is_name_char(src_[e])) ++e;
        return src_.substr(at, e - at);
    }
    // A name followed by "::=" starts the next rule (newlines are plain whitespace, so this
    // lookahead is what ends a sequence).
    bool at_rule_start() const {
        const auto name = peek_name(pos_);
        if (name.empty()) return false;
        size_t p = pos_ + name.size();
        while (p < src_.size() && (src_[p] == ' ' || src_[p] == '\t' || src_[p] == '\r' || src_[p] == '\n')) ++p;
        return src_.substr(p, 3) == "::=";
    }
    uint32_t decode_utf8() {
        const auto b0 = static_cast<uint8_t>(src_[pos_]);
        int n = b0 < 0x80 ? 0 : (b0 & 0xE0) == 0xC0 ? 1 : (b0 & 0xF0) == 0xE0 ? 2 : (b0 & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0 || pos_ + static_cast<size_t>(n) >= src_.size() + (n == 0 ? 1 : 0)) fail("valid UTF-8");
        uint32_t cp = n == 0 ? b0 : (b0 & (0x3F >> n));
        ++pos_;
        for (int i = 0; i < n; ++i, ++pos_) {
            const auto b = static_cast<uint8_t>(src_[pos_]);
            if ((b & 0xC0) != 0x80) fail("a UTF-8 continuation byte");
            cp = (cp << 6) | (b & 0x3F);
        }
        return cp;
    }
    uint32_t parse_hex(int n) {
        uint32_t v = 0;
        for (int i = 0; i < n; ++i, ++pos_) {
            if (pos_ >= src_.size()) fail(std::to_string(n) + " hex digits");
            const char c = src_[pos_];
            const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0) fail(std::to_string(n) + " hex digits");
            v = v * 16 + static_cast<uint32_t>(d);
        }
        if (v > 0x10FFFF) fail("a code point <= 0x10FFFF");
        return v;
    }
    // One character of a literal or class, escapes resolved.
    uint32_t parse_char() {
        if (pos_ >= src_.size()) fail("a character");
        if (src_[pos_] != '\\') return decode_utf8();
        ++pos_;
        if (pos_ >= src_.size()) fail("an escape after '\\'");
        const char c = src_[pos_++];
        switch (c) {
            case 'n': return '\n';
            case 'r': return '\r';
            case 't': return '\t';
            case '\\': case '"': case '[': case ']': case '-': case '\'': case '/': return static_cast<uint32_t>(c);
            case 'x': return parse_hex(2);
            case 'u': return parse_hex(4);
            case 'U': return parse_hex(8);
            default: --pos_; fail("one of the escapes \\n \\r \\t \\\\ \\\" \\[ \\] \\- \\xHH \\uHHHH \\UHHHHHHHH");
        }
    }

    // ---- rules
    uint32_t rule_index(std::string_view name, size_t at) {
        auto [it, fresh] = index_.emplace(std::string(name), static_cast<uint32_t>(rules_.size()));
        if (fresh) {
            rules_.emplace_back();
            names_.emplace_back(name);
            defined_.push_back(false);
            first_ref_.push_back(at);
        }
        return it->second;
    }
    uint32_t new_rule(const std::string& base, Alts alts) {
        // "/" is not a name character, so a generated name never collides with a user rule.
        const std::string name = base + "/" + std::to_string(n_generated_++);
        const uint32_t r = rule_index(name, pos_);
        rules_[r] = std::move(alts);
        defined_[r] = true;
        return r;
    }
    void count(size_t n) {
        n_elems_ += n;
        if (n_elems_ > kMaxElements) {
            throw Exception(Errc::request_invalid, "grammar " + where(pos_) + ": expands to more than " +
                                                       std::to_string(kMaxElements) + " elements");
        }
    }
    uint32_t add_set(std::vector<CpRange> ranges, bool negate) {
        std::sort(ranges.begin(), ranges.end(), [](CpRange a, CpRange b) { return a.lo < b.lo; });
        std::vector<CpRange> merged;
        for (CpRange r : ranges) {
            if (!merged.empty() && r.lo <= merged.back().hi + 1) {
                merged.back().hi = std::max(merged.back().hi, r.hi);
            } else {
                merged.push_back(r);
            }
        }
        if (negate) {
            // Stored positive, so the matcher and the partial-UTF-8 check need one test only.
            std::vector<CpRange> inv;
            uint32_t next = 0;
            for (CpRange r : merged) {
                if (r.lo > next) inv.push_back({next, r.lo - 1});
                next = r.hi + 1;
            }
            if (next <= 0x10FFFF) inv.push_back({next, 0x10FFFF});
            merged = std::move(inv);
        }
        sets_.push_back(std::move(merged));
        return static_cast<uint32_t>(sets_.size() - 1);
    }
    Grammar::Elem chars(uint32_t lo, uint32_t hi) { return {Grammar::Kind::chars, add_set({{lo, hi}}, false)}; }

    void parse_rule() {
        const size_t at = pos_;
        const auto name = peek_name(pos_);
        if (name.empty()) fail("a rule name");
        pos_ += name.size();
        skip_space();
        if (src_.substr(pos_, 3) != "::=") fail("'::=' after rule name '" + std::string(name) + "'");
        pos_ += 3;
        const uint32_t r = rule_index(name, at);
        if (defined_[r]) {
            pos_ = at;
            fail("a new rule name ('" + std::string(name) + "' is defined twice)");
        }
        defined_[r] = true;
        current_ = std::string(name);
        Alts alts = parse_alternatives(0);
        rules_[r] = std::move(alts);
    }
    Alts parse_alternatives(int depth) {
        if (depth > kMaxNesting) fail("at most " + std::to_string(kMaxNesting) + " nested groups");
        Alts alts;
        alts.push_back(parse_sequence(depth));
        skip_space();
        while (pos_ < src_.size() && src_[pos_] == '|') {
            ++pos_;
            alts.push_back(parse_sequence(depth));
            skip_space();
        }
        return alts;
    }
    Seq parse_sequence(int depth) {
        Seq seq;
        for (;;) {
            skip_space();
            if (pos_ >= src_.size()) break;
            const char c = src_[pos_];
            if (c == '|' || c == ')') break;
            if (is_name_char(c) && at_rule_start()) break;
            Seq atom = parse_atom(depth);
            apply_repetition(atom, seq);
        }
        count(seq.size() + 1);
        return seq;
    }
    Seq parse_atom(int depth) {
        const char c = src_[pos_];
        Seq out;
        if (c == '"') {
            ++pos_;
            while (pos_ < src_.size() && src_[pos_] != '"') {
                const uint32_t cp = parse_char();
                out.push_back(chars(cp, cp));
            }
            if (pos_ >= src_.size()) fail("'\"' to close the string literal");
            ++pos_;
        } else if (c == '[') {
            ++pos_;
            bool negate = false;
            if (pos_ < src_.size() && src_[pos_] == '^') {
                negate = true;
                ++pos_;
            }
            std::vector<CpRange> ranges;
            while (pos_ < src_.size() && src_[pos_] != ']') {
                const uint32_t lo = parse_char();
                uint32_t hi = lo;
                if (pos_ + 1 < src_.size() && src_[pos_] == '-' && src_[pos_ + 1] != ']') {
                    ++pos_;
                    hi = parse_char();
                    if (hi < lo) fail("a range with lo <= hi");
                }
                ranges.push_back({lo, hi});
            }
            if (pos_ >= src_.size()) fail("']' to close the character class");
            ++pos_;
            out.push_back({Grammar::Kind::chars, add_set(std::move(ranges), negate)});
        } else if (c == '.') {
            ++pos_;
            out.push_back(chars(0, 0x10FFFF));
        } else if (c == '(') {
            ++pos_;
            Alts alts = parse_alternatives(depth + 1);
            skip_space();
            if (pos_ >= src_.size() || src_[pos_] != ')') fail("')' to close the group");
            ++pos_;
            if (alts.size() == 1) return alts[0];  // a plain sequence needs no rule of its own
            out.push_back({Grammar::Kind::ref, new_rule(current_, std::move(alts))});
        } else if (is_name_char(c)) {
            const size_t at = pos_;
            const auto name = peek_name(pos_);
            pos_ += name.size();
            out.push_back({Grammar::Kind::ref, rule_index(name, at)});
        } else {
            fail("a literal, a character class, '.', '(' or a rule name");
        }
        return out;
    }
    int parse_int() {
        const size_t start = pos_;
        long v = 0;
        while (pos_ < src_.size() && src_[pos_] >= '0' && src_[pos_] <= '9') {
            v = v * 10 + (src_[pos_++] - '0');
            if (v > kMaxRepeat) {
                pos_ = start;
                fail("a repetition count <= " + std::to_string(kMaxRepeat));
            }
        }
        if (pos_ == start) fail("a number");
        return static_cast<int>(v);
    }
    // `atom` followed by an optional operator: appends the result to seq.
    void apply_repetition(Seq atom, Seq& seq) {
        if (pos_ >= src_.size()) {
            seq.insert(seq.end(), atom.begin(), atom.end());
            return;
        }
        const char op = src_[pos_];
        int lo = 1, hi = 1;  // hi < 0: unbounded
        if (op == '*') {
            lo = 0, hi = -1, ++pos_;
        } else if (op == '+') {
            lo = 1, hi = -1, ++pos_;
        } else if (op == '?') {
            lo = 0, hi = 1, ++pos_;
        } else if (op == '{') {
            ++pos_;
            skip_space();
            lo = parse_int();
            skip_space();
            hi = lo;
            if (pos_ < src_.size() && src_[pos_] == ',') {
                ++pos_;
                skip_space();
                hi = pos_ < src_.size() && src_[pos_] == '}' ? -1 : parse_int();
                skip_space();
            }
            if (pos_ >= src_.size() || src_[pos_] != '}') fail("'}' to close the repetition");
            if (hi >= 0 && hi < lo) fail("{m,n} with m <= n");
            ++pos_;
        } else {
            seq.insert(seq.end(), atom.begin(), atom.end());
            return;
        }
        count(atom.size() * static_cast<size_t>(std::max(lo, hi < 0 ? lo + 1 : hi)));
        for (int i = 0; i < lo; ++i) seq.insert(seq.end(), atom.begin(), atom.end());
        if (hi < 0) {
            // star ::= atom star | ""  (right recursion: the matcher's stack does not grow)
            const uint32_t star = new_rule(current_, {});
            Seq again = atom;
            again.push_back({Grammar::Kind::ref, star});
            rules_[star] = {again, {}};
            seq.push_back({Grammar::Kind::ref, star});
        } else if (hi > lo) {
            // opt_k ::= atom opt_{k-1} | "", nested so "{0,3}" matches at most 3 atoms.
            uint32_t inner = new_rule(current_, {atom, {}});
            for (int k = 1; k < hi - lo; ++k) {
                Seq again = atom;
                again.push_back({Grammar::Kind::ref, inner});
                inner = new_rule(current_, {again, {}});
            }
            seq.push_back({Grammar::Kind::ref, inner});
        }
    }

    // ---- checks and output
    Result<void> check_left_recursion() const {
        const size_t n = rules_.size();
        std::vector<bool> nullable(n, false);
        for (bool changed = true; changed;) {
            changed = false;
            for (size_t r = 0; r < n; ++r) {
                if (nullable[r]) continue;
                for (const Seq& alt : rules_[r]) {
                    const bool all = std::all_of(alt.begin(), alt.end(), [&](const Grammar::Elem& e) {
                        return e.kind == Grammar::Kind::ref && nullable[e.arg];
                    });
                    if (all) {
                        nullable[r] = changed = true;
                        break;
                    }
                }
            }
        }
        // Edges r -> s where s can come first in r (after only nullable elements).
        std::vector<std::vector<uint32_t>> first(n);
        for (size_t r = 0; r < n; ++r) {
            for (const Seq& alt : rules_[r]) {
                for (const auto& e : alt) {
                    if (e.kind != Grammar::Kind::ref) break;
                    first[r].push_back(e.arg);
                    if (!nullable[e.arg]) break;
                }
            }
        }
        std::vector<int> color(n, 0);  // 0 new, 1 on the path, 2 done
        std::vector<uint32_t> path;
        std::string cycle;
        auto dfs = [&](auto&& self, uint32_t r) -> bool {
            color[r] = 1;
            path.push_back(r);
            for (uint32_t s : first[r]) {
                if (color[s] == 1) {
                    auto it = std::find(path.begin(), path.end(), s);
                    for (; it != path.end(); ++it) cycle += names_[*it] + " -> ";
                    cycle += names_[s];
                    return true;
                }
                if (color[s] == 0 && self(self, s)) return true;
            }
            path.pop_back();
            color[r] = 2;
            return false;
        };
        for (uint32_t r = 0; r < n; ++r) {
            if (color[r] == 0 && dfs(dfs, r)) {
                return Error{Errc::request_invalid, "grammar rule '" + names_[path.empty() ? r : path.back()] +
                                                        "' is left-recursive (" + cycle +
                                                        "); rewrite it with repetition, e.g. x ::= y (\"op\" y)*"};
            }
        }
        return {};
    }

    std::shared_ptr<const Grammar> flatten(uint32_t root) {
        auto g = std::make_shared<Grammar>();
        g->sets_ = std::move(sets_);
        g->rule_names_ = names_;
        g->rule_alts_.resize(rules_.size());
        g->root_ = root;
        for (uint32_t r = 0; r < rules_.size(); ++r) {
            for (const Seq& alt : rules_[r]) {
                g->rule_alts_[r].push_back(static_cast<uint32_t>(g->elems_.size()));
                g->elems_.insert(g->elems_.end(), alt.begin(), alt.end());
                g->elems_.push_back({Grammar::Kind::end, r});
            }
        }
        return g;
    }

    std::string_view src_;
    size_t pos_ = 0;
    std::vector<Alts> rules_;
    std::vector<std::string> names_;
    std::vector<bool> defined_;
    std::vector<size_t> first_ref_;
    std::map<std::string, uint32_t> index_;
    std::vector<std::vector<CpRange>> sets_;
    std::string current_;
    size_t n_elems_ = 0;
    int n_generated_ = 0;
};

Result<std::shared_ptr<const Grammar>> Grammar::parse(std::string_view text, std::string_view start_rule) {
    GrammarBuilder b(text);
    return b.run(start_rule);
}

// ---------------------------------------------------------------------------------------------
// Matcher

namespace {

bool set_contains(const std::vector<CpRange>& set, uint32_t cp) {
    auto it = std::upper_bound(set.begin(), set.end(), cp, [](uint32_t v, CpRange r) { return v < r.lo; });
    return it != set.begin() && cp <= std::prev(it)->hi;
}

bool set_intersects(const std::vector<CpRange>& set, uint32_t lo, uint32_t hi) {
    for (CpRange r : set) {
        if (r.lo <= hi && lo <= r.hi) return true;
    }
    return false;
}

}  // namespace

GrammarMatcher::GrammarMatcher(std::shared_ptr<const Grammar> g) : g_(std::move(g)) {
    for (uint32_t alt : g_->alternatives(g_->root())) {
        if (!expand(Stack{alt}, stacks_)) {
            stacks_.clear();
            return;
        }
    }
    dedup();
}

bool GrammarMatcher::expand(Stack s, std::vector<Stack>& out) const {
    const auto elems = g_->elems();
    std::vector<Stack> work;
    work.push_back(std::move(s));
    // Without left recursion every ref makes progress towards a chars element or an end, so
    // this terminates; the budget bounds the work an ambiguous grammar can cost per step.
    size_t budget = 64 * kMaxStacks;
    while (!work.empty()) {
        if (--budget == 0) return false;
        Stack cur = std::move(work.back());
        work.pop_back();
        if (cur.empty()) {
            out.push_back(std::move(cur));
            continue;
        }
        const uint32_t p = cur.back();
        const Grammar::Elem e = elems[p];
        if (e.kind == Grammar::Kind::chars) {
            out.push_back(std::move(cur));
        } else if (e.kind == Grammar::Kind::end) {
            cur.pop_back();
            work.push_back(std::move(cur));
        } else {
            cur.pop_back();
            // Tail position: nothing to resume, so the caller's frame is not kept (right
            // recursion then runs in constant stack depth).
            if (elems[p + 1].kind != Grammar::Kind::end) cur.push_back(p + 1);
            if (cur.size() + 1 > kMaxDepth) return false;
            for (uint32_t alt : g_->alternatives(e.arg)) {
                Stack next = cur;
                next.push_back(alt);
                work.push_back(std::move(next));
            }
        }
        if (out.size() > kMaxStacks) return false;
    }
    return true;
}

void GrammarMatcher::dedup() {
    std::sort(stacks_.begin(), stacks_.end());
    stacks_.erase(std::unique(stacks_.begin(), stacks_.end()), stacks_.end());
}

bool GrammarMatcher::advance_cp(uint32_t cp) {
    std::vector<Stack> next;
    const auto elems = g_->elems();
    for (const Stack& s : stacks_) {
        if (s.empty()) continue;
        const Grammar::Elem e = elems[s.back()];
        if (!set_contains(g_->set(e.arg), cp)) continue;
        Stack t = s;
        ++t.back();
        if (!expand(std::move(t), next)) {
            next.clear();
            break;
        }
    }
    stacks_ = std::move(next);
    dedup();
    if (stacks_.size() > kMaxStacks) stacks_.clear();
    return !stacks_.empty();
}

bool GrammarMatcher::partial_possible() const {
    // The code points the partial character can still become, less those that are not valid
    // UTF-8 (overlong forms, surrogates, past U+10FFFF), so a token is only allowed when the
    // character can be finished by some valid continuation the grammar takes.
    static constexpr uint32_t kMinOfLength[4] = {0, 0x80, 0x800, 0x10000};
    uint32_t lo = cp_ << (6 * need_);
    uint32_t hi = lo | ((1u << (6 * need_)) - 1);
    lo = std::max(lo, kMinOfLength[len_ - 1]);
    hi = std::min<uint32_t>(hi, 0x10FFFF);
    if (lo < 0xD800 && hi >= 0xD800 && hi <= 0xDFFF) hi = 0xD7FF;
    if (lo >= 0xD800 && lo <= 0xDFFF) lo = 0xE000;
    if (lo > hi) return false;
    const auto elems = g_->elems();
    for (const Stack& s : stacks_) {
        if (!s.empty() && set_intersects(g_->set(elems[s.back()].arg), lo, hi)) return true;
    }
    return false;
}

bool GrammarMatcher::advance_byte(uint8_t b) {
    if (stacks_.empty()) return false;
    if (need_ == 0) {
        if (b < 0x80) return advance_cp(b);
        // Lead bytes and the range their first continuation byte must fall in (RFC 3629).
        if (b >= 0xC2 && b <= 0xDF) {
            cp_ = b & 0x1F, need_ = 1, lo2_ = 0x80, hi2_ = 0xBF;
        } else if (b >= 0xE0 && b <= 0xEF) {
            cp_ = b & 0x0F, need_ = 2;
            lo2_ = b == 0xE0 ? 0xA0 : 0x80;
            hi2_ = b == 0xED ? 0x9F : 0xBF;
        } else if (b >= 0xF0 && b <= 0xF4) {
            cp_ = b & 0x07, need_ = 3;
            lo2_ = b == 0xF0 ? 0x90 : 0x80;
            hi2_ = b == 0xF4 ? 0x8F : 0xBF;
        } else {
            stacks_.clear();  // a stray continuation byte, C0/C1 (overlong) or F5+: never valid
            return false;
        }
        len_ = need_ + 1;
    } else {
        if (b < lo2_ || b > hi2_) {
            stacks_.clear();
            need_ = 0;
            return false;
        }
        lo2_ = 0x80, hi2_ = 0xBF;  // only the first continuation byte is restricted further
        cp_ = (cp_ << 6) | (b & 0x3F);
        if (--need_ == 0) return advance_cp(cp_);
    }
    if (!partial_possible()) {
        stacks_.clear();
        need_ = 0;
        return false;
    }
    return true;
}

bool GrammarMatcher::may_take_byte(uint8_t b) const {
    if (need_ != 0 || b >= 0x80) return !stacks_.empty();
    const auto elems = g_->elems();
    for (const Stack& s : stacks_) {
        if (!s.empty() && set_contains(g_->set(elems[s.back()].arg), b)) return true;
    }
    return false;
}

bool GrammarMatcher::advance(std::string_view bytes) {
    for (char c : bytes) {
        if (!advance_byte(static_cast<uint8_t>(c))) return false;
    }
    return true;
}

bool GrammarMatcher::accepts(std::string_view bytes) const {
    GrammarMatcher copy = *this;
    return copy.advance(bytes);
}

bool GrammarMatcher::accepting() const {
    if (need_ != 0) return false;
    return std::any_of(stacks_.begin(), stacks_.end(), [](const Stack& s) { return s.empty(); });
}

bool GrammarMatcher::same_state(const GrammarMatcher& o) const {
    return g_ == o.g_ && need_ == o.need_ && (need_ == 0 || (cp_ == o.cp_ && len_ == o.len_ && lo2_ == o.lo2_ && hi2_ == o.hi2_)) &&
           stacks_ == o.stacks_;
}

size_t GrammarMatcher::state_hash() const {
    // FNV-1a over the grammar's address, the partial character and the (sorted) stacks.
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](uint64_t v) {
        h ^= v;
        h *= 1099511628211ull;
    };
    mix(reinterpret_cast<uintptr_t>(g_.get()));
    mix(static_cast<uint64_t>(need_));
    if (need_ != 0) mix((static_cast<uint64_t>(cp_) << 24) ^ (static_cast<uint64_t>(len_) << 16) ^ (lo2_ << 8) ^ hi2_);
    for (const Stack& st : stacks_) {
        mix(st.size());
        for (uint32_t p : st) mix(p);
    }
    return static_cast<size_t>(h);
}

bool GrammarMatcher::finished() const { return need_ == 0 && stacks_.size() == 1 && stacks_[0].empty(); }

// ---------------------------------------------------------------------------------------------
// Token mask

TokenMask::TokenMask(const std::vector<std::string>& pieces, const std::vector<bool>& eog) : pieces_(pieces), eog_(eog) {
    eog_.resize(pieces.size(), false);
    cache_capacity_ = std::clamp<size_t>(kMaskCacheBytes / std::max<size_t>(1, pieces.size()), 2, 64);
    for (size_t i = 0; i < eog_.size(); ++i) {
        if (eog_[i]) eog_ids_.push_back(static_cast<int32_t>(i));
    }
    // Sorted pieces make every trie node's tokens a contiguous range, so children can be laid
    // out contiguously with one recursive pass.
    std::vector<int32_t> order(pieces.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return pieces[a] < pieces[b] || (pieces[a] == pieces[b] && a < b); });
    nodes_.emplace_back();
    auto build = [&](auto&& self, uint32_t node, size_t lo, size_t hi, size_t depth) -> void {
        while (lo < hi && pieces[order[lo]].size() == depth) {
            if (depth > 0) nodes_[node].tokens.push_back(order[lo]);  // empty pieces stay out
            ++lo;
        }
        std::vector<std::pair<size_t, size_t>> groups;
        for (size_t i = lo; i < hi;) {
            size_t j = i;
            while (j < hi && pieces[order[j]][depth] == pieces[order[i]][depth]) ++j;
            groups.emplace_back(i, j);
            i = j;
        }
        const auto first = static_cast<uint32_t>(nodes_.size());
        nodes_[node].first_child = first;
        nodes_[node].n_children = static_cast<uint32_t>(groups.size());
        for (const auto& [a, b] : groups) {
            nodes_.emplace_back();
            nodes_.back().byte = static_cast<uint8_t>(pieces[order[a]][depth]);
        }
        for (size_t k = 0; k < groups.size(); ++k) self(self, first + static_cast<uint32_t>(k), groups[k].first, groups[k].second, depth + 1);
    };
    build(build, 0, 0, order.size(), 0);
}

void TokenMask::walk(uint32_t node, const GrammarMatcher& m, std::vector<uint8_t>& allowed) const {
    const Node& n = nodes_[node];
    for (uint32_t c = n.first_child; c < n.first_child + n.n_children; ++c) {
        // Most children die at their first byte: rule them out before paying for a copy.
        if (!m.may_take_byte(nodes_[c].byte)) continue;
        GrammarMatcher next = m;
        if (!next.advance_byte(nodes_[c].byte)) continue;  // the whole subtree is rejected
        for (int32_t t : nodes_[c].tokens) allowed[static_cast<size_t>(t)] = 1;
        walk(c, next, allowed);
    }
}

std::vector<uint8_t> TokenMask::allowed_after(const GrammarMatcher& m) const {
    std::vector<uint8_t> allowed(eog_.size(), 0);
    if (!m.dead()) walk(0, m, allowed);
    const bool acc = m.accepting();
    for (int32_t t : eog_ids_) allowed[static_cast<size_t>(t)] = acc ? 1 : 0;
    return allowed;
}

size_t TokenMask::apply_allowed(const std::vector<uint8_t>& allowed, float* logits) const {
    size_t n = 0;
    for (size_t i = 0; i < allowed.size(); ++i) {
        if (allowed[i]) {
            ++n;
        } else {
            logits[i] = -std::numeric_limits<float>::infinity();
        }
    }
    return n;
}

size_t TokenMask::apply_uncached(const GrammarMatcher& m, float* logits) const { return apply_allowed(allowed_after(m), logits); }

size_t TokenMask::apply(const GrammarMatcher& m, float* logits) const {
    const size_t h = m.state_hash();
    {
        std::lock_guard<std::mutex> lock(cache_mu_);
        for (auto it = cache_.begin(); it != cache_.end(); ++it) {
            if (it->hash != h || !it->state.same_state(m)) continue;
            cache_.splice(cache_.begin(), cache_, it);  // most recently used first
            return apply_allowed(cache_.front().allowed, logits);
        }
    }
    // The walk runs unlocked: other requests' lookups do not wait for it. Two requests that
    // miss on the same state both walk and both insert; the duplicate ages out.
    std::vector<uint8_t> allowed = allowed_after(m);
    const size_t n = apply_allowed(allowed, logits);
    std::lock_guard<std::mutex> lock(cache_mu_);
    cache_.push_front(CacheEntry{h, m, std::move(allowed)});
    while (cache_.size() > cache_capacity_) cache_.pop_back();
    return n;
}

void TokenMask::clear_cache() const {
    std::lock_guard<std::mutex> lock(cache_mu_);
    cache_.clear();
}

}  // namespace kvrag::sampling
