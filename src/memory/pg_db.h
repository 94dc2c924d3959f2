// Thin RAII wrappers over libpq (PostgreSQL's C API), for the PostgreSQL memory store: a
// connection that reconnects when the server went away, a result that clears itself, query
// parameters that always travel apart from the SQL text (PQexecParams: user data is never
// spliced into a statement), and a transaction that rolls back unless committed.
//
// Errors are Errc::memory_store and carry what failed, libpq's message and what to do.
// None of these take a lock: PostgresStore serialises every use of a connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

struct pg_conn;
struct pg_result;

namespace kvrag::memory::pg {

// Query parameters $1, $2, ... in order. Text values are sent as text; bytes() as binary
// (bytea, no escaping); null() as SQL NULL.
class Params {
public:
    Params() = default;
    template <class... A>
    static Params of(const A&... args) {
        Params p;
        (p.add(args), ...);
        return p;
    }
    Params& add(const std::string& v);
    Params& add(const char* v) { return add(std::string(v)); }
    Params& add(int64_t v);
    Params& add(int32_t v) { return add(static_cast<int64_t>(v)); }
    Params& add(double v);
    Params& bytes(const void* p, size_t n);
    Params& null();

    int size() const { return static_cast<int>(values_.size()); }
    // Arrays for PQexecParams, valid while this object lives and is not changed.
    const char* const* values() const;
    const int* lengths() const { return lengths_.data(); }
    const int* formats() const { return formats_.data(); }

private:
    std::vector<std::string> values_;
    std::vector<bool> is_null_;
    std::vector<int> lengths_;
    std::vector<int> formats_;
    mutable std::vector<const char*> ptrs_;
};

// A query's result (text format). Row and column indices start at 0.
class Rows {
public:
    explicit Rows(pg_result* r = nullptr) : r_(r) {}
    ~Rows();
    Rows(Rows&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
    Rows& operator=(Rows&& o) noexcept;
    Rows(const Rows&) = delete;
    Rows& operator=(const Rows&) = delete;

    int size() const;
    bool empty() const { return size() == 0; }
    bool is_null(int row, int col) const;
    std::string text(int row, int col) const;  // NULL -> ""
    int64_t i64(int row, int col) const;       // NULL -> 0
    double f64(int row, int col) const;
    std::string bytes(int row, int col) const;  // a bytea column, decoded
    // Binary-format results (Connection::exec with binary_results): the raw value, and a
    // bigint column decoded from network byte order.
    const char* data(int row, int col) const;
    int length(int row, int col) const;
    int64_t binary_i64(int row, int col) const;
    // Rows an INSERT/UPDATE/DELETE changed.
    int64_t affected() const;

private:
    pg_result* r_;
};

class Connection {
public:
    // Connects with a libpq URI (postgresql://user@host:port/db?...). Error memory_store
    // naming the URI (without its password) and libpq's message.
    static Result<std::unique_ptr<Connection>> open(const std::string& uri);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // Reconnects when the connection was lost (the server restarted); memory_store when the
    // server is still away. Called by exec before each statement outside a transaction.
    Result<void> ensure_open();
    // One statement with parameters. Error memory_store: "<what>: <server message>".
    // binary_results: every column comes back in PostgreSQL's binary format (read with
    // Rows::data / binary_i64): bulk bytea without the hex text's doubling.
    Result<Rows> exec(const char* sql, const Params& params = {}, bool binary_results = false);
    // SQL text of one or more statements without parameters or results (schema, LISTEN).
    Result<void> exec_script(const char* sql);

    pg_conn* raw() { return c_; }
    const std::string& uri() const { return uri_; }
    // The URI with any password replaced by ***, for messages.
    std::string safe_uri() const;
    bool in_transaction() const { return in_tx_; }

private:
    friend class Transaction;
    Connection() = default;
    Error error(const std::string& what) const;

    pg_conn* c_ = nullptr;
    std::string uri_;
    bool in_tx_ = false;
};

// BEGIN ... COMMIT; rolls back unless commit() was called, so every early return is safe.
class Transaction {
public:
    explicit Transaction(Connection& c) : c_(c) {}
    ~Transaction();
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;

    Result<void> begin();
    Result<void> commit();

private:
    Connection& c_;
    bool open_ = false;
};

// The URI with the password (user:PASSWORD@ or password=...) masked.
std::string mask_password(const std::string& uri);

// Array literals for a text[] / bigint[] parameter ($1::text[]): the values travel as
// parameter data (array_in parses them), every element double-quoted with \ and " escaped.
std::string text_array(const std::vector<std::string>& values);
std::string int_array(const std::vector<int64_t>& values);

// True when spec names a PostgreSQL store (postgresql:// or postgres://).
bool is_postgres_uri(const std::string& spec);

}  // namespace kvrag::memory::pg
