#include "metald/model/vm_state.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>

namespace metald::model {
namespace {

// Written independently of vm_state.cc, from the seed diagram plus the documented additions.
// Every (from, to) pair not listed here must be refused.
const std::set<std::pair<std::string, std::string>>& ExpectedAllowed() {
  static const auto* kPairs = new std::set<std::pair<std::string, std::string>>{
      {"CREATING", "CREATED"},
      {"CREATING", "FAILED"},
      {"CREATED", "BOOTING"},
      {"CREATED", "DELETING"},
      {"CREATED", "FAILED"},  // addition: VMM process died before boot
      {"BOOTING", "RUNNING"},
      {"BOOTING", "FAILED"},
      {"RUNNING", "PAUSING"},
      {"RUNNING", "REBOOTING"},
      {"RUNNING", "SHUTTING_DOWN"},
      {"RUNNING", "STOPPED"},  // addition: guest powered off / clean exit
      {"RUNNING", "FAILED"},   // addition: crash
      {"PAUSING", "PAUSED"},
      {"PAUSING", "FAILED"},
      {"PAUSED", "RESUMING"},
      {"PAUSED", "SHUTTING_DOWN"},
      {"PAUSED", "FAILED"},  // addition: crash while paused
      {"RESUMING", "RUNNING"},
      {"RESUMING", "FAILED"},
      {"REBOOTING", "RUNNING"},
      {"REBOOTING", "FAILED"},
      {"SHUTTING_DOWN", "STOPPED"},
      {"SHUTTING_DOWN", "FAILED"},
      {"STOPPED", "DELETING"},
      {"STOPPED", "BOOTING"},  // addition: start again
      {"FAILED", "DELETING"},
      {"DELETING", "DELETED"},
  };
  return *kPairs;
}

TEST(VmStateTest, EveryPairMatchesTheExpectedTable) {
  int allowed = 0;
  int pairs = 0;
  for (VmState from : kAllVmStates) {
    for (VmState to : kAllVmStates) {
      ++pairs;
      const bool expected =
          ExpectedAllowed().count({std::string(StateName(from)), std::string(StateName(to))}) > 0;
      base::Status st = CheckTransition(from, to);
      EXPECT_EQ(st.ok(), expected) << StateName(from) << " -> " << StateName(to);
      if (st.ok()) {
        ++allowed;
      } else {
        EXPECT_EQ(st.code(), base::StatusCode::kFailedPrecondition);
        EXPECT_EQ(st.message(), "Invalid VM state transition from " + std::string(StateName(from)) +
                                    " to " + std::string(StateName(to)));
      }
    }
  }
  EXPECT_EQ(pairs, 13 * 13);
  EXPECT_EQ(allowed, static_cast<int>(ExpectedAllowed().size()));
}

TEST(VmStateTest, NamesRoundTripAndAreDistinct) {
  std::set<std::string> names;
  for (VmState s : kAllVmStates) {
    std::string name(StateName(s));
    EXPECT_TRUE(names.insert(name).second) << name;
    auto parsed = ParseVmState(name);
    ASSERT_TRUE(parsed.has_value()) << name;
    EXPECT_EQ(*parsed, s);
  }
  EXPECT_EQ(StateName(VmState::kShuttingDown), "SHUTTING_DOWN");
  EXPECT_FALSE(ParseVmState("running").has_value());
  EXPECT_FALSE(ParseVmState("").has_value());
  EXPECT_FALSE(ParseVmState("UNKNOWN").has_value());
}

TEST(VmStateTest, TransientStates) {
  const std::set<std::string> expected = {"CREATING",  "BOOTING",       "PAUSING", "RESUMING",
                                          "REBOOTING", "SHUTTING_DOWN", "DELETING"};
  for (VmState s : kAllVmStates) {
    EXPECT_EQ(IsTransient(s), expected.count(std::string(StateName(s))) > 0) << StateName(s);
  }
}

// Which operation is allowed in which state, written out independently.
TEST(VmStateTest, EveryOperationInEveryState) {
  const std::set<std::pair<std::string, std::string>> allowed = {
      {"boot", "CREATED"},     {"boot", "STOPPED"},   {"pause", "RUNNING"},
      {"resume", "PAUSED"},    {"reboot", "RUNNING"}, {"shut down", "RUNNING"},
      {"shut down", "PAUSED"}, {"delete", "CREATED"}, {"delete", "STOPPED"},
      {"delete", "FAILED"},
  };
  int ok_count = 0;
  for (VmOp op : kAllVmOps) {
    for (VmState s : kAllVmStates) {
      const bool expected = allowed.count({std::string(OpName(op)), std::string(StateName(s))}) > 0;
      base::Status st = CheckOperation(op, s);
      EXPECT_EQ(st.ok(), expected) << OpName(op) << " in " << StateName(s);
      if (st.ok()) {
        ++ok_count;
        // An allowed operation's first transition is allowed too.
        EXPECT_TRUE(CheckTransition(s, StartStateFor(op)).ok());
      } else {
        EXPECT_EQ(st.code(), base::StatusCode::kFailedPrecondition);
        EXPECT_EQ(st.message(), "Cannot " + std::string(OpName(op)) + " VM in state " +
                                    std::string(StateName(s)));
      }
    }
  }
  EXPECT_EQ(ok_count, static_cast<int>(allowed.size()));
}

TEST(VmStateTest, OperationMessageNamesCurrentState) {
  EXPECT_EQ(CheckOperation(VmOp::kPause, VmState::kStopped),
            base::FailedPreconditionError("Cannot pause VM in state STOPPED"));
  EXPECT_EQ(StartStateFor(VmOp::kShutdown), VmState::kShuttingDown);
  EXPECT_EQ(StartStateFor(VmOp::kDelete), VmState::kDeleting);
}

TEST(VmStateTest, ReasonsRoundTrip) {
  std::set<std::string> names;
  for (TransitionReason r : kAllTransitionReasons) {
    std::string name(ReasonName(r));
    EXPECT_TRUE(names.insert(name).second) << name;
    auto parsed = ParseTransitionReason(name);
    ASSERT_TRUE(parsed.has_value()) << name;
    EXPECT_EQ(*parsed, r);
  }
  for (const char* required :
       {"user_request", "guest_shutdown", "process_exit", "crash", "recovered"}) {
    EXPECT_TRUE(names.count(required)) << required;
  }
  EXPECT_FALSE(ParseTransitionReason("USER_REQUEST").has_value());
}

}  // namespace
}  // namespace metald::model
