#include "metald/store/repository.h"

#include <algorithm>
#include <chrono>
#include <string_view>
#include <utility>

#include "metald/store/vm_spec_json.h"

namespace metald::store {
namespace {

using model::VmState;

// Schema. Append new steps; never edit an applied one.
constexpr std::string_view kSchemaV1 = R"sql(
CREATE TABLE vms (
  id              TEXT PRIMARY KEY NOT NULL,
  customer_id     TEXT NOT NULL,
  spec_json       TEXT NOT NULL,
  state           TEXT NOT NULL,
  backend         TEXT NOT NULL,
  pid             INTEGER NOT NULL DEFAULT 0,
  pid_start_time  INTEGER NOT NULL DEFAULT 0,
  api_socket      TEXT NOT NULL DEFAULT '',
  jail_dir        TEXT NOT NULL DEFAULT '',
  idempotency_key TEXT,
  incarnation     INTEGER NOT NULL DEFAULT 0,
  created_at_ns   INTEGER NOT NULL,
  updated_at_ns   INTEGER NOT NULL
);
CREATE UNIQUE INDEX vms_customer_idempotency ON vms(customer_id, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX vms_customer_id ON vms(customer_id, id);
CREATE INDEX vms_customer_state_id ON vms(customer_id, state, id);
CREATE TABLE vm_transitions (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,
  vm_id       TEXT NOT NULL,
  customer_id TEXT NOT NULL,
  from_state  TEXT,
  to_state    TEXT NOT NULL,
  reason      TEXT NOT NULL,
  detail      TEXT NOT NULL DEFAULT '',
  at_ns       INTEGER NOT NULL
);
CREATE INDEX vm_transitions_vm ON vm_transitions(vm_id, seq);
CREATE INDEX vm_transitions_customer ON vm_transitions(customer_id, seq);
)sql";

constexpr std::string_view kVmColumns =
    "id, customer_id, spec_json, state, backend, pid, pid_start_time, api_socket, jail_dir, "
    "idempotency_key, incarnation, created_at_ns, updated_at_ns";

constexpr std::string_view kTransitionColumns =
    "seq, vm_id, customer_id, from_state, to_state, reason, detail, at_ns";

std::string NotFound(std::string_view id) {
  std::string msg = "VM ";
  msg += id;
  msg += " not found";
  return msg;
}

base::Result<VmRecord> ReadVm(const Statement& s) {
  VmRecord r;
  r.id = s.ColumnText(0);
  r.customer_id = s.ColumnText(1);
  auto spec = VmSpecFromJson(s.ColumnText(2));
  if (!spec.ok()) {
    return base::DataLossError("Stored spec of VM " + r.id +
                               " is unreadable: " + spec.status().message());
  }
  r.spec = std::move(spec).value();
  auto state = model::ParseVmState(s.ColumnText(3));
  if (!state) return base::DataLossError("Stored state of VM " + r.id + " is unknown");
  r.state = *state;
  auto backend = model::ParseBackendKind(s.ColumnText(4));
  if (!backend) return base::DataLossError("Stored backend of VM " + r.id + " is unknown");
  r.backend = *backend;
  r.process.pid = s.ColumnInt64(5);
  r.process.start_time = s.ColumnInt64(6);
  r.process.api_socket = s.ColumnText(7);
  r.process.jail_dir = s.ColumnText(8);
  r.idempotency_key = s.ColumnText(9);
  r.incarnation = s.ColumnInt64(10);
  r.created_unix_ns = s.ColumnInt64(11);
  r.updated_unix_ns = s.ColumnInt64(12);
  return r;
}

base::Result<TransitionRecord> ReadTransition(const Statement& s) {
  TransitionRecord t;
  t.seq = s.ColumnInt64(0);
  t.vm_id = s.ColumnText(1);
  t.customer_id = s.ColumnText(2);
  if (!s.ColumnIsNull(3)) {
    auto from = model::ParseVmState(s.ColumnText(3));
    if (!from) return base::DataLossError("Stored transition has an unknown state");
    t.from = *from;
  }
  auto to = model::ParseVmState(s.ColumnText(4));
  auto reason = model::ParseTransitionReason(s.ColumnText(5));
  if (!to || !reason) return base::DataLossError("Stored transition has an unknown state/reason");
  t.to = *to;
  t.reason = *reason;
  t.detail = s.ColumnText(6);
  t.at_unix_ns = s.ColumnInt64(7);
  return t;
}

// Reads the VM `id` through connection `c` (inside the caller's transaction). With a non-empty
// `customer_id` a VM of another customer is not found.
base::Result<VmRecord> SelectVm(Connection& c, const std::string& id,
                                const std::string* customer_id) {
  std::string sql = "SELECT ";
  sql += kVmColumns;
  sql += " FROM vms WHERE id = ?1";
  if (customer_id != nullptr) sql += " AND customer_id = ?2";
  ASSIGN_OR_RETURN(Statement q, c.Prepare(sql));
  q.Bind(1, id);
  if (customer_id != nullptr) q.Bind(2, *customer_id);
  ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return base::NotFoundError(NotFound(id));
  return ReadVm(q);
}

base::Status InsertTransition(Connection& c, const std::string& vm_id,
                              const std::string& customer_id, std::optional<VmState> from,
                              VmState to, model::TransitionReason reason, const std::string& detail,
                              int64_t at) {
  ASSIGN_OR_RETURN(Statement ins,
                   c.Prepare("INSERT INTO vm_transitions(vm_id, customer_id, from_state, "
                             "to_state, reason, detail, at_ns) VALUES (?1,?2,?3,?4,?5,?6,?7)"));
  ins.Bind(1, vm_id).Bind(2, customer_id);
  if (from) {
    ins.Bind(3, model::StateName(*from));
  } else {
    ins.BindNull(3);
  }
  ins.Bind(4, model::StateName(to)).Bind(5, model::ReasonName(reason)).Bind(6, detail).Bind(7, at);
  return ins.Run();
}

// ---- Page tokens: base64url("v1\n" + state filter + "\n" + last id), opaque to clients. ----

constexpr std::string_view kB64 =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string Base64UrlEncode(std::string_view in) {
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (unsigned char c : in) {
    buf = (buf << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kB64[(buf >> bits) & 63];
    }
  }
  if (bits > 0) out += kB64[(buf << (6 - bits)) & 63];
  return out;
}

std::optional<std::string> Base64UrlDecode(std::string_view in) {
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (char c : in) {
    const size_t v = kB64.find(c);
    if (v == std::string_view::npos) return std::nullopt;
    buf = (buf << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buf >> bits) & 0xff);
    }
  }
  return out;
}

