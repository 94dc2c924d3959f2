#include "memory/sqlite_db.h"

#include <sqlite3.h>

#include <chrono>

namespace kvrag::memory {

Error db_error(sqlite3* db, const std::string& what) {
    return Error{Errc::memory_store, what + ": " + (db ? sqlite3_errmsg(db) : "no database") + " (sqlite " +
                                         std::to_string(db ? sqlite3_extended_errcode(db) : 0) + ")"};
}

// ---------------------------------------------------------------------------------------------
// Stmt

Stmt::Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK) {
        err_ = db_error(db, std::string("prepare '") + sql + "'");
        s_ = nullptr;
    }
}

Stmt::~Stmt() { sqlite3_finalize(s_); }

Stmt& Stmt::bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
}

Stmt& Stmt::bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
}

Stmt& Stmt::bind_blob(int i, const void* p, size_t n) {
    sqlite3_bind_blob(s_, i, p, static_cast<int>(n), SQLITE_TRANSIENT);
    return *this;
}

Stmt& Stmt::bind_blob_static(int i, const void* p, size_t n) {
    sqlite3_bind_blob(s_, i, p, static_cast<int>(n), SQLITE_STATIC);
    return *this;
}

bool Stmt::step() {
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) failed_ = true, err_ = db_error(db_, "step");
    return false;
}

void Stmt::reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
}

int64_t Stmt::i64(int c) const { return sqlite3_column_int64(s_, c); }

double Stmt::f64(int c) const { return sqlite3_column_double(s_, c); }

std::string Stmt::text(int c) const {
    const auto* p = sqlite3_column_text(s_, c);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s_, c)) : std::string();
}

const void* Stmt::blob(int c) const { return sqlite3_column_blob(s_, c); }

int Stmt::bytes(int c) const { return sqlite3_column_bytes(s_, c); }

// ---------------------------------------------------------------------------------------------
// Statements without a Stmt

Result<void> exec(sqlite3* db, const char* sql) {
    char* msg = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
        Error e{Errc::memory_store, std::string("exec '") + std::string(sql).substr(0, 60) + "': " + (msg ? msg : "?")};
        sqlite3_free(msg);
        return e;
    }
    return {};
}

int64_t changes(sqlite3* db) { return static_cast<int64_t>(sqlite3_changes(db)); }

// ---------------------------------------------------------------------------------------------
// Transaction

Result<void> Transaction::begin() {
    auto r = exec(db_, "BEGIN IMMEDIATE");
    if (r) open_ = true;
    return r;
}

Result<void> Transaction::commit() {
    auto r = exec(db_, "COMMIT");
    if (r) open_ = false;
    return r;
}

Transaction::~Transaction() {
    if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

int64_t now_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace kvrag::memory
