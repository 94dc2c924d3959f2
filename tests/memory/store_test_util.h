// Shared fixtures for the store tests: a fixture run once per backend (SQLite in memory and a
// fresh PostgreSQL database), and the PostgreSQL store's helpers (opening it, one-chunk
// documents and queued jobs written without a model).
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "memory/postgres_store.h"
#include "memory/store.h"
#include "test_postgres.h"

namespace kvrag::memory::testing {

// A test run on each backend: GetParam() is "sqlite" (spec() is ":memory:") or "postgres"
// (spec() is a fresh database's URI; skipped without a server, failed under CI's
// KVRAG_REQUIRE_SHARED=1). Instantiate with ::testing::Values("sqlite", "postgres").
class StoreBackendTest : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        if (GetParam() == "postgres") {
            KVRAG_REQUIRE_POSTGRES(uri);
            spec_ = uri;
        } else {
            spec_ = ":memory:";
        }
    }
    std::string spec_;
};

// The embedding model the store tests record: no file, vectors of 4 written by hand.
inline const EmbeddingModelInfo kFakeStoreModel{"fake", "size:0 sha256:fake", 4};

// A PostgreSQL store at `uri`, its schema created if absent; null (and a test failure) on error.
inline std::unique_ptr<Store> open_pg(const std::string& uri, PostgresOptions opt = {}) {
    auto s = PostgresStore::open(uri, OpenMode::create, opt);
    EXPECT_TRUE(s.ok()) << s.error().what();
    return s ? std::move(*s) : nullptr;
}

// The PostgreSQL store behind a Store that open_pg() made.
inline PostgresStore& as_pg(Store& s) { return static_cast<PostgresStore&>(s); }

// Document `id` in index "default": one chunk of `text` (10 tokens) with the vector
// (1, axis, 0, 0).
inline DocumentInput one_chunk_doc(const std::string& id, const std::string& text, float axis = 0) {
    DocumentInput d;
    d.index = "default";
    d.doc_id = id;
    d.name = id + ".txt";
    d.content_hash = id + text;
    d.chunks.push_back(ChunkInput{0, text, 10, {1.0f, axis, 0.0f, 0.0f}});
    return d;
}

// A queued upload of document `id` in index "default": one file, `id`.txt, holding `text`.
inline NewJob new_job(const std::string& id, const std::string& text) {
    NewJob j;
    j.index = "default";
    j.doc_id = id;
    j.name = id + ".txt";
    j.source = "upload";
    j.content_hash = id;
    j.files.push_back(SourceFile{id + ".txt", "text/plain", text});
    return j;
}

}  // namespace kvrag::memory::testing
