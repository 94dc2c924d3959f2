// Digit rules for bounded integers and numbers: a range of values becomes alternatives over
// the decimal digits, so a bound holds exactly, whatever the model writes.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <vector>

#include "sampling/json_schema.h"
#include "sampling/json_schema_detail.h"

namespace kvrag::sampling::schema_detail {

namespace {

std::string range_any_digits(size_t n) { return n == 0 ? "" : " [0-9]{" + std::to_string(n) + "}"; }
// " [0-9]{0,n}": up to n more digits ("" for n = 0).
std::string range_upto_digits(int n) { return n <= 0 ? "" : " [0-9]{0," + std::to_string(n) + "}"; }

std::string range_class(char lo, char hi) {
    return lo == hi ? literal(std::string(1, lo)) : std::string("[") + lo + "-" + hi + "]";
}

std::string range_alts(const std::vector<std::string>& alts) {
    if (alts.size() == 1) return alts[0];
    std::string out = "(";
    for (size_t i = 0; i < alts.size(); ++i) out += (i ? " | " : "") + alts[i];
    return out + ")";
}

// Decimal strings of equal length with a <= b: every string s of that length, a <= s <= b.
std::string same_length_range(const std::string& a, const std::string& b) {
    if (a.empty()) return "";
    if (a == b) return literal(a);
    const size_t rest = a.size() - 1;
    if (a[0] == b[0]) return literal(a.substr(0, 1)) + " " + same_length_range(a.substr(1), b.substr(1));
    const bool a_low = a.find_first_not_of('0', 1) == std::string::npos;
    const bool b_high = b.find_first_not_of('9', 1) == std::string::npos;
    // The first digit splits the range into a partial low part, full middle digits and a
    // partial high part; the full parts take any digits after them.
    std::vector<std::string> alts;
    const char mid_lo = a_low ? a[0] : static_cast<char>(a[0] + 1);
    const char mid_hi = b_high ? b[0] : static_cast<char>(b[0] - 1);
    if (!a_low) alts.push_back(literal(a.substr(0, 1)) + " " + same_length_range(a.substr(1), std::string(rest, '9')));
    if (mid_lo <= mid_hi) alts.push_back(range_class(mid_lo, mid_hi) + range_any_digits(rest));
    if (!b_high) alts.push_back(literal(b.substr(0, 1)) + " " + same_length_range(std::string(rest, '0'), b.substr(1)));
    return range_alts(alts);
}

// ---- fractions. A fraction is a non-empty digit string t after the point, |t| <= n, read as
// 0.t; a bound g is a digit string read the same way ("" is 0). Each function returns the
// alternatives for t, or nullopt when no t qualifies. Recursion goes one digit deep per call,
// so at most kMaxFracDigits levels.

using Alt = std::optional<std::string>;

bool all_zeros(std::string_view g) { return g.find_first_not_of('0') == std::string_view::npos; }
char head(std::string_view g) { return g.empty() ? '0' : g[0]; }
std::string_view tail(std::string_view g) { return g.empty() ? g : g.substr(1); }

// `first` then a rest t' (possibly empty) from `rest`: t' may be empty when empty_ok.
Alt then(const std::string& first, const Alt& rest, bool empty_ok) {
    if (!rest) return empty_ok ? Alt(first) : std::nullopt;
    return first + (empty_ok ? " (" + *rest + ")?" : " " + *rest);
}

// 0.t >= 0.g (strict: >).
Alt frac_ge(std::string_view g, int n, bool strict) {
    if (n <= 0) return std::nullopt;
    if (all_zeros(g) && !strict) return "[0-9]" + range_upto_digits(n - 1);
    const char g1 = head(g);
    std::vector<std::string> alts;
    if (g1 < '9') alts.push_back(range_class(static_cast<char>(g1 + 1), '9') + range_upto_digits(n - 1));
    // Same first digit: the rest decides; an empty rest is 0, enough only when g's rest is 0.
    if (Alt same = then(literal(std::string(1, g1)), frac_ge(tail(g), n - 1, strict), all_zeros(tail(g)) && !strict)) alts.push_back(*same);
    if (alts.empty()) return std::nullopt;
    return range_alts(alts);
}

// 0.t <= 0.g.
Alt frac_le(std::string_view g, int n) {
    if (n <= 0) return std::nullopt;
    const char g1 = head(g);
    std::vector<std::string> alts;
    if (g1 > '0') alts.push_back(range_class('0', static_cast<char>(g1 - 1)) + range_upto_digits(n - 1));
    // Same first digit: an empty rest (0) is always small enough.
    alts.push_back(*then(literal(std::string(1, g1)), frac_le(tail(g), n - 1), true));
    return range_alts(alts);
}

// 0.a <= 0.t <= 0.b (strict: 0.a < 0.t), for 0.a <= 0.b.
Alt frac_between(std::string_view a, std::string_view b, int n, bool strict) {
    if (n <= 0) return std::nullopt;
    const char a1 = head(a), b1 = head(b);
    const bool low_empty_ok = all_zeros(tail(a)) && !strict;
    if (a1 == b1) return then(literal(std::string(1, a1)), frac_between(tail(a), tail(b), n - 1, strict), low_empty_ok);
    std::vector<std::string> alts;
    if (Alt low = then(literal(std::string(1, a1)), frac_ge(tail(a), n - 1, strict), low_empty_ok)) alts.push_back(*low);
    if (a1 + 1 <= b1 - 1) alts.push_back(range_class(static_cast<char>(a1 + 1), static_cast<char>(b1 - 1)) + range_upto_digits(n - 1));
    alts.push_back(*then(literal(std::string(1, b1)), frac_le(tail(b), n - 1), true));
    return range_alts(alts);
}

// A non-negative decimal: integer digits (canonical, "0" for zero) and fraction digits.
struct Decimal {
    std::string ip, fp;
};

// The shortest decimal that parses back to x (std::to_chars), for finite x >= 0, written out
// without exponent; at least 10^kMaxIntDigits becomes the largest number the grammar writes.
Decimal to_decimal(double x) {
    if (x >= 1e16) return {std::string(kMaxIntDigits, '9'), std::string(kMaxFracDigits, '9')};
    static_assert(kMaxIntDigits == 16, "1e16 is 10^kMaxIntDigits");
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof(buf), x);
    const std::string s(buf, res.ptr);
    const size_t e = s.find_first_of("eE");
    const std::string mant = s.substr(0, e);
    const int exp = e == std::string::npos ? 0 : std::stoi(s.substr(e + 1));
    const size_t dot = mant.find('.');
    const std::string int_digits = mant.substr(0, dot);
    const std::string digits = int_digits + (dot == std::string::npos ? "" : mant.substr(dot + 1));
    const long point = static_cast<long>(int_digits.size()) + exp;  // digits before the point
    Decimal d;
    if (point <= 0) {
        d.ip = "0";
        d.fp = std::string(static_cast<size_t>(-point), '0') + digits;
    } else if (point >= static_cast<long>(digits.size())) {
        d.ip = digits + std::string(static_cast<size_t>(point) - digits.size(), '0');
    } else {
        d.ip = digits.substr(0, static_cast<size_t>(point));
        d.fp = digits.substr(static_cast<size_t>(point));
    }
    d.ip.erase(0, std::min(d.ip.find_first_not_of('0'), d.ip.size() - 1));
    d.fp.erase(d.fp.find_last_not_of('0') + 1);
    return d;
}

// An integer part then its fraction: "." t with t from `frac`, or nothing when empty_ok.
Alt with_fraction(const std::string& int_part, const Alt& frac, bool empty_ok) {
    if (!frac) return empty_ok ? Alt(int_part) : std::nullopt;
    const std::string dotted = "\".\" " + *frac;
    return int_part + (empty_ok ? " (" + dotted + ")?" : " " + dotted);
}

// Non-negative numbers x with a <= x <= b (strict: a < x), for a <= b.
Alt magnitude_range(const Decimal& a, bool strict, const Decimal& b) {
    const int64_t ia = std::stoll(a.ip), ib = std::stoll(b.ip);
    const bool low_empty_ok = a.fp.empty() && !strict;  // "ia" alone is a itself
    if (ia == ib) return with_fraction(literal(a.ip), frac_between(a.fp, b.fp, kMaxFracDigits, strict), low_empty_ok);
    std::vector<std::string> alts;
    if (Alt low = with_fraction(literal(a.ip), frac_ge(a.fp, kMaxFracDigits, strict), low_empty_ok)) alts.push_back(*low);
    if (ia + 1 <= ib - 1) alts.push_back(nonneg_range(ia + 1, ib - 1) + " (\".\" [0-9]{1," + std::to_string(kMaxFracDigits) + "})?");
    alts.push_back(*with_fraction(literal(b.ip), frac_le(b.fp, kMaxFracDigits), true));
    return range_alts(alts);
}

}  // namespace

