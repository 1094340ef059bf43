#pragma once
// metald/store: the VM repository, the one public entry of the store component.
//
// VmRepository keeps every VM metald manages (its spec, state, owning customer, backend and the
// identity of its VMM process) and a log of every state transition, in SQLite (db.h).
//
// Tenant isolation: every customer-facing read (Get, List, CountByCustomer, EventsSince with a
// customer) filters by customer_id in SQL, and a VM of another customer is reported exactly like
// a missing one (not_found "VM <id> not found"). GetAny / ListAll / UpdateState / UpdateProcess /
// Delete are by id only, for the service after it has checked ownership and for startup recovery.
//
// Consistency: UpdateState is a compare-and-set on the stored state, validated against
// model::CheckTransition, and writes its transition-log row in the same transaction; so the log
// and the vms table never disagree, and of several concurrent callers expecting the same state
// exactly one succeeds.
//
// Thread-safety: all methods are safe to call concurrently (Database serialises writes and gives
// each reader its own connection).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "metald/base/status.h"
#include "metald/model/backend_kind.h"
#include "metald/model/vm_spec.h"
#include "metald/model/vm_state.h"
#include "metald/store/db.h"

namespace metald::store {

// Identity of the VMM process serving a VM. pid + start_time identify one process even across
// pid reuse (start_time is the value the process component reads, e.g. /proc/<pid>/stat
// field 22). All zero/empty when no process exists.
struct ProcessInfo {
  int64_t pid = 0;
  int64_t start_time = 0;
  std::string api_socket;  // The VMM's API/QMP unix socket path, as seen by metald.
  std::string jail_dir;    // Root of the VM's jail (chroot) directory.
  friend bool operator==(const ProcessInfo&, const ProcessInfo&) = default;
};

struct VmRecord {
  std::string id;
  std::string customer_id;
  model::VmSpec spec;
  model::VmState state = model::VmState::kCreating;
  model::BackendKind backend = model::BackendKind::kQemu;
  ProcessInfo process;
  std::string idempotency_key;  // "" when the create call had none.
  // Number of VMM processes this VM has had: UpdateProcess with a new (pid, start_time)
  // increments it. Billing counters are cumulative per incarnation.
  int64_t incarnation = 0;
  int64_t created_unix_ns = 0;
  int64_t updated_unix_ns = 0;  // Last change of state or process.
  friend bool operator==(const VmRecord&, const VmRecord&) = default;
};

// What Create stores; the record starts in CREATING with incarnation 0.
struct NewVm {
  std::string id;           // Required; model::VmIdGenerator's format is expected, not enforced.
  std::string customer_id;  // Required.
  model::VmSpec spec;       // Stored as given; validate it first (model::ValidateSpec).
  model::BackendKind backend = model::BackendKind::kQemu;
  std::string idempotency_key;  // Optional; unique per customer.
};

struct CreateResult {
  VmRecord record;
  bool created = false;  // False when an earlier Create with the same idempotency key is returned.
};

// One row of the transition log. `seq` increases strictly across all VMs (a resume cursor for
// event streams). `from` is empty for the initial row written by Create (-> CREATING).
struct TransitionRecord {
  int64_t seq = 0;
  std::string vm_id;
  std::string customer_id;
  std::optional<model::VmState> from;
  model::VmState to = model::VmState::kCreating;
  model::TransitionReason reason = model::TransitionReason::kUserRequest;
  std::string detail;  // Free text, e.g. the backend's error or the exit status.
  int64_t at_unix_ns = 0;
  friend bool operator==(const TransitionRecord&, const TransitionRecord&) = default;
};

struct ListRequest {
  std::string customer_id;  // Required.
  // Maximum VMs per page; 0 = RepositoryOptions::default_page_size; above max_page_size it is
  // lowered to max_page_size; negative is invalid_argument.
  int page_size = 0;
  // "" for the first page, else a next_page_token from the previous page of the same request
  // (same customer and state filter; a token from a different filter is invalid_argument).
  std::string page_token;
  std::vector<model::VmState> states;  // Empty = every state.
};

struct ListPage {
  std::vector<VmRecord> vms;    // Ordered by id (= creation time for generated ids).
  std::string next_page_token;  // "" on the last page.
};

struct RepositoryOptions {
  // Timestamps for created/updated/transition rows, nanoseconds since the Unix epoch.
  // Default: std::chrono::system_clock.
  std::function<int64_t()> now_unix_ns;
  int default_page_size = 50;  // Default: 50.
  int max_page_size = 500;     // Default: 500.
};

class VmRepository {
 public:
  // The schema migrations this repository needs; pass them to Database::Open (Open() below does).
  static const std::vector<Migration>& Migrations();