std::string FilterKey(const std::vector<VmState>& states) {
  std::vector<std::string_view> names;
  for (VmState s : states) names.push_back(model::StateName(s));
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::string key;
  for (std::string_view n : names) {
    if (!key.empty()) key += ',';
    key += n;
  }
  return key;
}

std::string MakePageToken(const std::string& filter, const std::string& last_id) {
  std::string raw = "v1\n";
  raw += filter;
  raw += '\n';
  raw += last_id;
  return Base64UrlEncode(raw);
}

base::Result<std::string> ParsePageToken(const std::string& token, const std::string& filter) {
  auto raw = Base64UrlDecode(token);
  const base::Status bad = base::InvalidArgumentError("page_token is invalid");
  if (!raw || raw->rfind("v1\n", 0) != 0) return bad;
  std::string_view rest = std::string_view(*raw).substr(3);
  const size_t nl = rest.find('\n');
  if (nl == std::string_view::npos) return bad;
  if (rest.substr(0, nl) != filter) {
    return base::InvalidArgumentError("page_token was issued for a different state filter");
  }
  std::string last_id(rest.substr(nl + 1));
  if (last_id.empty()) return bad;
  return last_id;
}

// Steps `q` to its end, appending read(q) for every row to *out.
template <typename T, typename ReadFn>
base::Status AppendRows(Statement& q, ReadFn read, std::vector<T>* out) {
  for (;;) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return base::OkStatus();
    ASSIGN_OR_RETURN(T value, read(q));
    out->push_back(std::move(value));
  }
}

}  // namespace

const std::vector<Migration>& VmRepository::Migrations() {
  static const auto* kMigrations = new std::vector<Migration>{{1, kSchemaV1}};
  return *kMigrations;
}

