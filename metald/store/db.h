#pragma once
// SQLite connection management for metald: one writer connection, a pool of reader connections,
// numbered schema migrations, and SQLite result codes turned into base::Status at this edge.
//
// Concurrency model: a Database is safe to use from any number of threads.
//  - Writes run through Write(): one writer connection, serialised by writer_mu_, each call one
//    BEGIN IMMEDIATE transaction. SQLite allows one writer per file anyway; queueing on our own
//    mutex instead of on SQLite's busy handler keeps waits fair and visible.
//  - Reads run through Read(): each call borrows a reader connection from a pool (a new one is
//    opened when none is idle, so each concurrently reading thread gets its own), runs one
//    deferred read transaction (a consistent WAL snapshot) and returns it. WAL readers never
//    block the writer and the writer never blocks them.
//  - For ":memory:" there is only one connection (separate connections would see separate
//    databases): Read() then runs on the writer connection under writer_mu_.
// A Connection / Statement is used by one thread at a time: only inside the callback it was
// handed to, never kept after the callback returns.
//
// Durability: journal_mode=WAL, synchronous=NORMAL (a committed transaction survives a process
// crash; a power loss may drop the last transactions but never corrupts the file).

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/status.h"

namespace metald::store {

// Maps a SQLite (extended) result code to a Status: SQLITE_BUSY/LOCKED -> unavailable,
// SQLITE_FULL -> resource_exhausted "Disk full", SQLITE_NOMEM -> resource_exhausted,
// UNIQUE/PRIMARYKEY constraint -> already_exists, other constraints -> failed_precondition,
// everything else -> internal. The message is "<context>: <sqlite message>". `rc` must not be
// SQLITE_OK/ROW/DONE.
base::Status StatusFromSqlite(int rc, std::string_view context, std::string_view sqlite_message);

// A prepared statement (RAII over sqlite3_stmt). Move-only. Bind indexes are 1-based; a bind
// error is remembered and returned by the next Step()/Run(). Column indexes are 0-based.
class Statement {
 public:
  Statement() = default;
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, std::string_view value);  // Copied (SQLITE_TRANSIENT).
  Statement& BindNull(int index);

  // Advances: true when a row is available, false when done; an error Status otherwise.
  base::Result<bool> Step();
  // Steps to completion, expecting no rows (INSERT/UPDATE/DELETE).
  base::Status Run();
  // Makes the statement runnable again with its bindings kept.
  void Reset();

  // REQUIRES: the last Step() returned true.
  int64_t ColumnInt64(int index) const;
  std::string ColumnText(int index) const;  // "" for NULL.
  bool ColumnIsNull(int index) const;

 private:
  friend class Connection;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  base::Status Error(int rc) const;
  void NoteBind(int rc);

  sqlite3* db_ = nullptr;         // Not owned.
  sqlite3_stmt* stmt_ = nullptr;  // Owned.
  int bind_error_ = SQLITE_OK;
};

// One SQLite connection. Owned by Database; handed to Write/Read callbacks by reference.
class Connection {
 public:
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Compiles one statement. Errors are internal (a bad SQL string is a programming error).
  base::Result<Statement> Prepare(std::string_view sql);
  // Runs one or more ';'-separated statements without results.
  base::Status Exec(std::string_view sql);
  // Rows changed by the last INSERT/UPDATE/DELETE on this connection.
  int64_t changes() const;
  int64_t last_insert_rowid() const;
  sqlite3* raw() const { return db_; }

 private:
  friend class Database;
  explicit Connection(sqlite3* db) : db_(db) {}
  sqlite3* db_;  // Owned.
};

// One numbered schema step. Versions start at 1 and increase by 1; each runs exactly once per
// database file, in its own transaction, recorded in schema_migrations(version, applied_at_ns).
struct Migration {
  int version;
  std::string_view sql;
};

struct DatabaseOptions {
  // File path, or ":memory:" for a private in-memory database (tests). Required.
  std::string path;
  // How long a connection waits for another process's lock before SQLITE_BUSY (-> unavailable).
  // Default: 5000 ms.
  int busy_timeout_ms = 5000;
  // Upper bound on the database size in pages (PRAGMA max_page_count on the writer); writes past
  // it fail like a full disk (resource_exhausted). Tests use it to simulate one. Default: 0 (no
  // limit beyond SQLite's own).
  int64_t max_page_count = 0;
  // Reader connections kept open when idle; extra ones are closed when returned. Default: 4.
  size_t max_idle_readers = 4;
  // Clock for schema_migrations.applied_at_ns, nanoseconds since the Unix epoch.
  // Default: std::chrono::system_clock.
  std::function<int64_t()> now_unix_ns;
};

class Database {
 public:
  // Opens (creating if missing) the database, applies the pragmas above, then every migration
  // whose version is above the stored one. Safe to call again on the same file: applied
  // migrations are skipped. Fails with failed_precondition if the file has a schema version newer
  // than `migrations` knows, internal for a malformed migration list, and with the mapped SQLite
  // error otherwise.
  static base::Result<std::unique_ptr<Database>> Open(DatabaseOptions options,
                                                      const std::vector<Migration>& migrations);
  ~Database();

  // Runs `fn` in one BEGIN IMMEDIATE transaction on the writer connection; commits when `fn`
  // returns OK, rolls back otherwise and returns `fn`'s Status (or the commit's error).
  // REQUIRES: not called from inside another Write/Read callback on this thread (deadlock).
  base::Status Write(const std::function<base::Status(Connection&)>& fn);

  // Runs `fn` in one read transaction (a consistent snapshot) on a reader connection. `fn` must
  // not write (reader connections are query_only). REQUIRES: as Write.
  base::Status Read(const std::function<base::Status(Connection&)>& fn);

  // Highest applied migration version.
  int schema_version() const { return schema_version_; }
  bool in_memory() const { return in_memory_; }

 private:
  Database(DatabaseOptions options, std::unique_ptr<Connection> writer);
  base::Status Migrate(const std::vector<Migration>& migrations);
  base::Result<std::unique_ptr<Connection>> OpenConnection(bool reader) const;
  base::Result<std::unique_ptr<Connection>> AcquireReader();
  void ReleaseReader(std::unique_ptr<Connection> conn);

  // Constant after construction.
  const DatabaseOptions options_;
  const bool in_memory_;
  int schema_version_ = 0;  // Set once by Open before the Database is shared.

  std::mutex writer_mu_;
  std::unique_ptr<Connection> writer_;  // Used only with writer_mu_ held.

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<Connection>> idle_readers_;  // Guarded by readers_mu_.
};

}  // namespace metald::store
