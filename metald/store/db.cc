#include "metald/store/db.h"

#include <chrono>
#include <string>
#include <utility>

namespace metald::store {
namespace {

std::string Concat(std::string_view a, std::string_view b) {
  std::string s(a);
  s += ": ";
  s += b;
  return s;
}

base::Status ConnError(sqlite3* db, int rc, std::string_view context) {
  return StatusFromSqlite(rc, context, db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

}  // namespace

base::Status StatusFromSqlite(int rc, std::string_view context, std::string_view sqlite_message) {
  const int primary = rc & 0xff;
  switch (primary) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return base::UnavailableError(Concat(Concat("Database is busy", context), sqlite_message));
    case SQLITE_FULL:
      return base::ResourceExhaustedError(Concat(Concat("Disk full", context), sqlite_message));
    case SQLITE_NOMEM:
      return base::ResourceExhaustedError(Concat(Concat("Out of memory", context), sqlite_message));
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return base::AlreadyExistsError(Concat(context, sqlite_message));
      }
      return base::FailedPreconditionError(Concat(context, sqlite_message));
    default:
      return base::InternalError(Concat(context, sqlite_message));
  }
}

// ---- Statement ----

Statement::Statement(Statement&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)),
      stmt_(std::exchange(other.stmt_, nullptr)),
      bind_error_(other.bind_error_) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    if (stmt_ != nullptr) sqlite3_finalize(stmt_);
    db_ = std::exchange(other.db_, nullptr);
    stmt_ = std::exchange(other.stmt_, nullptr);
    bind_error_ = other.bind_error_;
  }
  return *this;
}

Statement::~Statement() {
  if (stmt_ != nullptr) sqlite3_finalize(stmt_);
}

void Statement::NoteBind(int rc) {
  if (rc != SQLITE_OK && bind_error_ == SQLITE_OK) bind_error_ = rc;
}

Statement& Statement::Bind(int index, int64_t value) {
  NoteBind(sqlite3_bind_int64(stmt_, index, value));
  return *this;
}

Statement& Statement::Bind(int index, std::string_view value) {
  // A non-null pointer even for "" so the value binds as '' and not NULL.
  NoteBind(sqlite3_bind_text64(stmt_, index, value.data() != nullptr ? value.data() : "",
                               value.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  return *this;
}

Statement& Statement::BindNull(int index) {
  NoteBind(sqlite3_bind_null(stmt_, index));
  return *this;
}

base::Status Statement::Error(int rc) const {
  const char* sql = stmt_ != nullptr ? sqlite3_sql(stmt_) : nullptr;
  std::string context = "SQL statement";
  if (sql != nullptr) {
    // The first words identify the statement in logs without dumping bound values.
    std::string_view s(sql);
    context = std::string(s.substr(0, 40));
  }
  return ConnError(db_, rc, context);
}

base::Result<bool> Statement::Step() {
  if (bind_error_ != SQLITE_OK) return Error(bind_error_);
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return Error(sqlite3_extended_errcode(db_));
}

base::Status Statement::Run() {
  ASSIGN_OR_RETURN(bool row, Step());
  while (row) {
    ASSIGN_OR_RETURN(row, Step());
  }
  return base::OkStatus();
}

void Statement::Reset() { sqlite3_reset(stmt_); }

int64_t Statement::ColumnInt64(int index) const { return sqlite3_column_int64(stmt_, index); }

std::string Statement::ColumnText(int index) const {
  const unsigned char* text = sqlite3_column_text(stmt_, index);
  if (text == nullptr) return std::string();
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(sqlite3_column_bytes(stmt_, index)));
}

bool Statement::ColumnIsNull(int index) const {
  return sqlite3_column_type(stmt_, index) == SQLITE_NULL;
}

// ---- Connection ----

Connection::~Connection() { sqlite3_close_v2(db_); }

base::Result<Statement> Connection::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    if (stmt != nullptr) sqlite3_finalize(stmt);
    return ConnError(db_, sqlite3_extended_errcode(db_), "Prepare");
  }
  return Statement(db_, stmt);
}

base::Status Connection::Exec(std::string_view sql) {
  std::string copy(sql);  // sqlite3_exec needs NUL termination.
  char* err = nullptr;
  const int rc = sqlite3_exec(db_, copy.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return StatusFromSqlite(sqlite3_extended_errcode(db_), "Exec", msg);
  }
  return base::OkStatus();
}

int64_t Connection::changes() const { return sqlite3_changes64(db_); }
int64_t Connection::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

// ---- Database ----

Database::Database(DatabaseOptions options, std::unique_ptr<Connection> writer)
    : options_(std::move(options)),
      in_memory_(options_.path == ":memory:"),
      writer_(std::move(writer)) {}

Database::~Database() = default;

