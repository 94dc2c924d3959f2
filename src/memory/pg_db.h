// Thin RAII wrappers over libpq (PostgreSQL's C API), for the PostgreSQL memory store: a
// connection that reconnects when the server went away, a small pool of them, a result that
// clears itself, query parameters that always travel apart from the SQL text (PQexecParams:
// user data is never spliced into a statement), and a transaction that rolls back unless
// committed.
//
// Errors carry what failed, libpq's message and what to do. Two codes: memory_unavailable
// (E6007) when the server cannot be reached now (stopped, restarting, a connection cut): the
// caller may retry later, and the HTTP layer answers 503 with Retry-After; memory_store (E6001)
// for everything else (a statement the server refused).
// A Connection takes no lock: one thread uses it at a time (Pool hands each out to one caller).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
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
    // Connects with a libpq URI (postgresql://user@host:port/db?...), waiting at most
    // kConnectTimeoutS for the server unless the URI sets connect_timeout. Error
    // memory_unavailable naming the URI (without its password) and libpq's message.
    static Result<std::unique_ptr<Connection>> open(const std::string& uri);
    static constexpr const char* kConnectTimeoutS = "5";
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // Reconnects when the connection was lost (the server restarted); memory_unavailable when
    // the server is still away. Called by exec before each statement outside a transaction and
    // by Transaction::begin. A server that restarted while this connection sat idle closed it
    // without libpq noticing; what the server sent meanwhile is read here first (without
    // blocking), so the first statement after a restart goes out on a fresh connection
    // instead of failing on the dead one.
    Result<void> ensure_open();
    // One statement with parameters. Error memory_store: "<what>: <server message>";
    // memory_unavailable when the connection broke or the server is shutting down (the
    // statement's effect is then unknown: it is never retried here).
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
    // How many times ensure_open reconnected: session state (LISTEN) is gone after each.
    uint64_t n_resets() const { return n_resets_; }

private:
    friend class Transaction;
    Connection() = default;
    Error error(const std::string& what) const;

    pg_conn* c_ = nullptr;
    std::string uri_;
    bool in_tx_ = false;
    uint64_t n_resets_ = 0;
};

// At most n_max connections to one server, opened on demand and kept; each caller holds one
// for a few statements (or one transaction) and gives it back. A replica's concurrent requests
// then run side by side instead of queueing on one connection. Thread-safe.
class Pool {
public:
    // One connection is opened at once (so a wrong URI fails here); errors as Connection::open.
    // wait: how long acquire() waits for a busy pool before giving up.
    static Result<std::unique_ptr<Pool>> open(const std::string& uri, int32_t n_max,
                                              std::chrono::milliseconds wait = std::chrono::seconds(30));

    // A connection held by one caller; back to the pool when destroyed.
    class Lease {
    public:
        Lease(Pool* pool, std::unique_ptr<Connection> c) : pool_(pool), c_(std::move(c)) {}
        Lease(Lease&& o) noexcept = default;
        Lease& operator=(Lease&&) = delete;
        ~Lease();
        Connection& operator*() { return *c_; }
        Connection* operator->() { return c_.get(); }

    private:
        Pool* pool_;
        std::unique_ptr<Connection> c_;
    };

    // An idle connection, else a new one while fewer than n_max are open, else waits for one.
    // Errors: memory_unavailable when a new connection fails (the server is away) or none came
    // free within `wait` (the message has the numbers).
    Result<Lease> acquire();
    int32_t n_open() const;
    int32_t n_max() const { return n_max_; }

private:
    Pool() = default;
    void give_back(std::unique_ptr<Connection> c);

    std::string uri_;
    int32_t n_max_ = 1;
    std::chrono::milliseconds wait_{30000};
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::unique_ptr<Connection>> idle_;
    int32_t n_open_ = 0;  // idle ones plus those lent out
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

// Removes the query parameter `key` (key=value) from a libpq URI and returns its value, or
// nullopt when absent: for kvrag's own options in the URI, which libpq would refuse.
std::optional<std::string> take_uri_option(std::string& uri, const std::string& key);

// True when spec names a PostgreSQL store (postgresql:// or postgres://).
bool is_postgres_uri(const std::string& spec);

}  // namespace kvrag::memory::pg
