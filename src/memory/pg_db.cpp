#include "memory/pg_db.h"

#include <poll.h>
#include <postgresql/libpq-fe.h>

#include <cstdlib>
#include <algorithm>
#include <cstdio>
#include <cstring>

namespace kvrag::memory::pg {

// ---------------------------------------------------------------------------------------------
// Params

Params& Params::add(const std::string& v) {
    values_.push_back(v);
    is_null_.push_back(false);
    lengths_.push_back(0);
    formats_.push_back(0);
    return *this;
}

Params& Params::add(int64_t v) { return add(std::to_string(v)); }

Params& Params::add(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return add(std::string(buf));
}

Params& Params::bytes(const void* p, size_t n) {
    values_.emplace_back(static_cast<const char*>(p), n);
    is_null_.push_back(false);
    lengths_.push_back(static_cast<int>(n));
    formats_.push_back(1);
    return *this;
}

Params& Params::null() {
    values_.emplace_back();
    is_null_.push_back(true);
    lengths_.push_back(0);
    formats_.push_back(0);
    return *this;
}

const char* const* Params::values() const {
    ptrs_.clear();
    for (size_t i = 0; i < values_.size(); ++i) ptrs_.push_back(is_null_[i] ? nullptr : values_[i].data());
    return ptrs_.data();
}

// ---------------------------------------------------------------------------------------------
// Rows

Rows::~Rows() {
    if (r_) PQclear(r_);
}

Rows& Rows::operator=(Rows&& o) noexcept {
    if (this != &o) {
        if (r_) PQclear(r_);
        r_ = o.r_;
        o.r_ = nullptr;
    }
    return *this;
}

int Rows::size() const { return r_ ? PQntuples(r_) : 0; }
bool Rows::is_null(int row, int col) const { return !r_ || PQgetisnull(r_, row, col); }

std::string Rows::text(int row, int col) const {
    if (is_null(row, col)) return {};
    return std::string(PQgetvalue(r_, row, col), static_cast<size_t>(PQgetlength(r_, row, col)));
}

int64_t Rows::i64(int row, int col) const {
    if (is_null(row, col)) return 0;
    return std::strtoll(PQgetvalue(r_, row, col), nullptr, 10);
}

double Rows::f64(int row, int col) const {
    if (is_null(row, col)) return 0.0;
    return std::strtod(PQgetvalue(r_, row, col), nullptr);
}

namespace {
int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
}  // namespace

std::string Rows::bytes(int row, int col) const {
    if (is_null(row, col)) return {};
    // bytea_output = 'hex' (the server default since 9.0, and set at connect): "\x0a1b..."
    const char* v = PQgetvalue(r_, row, col);
    const size_t n = static_cast<size_t>(PQgetlength(r_, row, col));
    if (n < 2 || v[0] != '\\' || v[1] != 'x') {
        size_t len = 0;
        unsigned char* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(v), &len);
        std::string out(reinterpret_cast<const char*>(raw), len);
        PQfreemem(raw);
        return out;
    }
    std::string out((n - 2) / 2, '\0');
    for (size_t i = 0; i < out.size(); ++i) {
        out[i] = static_cast<char>((hex_value(v[2 + 2 * i]) << 4) | hex_value(v[3 + 2 * i]));
    }
    return out;
}

const char* Rows::data(int row, int col) const { return r_ ? PQgetvalue(r_, row, col) : nullptr; }
int Rows::length(int row, int col) const { return r_ ? PQgetlength(r_, row, col) : 0; }

int64_t Rows::binary_i64(int row, int col) const {
    if (is_null(row, col) || PQgetlength(r_, row, col) != 8) return 0;
    const auto* p = reinterpret_cast<const unsigned char*>(PQgetvalue(r_, row, col));
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return static_cast<int64_t>(v);
}

int64_t Rows::affected() const {
    if (!r_) return 0;
    const char* n = PQcmdTuples(r_);
    return (n && *n) ? std::strtoll(n, nullptr, 10) : 0;
}

// ---------------------------------------------------------------------------------------------
// Connection

std::string mask_password(const std::string& uri) {
    std::string out = uri;
    // postgresql://user:PASSWORD@host
    const size_t scheme = out.find("://");
    if (scheme != std::string::npos) {
        const size_t at = out.find('@', scheme + 3);
        const size_t slash = out.find('/', scheme + 3);
        if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
            const size_t colon = out.find(':', scheme + 3);
            if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
        }
    }
    // ...?password=PASSWORD&...
    const size_t pw = out.find("password=");
    if (pw != std::string::npos) {
        const size_t end = out.find('&', pw);
        out.replace(pw + 9, (end == std::string::npos ? out.size() : end) - pw - 9, "***");
    }
    return out;
}