base::Result<std::unique_ptr<VmRepository>> VmRepository::Open(DatabaseOptions db_options,
                                                               RepositoryOptions options) {
  if (!db_options.now_unix_ns) db_options.now_unix_ns = options.now_unix_ns;
  ASSIGN_OR_RETURN(std::unique_ptr<Database> db,
                   Database::Open(std::move(db_options), Migrations()));
  auto repo = std::make_unique<VmRepository>(db.get(), std::move(options));
  repo->owned_db_ = std::move(db);
  return repo;
}

VmRepository::VmRepository(Database* db, RepositoryOptions options)
    : db_(db), options_(std::move(options)) {
  if (!options_.now_unix_ns) {
    options_.now_unix_ns = [] {
      return static_cast<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
    };
  }
  if (options_.default_page_size <= 0) options_.default_page_size = 50;
  if (options_.max_page_size < options_.default_page_size) {
    options_.max_page_size = options_.default_page_size;
  }
}

base::Result<CreateResult> VmRepository::Create(const NewVm& vm) {
  if (vm.id.empty()) return base::InvalidArgumentError("VM id is required");
  if (vm.customer_id.empty()) return base::InvalidArgumentError("Customer id is required");
  const std::string spec_json = VmSpecToJson(vm.spec);
  CreateResult result;
  RETURN_IF_ERROR(db_->Write([&](Connection& c) -> base::Status {
    if (!vm.idempotency_key.empty()) {
      std::string sql = "SELECT ";
      sql += kVmColumns;
      sql += " FROM vms WHERE customer_id = ?1 AND idempotency_key = ?2";
      ASSIGN_OR_RETURN(Statement q, c.Prepare(sql));
      q.Bind(1, vm.customer_id).Bind(2, vm.idempotency_key);
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (row) {
        ASSIGN_OR_RETURN(VmRecord existing, ReadVm(q));
        if (existing.spec != vm.spec || existing.backend != vm.backend) {
          return base::AlreadyExistsError("Idempotency key \"" + vm.idempotency_key +
                                          "\" was already used with a different config");
        }
        result.record = std::move(existing);
        result.created = false;
        return base::OkStatus();
      }
    }
    const int64_t now = options_.now_unix_ns();
    ASSIGN_OR_RETURN(Statement ins,
                     c.Prepare("INSERT INTO vms(id, customer_id, spec_json, state, backend, "
                               "idempotency_key, created_at_ns, updated_at_ns) "
                               "VALUES (?1,?2,?3,?4,?5,?6,?7,?7)"));
    ins.Bind(1, vm.id)
        .Bind(2, vm.customer_id)
        .Bind(3, spec_json)
        .Bind(4, model::StateName(VmState::kCreating))
        .Bind(5, model::BackendName(vm.backend))
        .Bind(7, now);
    if (vm.idempotency_key.empty()) {
      ins.BindNull(6);
    } else {
      ins.Bind(6, vm.idempotency_key);
    }
    base::Status st = ins.Run();
    if (st.code() == base::StatusCode::kAlreadyExists) {
      return base::AlreadyExistsError("VM " + vm.id + " already exists");
    }
    RETURN_IF_ERROR(st);
    RETURN_IF_ERROR(InsertTransition(c, vm.id, vm.customer_id, std::nullopt, VmState::kCreating,
                                     model::TransitionReason::kUserRequest, "", now));
    ASSIGN_OR_RETURN(result.record, SelectVm(c, vm.id, nullptr));
    result.created = true;
    return base::OkStatus();
  }));
  return result;
}

base::Result<VmRecord> VmRepository::Get(const std::string& customer_id, const std::string& id) {
  VmRecord out;
  RETURN_IF_ERROR(db_->Read([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(out, SelectVm(c, id, &customer_id));
    return base::OkStatus();
  }));
  return out;
}

base::Result<VmRecord> VmRepository::GetAny(const std::string& id) {
  VmRecord out;
  RETURN_IF_ERROR(db_->Read([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(out, SelectVm(c, id, nullptr));
    return base::OkStatus();
  }));
  return out;
}

