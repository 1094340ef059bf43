#include "metald/net/lease_store.h"

#include <chrono>

namespace metald::net {
namespace {

using store::Connection;
using store::Statement;

constexpr std::string_view kSchemaV1 = R"sql(
CREATE TABLE net_leases (
  vm_id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL,
  pool TEXT NOT NULL,
  host_index INTEGER NOT NULL,
  ipv4 TEXT NOT NULL,
  ipv4_prefix_len INTEGER NOT NULL,
  ipv6 TEXT UNIQUE,
  name_key TEXT NOT NULL UNIQUE,
  customer_tag INTEGER NOT NULL,
  created_at_ns INTEGER NOT NULL,
  UNIQUE (pool, host_index)
);
CREATE INDEX net_leases_customer ON net_leases (customer_id);
CREATE TABLE net_customer_tags (
  customer_id TEXT PRIMARY KEY,
  tag INTEGER NOT NULL UNIQUE
);
CREATE TABLE net_pool_cursor (
  pool TEXT PRIMARY KEY,
  next_index INTEGER NOT NULL
);
)sql";

constexpr std::string_view kLeaseColumns =
    "vm_id, customer_id, pool, host_index, ipv4, ipv4_prefix_len, ipv6, name_key, customer_tag, "
    "created_at_ns";

Lease ReadLease(const Statement& st) {
  Lease l;
  l.vm_id = st.ColumnText(0);
  l.customer_id = st.ColumnText(1);
  l.pool = st.ColumnText(2);
  l.host_index = static_cast<uint64_t>(st.ColumnInt64(3));
  l.ipv4 = st.ColumnText(4);
  l.ipv4_prefix_len = static_cast<int>(st.ColumnInt64(5));
  l.ipv6 = st.ColumnText(6);
  l.name_key = st.ColumnText(7);
  l.customer_tag = static_cast<uint32_t>(st.ColumnInt64(8));
  l.created_at_ns = st.ColumnInt64(9);
  return l;
}

base::Result<std::optional<Lease>> GetIn(Connection& c, std::string_view vm_id) {
  ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT " + std::string(kLeaseColumns) +
                                           " FROM net_leases WHERE vm_id = ?1"));
  st.Bind(1, vm_id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<Lease>();
  return std::optional<Lease>(ReadLease(st));
}

// The first free host index in [from, last] of `pool`, or 0 when there is none. A free index is
// either `from` itself or one past a held index; with the (pool, host_index) index this is one
// range scan.
base::Result<uint64_t> FirstFreeFrom(Connection& c, std::string_view pool, uint64_t from,
                                     uint64_t last) {
  ASSIGN_OR_RETURN(Statement st, c.Prepare(R"sql(
    SELECT ?1 AS idx WHERE ?1 <= ?2 AND NOT EXISTS
        (SELECT 1 FROM net_leases WHERE pool = ?3 AND host_index = ?1)
    UNION ALL
    SELECT l.host_index + 1 AS idx FROM net_leases l
     WHERE l.pool = ?3 AND l.host_index >= ?1 AND l.host_index + 1 <= ?2
       AND NOT EXISTS (SELECT 1 FROM net_leases m
                        WHERE m.pool = ?3 AND m.host_index = l.host_index + 1)
    ORDER BY idx LIMIT 1)sql"));
  st.Bind(1, static_cast<int64_t>(from)).Bind(2, static_cast<int64_t>(last)).Bind(3, pool);
  ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? static_cast<uint64_t>(st.ColumnInt64(0)) : uint64_t{0};
}

base::Result<uint32_t> CustomerTag(Connection& c, std::string_view customer_id) {
  {
    ASSIGN_OR_RETURN(Statement st,
                     c.Prepare("SELECT tag FROM net_customer_tags WHERE customer_id = ?1"));
    st.Bind(1, customer_id);
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (row) return static_cast<uint32_t>(st.ColumnInt64(0));
  }
  // Lowest free tag: rows are removed with a customer's last lease, so tags stay small.
  ASSIGN_OR_RETURN(Statement st, c.Prepare(R"sql(
    SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM net_customer_tags WHERE tag = 1)
    UNION ALL
    SELECT t.tag + 1 FROM net_customer_tags t
     WHERE NOT EXISTS (SELECT 1 FROM net_customer_tags u WHERE u.tag = t.tag + 1)
    ORDER BY 1 LIMIT 1)sql"));
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return base::InternalError("No customer tag candidate");
  int64_t tag = st.ColumnInt64(0);
  if (tag > kMaxCustomerTag) return base::ResourceExhaustedError("Customer tags are exhausted");
  ASSIGN_OR_RETURN(Statement ins,
                   c.Prepare("INSERT INTO net_customer_tags (customer_id, tag) VALUES (?1, ?2)"));
  ins.Bind(1, customer_id).Bind(2, tag);
  RETURN_IF_ERROR(ins.Run());
  return static_cast<uint32_t>(tag);
}

}  // namespace

