#pragma once
// HealthService: the standard gRPC health checking service (grpc.health.v1.Health,
// proto/grpc/health/v1/health.proto) served through the RPC layer, so grpc_health_probe,
// Kubernetes gRPC probes and Connect clients can ask whether the server (service "") or one of
// its services is SERVING.
//
// Thread-safety: every method is thread-safe. SetStatus may be called from any thread while
// Check and Watch run on handler threads; Watch blocks its handler thread until the call ends.

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "grpc/health/v1/health.metald.h"
#include "metald/base/status.h"
#include "metald/rpc/router.h"

namespace metald::rpc {

class HealthService : public ::grpc::health::v1::HealthHandler {
 public:
  using ServingStatus = ::grpc::health::v1::HealthCheckResponse::ServingStatus;

  // Starts with the server as a whole ("") SERVING and no other service known.
  HealthService();

  // Sets the status of `service` ("" for the whole server), making it known. Wakes every Watch
  // of that service when the status changed.
  void SetStatus(const std::string& service, ServingStatus status);
  // Sets every known service, "" included, to NOT_SERVING (on shutdown, so probes stop routing
  // traffic here before the listeners close).
  void Shutdown();

  // The current status of a known service: not_found (like grpc's) for an unknown one.
  base::Status Check(CallContext& ctx, const ::grpc::health::v1::HealthCheckRequest& request,
                     ::grpc::health::v1::HealthCheckResponse& response) override;
  // Streams the current status (SERVICE_UNKNOWN for an unknown service), then every change,
  // until the call is cancelled (client gone, deadline, server shutdown). Returns the
  // cancellation reason, or the writer's error when the peer went away.
  base::Status Watch(CallContext& ctx, const ::grpc::health::v1::HealthCheckRequest& request,
                     TypedStreamWriter<::grpc::health::v1::HealthCheckResponse>& writer) override;

 private:
  struct Entry {
    ServingStatus status = ::grpc::health::v1::HealthCheckResponse::UNKNOWN;
    uint64_t version = 0;  // bumped on every change; Watch compares it to what it last sent
  };

  // The status and version of `service`, or SERVICE_UNKNOWN with version 0.
  // REQUIRES: mu_ held.
  Entry Lookup(const std::string& service) const;

  mutable std::mutex mu_;
  std::condition_variable changed_;        // notified (under no lock) on every change
  std::map<std::string, Entry> statuses_;  // guarded by mu_
  uint64_t next_version_ = 1;              // guarded by mu_
};

// Registers `health` (not owned; must outlive the server) on `router`.
base::Status RegisterHealthService(Router& router, HealthService* health);

}  // namespace metald::rpc
