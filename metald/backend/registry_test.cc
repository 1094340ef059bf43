#include "metald/backend/registry.h"

#include <gtest/gtest.h>

namespace metald::backend {
namespace {

TEST(RegistryTest, NeedsASpawner) {
  BackendOptions options;
  EXPECT_EQ(MakeBackend(options).status().code(), base::StatusCode::kInvalidArgument);
}

TEST(RegistryTest, MakesQemuAndReportsMissingBinaryAsUnavailable) {
  std::unique_ptr<process::ProcessSpawner> spawner = process::NewSystemSpawner();
  BackendOptions options;
  options.spawner = spawner.get();
  options.qemu.accel = qemu::Accel::kTcg;
  options.qemu.binary = "/nonexistent/qemu-system-x86_64";
  base::Result<std::unique_ptr<Backend>> backend = MakeBackend(options);
  ASSERT_TRUE(backend.ok()) << backend.status().ToString();
  EXPECT_EQ((*backend)->kind(), model::BackendKind::kQemu);
  EXPECT_EQ(CheckAvailable(options).code(), base::StatusCode::kUnavailable);
  EXPECT_TRUE((*backend)->List().empty());
  EXPECT_EQ((*backend)->Boot("vm-x").code(), base::StatusCode::kNotFound);
}

TEST(RegistryTest, BackendsNotBuiltYetAreUnimplemented) {
  std::unique_ptr<process::ProcessSpawner> spawner = process::NewSystemSpawner();
  BackendOptions options;
  options.spawner = spawner.get();
  for (model::BackendKind kind :
       {model::BackendKind::kFirecracker, model::BackendKind::kCloudHypervisor}) {
    options.kind = kind;
    EXPECT_EQ(MakeBackend(options).status().code(), base::StatusCode::kUnimplemented);
    EXPECT_EQ(CheckAvailable(options).code(), base::StatusCode::kUnimplemented);
  }
}

}  // namespace
}  // namespace metald::backend