const std::vector<store::Migration>& LeaseMigrations() {
  static const std::vector<store::Migration> migrations = {{1, kSchemaV1}};
  return migrations;
}

base::Result<std::unique_ptr<LeaseStore>> LeaseStore::Open(LeaseStoreOptions options) {
  if (options.db_path.empty()) return base::InvalidArgumentError("lease db_path is required");
  auto pool = ParseIpv4Cidr(options.ipv4_cidr);
  if (!pool.ok()) return pool.status().WithContext("ipv4_cidr");
  std::optional<Ipv6Prefix> v6;
  if (!options.ipv6_prefix.empty()) {
    auto p = ParseIpv6Prefix(options.ipv6_prefix);
    if (!p.ok()) return p.status().WithContext("ipv6_prefix");
    // Host index i maps to prefix::i, so the IPv6 host part must hold every IPv4 host index.
    if (128 - p->prefix_len < 32 - pool->prefix_len) {
      return base::InvalidArgumentError("ipv6_prefix " + options.ipv6_prefix +
                                        " is too long for ipv4_cidr " + options.ipv4_cidr);
    }
    v6 = *p;
  }
  if (!options.now_unix_ns) {
    options.now_unix_ns = [] {
      return static_cast<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
    };
  }
  store::DatabaseOptions db_options;
  db_options.path = options.db_path;
  db_options.now_unix_ns = options.now_unix_ns;
  auto db = store::Database::Open(std::move(db_options), LeaseMigrations());
  if (!db.ok()) return db.status().WithContext("Lease database " + options.db_path);
  return std::unique_ptr<LeaseStore>(
      new LeaseStore(std::move(options), *pool, v6, std::move(db).value()));
}

LeaseStore::LeaseStore(LeaseStoreOptions options, Ipv4Cidr pool, std::optional<Ipv6Prefix> v6,
                       std::unique_ptr<store::Database> db)
    : options_(std::move(options)),
      ipv4_pool_(pool),
      ipv6_prefix_(v6),
      pool_key_(pool.ToString()),
      db_(std::move(db)) {}

