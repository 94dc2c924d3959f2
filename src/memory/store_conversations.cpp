// The Store's conversations: turns of one conversation id, numbered from 0 in order.
#include "memory/sqlite_store.h"

#include "memory/sqlite_db.h"

namespace kvrag::memory {

Result<std::vector<Turn>> SqliteStore::conversation(const std::string& conversation_id) {
    std::lock_guard lk(mu_);
    Stmt s(db_, "SELECT role, content, n_tokens FROM conversations WHERE id = ? ORDER BY turn");
    if (!s.ok()) return s.error();
    s.bind(1, conversation_id);
    std::vector<Turn> out;
    while (s.step()) out.push_back(Turn{s.text(0), s.text(1), static_cast<int32_t>(s.i64(2))});
    if (s.failed()) return s.error();
    return out;
}

Result<void> SqliteStore::append_turns(const std::string& conversation_id, const std::vector<Turn>& turns) {
    std::lock_guard lk(mu_);
    Transaction tx(db_);
    if (auto r = tx.begin(); !r) return r;
    int64_t next = 0;
    {
        Stmt s(db_, "SELECT coalesce(max(turn) + 1, 0) FROM conversations WHERE id = ?");
        if (!s.ok()) return s.error();
        s.bind(1, conversation_id);
        if (s.step()) next = s.i64(0);
        if (s.failed()) return s.error();
    }
    for (const auto& t : turns) {
        auto r = run(db_, "INSERT INTO conversations(id, turn, role, content, n_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                     conversation_id, next++, t.role, t.content, static_cast<int64_t>(t.n_tokens), now_seconds());
        if (!r) return r.error();
    }
    return tx.commit();
}

Result<int64_t> SqliteStore::delete_conversation(const std::string& conversation_id) {
    std::lock_guard lk(mu_);
    return run(db_, "DELETE FROM conversations WHERE id = ?", conversation_id);
}

}  // namespace kvrag::memory