base::Result<ListPage> VmRepository::List(const ListRequest& request) {
  if (request.customer_id.empty()) return base::InvalidArgumentError("Customer id is required");
  if (request.page_size < 0) return base::InvalidArgumentError("page_size must not be negative");
  const int page_size = request.page_size == 0
                            ? options_.default_page_size
                            : std::min(request.page_size, options_.max_page_size);
  const std::string filter = FilterKey(request.states);
  std::string after;
  if (!request.page_token.empty()) {
    ASSIGN_OR_RETURN(after, ParsePageToken(request.page_token, filter));
  }

  std::string sql = "SELECT ";
  sql += kVmColumns;
  sql += " FROM vms WHERE customer_id = ?1";
  int next_param = 2;
  if (!after.empty()) {
    sql += " AND id > ?" + std::to_string(next_param++);
  }
  const int first_state_param = next_param;
  if (!request.states.empty()) {
    sql += " AND state IN (";
    for (size_t i = 0; i < request.states.size(); ++i) {
      if (i > 0) sql += ',';
      sql += "?" + std::to_string(next_param++);
    }
    sql += ')';
  }
  sql += " ORDER BY id LIMIT ?" + std::to_string(next_param);

  ListPage page;
  RETURN_IF_ERROR(db_->Read([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(Statement q, c.Prepare(sql));
    q.Bind(1, request.customer_id);
    if (!after.empty()) q.Bind(2, after);
    for (size_t i = 0; i < request.states.size(); ++i) {
      q.Bind(first_state_param + static_cast<int>(i), model::StateName(request.states[i]));
    }
    q.Bind(next_param, int64_t{page_size} + 1);  // One extra row tells whether a next page exists.
    return AppendRows<VmRecord>(q, ReadVm, &page.vms);
  }));
  if (static_cast<int>(page.vms.size()) > page_size) {
    page.vms.resize(static_cast<size_t>(page_size));
    page.next_page_token = MakePageToken(filter, page.vms.back().id);
  }
  return page;
}

base::Result<std::vector<VmRecord>> VmRepository::ListAll() {
  std::vector<VmRecord> out;
  RETURN_IF_ERROR(db_->Read([&](Connection& c) -> base::Status {
    std::string sql = "SELECT ";
    sql += kVmColumns;
    sql += " FROM vms ORDER BY id";
    ASSIGN_OR_RETURN(Statement q, c.Prepare(sql));
    return AppendRows<VmRecord>(q, ReadVm, &out);
  }));
  return out;
}

base::Result<int64_t> VmRepository::CountByCustomer(const std::string& customer_id) {
  int64_t count = 0;
  RETURN_IF_ERROR(db_->Read([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(Statement q, c.Prepare("SELECT COUNT(*) FROM vms WHERE customer_id = ?1"));
    q.Bind(1, customer_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) count = q.ColumnInt64(0);
    return base::OkStatus();
  }));
  return count;
}

base::Result<VmRecord> VmRepository::UpdateState(const std::string& id, VmState expected_from,
                                                 VmState to, model::TransitionReason reason,
                                                 const std::string& detail) {
  if (to == VmState::kDeleted) {
    return base::FailedPreconditionError("VM " + id + " can only reach DELETED through Delete");
  }
  RETURN_IF_ERROR(model::CheckTransition(expected_from, to));
  VmRecord out;
  RETURN_IF_ERROR(db_->Write([&](Connection& c) -> base::Status {
    const int64_t now = options_.now_unix_ns();
    ASSIGN_OR_RETURN(Statement upd, c.Prepare("UPDATE vms SET state = ?1, updated_at_ns = ?2 "
                                              "WHERE id = ?3 AND state = ?4"));
    upd.Bind(1, model::StateName(to))
        .Bind(2, now)
        .Bind(3, id)
        .Bind(4, model::StateName(expected_from));
    RETURN_IF_ERROR(upd.Run());
    if (c.changes() == 0) {
      ASSIGN_OR_RETURN(VmRecord current, SelectVm(c, id, nullptr));
      std::string msg = "VM " + id + " is in state ";
      msg += model::StateName(current.state);
      msg += ", not ";
      msg += model::StateName(expected_from);
      return base::FailedPreconditionError(std::move(msg));
    }
    ASSIGN_OR_RETURN(out, SelectVm(c, id, nullptr));
    return InsertTransition(c, id, out.customer_id, expected_from, to, reason, detail, now);
  }));
  return out;
}