base::Result<Lease> LeaseStore::Allocate(std::string_view vm_id, std::string_view customer_id) {
  if (vm_id.empty()) return base::InvalidArgumentError("vm_id is required");
  if (customer_id.empty()) return base::InvalidArgumentError("customer_id is required");
  Lease lease;
  base::Status st = db_->Write([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(std::optional<Lease> existing, GetIn(c, vm_id));
    if (existing) {
      return base::AlreadyExistsError("VM " + std::string(vm_id) + " already holds address " +
                                      existing->ipv4);
    }
    const uint64_t first = Ipv4Cidr::first_guest_index();
    const uint64_t last = ipv4_pool_.last_guest_index();
    uint64_t cursor = first;
    {
      ASSIGN_OR_RETURN(Statement q,
                       c.Prepare("SELECT next_index FROM net_pool_cursor WHERE pool = ?1"));
      q.Bind(1, pool_key_);
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (row) cursor = static_cast<uint64_t>(q.ColumnInt64(0));
    }
    if (cursor < first || cursor > last) cursor = first;
    ASSIGN_OR_RETURN(uint64_t index, FirstFreeFrom(c, pool_key_, cursor, last));
    if (index == 0 && cursor > first) {
      ASSIGN_OR_RETURN(index, FirstFreeFrom(c, pool_key_, first, last));
    }
    if (index == 0) {
      return base::ResourceExhaustedError("Address pool " + pool_key_ + " is exhausted");
    }
    ASSIGN_OR_RETURN(uint32_t tag, CustomerTag(c, customer_id));

    lease.vm_id = std::string(vm_id);
    lease.customer_id = std::string(customer_id);
    lease.pool = pool_key_;
    lease.host_index = index;
    lease.ipv4 = FormatIpv4(ipv4_pool_.At(index));
    lease.ipv4_prefix_len = ipv4_pool_.prefix_len;
    if (ipv6_prefix_) lease.ipv6 = ipv6_prefix_->AddressAt(index);
    lease.name_key = NameKey(vm_id);
    lease.customer_tag = tag;
    lease.created_at_ns = options_.now_unix_ns();

    ASSIGN_OR_RETURN(Statement ins,
                     c.Prepare("INSERT INTO net_leases (" + std::string(kLeaseColumns) +
                               ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"));
    ins.Bind(1, lease.vm_id)
        .Bind(2, lease.customer_id)
        .Bind(3, lease.pool)
        .Bind(4, static_cast<int64_t>(lease.host_index))
        .Bind(5, lease.ipv4)
        .Bind(6, static_cast<int64_t>(lease.ipv4_prefix_len));
    if (lease.ipv6.empty()) {
      ins.BindNull(7);
    } else {
      ins.Bind(7, lease.ipv6);
    }
    ins.Bind(8, lease.name_key)
        .Bind(9, static_cast<int64_t>(lease.customer_tag))
        .Bind(10, lease.created_at_ns);
    base::Status inserted = ins.Run();
    if (inserted.code() == base::StatusCode::kAlreadyExists) {
      return base::AlreadyExistsError("Name key " + lease.name_key + " of VM " + lease.vm_id +
                                      " collides with another VM's");
    }
    RETURN_IF_ERROR(inserted);
    ASSIGN_OR_RETURN(Statement cur,
                     c.Prepare("INSERT INTO net_pool_cursor (pool, next_index) VALUES "
                               "(?1, ?2) ON CONFLICT (pool) DO UPDATE SET next_index = ?2"));
    cur.Bind(1, pool_key_).Bind(2, static_cast<int64_t>(index + 1 > last ? first : index + 1));
    return cur.Run();
  });
  if (!st.ok()) return st;
  return lease;
}

base::Result<std::optional<Lease>> LeaseStore::Get(std::string_view vm_id) {
  std::optional<Lease> out;
  RETURN_IF_ERROR(db_->Read([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(out, GetIn(c, vm_id));
    return base::OkStatus();
  }));
  return out;
}

base::Status LeaseStore::Release(std::string_view vm_id) {
  return db_->Write([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(std::optional<Lease> lease, GetIn(c, vm_id));
    if (!lease) return base::OkStatus();
    ASSIGN_OR_RETURN(Statement del, c.Prepare("DELETE FROM net_leases WHERE vm_id = ?1"));
    del.Bind(1, vm_id);
    RETURN_IF_ERROR(del.Run());
    ASSIGN_OR_RETURN(Statement tag, c.Prepare(R"sql(
      DELETE FROM net_customer_tags WHERE customer_id = ?1
         AND NOT EXISTS (SELECT 1 FROM net_leases WHERE customer_id = ?1))sql"));
    tag.Bind(1, lease->customer_id);
    return tag.Run();
  });
}

base::Result<std::vector<Lease>> LeaseStore::List() {
  std::vector<Lease> out;
  RETURN_IF_ERROR(db_->Read([&](Connection& c) -> base::Status {
    ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT " + std::string(kLeaseColumns) +
                                             " FROM net_leases ORDER BY vm_id"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out.push_back(ReadLease(st));
    }
    return base::OkStatus();
  }));
  return out;
}

}  // namespace metald::net
