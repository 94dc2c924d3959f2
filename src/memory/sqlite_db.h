// Thin RAII wrappers over SQLite's C API, for the memory store: a prepared statement that
// finalises itself, a transaction that rolls back unless committed, and errors
// (Errc::memory_store) that carry SQLite's message and extended result code.
//
// None of these take a lock: the Store serialises every use of its connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"

struct sqlite3;
struct sqlite3_stmt;

namespace kvrag::memory {

// memory_store error: "<what>: <sqlite message> (sqlite <extended code>)"; db may be null.
Error db_error(sqlite3* db, const std::string& what);

// A prepared statement. A failed prepare leaves ok() false with the reason in error(); a
// failed step() returns false and sets failed() and error(). Binding indices start at 1,
// column indices at 0 (SQLite's convention). Text and blobs are copied when bound.
class Stmt {
public:
    Stmt(sqlite3* db, const char* sql);
    ~Stmt();
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    bool ok() const { return s_ != nullptr; }
    const Error& error() const { return err_; }
    Stmt& bind(int i, const std::string& v);
    Stmt& bind(int i, int64_t v);
    Stmt& bind_blob(int i, const void* p, size_t n);
    // Without SQLite's own copy: p must stay valid and unchanged until the statement is reset
    // (for large blobs: an uploaded file is then copied once, into its row, not twice).
    Stmt& bind_blob_static(int i, const void* p, size_t n);
    // SQLITE_ROW -> true, SQLITE_DONE -> false; anything else sets error().
    bool step();
    bool failed() const { return failed_; }
    // Back to before the first step, with every binding cleared, to run again.
    void reset();

    int64_t i64(int c) const;
    double f64(int c) const;
    std::string text(int c) const;  // NULL -> ""
    const void* blob(int c) const;
    int bytes(int c) const;

private:
    sqlite3* db_;
    sqlite3_stmt* s_ = nullptr;
    Error err_;
    bool failed_ = false;
};

// Runs SQL text of one or more statements without results (schema, pragmas).
Result<void> exec(sqlite3* db, const char* sql);

// Rows changed by the most recent INSERT/UPDATE/DELETE on the connection.
int64_t changes(sqlite3* db);

// Runs one statement to completion with args bound in order (std::string or int64_t); for
// INSERT/UPDATE/DELETE. Returns the number of rows changed.
template <class... A>
Result<int64_t> run(sqlite3* db, const char* sql, const A&... args) {
    Stmt s(db, sql);
    if (!s.ok()) return s.error();
    int i = 1;
    (s.bind(i++, args), ...);
    s.step();
    if (s.failed()) return s.error();
    return changes(db);
}

// Rolls back unless commit() was called: every early return inside a transaction is safe.
// BEGIN IMMEDIATE takes the write lock at once, so a transaction never fails half-way for
// want of it (the busy timeout applies to begin()).
class Transaction {
public:
    explicit Transaction(sqlite3* db) : db_(db) {}
    ~Transaction();
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;

    Result<void> begin();
    Result<void> commit();

private:
    sqlite3* db_;
    bool open_ = false;
};

// Unix seconds, for the created_at / updated_at columns.
int64_t now_seconds();

}  // namespace kvrag::memory