base::Result<VmRecord> VmRepository::UpdateProcess(const std::string& id,
                                                   const ProcessInfo& process) {
  VmRecord out;
  RETURN_IF_ERROR(db_->Write([&](Connection& c) -> base::Status {
    // A new incarnation when a process is set whose identity differs from the stored one.
    ASSIGN_OR_RETURN(
        Statement upd,
        c.Prepare("UPDATE vms SET incarnation = incarnation + "
                  "  (CASE WHEN ?1 != 0 AND (pid != ?1 OR pid_start_time != ?2) THEN 1 ELSE 0 END),"
                  " pid = ?1, pid_start_time = ?2, api_socket = ?3, jail_dir = ?4,"
                  " updated_at_ns = ?5 WHERE id = ?6"));
    upd.Bind(1, process.pid)
        .Bind(2, process.start_time)
        .Bind(3, process.api_socket)
        .Bind(4, process.jail_dir)
        .Bind(5, options_.now_unix_ns())
        .Bind(6, id);
    RETURN_IF_ERROR(upd.Run());
    if (c.changes() == 0) return base::NotFoundError(NotFound(id));
    ASSIGN_OR_RETURN(out, SelectVm(c, id, nullptr));
    return base::OkStatus();
  }));
  return out;
}

base::Status VmRepository::Delete(const std::string& id, model::TransitionReason reason) {
  return db_->Write([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(VmRecord current, SelectVm(c, id, nullptr));
    if (current.state != VmState::kDeleting) {
      std::string msg = "Cannot remove VM " + id + " in state ";
      msg += model::StateName(current.state);
      msg += "; it must be DELETING";
      return base::FailedPreconditionError(std::move(msg));
    }
    ASSIGN_OR_RETURN(Statement del, c.Prepare("DELETE FROM vms WHERE id = ?1"));
    del.Bind(1, id);
    RETURN_IF_ERROR(del.Run());
    return InsertTransition(c, id, current.customer_id, VmState::kDeleting, VmState::kDeleted,
                            reason, "", options_.now_unix_ns());
  });
}

base::Result<std::vector<TransitionRecord>> VmRepository::Transitions(const std::string& id) {
  std::vector<TransitionRecord> out;
  RETURN_IF_ERROR(db_->Read([&](Connection& c) -> base::Status {
    std::string sql = "SELECT ";
    sql += kTransitionColumns;
    sql += " FROM vm_transitions WHERE vm_id = ?1 ORDER BY seq";
    ASSIGN_OR_RETURN(Statement q, c.Prepare(sql));
    q.Bind(1, id);
    return AppendRows<TransitionRecord>(q, ReadTransition, &out);
  }));
  return out;
}

base::Result<std::vector<TransitionRecord>> VmRepository::EventsSince(
    const std::string& customer_id, int64_t after_seq, int limit) {
  if (limit <= 0) limit = 1000;
  std::vector<TransitionRecord> out;
  RETURN_IF_ERROR(db_->Read([&](Connection& c) -> base::Status {
    std::string sql = "SELECT ";
    sql += kTransitionColumns;
    sql += " FROM vm_transitions WHERE seq > ?1";
    if (!customer_id.empty()) sql += " AND customer_id = ?3";
    sql += " ORDER BY seq LIMIT ?2";
    ASSIGN_OR_RETURN(Statement q, c.Prepare(sql));
    q.Bind(1, after_seq).Bind(2, int64_t{limit});
    if (!customer_id.empty()) q.Bind(3, customer_id);
    return AppendRows<TransitionRecord>(q, ReadTransition, &out);
  }));
  return out;
}

base::Result<int64_t> VmRepository::LastSeq() {
  int64_t seq = 0;
  RETURN_IF_ERROR(db_->Read([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(Statement q, c.Prepare("SELECT COALESCE(MAX(seq), 0) FROM vm_transitions"));
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) seq = q.ColumnInt64(0);
    return base::OkStatus();
  }));
  return seq;
}

}  // namespace metald::store
