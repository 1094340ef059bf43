#include "metald/store/db.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <thread>

namespace metald::store {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/metald_db_test_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string File(const char* name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

const std::vector<Migration> kTwoSteps = {
    {1, "CREATE TABLE t(k TEXT PRIMARY KEY, v INTEGER NOT NULL CHECK (v >= 0))"},
    {2, "CREATE TABLE u(id INTEGER PRIMARY KEY, t_k TEXT REFERENCES t(k))"},
};

DatabaseOptions Opts(std::string path) {
  DatabaseOptions o;
  o.path = std::move(path);
  o.now_unix_ns = [] { return int64_t{42}; };
  return o;
}

base::Result<int64_t> QueryInt(Database& db, const std::string& sql) {
  int64_t v = -1;
  RETURN_IF_ERROR(db.Read([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(Statement q, c.Prepare(sql));
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) v = q.ColumnInt64(0);
    return base::OkStatus();
  }));
  return v;
}

base::Status Insert(Database& db, const std::string& k, int64_t v) {
  return db.Write([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(Statement ins, c.Prepare("INSERT INTO t(k, v) VALUES (?1, ?2)"));
    ins.Bind(1, k).Bind(2, v);
    return ins.Run();
  });
}

TEST(StatusFromSqliteTest, MapsCodes) {
  EXPECT_EQ(StatusFromSqlite(SQLITE_BUSY, "ctx", "m").code(), base::StatusCode::kUnavailable);
  EXPECT_EQ(StatusFromSqlite(SQLITE_BUSY_SNAPSHOT, "ctx", "m").code(),
            base::StatusCode::kUnavailable);
  EXPECT_EQ(StatusFromSqlite(SQLITE_LOCKED, "ctx", "m").code(), base::StatusCode::kUnavailable);
  EXPECT_EQ(StatusFromSqlite(SQLITE_FULL, "insert", "database or disk is full"),
            base::ResourceExhaustedError("Disk full: insert: database or disk is full"));
  EXPECT_EQ(StatusFromSqlite(SQLITE_NOMEM, "ctx", "m").code(),
            base::StatusCode::kResourceExhausted);
  EXPECT_EQ(StatusFromSqlite(SQLITE_CONSTRAINT_UNIQUE, "ctx", "m").code(),
            base::StatusCode::kAlreadyExists);
  EXPECT_EQ(StatusFromSqlite(SQLITE_CONSTRAINT_PRIMARYKEY, "ctx", "m").code(),
            base::StatusCode::kAlreadyExists);
  EXPECT_EQ(StatusFromSqlite(SQLITE_CONSTRAINT_FOREIGNKEY, "ctx", "m").code(),
            base::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StatusFromSqlite(SQLITE_CONSTRAINT_CHECK, "ctx", "m").code(),
            base::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StatusFromSqlite(SQLITE_CORRUPT, "ctx", "m"), base::InternalError("ctx: m"));
  EXPECT_EQ(StatusFromSqlite(SQLITE_IOERR_WRITE, "ctx", "m").code(), base::StatusCode::kInternal);
}

TEST(DatabaseTest, InMemoryAppliesMigrations) {
  auto db = Database::Open(Opts(":memory:"), kTwoSteps);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_TRUE((*db)->in_memory());
  EXPECT_EQ((*db)->schema_version(), 2);
  EXPECT_EQ(*QueryInt(**db, "SELECT COUNT(*) FROM schema_migrations"), 2);
  EXPECT_EQ(*QueryInt(**db, "SELECT MIN(applied_at_ns) FROM schema_migrations"), 42);
  EXPECT_TRUE(Insert(**db, "a", 1).ok());
  EXPECT_EQ(*QueryInt(**db, "SELECT v FROM t WHERE k = 'a'"), 1);
}

TEST(DatabaseTest, FileDatabaseUsesWalAndMigratesOnce) {
  TempDir dir;
  const std::string path = dir.File("m.db");
  {
    auto db = Database::Open(Opts(path), {kTwoSteps[0]});
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    EXPECT_EQ((*db)->schema_version(), 1);
    ASSERT_TRUE(Insert(**db, "kept", 7).ok());
    base::Status st = (*db)->Read([](Connection& c) -> base::Status {
      ASSIGN_OR_RETURN(Statement q, c.Prepare("PRAGMA journal_mode"));
      ASSIGN_OR_RETURN(bool row, q.Step());
      EXPECT_TRUE(row);
      EXPECT_EQ(q.ColumnText(0), "wal");
      return base::OkStatus();
    });
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  for (int i = 0; i < 2; ++i) {  // Opening twice applies step 2 once and never re-runs step 1.
    auto db = Database::Open(Opts(path), kTwoSteps);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    EXPECT_EQ((*db)->schema_version(), 2);
    EXPECT_EQ(*QueryInt(**db, "SELECT COUNT(*) FROM schema_migrations"), 2);
    EXPECT_EQ(*QueryInt(**db, "SELECT v FROM t WHERE k = 'kept'"), 7);
  }
  // A binary that knows fewer steps than the file refuses it.
  auto old = Database::Open(Opts(path), {kTwoSteps[0]});
  ASSERT_FALSE(old.ok());
  EXPECT_EQ(old.status().code(), base::StatusCode::kFailedPrecondition);
}

TEST(DatabaseTest, BadMigrationsAreRefused) {
  auto gap = Database::Open(Opts(":memory:"), {{1, "SELECT 1"}, {3, "SELECT 1"}});
  EXPECT_EQ(gap.status().code(), base::StatusCode::kInternal);

  TempDir dir;
  const std::string path = dir.File("bad.db");
  auto broken = Database::Open(Opts(path), {kTwoSteps[0], {2, "CREATE TABLE oops("}});
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("Migration 2"), std::string::npos)
      << broken.status().ToString();
  // Step 1 stayed applied, step 2 left no trace and can be applied by a fixed binary.
  auto fixed = Database::Open(Opts(path), kTwoSteps);
  ASSERT_TRUE(fixed.ok()) << fixed.status().ToString();
  EXPECT_EQ((*fixed)->schema_version(), 2);
}

TEST(DatabaseTest, WriteRollsBackOnError) {
  auto db = Database::Open(Opts(":memory:"), kTwoSteps);
  ASSERT_TRUE(db.ok());
  base::Status st = (*db)->Write([](Connection& c) -> base::Status {
    RETURN_IF_ERROR(c.Exec("INSERT INTO t(k, v) VALUES ('x', 1)"));
    return base::AbortedError("changed my mind");
  });
  EXPECT_EQ(st, base::AbortedError("changed my mind"));
  EXPECT_EQ(*QueryInt(**db, "SELECT COUNT(*) FROM t"), 0);
}

TEST(DatabaseTest, ConstraintsMapToStatus) {
  auto db = Database::Open(Opts(":memory:"), kTwoSteps);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE(Insert(**db, "a", 1).ok());
  EXPECT_EQ(Insert(**db, "a", 2).code(), base::StatusCode::kAlreadyExists);
  EXPECT_EQ(Insert(**db, "b", -1).code(), base::StatusCode::kFailedPrecondition);
  base::Status fk = (*db)->Write(
      [](Connection& c) { return c.Exec("INSERT INTO u(id, t_k) VALUES (1, 'missing')"); });
  EXPECT_EQ(fk.code(), base::StatusCode::kFailedPrecondition) << fk.ToString();  // foreign_keys=ON
  EXPECT_EQ(*QueryInt(**db, "SELECT COUNT(*) FROM t"), 1);
}

TEST(DatabaseTest, ReadersAreQueryOnly) {
  TempDir dir;
  auto db = Database::Open(Opts(dir.File("ro.db")), kTwoSteps);
  ASSERT_TRUE(db.ok());
  base::Status st =
      (*db)->Read([](Connection& c) { return c.Exec("INSERT INTO t(k, v) VALUES ('x', 1)"); });
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(*QueryInt(**db, "SELECT COUNT(*) FROM t"), 0);
}

TEST(DatabaseTest, FullDiskIsResourceExhausted) {
  for (const char* where : {"memory", "file"}) {
    TempDir dir;
    DatabaseOptions o = Opts(std::string(where) == "memory" ? ":memory:" : dir.File("full.db"));
    o.max_page_count = 8;  // Pages of 4 KiB: room for the schema and a little data.
    auto db = Database::Open(o, kTwoSteps);
    ASSERT_TRUE(db.ok()) << where << ": " << db.status().ToString();
    base::Status st;
    int inserted = 0;
    for (int i = 0; i < 10000 && st.ok(); ++i) {
      st = Insert(**db, std::to_string(i) + std::string(500, 'x'), i);
      if (st.ok()) ++inserted;
    }
    EXPECT_EQ(st.code(), base::StatusCode::kResourceExhausted) << where << ": " << st.ToString();
    EXPECT_EQ(st.message().rfind("Disk full", 0), 0u) << st.message();
    // The failed transaction was rolled back; earlier ones are intact and the db still serves.
    EXPECT_EQ(*QueryInt(**db, "SELECT COUNT(*) FROM t"), inserted) << where;
    EXPECT_TRUE((*db)->Write([](Connection& c) { return c.Exec("DELETE FROM t"); }).ok());
    EXPECT_TRUE(Insert(**db, "after", 1).ok()) << where;
  }
}

TEST(DatabaseTest, ConcurrentReadersAndWriter) {
  TempDir dir;
  auto db = Database::Open(Opts(dir.File("c.db")), kTwoSteps);
  ASSERT_TRUE(db.ok());
  constexpr int kWrites = 200;
  std::atomic<bool> writer_done{false};
  std::thread writer([&] {
    for (int i = 0; i < kWrites; ++i) EXPECT_TRUE(Insert(**db, std::to_string(i), i).ok());
    writer_done = true;
  });
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      int64_t last = 0;
      // Stop once every write is visible, or after the writer finished (so a failed write
      // cannot make this loop spin forever).
      bool final_pass = false;
      while (last < kWrites && !final_pass) {
        final_pass = writer_done.load();
        auto n = QueryInt(**db, "SELECT COUNT(*) FROM t");
        ASSERT_TRUE(n.ok()) << n.status().ToString();
        ASSERT_GE(*n, last);  // Snapshots never go back in time.
        last = *n;
      }
    });
  }
  writer.join();
  for (auto& t : readers) t.join();
  EXPECT_EQ(*QueryInt(**db, "SELECT COUNT(*) FROM t"), kWrites);
}

}  // namespace
}  // namespace metald::store
