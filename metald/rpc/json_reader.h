#pragma once

#include <google/protobuf/message.h>

#include <string_view>

namespace metald::rpc::json {

// Parses the proto3 JSON text `json` into `*message`, which must be empty (freshly created or
// cleared). Walks the text once and sets fields by reflection, without the JSON → binary →
// message round trip protobuf 3.21's util::JsonStringToMessage makes.
//
// Returns true when the text was parsed; `*message` then equals what JsonStringToMessage (with
// ignore_unknown_fields) produces for the same text. Returns false ("declined") for anything
// outside the common subset it reproduces exactly: the caller then clears `*message` and asks
// protobuf, which parses it or reports the error. Declining is always safe: every input
// protobuf rejects is declined, never accepted.
//
// The subset: one JSON object of known fields, named by json_name or proto name, each at most
// once (and at most one member per oneof); values: strings (all JSON escapes, valid UTF-8),
// true/false, integers as plain decimal literals (64-bit ones also as quoted decimals; at most
// 15 digits unquoted; also for float and double fields), enums by value name, the empty bytes
// value, nested messages (not google.protobuf.* types), arrays of these for repeated fields,
// and objects for maps with string, integer or bool keys. Declined: unknown fields, null,
// fractions and exponents, non-empty bytes, enum numbers, well-known types, duplicates,
// nesting deeper than 32, and anything after the object but whitespace.
//
// Thread-safety: like protobuf's reflection setters (distinct messages from any thread).
bool ReadMessage(std::string_view json, google::protobuf::Message* message);

}  // namespace metald::rpc::json