  // Opens `db_options.path` with Migrations() and returns a repository owning the database.
  static base::Result<std::unique_ptr<VmRepository>> Open(DatabaseOptions db_options,
                                                          RepositoryOptions options = {});

  // Uses a database opened elsewhere with Migrations(). `db` is not owned and must outlive this.
  explicit VmRepository(Database* db, RepositoryOptions options = {});

  // Inserts a VM in CREATING and logs (none) -> CREATING with kUserRequest.
  // With an idempotency key already used by this customer: returns the earlier VM (created =
  // false) when its spec and backend are equal, else already_exists. A duplicate id is
  // already_exists. invalid_argument when id or customer_id is empty.
  base::Result<CreateResult> Create(const NewVm& vm);

  // The VM `id` if it belongs to `customer_id`; not_found "VM <id> not found" otherwise,
  // whether it is missing or another customer's.
  base::Result<VmRecord> Get(const std::string& customer_id, const std::string& id);

  // The VM `id` whatever its customer (recovery, internal callers). not_found when missing.
  base::Result<VmRecord> GetAny(const std::string& id);

  // One page of the customer's VMs, keyset-paginated by id (stable under concurrent inserts and
  // deletes: no VM is returned twice, none present throughout is skipped).
  base::Result<ListPage> List(const ListRequest& request);

  // Every VM of every customer, ordered by id (startup recovery).
  base::Result<std::vector<VmRecord>> ListAll();

  // Number of the customer's VMs (for quotas).
  base::Result<int64_t> CountByCustomer(const std::string& customer_id);

  // Compare-and-set of the state: moves `id` from `expected_from` to `to` and logs the
  // transition with `reason` and `detail`, atomically. Errors: failed_precondition when
  // CheckTransition(expected_from, to) refuses (nothing is read), or when the stored state is not
  // `expected_from` ("VM <id> is in state RUNNING, not BOOTING"); not_found when `id` is missing;
  // failed_precondition for `to` == DELETED (use Delete). Returns the updated record.
  base::Result<VmRecord> UpdateState(const std::string& id, model::VmState expected_from,
                                     model::VmState to, model::TransitionReason reason,
                                     const std::string& detail = "");

  // Records the VM's process identity. A non-zero pid with a (pid, start_time) different from the
  // stored one starts a new incarnation (incarnation + 1); pid 0 clears the process and keeps the
  // incarnation. Returns the updated record; not_found when missing.
  base::Result<VmRecord> UpdateProcess(const std::string& id, const ProcessInfo& process);

  // Removes a VM in DELETING and logs DELETING -> DELETED with `reason`, atomically. The
  // transition log of the VM is kept. not_found when missing; failed_precondition naming the
  // state when it is not DELETING.
  base::Status Delete(const std::string& id,
                      model::TransitionReason reason = model::TransitionReason::kUserRequest);

  // The VM's transition log, oldest first (also after Delete). Empty when there is none.
  base::Result<std::vector<TransitionRecord>> Transitions(const std::string& id);

  // Log rows with seq > after_seq, oldest first, at most `limit` (<= 0 means 1000), restricted to
  // `customer_id` unless it is empty. The resume cursor of WatchVmEvents.
  base::Result<std::vector<TransitionRecord>> EventsSince(const std::string& customer_id,
                                                          int64_t after_seq, int limit);

  // The highest transition seq stored so far (0 when there is none): where a watch that names
  // no cursor starts, so that it sees only what happens after it began.
  base::Result<int64_t> LastSeq();

  Database* database() const { return db_; }

 private:
  // Constant after construction.
  std::unique_ptr<Database> owned_db_;  // Set by Open(); null when constructed on a shared db.
  Database* db_;
  RepositoryOptions options_;
};

}  // namespace metald::store
