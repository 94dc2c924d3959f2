// Kernel-Memory-style HTTP routes for `kvrag serve --memory DIR`, as a server extension:
//   POST /upload (multipart), GET /upload-status, GET /documents, DELETE /documents,
//   POST /search, POST /ask. Shapes in docs/api.md.
//
// This module sits above both server/ and memory/ (the server knows nothing of RAG; the CLI
// wires this extension in). The routes use the server's engine for embeddings (ServerContext::embed) and its scheduler
// for answers (ServerContext::submit), so an ask is queued, admitted and batched like any
// other request and runs in its own sequence.
#pragma once

#include <string>

#include "memory/chunker.h"
#include "server/server_context.h"

namespace kvrag::memory_service {

struct HttpMemoryConfig {
    std::string dir;                 // --memory DIR
    memory::ChunkOptions chunking;           // --chunk-tokens / --chunk-overlap
    std::string chat_template;       // forced template name ("" = the model's)
    size_t max_upload_bytes = 64u << 20;  // per file; an /upload body may hold 4 times this
    std::string upload_temp_dir;     // where /upload bodies are streamed ("" = the store's
                                     // directory, or the system temp dir for a PostgreSQL store)
};

// Add the result to ServeConfig::extensions. on_ready opens the store (an error stops the
// server: bad directory, another schema version).
server::ServerExtension memory_extension(const HttpMemoryConfig& config);

}  // namespace kvrag::memory_service