std::string text_array(const std::vector<std::string>& values) {
    std::string out = "{";
    for (size_t i = 0; i < values.size(); ++i) {
        if (i) out += ',';
        out += '"';
        for (char c : values[i]) {
            if (c == '"' || c == '\\') out += '\\';
            out += c;
        }
        out += '"';
    }
    return out + "}";
}

std::string int_array(const std::vector<int64_t>& values) {
    std::string out = "{";
    for (size_t i = 0; i < values.size(); ++i) {
        if (i) out += ',';
        out += std::to_string(values[i]);
    }
    return out + "}";
}

std::optional<std::string> take_uri_option(std::string& uri, const std::string& key) {
    const size_t q = uri.find('?');
    if (q == std::string::npos) return std::nullopt;
    std::optional<std::string> value;
    std::string kept;
    size_t pos = q + 1;
    while (pos <= uri.size()) {
        size_t end = uri.find('&', pos);
        if (end == std::string::npos) end = uri.size();
        const std::string item = uri.substr(pos, end - pos);
        if (item.rfind(key + "=", 0) == 0) {
            value = item.substr(key.size() + 1);
        } else if (!item.empty()) {
            kept += (kept.empty() ? "" : "&") + item;
        }
        pos = end + 1;
    }
    if (value) uri = uri.substr(0, q) + (kept.empty() ? "" : "?" + kept);
    return value;
}

bool is_postgres_uri(const std::string& spec) { return spec.rfind("postgresql://", 0) == 0 || spec.rfind("postgres://", 0) == 0; }

std::string Connection::safe_uri() const { return mask_password(uri_); }

namespace {

// SQLSTATEs that mean "the server is going away or not there", not "this statement is wrong":
// class 08 (connection exception) and 57P01-57P03 (admin shutdown, crash shutdown, cannot
// connect now). A statement that fails so may succeed on a later try.
bool unavailable_state(const char* sqlstate) {
    if (!sqlstate) return false;
    const std::string st(sqlstate);
    return st.rfind("08", 0) == 0 || st == "57P01" || st == "57P02" || st == "57P03";
}

void trim_newlines(std::string& msg) {
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
}

constexpr const char* kSessionSetup = "SET bytea_output = 'hex'; SET client_encoding = 'UTF8'";

}  // namespace

Error Connection::error(const std::string& what) const {
    std::string msg = c_ ? PQerrorMessage(c_) : "out of memory";
    trim_newlines(msg);
    if (!c_ || PQstatus(c_) != CONNECTION_OK) {
        if (what.find("is the PostgreSQL server running") == std::string::npos) {
            msg += "; is the PostgreSQL server running? (the next call reconnects)";
        }
        return Error{Errc::memory_unavailable, what + ": " + msg};
    }
    return Error{Errc::memory_store, what + ": " + msg};
}

Result<std::unique_ptr<Connection>> Connection::open(const std::string& uri) {
    std::unique_ptr<Connection> c(new Connection());
    c->uri_ = uri;
    // connect_timeout first: the URI's own (expanded from dbname, later in the list) wins.
    const char* keys[] = {"connect_timeout", "dbname", nullptr};
    const char* values[] = {kConnectTimeoutS, uri.c_str(), nullptr};
    c->c_ = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
    if (!c->c_ || PQstatus(c->c_) != CONNECTION_OK) {
        return c->error("cannot connect to " + c->safe_uri() + " (is the PostgreSQL server running, and the URI right?)");
    }
    // Notices (e.g. "relation already exists, skipping") are not errors; keep stderr quiet.
    PQsetNoticeProcessor(c->c_, [](void*, const char*) {}, nullptr);
    if (auto r = c->exec_script(kSessionSetup); !r) return r.error();
    return c;
}

Connection::~Connection() {
    if (c_) PQfinish(c_);
}

Result<void> Connection::ensure_open() {
    // Idle, nothing should arrive; anything readable is the server's goodbye (a FATAL
    // "terminating connection" message, then end of file). Reading it lets libpq see the
    // connection is gone (the second read meets the end of file) before a statement is sent.
    for (int i = 0; i < 4 && !in_tx_ && PQstatus(c_) == CONNECTION_OK; ++i) {
        pollfd pfd{PQsocket(c_), POLLIN, 0};
        if (pfd.fd < 0 || poll(&pfd, 1, 0) <= 0) break;
        if (!PQconsumeInput(c_)) break;
    }
    if (PQstatus(c_) == CONNECTION_OK) return {};
    in_tx_ = false;
    PQreset(c_);
    ++n_resets_;
    if (PQstatus(c_) != CONNECTION_OK) {
        return error("lost the connection to " + safe_uri() + " and cannot reconnect (is the PostgreSQL server running?)");
    }
    return exec_script(kSessionSetup);
}