std::string nonneg_range(int64_t lo, int64_t hi) {
    std::vector<std::string> alts;
    int64_t low_of_len = 0, high_of_len = 9;
    for (size_t len = 1; len <= 19 && low_of_len <= hi; ++len) {
        const int64_t a = std::max(lo, low_of_len), b = std::min(hi, high_of_len);
        if (a <= b) alts.push_back(same_length_range(std::to_string(a), std::to_string(b)));
        if (len == 18) break;  // 10^18 would be the next lower bound; kIntLimit is far below
        low_of_len = high_of_len + 1;
        high_of_len = high_of_len * 10 + 9;
    }
    return range_alts(alts);
}

std::string int_range(int64_t lo, int64_t hi) {
    std::vector<std::string> alts;
    if (hi >= 0) alts.push_back(nonneg_range(std::max<int64_t>(lo, 0), hi));
    if (lo < 0) alts.push_back("\"-\" " + nonneg_range(std::max<int64_t>(1, -hi), -lo));
    return range_alts(alts);
}

std::optional<std::string> number_range(double lo, double hi) {
    // Past kMaxIntDigits integer digits nothing can be written (to_decimal clamps the far side).
    if (lo >= 1e16 || hi <= -1e16) return std::nullopt;
    std::vector<std::string> alts;
    const Decimal zero{"0", ""};
    // x >= 0: from max(lo, 0) to hi.
    if (hi >= 0) {
        if (Alt pos = magnitude_range(lo > 0 ? to_decimal(lo) : zero, false, to_decimal(hi))) alts.push_back(*pos);
    }
    // x < 0: "-" then a magnitude up to -lo, above -hi, or above 0 (strictly: no "-0", "-0.0").
    if (lo < 0) {
        const bool below_zero = hi < 0;
        if (Alt neg = magnitude_range(below_zero ? to_decimal(-hi) : zero, !below_zero, to_decimal(-lo))) alts.push_back("\"-\" " + *neg);
    }
    if (alts.empty()) return std::nullopt;
    return range_alts(alts);
}

}  // namespace kvrag::sampling::schema_detail
