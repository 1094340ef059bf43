#pragma once

#include <google/protobuf/message.h>

#include <string>

namespace metald::rpc::json {

// Appends the proto3 JSON form of `message` to `*out`, byte-identical to protobuf 3.21's
// util::MessageToJsonString with default JsonPrintOptions (lowerCamelCase json_name, default
// values omitted, enums by name), without the binary round trip and type resolver protobuf
// uses. Per message type it computes a plan once (fields in number order, their `"name":`
// bytes, enum name tables, well-known-type handling); instances of generated classes are then
// read straight from the class's layout (the offsets protobuf's Reflection uses), anything else
// (DynamicMessage) through Reflection. Plans of generated-pool types are cached for the
// process; those of other pools, which may be destroyed, live for one call only.
//
// Returns false when the message holds something this printer does not reproduce exactly
// (Any, groups, invalid UTF-8, out-of-range Timestamp/Duration, unset Value, unusual FieldMask
// paths, nesting deeper than 32, unknown fields, ...); `*out` then holds partial output and the
// caller must discard it and use protobuf's printer, which also reports the errors. Never fails
// otherwise. Map fields are printed in protobuf's serialization order (the Map's iteration order);
// a DynamicMessage map last changed through reflection's repeated view is declined.
//
// Thread-safety: callable from any thread (the plan cache is internally synchronized). For
// `message`, like protobuf's const accessors, except that printing a map field other than a
// generated map<string, string> or Struct goes through Reflection::MapBegin, which marks the
// field's Map as the authoritative copy (an atomic state store; the entries are only read).
// Concurrent PrintMessage/serialization of one message is fine; concurrent mutation, or
// reflection access to a map field's repeated view, is not.
bool PrintMessage(const google::protobuf::Message& message, std::string* out);

}  // namespace metald::rpc::json