Result<Rows> Connection::exec(const char* sql, const Params& params, bool binary_results) {
    if (!in_tx_) {
        if (auto r = ensure_open(); !r) return r.error();
    }
    PGresult* r = PQexecParams(c_, sql, params.size(), nullptr, params.values(), params.lengths(), params.formats(), binary_results ? 1 : 0);
    const auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        std::string msg = r ? PQresultErrorMessage(r) : "";
        if (msg.empty()) msg = PQerrorMessage(c_);
        const bool gone = PQstatus(c_) != CONNECTION_OK || (r && unavailable_state(PQresultErrorField(r, PG_DIAG_SQLSTATE)));
        if (r) PQclear(r);
        trim_newlines(msg);
        std::string head(sql, std::min<size_t>(std::strlen(sql), 60));
        if (gone) {
            return Error{Errc::memory_unavailable, "lost the connection to " + safe_uri() + ": " + msg +
                                                       "; is the PostgreSQL server running? (the next call reconnects)"};
        }
        return Error{Errc::memory_store, "PostgreSQL store " + safe_uri() + ": " + msg + " (in: " + head + "...)"};
    }
    return Rows(r);
}

Result<void> Connection::exec_script(const char* sql) {
    PGresult* r = PQexec(c_, sql);
    const auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (r) PQclear(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return error("PostgreSQL store " + safe_uri());
    return {};
}

// ---------------------------------------------------------------------------------------------
// Pool

Result<std::unique_ptr<Pool>> Pool::open(const std::string& uri, int32_t n_max, std::chrono::milliseconds wait) {
    if (n_max < 1) {
        return Error{Errc::memory_bad_input, "PostgreSQL store: a pool of " + std::to_string(n_max) + " connections (at least 1)"};
    }
    std::unique_ptr<Pool> p(new Pool());
    p->uri_ = uri;
    p->n_max_ = n_max;
    p->wait_ = wait;
    auto c = Connection::open(uri);
    if (!c) return c.error();
    p->idle_.push_back(std::move(*c));
    p->n_open_ = 1;
    return p;
}

Pool::Lease::~Lease() {
    if (c_) pool_->give_back(std::move(c_));
}

void Pool::give_back(std::unique_ptr<Connection> c) {
    {
        std::lock_guard lk(mu_);
        idle_.push_back(std::move(c));
    }
    cv_.notify_one();
}

int32_t Pool::n_open() const {
    std::lock_guard lk(mu_);
    return n_open_;
}

Result<Pool::Lease> Pool::acquire() {
    std::unique_lock lk(mu_);
    if (idle_.empty() && n_open_ >= n_max_) {
        if (!cv_.wait_for(lk, wait_, [&] { return !idle_.empty() || n_open_ < n_max_; })) {
            return Error{Errc::memory_unavailable, "all " + std::to_string(n_max_) + " connections to " + mask_password(uri_) +
                                                       " stayed busy for " + std::to_string(wait_.count()) +
                                                       " ms; the PostgreSQL server is slow or stuck: retry later"};
        }
    }
    if (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        return Lease(this, std::move(c));
    }
    // Open one more, outside the lock (a connection takes milliseconds, or up to the
    // connect timeout when the server is away); the slot is reserved meanwhile.
    ++n_open_;
    lk.unlock();
    auto c = Connection::open(uri_);
    if (!c) {
        {
            std::lock_guard relock(mu_);
            --n_open_;
        }
        cv_.notify_one();
        return c.error();
    }
    return Lease(this, std::move(*c));
}

// ---------------------------------------------------------------------------------------------
// Transaction

Result<void> Transaction::begin() {
    if (auto r = c_.ensure_open(); !r) return r;
    if (auto r = c_.exec_script("BEGIN"); !r) return r;
    open_ = true;
    c_.in_tx_ = true;
    return {};
}

Result<void> Transaction::commit() {
    auto r = c_.exec_script("COMMIT");
    open_ = false;
    c_.in_tx_ = false;
    return r;
}

Transaction::~Transaction() {
    if (open_) {
        (void)c_.exec_script("ROLLBACK");
        c_.in_tx_ = false;
    }
}

}  // namespace kvrag::memory::pg