base::Result<std::unique_ptr<Connection>> Database::OpenConnection(bool reader) const {
  sqlite3* raw = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(options_.path.c_str(), &raw, flags, nullptr);
  // sqlite3_open_v2 returns a handle even on failure; the Connection closes it.
  auto conn = std::unique_ptr<Connection>(new Connection(raw));
  if (rc != SQLITE_OK) {
    return ConnError(raw, rc, "Open database " + options_.path);
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, options_.busy_timeout_ms);
  if (reader) {
    RETURN_IF_ERROR(conn->Exec("PRAGMA query_only=ON"));
    return conn;
  }
  RETURN_IF_ERROR(conn->Exec("PRAGMA foreign_keys=ON"));
  if (options_.path != ":memory:") {
    ASSIGN_OR_RETURN(Statement wal, conn->Prepare("PRAGMA journal_mode=WAL"));
    ASSIGN_OR_RETURN(bool row, wal.Step());
    if (!row || wal.ColumnText(0) != "wal") {
      return base::InternalError("Database " + options_.path + " cannot use WAL journal mode");
    }
  }
  RETURN_IF_ERROR(conn->Exec("PRAGMA synchronous=NORMAL"));
  if (options_.max_page_count > 0) {
    RETURN_IF_ERROR(conn->Exec("PRAGMA max_page_count=" + std::to_string(options_.max_page_count)));
  }
  return conn;
}

base::Result<std::unique_ptr<Database>> Database::Open(DatabaseOptions options,
                                                       const std::vector<Migration>& migrations) {
  if (options.path.empty()) return base::InvalidArgumentError("Database path is required");
  if (!options.now_unix_ns) {
    options.now_unix_ns = [] {
      return static_cast<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
    };
  }
  for (size_t i = 0; i < migrations.size(); ++i) {
    if (migrations[i].version != static_cast<int>(i) + 1) {
      return base::InternalError("Migration list must be numbered 1, 2, 3, ... without gaps");
    }
  }
  std::unique_ptr<Database> db(new Database(std::move(options), nullptr));
  ASSIGN_OR_RETURN(db->writer_, db->OpenConnection(/*reader=*/false));
  RETURN_IF_ERROR(db->Migrate(migrations));
  return db;
}

base::Status Database::Migrate(const std::vector<Migration>& migrations) {
  RETURN_IF_ERROR(Write([](Connection& c) {
    return c.Exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY,"
        " applied_at_ns INTEGER NOT NULL)");
  }));
  for (const Migration& m : migrations) {
    // Version check and migration in one IMMEDIATE transaction, so two processes opening the
    // same file at once cannot both apply a step.
    RETURN_IF_ERROR(Write([&](Connection& c) -> base::Status {
      ASSIGN_OR_RETURN(Statement q,
                       c.Prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"));
      ASSIGN_OR_RETURN(bool row, q.Step());
      const int stored = row ? static_cast<int>(q.ColumnInt64(0)) : 0;
      if (stored >= m.version) return base::OkStatus();
      RETURN_IF_ERROR(c.Exec(m.sql).WithContext("Migration " + std::to_string(m.version)));
      ASSIGN_OR_RETURN(Statement ins, c.Prepare("INSERT INTO schema_migrations(version, "
                                                "applied_at_ns) VALUES (?1, ?2)"));
      ins.Bind(1, int64_t{m.version}).Bind(2, options_.now_unix_ns());
      RETURN_IF_ERROR(ins.Run());
      return base::OkStatus();
    }));
  }
  int stored = 0;
  RETURN_IF_ERROR(Write([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(Statement q,
                     c.Prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"));
    ASSIGN_OR_RETURN(bool row, q.Step());
    stored = row ? static_cast<int>(q.ColumnInt64(0)) : 0;
    return base::OkStatus();
  }));
  if (stored > static_cast<int>(migrations.size())) {
    return base::FailedPreconditionError("Database " + options_.path + " has schema version " +
                                         std::to_string(stored) + ", newer than this binary's " +
                                         std::to_string(migrations.size()));
  }
  schema_version_ = stored;
  return base::OkStatus();
}

base::Status Database::Write(const std::function<base::Status(Connection&)>& fn) {
  std::lock_guard<std::mutex> lock(writer_mu_);
  sqlite3* raw = writer_->raw();
  RETURN_IF_ERROR(writer_->Exec("BEGIN IMMEDIATE"));
  base::Status st = fn(*writer_);
  if (st.ok()) {
    st = writer_->Exec("COMMIT");
    if (st.ok()) return st;
  }
  // SQLite rolls some failures (e.g. SQLITE_FULL) back by itself; only roll back what is open.
  if (sqlite3_get_autocommit(raw) == 0) (void)writer_->Exec("ROLLBACK");
  return st;
}

base::Result<std::unique_ptr<Connection>> Database::AcquireReader() {
  {
    std::lock_guard<std::mutex> lock(readers_mu_);
    if (!idle_readers_.empty()) {
      auto conn = std::move(idle_readers_.back());
      idle_readers_.pop_back();
      return conn;
    }
  }
  return OpenConnection(/*reader=*/true);
}

void Database::ReleaseReader(std::unique_ptr<Connection> conn) {
  std::lock_guard<std::mutex> lock(readers_mu_);
  if (idle_readers_.size() < options_.max_idle_readers) idle_readers_.push_back(std::move(conn));
}

base::Status Database::Read(const std::function<base::Status(Connection&)>& fn) {
  auto run = [&fn](Connection& c) -> base::Status {
    RETURN_IF_ERROR(c.Exec("BEGIN"));
    base::Status st = fn(c);
    // A read transaction has nothing to keep; ending it releases the WAL snapshot.
    if (sqlite3_get_autocommit(c.raw()) == 0) (void)c.Exec(st.ok() ? "COMMIT" : "ROLLBACK");
    return st;
  };
  if (in_memory_) {
    std::lock_guard<std::mutex> lock(writer_mu_);
    return run(*writer_);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, AcquireReader());
  base::Status st = run(*conn);
  ReleaseReader(std::move(conn));
  return st;
}

}  // namespace metald::store
