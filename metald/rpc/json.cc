#include "metald/rpc/json.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/map_field.h>
#include <google/protobuf/message.h>
#include <google/protobuf/stubs/strutil.h>
#include <google/protobuf/unknown_field_set.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string_view>
#include <typeinfo>
#include <vector>

// protobuf 3.21 keeps map reflection (GetMapData, MapBegin, MapEnd) private and befriends a
// few named classes; this one (CEL's, which metald does not link) is borrowed to read a map
// field in the order protobuf's serializer emits it. Only used below, through MapAccess.
namespace google::protobuf::expr {
class CelMapReflectionFriend {
 public:
  static bool IsMapValid(const Message& message, const FieldDescriptor* field) {
    return message.GetReflection()->GetMapData(message, field)->IsMapValid();
  }
  static MapIterator Begin(Message* message, const FieldDescriptor* field) {
    return message->GetReflection()->MapBegin(message, field);
  }
  static MapIterator End(Message* message, const FieldDescriptor* field) {
    return message->GetReflection()->MapEnd(message, field);
  }
};
}  // namespace google::protobuf::expr

namespace metald::rpc::json {
namespace {

using MapAccess = google::protobuf::expr::CelMapReflectionFriend;

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Protobuf's Timestamp/Duration limits (0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z,
// +-10000 years).
constexpr int64_t kTimestampMinSeconds = -62135596800LL;
constexpr int64_t kTimestampMaxSeconds = 253402300799LL;
constexpr int64_t kDurationMaxSeconds = 315576000000LL;
constexpr int32_t kNanosPerSecond = 1000000000;

constexpr char kHex[] = "0123456789abcdef";

// Nesting deeper than this is declined: protobuf's printer fails beyond its own recursion limit
// (64) and the binary parser admits up to 100, so deep messages keep protobuf's behaviour.
constexpr int kMaxDepth = 32;

// Nesting depth of the message being printed on this thread; NestingGuard maintains it.
thread_local int tls_depth = 0;

class NestingGuard {
 public:
  NestingGuard() { ++tls_depth; }
  ~NestingGuard() { --tls_depth; }
  NestingGuard(const NestingGuard&) = delete;
  NestingGuard& operator=(const NestingGuard&) = delete;
  bool too_deep() const { return tls_depth > kMaxDepth; }
};

void AppendU16Escape(uint32_t unit, std::string* out) {
  char buf[6] = {'\\',
                 'u',
                 kHex[(unit >> 12) & 0xf],
                 kHex[(unit >> 8) & 0xf],
                 kHex[(unit >> 4) & 0xf],
                 kHex[unit & 0xf]};
  out->append(buf, 6);
}

// Mirrors protobuf's util/internal/json_escaping.cc EscapeCodePoint: which code points the
// 3.21 printer escapes, and how. Returns false when `cp` is copied through as UTF-8.
bool EscapeCodePoint(uint32_t cp, std::string* out) {
  if (cp < 0xa0) {
    switch (cp) {
      case '\b':
        out->append("\\b");
        return true;
      case '\t':
        out->append("\\t");
        return true;
      case '\n':
        out->append("\\n");
        return true;
      case '\f':
        out->append("\\f");
        return true;
      case '\r':
        out->append("\\r");
        return true;
      case '"':
        out->append("\\\"");
        return true;
      case '\\':
        out->append("\\\\");
        return true;
      default:
        break;
    }
    if (cp < 0x20 || cp == '<' || cp == '>' || cp >= 0x7f) {
      AppendU16Escape(cp, out);
      return true;
    }
    return false;
  }
  if (cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb) || cp == 0xad || cp == 0x6dd || cp == 0x70f ||
      cp == 0x17b4 || cp == 0x17b5 || (cp >= 0x600 && cp <= 0x603) ||
      (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
      (cp >= 0x2060 && cp <= 0x2064) || (cp >= 0x206a && cp <= 0x206f)) {
    AppendU16Escape(cp, out);
    return true;
  }
  if (cp == 0xe0001 || (cp >= 0x1d173 && cp <= 0x1d17a) || (cp >= 0xe0020 && cp <= 0xe007f)) {
    uint32_t v = cp - 0x10000;
    AppendU16Escape(0xd800 + (v >> 10), out);
    AppendU16Escape(0xdc00 + (v & 0x3ff), out);
    return true;
  }
  return false;
}

// Appends `s` as a quoted JSON string. Returns false on anything but well-formed UTF-8
// (overlong forms, surrogates, > U+10FFFF), where protobuf's behaviour is left to protobuf.
bool AppendString(std::string_view s, std::string* out) {
  out->push_back('"');
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    // Fast path: plain ASCII that needs no escaping.
    size_t start = i;
    while (i < n) {
      unsigned char c = static_cast<unsigned char>(s[i]);
      if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>') break;
      ++i;
    }
    out->append(s.data() + start, i - start);
    if (i == n) break;
    unsigned char c = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    int len;
    if (c < 0x80) {
      cp = c;
      len = 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
      cp = c & 0x1f;
      len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      cp = c & 0x0f;
      len = 3;
    } else if (c >= 0xf0 && c <= 0xf4) {
      cp = c & 0x07;
      len = 4;
    } else {
      return false;
    }
    if (n - i < static_cast<size_t>(len)) return false;
    for (int k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    if (!EscapeCodePoint(cp, out)) out->append(s.data() + i, len);
    i += len;
  }
  out->push_back('"');
  return true;
}

void AppendQuoted(std::string_view s, std::string* out) {
  out->push_back('"');
  out->append(s);
  out->push_back('"');
}

void AppendDouble(double v, std::string* out) {
  if (std::isfinite(v)) {
    out->append(google::protobuf::SimpleDtoa(v));
  } else if (std::isnan(v)) {
    out->append("\"NaN\"");
  } else {
    out->append(v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  }
}

void AppendFloat(float v, std::string* out) {
  if (std::isfinite(v)) {
    out->append(google::protobuf::SimpleFtoa(v));
  } else if (std::isnan(v)) {
    out->append("\"NaN\"");
  } else {
    out->append(v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  }
}

void AppendEnum(const EnumDescriptor* type, int number, std::string* out) {
  if (type->full_name() == "google.protobuf.NullValue") {
    out->append("null");
    return;
  }
  const auto* value = type->FindValueByNumber(number);
  if (value != nullptr) {
    AppendQuoted(value->name(), out);
  } else {
    out->append(std::to_string(number));
  }
}

// ".123", ".123456" or ".123456789" (protobuf's FormatNanos); nothing for 0.
void AppendNanos(int32_t nanos, std::string* out) {
  if (nanos == 0) return;
  char buf[16];
  if (nanos % 1000000 == 0) {
    std::snprintf(buf, sizeof(buf), ".%03d", nanos / 1000000);
  } else if (nanos % 1000 == 0) {
    std::snprintf(buf, sizeof(buf), ".%06d", nanos / 1000);
  } else {
    std::snprintf(buf, sizeof(buf), ".%09d", nanos);
  }
  out->append(buf);
}

bool PrintMessageValue(const Message& message, std::string* out);

// Appends one value of `field` (index `index` when repeated, -1 otherwise).
bool PrintFieldValue(const Message& message, const FieldDescriptor* field, int index,
                     std::string* out) {
  const Reflection* r = message.GetReflection();
  const bool rep = index >= 0;
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      out->append(std::to_string(rep ? r->GetRepeatedInt32(message, field, index)
                                     : r->GetInt32(message, field)));
      return true;
    case FieldDescriptor::CPPTYPE_UINT32:
      out->append(std::to_string(rep ? r->GetRepeatedUInt32(message, field, index)
                                     : r->GetUInt32(message, field)));
      return true;
    case FieldDescriptor::CPPTYPE_INT64:
      AppendQuoted(std::to_string(rep ? r->GetRepeatedInt64(message, field, index)
                                      : r->GetInt64(message, field)),
                   out);
      return true;
    case FieldDescriptor::CPPTYPE_UINT64:
      AppendQuoted(std::to_string(rep ? r->GetRepeatedUInt64(message, field, index)
                                      : r->GetUInt64(message, field)),
                   out);
      return true;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      AppendDouble(rep ? r->GetRepeatedDouble(message, field, index) : r->GetDouble(message, field),
                   out);
      return true;
    case FieldDescriptor::CPPTYPE_FLOAT:
      AppendFloat(rep ? r->GetRepeatedFloat(message, field, index) : r->GetFloat(message, field),
                  out);
      return true;
    case FieldDescriptor::CPPTYPE_BOOL:
      out->append((rep ? r->GetRepeatedBool(message, field, index) : r->GetBool(message, field))
                      ? "true"
                      : "false");
      return true;
    case FieldDescriptor::CPPTYPE_ENUM:
      AppendEnum(
          field->enum_type(),
          rep ? r->GetRepeatedEnumValue(message, field, index) : r->GetEnumValue(message, field),
          out);
      return true;
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string scratch;
      const std::string& s = rep ? r->GetRepeatedStringReference(message, field, index, &scratch)
                                 : r->GetStringReference(message, field, &scratch);
      if (field->type() == FieldDescriptor::TYPE_BYTES) {
        std::string b64;
        google::protobuf::Base64Escape(s, &b64);
        AppendQuoted(b64, out);
        return true;
      }
      return AppendString(s, out);
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (field->type() == FieldDescriptor::TYPE_GROUP) return false;
      return PrintMessageValue(
          rep ? r->GetRepeatedMessage(message, field, index) : r->GetMessage(message, field), out);
  }
  return false;
}

// Appends a map key (always a JSON string).
bool PrintMapKey(const google::protobuf::MapKey& key, std::string* out) {
  switch (key.type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      return AppendString(key.GetStringValue(), out);
    case FieldDescriptor::CPPTYPE_BOOL:
      AppendQuoted(key.GetBoolValue() ? "true" : "false", out);
      return true;
    case FieldDescriptor::CPPTYPE_INT32:
      AppendQuoted(std::to_string(key.GetInt32Value()), out);
      return true;
    case FieldDescriptor::CPPTYPE_UINT32:
      AppendQuoted(std::to_string(key.GetUInt32Value()), out);
      return true;
    case FieldDescriptor::CPPTYPE_INT64:
      AppendQuoted(std::to_string(key.GetInt64Value()), out);
      return true;
    case FieldDescriptor::CPPTYPE_UINT64:
      AppendQuoted(std::to_string(key.GetUInt64Value()), out);
      return true;
    default:
      return false;
  }
}

bool PrintStructValue(const Message& value, std::string* out);

bool PrintMapValue(const google::protobuf::MapValueConstRef& value, const FieldDescriptor* vf,
                   std::string* out) {
  switch (vf->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      out->append(std::to_string(value.GetInt32Value()));
      return true;
    case FieldDescriptor::CPPTYPE_UINT32:
      out->append(std::to_string(value.GetUInt32Value()));
      return true;
    case FieldDescriptor::CPPTYPE_INT64:
      AppendQuoted(std::to_string(value.GetInt64Value()), out);
      return true;
    case FieldDescriptor::CPPTYPE_UINT64:
      AppendQuoted(std::to_string(value.GetUInt64Value()), out);
      return true;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      AppendDouble(value.GetDoubleValue(), out);
      return true;
    case FieldDescriptor::CPPTYPE_FLOAT:
      AppendFloat(value.GetFloatValue(), out);
      return true;
    case FieldDescriptor::CPPTYPE_BOOL:
      out->append(value.GetBoolValue() ? "true" : "false");
      return true;
    case FieldDescriptor::CPPTYPE_ENUM:
      AppendEnum(vf->enum_type(), value.GetEnumValue(), out);
      return true;
    case FieldDescriptor::CPPTYPE_STRING:
      if (vf->type() == FieldDescriptor::TYPE_BYTES) {
        std::string b64;
        google::protobuf::Base64Escape(value.GetStringValue(), &b64);
        AppendQuoted(b64, out);
        return true;
      }
      return AppendString(value.GetStringValue(), out);
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (vf->type() == FieldDescriptor::TYPE_GROUP) return false;
      return PrintMessageValue(value.GetMessageValue(), out);
  }
  return false;
}

// Unknown fields are re-serialized after the known ones, and protobuf's printer reacts to them
// (prints those whose number its type knows, e.g. an out-of-range value of a closed proto2
// enum; drops whole WKT values holding them): messages with any are declined.
bool HasUnknownFields(const Message& message) {
  return !message.GetReflection()->GetUnknownFields(message).empty();
}

// Whether `message` is an instance of a generated class (not a DynamicMessage).
bool IsGenerated(const Message& message) {
  const Descriptor* d = message.GetDescriptor();
  if (d->file()->pool() != google::protobuf::DescriptorPool::generated_pool()) return false;
  const Message* prototype = google::protobuf::MessageFactory::generated_factory()->GetPrototype(d);
  return prototype != nullptr && typeid(*prototype) == typeid(message);
}

// Map entries in the order protobuf's (non-deterministic) serializer emits them: the Map's
// iteration order, which MapBegin gives after syncing the Map from the repeated view if that
// was changed last. Exception: a DynamicMessage whose Map is stale serializes the repeated
// view instead (entries as stored, duplicates included); the printer declines those.
// `struct_values`: the values are google.protobuf.Value (Struct.fields).
// MapBegin re-marks the map as the authoritative side: a logically const operation, but not
// safe against concurrent access to `message` (json.h).
bool PrintMap(const Message& message, const FieldDescriptor* field, bool struct_values,
              std::string* out) {
  if (!MapAccess::IsMapValid(message, field) && !IsGenerated(message)) return false;
  Message* mutable_message = const_cast<Message*>(&message);
  const FieldDescriptor* vf = field->message_type()->map_value();
  out->push_back('{');
  bool first = true;
  for (auto it = MapAccess::Begin(mutable_message, field),
            end = MapAccess::End(mutable_message, field);
       it != end; ++it) {
    if (!first) out->push_back(',');
    first = false;
    if (!PrintMapKey(it.GetKey(), out)) return false;
    out->push_back(':');
    bool ok = struct_values ? PrintStructValue(it.GetValueRef().GetMessageValue(), out)
                            : PrintMapValue(it.GetValueRef(), vf, out);
    if (!ok) return false;
  }
  out->push_back('}');
  return true;
}

bool PrintFields(const Message& message, std::string* out) {
  const Reflection* r = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(message, &fields);
  out->push_back('{');
  bool first = true;
  for (const FieldDescriptor* field : fields) {
    // Extensions are unknown to protobuf's type resolver and so never printed.
    if (field->is_extension()) continue;
    if (!first) out->push_back(',');
    first = false;
    const std::string& name = field->json_name();
    for (char c : name) {
      if (c == '"' || c == '\\' || c == '<' || c == '>' || static_cast<unsigned char>(c) < 0x20 ||
          static_cast<unsigned char>(c) >= 0x7f) {
        return false;
      }
    }
    AppendQuoted(name, out);
    out->push_back(':');
    if (field->is_map()) {
      if (!PrintMap(message, field, /*struct_values=*/false, out)) return false;
    } else if (field->is_repeated()) {
      int n = r->FieldSize(message, field);
      out->push_back('[');
      for (int i = 0; i < n; ++i) {
        if (i > 0) out->push_back(',');
        if (!PrintFieldValue(message, field, i, out)) return false;
      }
      out->push_back(']');
    } else if (!PrintFieldValue(message, field, -1, out)) {
      return false;
    }
  }
  out->push_back('}');
  return true;
}

void AppendTwo(int v, std::string* out) {
  out->push_back(static_cast<char>('0' + v / 10));
  out->push_back(static_cast<char>('0' + v % 10));
}

bool PrintTimestamp(int64_t seconds, int32_t nanos, std::string* out) {
  if (seconds < kTimestampMinSeconds || seconds > kTimestampMaxSeconds || nanos < 0 ||
      nanos >= kNanosPerSecond) {
    return false;
  }
  int64_t days = seconds / 86400;
  int64_t rem = seconds % 86400;
  if (rem < 0) {
    rem += 86400;
    --days;
  }
  // Civil date from days since 1970-01-01 (proleptic Gregorian; H. Hinnant's algorithm).
  int64_t z = days + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = yoe + era * 400;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int64_t d = doy - (153 * mp + 2) / 5 + 1;
  int64_t m = mp < 10 ? mp + 3 : mp - 9;
  if (m <= 2) ++y;
  char buf[32];
  std::snprintf(buf, sizeof(buf), "\"%04d-", static_cast<int>(y));
  out->append(buf);
  AppendTwo(static_cast<int>(m), out);
  out->push_back('-');
  AppendTwo(static_cast<int>(d), out);
  out->push_back('T');
  AppendTwo(static_cast<int>(rem / 3600), out);
  out->push_back(':');
  AppendTwo(static_cast<int>(rem / 60 % 60), out);
  out->push_back(':');
  AppendTwo(static_cast<int>(rem % 60), out);
  AppendNanos(nanos, out);
  out->append("Z\"");
  return true;
}

bool PrintDuration(int64_t seconds, int32_t nanos, std::string* out) {
  if (seconds < -kDurationMaxSeconds || seconds > kDurationMaxSeconds ||
      nanos <= -kNanosPerSecond || nanos >= kNanosPerSecond || (seconds < 0 && nanos > 0) ||
      (seconds > 0 && nanos < 0)) {
    return false;
  }
  out->push_back('"');
  if (seconds < 0 || nanos < 0) {
    out->push_back('-');
    seconds = -seconds;
    nanos = -nanos;
  }
  out->append(std::to_string(seconds));
  AppendNanos(nanos, out);
  out->append("s\"");
  return true;
}

// FieldMask paths: only plain snake_case segments ([a-z0-9_.], every '_' between two [a-z]), for
// which protobuf's ToCamelCase is simply "drop '_' and upper-case the next letter".
bool PrintFieldMask(const Message& message, const FieldDescriptor* paths, std::string* out) {
  const Reflection* r = message.GetReflection();
  int n = r->FieldSize(message, paths);
  out->push_back('"');
  std::string scratch;
  for (int i = 0; i < n; ++i) {
    if (i > 0) out->push_back(',');
    const std::string& p = r->GetRepeatedStringReference(message, paths, i, &scratch);
    for (size_t k = 0; k < p.size(); ++k) {
      char c = p[k];
      if (c == '_') {
        if (k == 0 || p[k - 1] < 'a' || p[k - 1] > 'z' || k + 1 >= p.size() || p[k + 1] < 'a' ||
            p[k + 1] > 'z') {
          return false;
        }
        out->push_back(static_cast<char>(p[k + 1] - 'a' + 'A'));
        ++k;
      } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.') {
        out->push_back(c);
      } else {
        return false;
      }
    }
  }
  out->push_back('"');
  return true;
}

bool PrintStruct(const Message& message, std::string* out) {
  if (HasUnknownFields(message)) return false;
  const FieldDescriptor* fields = message.GetDescriptor()->FindFieldByNumber(1);
  if (fields == nullptr || !fields->is_map()) return false;
  if (message.GetReflection()->FieldSize(message, fields) == 0) {
    out->append("{}");
    return true;
  }
  return PrintMap(message, fields, /*struct_values=*/true, out);
}

bool PrintListValue(const Message& message, std::string* out) {
  if (HasUnknownFields(message)) return false;
  const FieldDescriptor* values = message.GetDescriptor()->FindFieldByNumber(1);
  if (values == nullptr) return false;
  const Reflection* r = message.GetReflection();
  int n = r->FieldSize(message, values);
  out->push_back('[');
  for (int i = 0; i < n; ++i) {
    if (i > 0) out->push_back(',');
    if (!PrintStructValue(r->GetRepeatedMessage(message, values, i), out)) return false;
  }
  out->push_back(']');
  return true;
}

// google.protobuf.Value: kind oneof (null 1, number 2, string 3, bool 4, struct 5, list 6).
bool PrintStructValue(const Message& value, std::string* out) {
  NestingGuard guard;
  if (guard.too_deep()) return false;
  if (HasUnknownFields(value)) return false;
  const Reflection* r = value.GetReflection();
  const Descriptor* d = value.GetDescriptor();
  const auto* kind = d->FindOneofByName("kind");
  if (kind == nullptr) return false;
  const FieldDescriptor* f = r->GetOneofFieldDescriptor(value, kind);
  if (f == nullptr) return false;  // Unset kind: protobuf's handling is left to protobuf.
  switch (f->number()) {
    case 1:
      out->append("null");
      return true;
    case 2: {
      double v = r->GetDouble(value, f);
      if (!std::isfinite(v)) return false;
      AppendDouble(v, out);
      return true;
    }
    case 3: {
      std::string scratch;
      return AppendString(r->GetStringReference(value, f, &scratch), out);
    }
    case 4:
      out->append(r->GetBool(value, f) ? "true" : "false");
      return true;
    case 5:
      return PrintStruct(r->GetMessage(value, f), out);
    case 6:
      return PrintListValue(r->GetMessage(value, f), out);
    default:
      return false;
  }
}

// A wrapper's single `value` field (number 1), printed bare even when it is the default.
bool PrintWrapper(const Message& message, std::string* out) {
  const FieldDescriptor* f = message.GetDescriptor()->FindFieldByNumber(1);
  if (f == nullptr || f->is_repeated()) return false;
  return PrintFieldValue(message, f, -1, out);
}

bool PrintMessageValue(const Message& message, std::string* out) {
  NestingGuard guard;
  if (guard.too_deep()) return false;
  if (HasUnknownFields(message)) return false;
  const Descriptor* d = message.GetDescriptor();
  if (d->file()->package() != "google.protobuf") return PrintFields(message, out);
  const std::string& name = d->full_name();
  const Reflection* r = message.GetReflection();
  if (name == "google.protobuf.Timestamp" || name == "google.protobuf.Duration") {
    const FieldDescriptor* sf = d->FindFieldByNumber(1);
    const FieldDescriptor* nf = d->FindFieldByNumber(2);
    if (sf == nullptr || nf == nullptr) return false;
    int64_t seconds = r->GetInt64(message, sf);
    int32_t nanos = r->GetInt32(message, nf);
    return name == "google.protobuf.Timestamp" ? PrintTimestamp(seconds, nanos, out)
                                               : PrintDuration(seconds, nanos, out);
  }
  if (name == "google.protobuf.DoubleValue" || name == "google.protobuf.FloatValue" ||
      name == "google.protobuf.Int64Value" || name == "google.protobuf.UInt64Value" ||
      name == "google.protobuf.Int32Value" || name == "google.protobuf.UInt32Value" ||
      name == "google.protobuf.BoolValue" || name == "google.protobuf.StringValue" ||
      name == "google.protobuf.BytesValue") {
    return PrintWrapper(message, out);
  }
  if (name == "google.protobuf.Struct") return PrintStruct(message, out);
  if (name == "google.protobuf.Value") return PrintStructValue(message, out);
  if (name == "google.protobuf.ListValue") return PrintListValue(message, out);
  if (name == "google.protobuf.FieldMask") {
    const FieldDescriptor* paths = d->FindFieldByNumber(1);
    if (paths == nullptr) return false;
    return PrintFieldMask(message, paths, out);
  }
  if (name == "google.protobuf.Any") return false;
  // Empty and the descriptor.proto types are ordinary messages.
  return PrintFields(message, out);
}

}  // namespace

bool PrintMessage(const Message& message, std::string* out) {
  return PrintMessageValue(message, out);
}

}  // namespace metald::rpc::json
