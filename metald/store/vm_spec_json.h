#pragma once
// VmSpec <-> JSON text, the form in which the store keeps a VM's spec (vms.spec_json).
//
// The JSON mirrors VmSpec's member names ({"cpu":{"vcpu_count":2},"memory":{"size_bytes":...},
// "boot":{...},"storage":[...],"network":[...],"console":{...},"metadata":{...}}). Reading is
// lenient for forward compatibility: unknown keys are ignored and missing keys keep VmSpec's
// defaults; wrong types are an error. Thread-safety: pure functions.

#include <string>
#include <string_view>

#include "metald/base/status.h"
#include "metald/model/vm_spec.h"

namespace metald::store {

// Compact JSON; keys in a fixed order, so equal specs give equal text.
std::string VmSpecToJson(const model::VmSpec& spec);

// Inverse of VmSpecToJson. invalid_argument on malformed JSON or a wrongly typed field.
base::Result<model::VmSpec> VmSpecFromJson(std::string_view json);

}  // namespace metald::store
