#include "metald/model/path_policy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace metald::model {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kRoots = {"/srv/images/", "/opt//kernels"};

TEST(ResolveUnderRootsTest, AcceptsAndNormalisesPathsBelowARoot) {
  EXPECT_EQ(*ResolveUnderRoots("/srv/images/vmlinuz", kRoots), "/srv/images/vmlinuz");
  EXPECT_EQ(*ResolveUnderRoots("//srv/./images//a/b", kRoots), "/srv/images/a/b");
  EXPECT_EQ(*ResolveUnderRoots("/opt/kernels/k/", kRoots), "/opt/kernels/k");
}

TEST(ResolveUnderRootsTest, RefusesEverythingElse) {
  struct Case {
    const char* path;
    const char* message;
  } cases[] = {
      {"", "boot.kernel_path must not be empty"},
      {"srv/images/k", "boot.kernel_path must be an absolute path"},
      {"./k", "boot.kernel_path must be an absolute path"},
      {"/srv/images/../../etc/shadow", "boot.kernel_path must not contain '..'"},
      {"/srv/images/a/..", "boot.kernel_path must not contain '..'"},
      {"/srv/images", "boot.kernel_path is not under an image root"},  // the root itself
      {"/srv/images/", "boot.kernel_path is not under an image root"},
      {"/srv/imagesX/k", "boot.kernel_path is not under an image root"},
      {"/etc/passwd", "boot.kernel_path is not under an image root"},
      {"/", "boot.kernel_path is not under an image root"},
  };
  for (const Case& c : cases) {
    auto r = ResolveUnderRoots(c.path, kRoots, "boot.kernel_path");
    ASSERT_FALSE(r.ok()) << c.path;
    EXPECT_EQ(r.status().code(), base::StatusCode::kInvalidArgument) << c.path;
    EXPECT_EQ(r.status().message(), c.message) << c.path;
  }
  EXPECT_FALSE(ResolveUnderRoots(std::string_view("/srv/images/a\0b", 15), kRoots).ok());
  EXPECT_FALSE(ResolveUnderRoots("/srv/images/k", {}).ok());
  EXPECT_FALSE(ResolveUnderRoots("/srv/images/k", {"relative/root"}).ok());
}

class ResolveExistingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/metald_path_policy_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    root_ = dir_ / "root";
    fs::create_directories(root_ / "sub");
    std::ofstream(root_ / "kernel") << "k";
    std::ofstream(dir_ / "secret") << "s";
    fs::create_symlink(dir_ / "secret", root_ / "escape");
    fs::create_symlink(root_ / "kernel", root_ / "sub" / "inside");
    fs::create_symlink(root_, dir_ / "rootlink");
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_, root_;
};

TEST_F(ResolveExistingTest, AcceptsRealFilesAndInternalSymlinks) {
  const std::vector<std::string> roots = {root_.string()};
  EXPECT_EQ(*ResolveExistingUnderRoots((root_ / "kernel").string(), roots),
            (root_ / "kernel").string());
  EXPECT_EQ(*ResolveExistingUnderRoots((root_ / "sub/inside").string(), roots),
            (root_ / "kernel").string());
  // A root given through a symlink still confines by its real path.
  const std::vector<std::string> link_roots = {(dir_ / "rootlink").string()};
  EXPECT_EQ(*ResolveExistingUnderRoots((dir_ / "rootlink/kernel").string(), link_roots),
            (root_ / "kernel").string());
}

TEST_F(ResolveExistingTest, RefusesEscapingSymlinkAndMissingFile) {
  const std::vector<std::string> roots = {root_.string()};
  auto escape = ResolveExistingUnderRoots((root_ / "escape").string(), roots, "storage[0].path");
  ASSERT_FALSE(escape.ok());
  EXPECT_EQ(escape.status(),
            base::InvalidArgumentError("storage[0].path resolves outside the image roots"));

  auto missing = ResolveExistingUnderRoots((root_ / "nope").string(), roots, "boot.initrd_path");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status(),
            base::InvalidArgumentError("boot.initrd_path \"" + (root_ / "nope").string() +
                                       "\" does not exist"));
  // Lexical refusals happen before any file-system access.
  auto outside = ResolveExistingUnderRoots((dir_ / "secret").string(), roots);
  EXPECT_EQ(outside.status().message(), "path is not under an image root");
}

TEST(ResolveExistingFakeTest, UsesInjectedRealpath) {
  int calls = 0;
  RealpathFn fake = [&](const std::string& p) -> base::Result<std::string> {
    ++calls;
    if (p == "/img") return std::string("/data/img");
    if (p == "/img/k") return std::string("/data/img/k");
    if (p == "/img/evil") return std::string("/etc/shadow");
    return base::PermissionDeniedError("denied");
  };
  EXPECT_EQ(*ResolveExistingUnderRoots("/img/k", {"/img"}, "f", fake), "/data/img/k");
  EXPECT_EQ(ResolveExistingUnderRoots("/img/evil", {"/img"}, "f", fake).status().message(),
            "f resolves outside the image roots");
  EXPECT_EQ(ResolveExistingUnderRoots("/img/x", {"/img"}, "f", fake).status().message(),
            "f \"/img/x\" is not accessible");
  EXPECT_GT(calls, 0);
}

}  // namespace
}  // namespace metald::model
