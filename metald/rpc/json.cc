#include "metald/rpc/json.h"

#include <google/protobuf/arenastring.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/generated_message_reflection.h>
#include <google/protobuf/map_field.h>
#include <google/protobuf/message.h>
#include <google/protobuf/repeated_field.h>
#include <google/protobuf/repeated_ptr_field.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/stubs/strutil.h>
#include <google/protobuf/unknown_field_set.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string_view>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

// protobuf 3.21 keeps map reflection (GetMapData, MapBegin, MapEnd) and the generated layout
// (ReflectionSchema) private and befriends a few named classes; this one (CEL's, which metald
// does not link) is borrowed to read a map field in the order protobuf's serializer emits it,
// and to read generated messages' fields directly. Only used below, through MapAccess.
// The direct reads below mirror protobuf 3.21's generated_message_reflection.cc (schema offsets,
// has-bits, oneof cases, ArenaStringPtr); another version must be re-checked against it (the
// differential tests and fuzz_rpc_json_print do that) before this is relaxed.
static_assert(GOOGLE_PROTOBUF_VERSION >= 3021000 && GOOGLE_PROTOBUF_VERSION < 3022000,
              "json.cc reads protobuf 3.21 generated layouts; re-verify for this version");

namespace google::protobuf::expr {
class CelMapReflectionFriend {
 public:
  static const internal::MapFieldBase* MapData(const Message& message, const Reflection* r,
                                               const FieldDescriptor* field) {
    return r->GetMapData(message, field);
  }
  static MapIterator Begin(Message* message, const Reflection* r, const FieldDescriptor* field) {
    return r->MapBegin(message, field);
  }
  static MapIterator End(Message* message, const Reflection* r, const FieldDescriptor* field) {
    return r->MapEnd(message, field);
  }
  // The generated class's layout (field offsets, has-bits, oneof cases), for reading fields
  // of messages known to be of that class without a Reflection call per access.
  static const internal::ReflectionSchema& Schema(const Reflection* r) { return r->schema_; }
  static bool HasUnknownFields(const Message& message, const Reflection* r) {
    const internal::InternalMetadata& md = r->GetInternalMetadata(message);
    return md.have_unknown_fields() &&
           !md.unknown_fields<UnknownFieldSet>(UnknownFieldSet::default_instance).empty();
  }
};
}  // namespace google::protobuf::expr

namespace metald::rpc::json {
namespace {

using MapAccess = google::protobuf::expr::CelMapReflectionFriend;

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::OneofDescriptor;
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
// Every message counts one level and a google.protobuf.Value one more (as this printer always
// has: what it declines must not change).
constexpr int kMaxDepth = 32;

// Bytes that end the plain-copy run of a JSON string: controls, '"', '\\', '<', '>' (protobuf
// escapes those) and everything >= 0x7f (DEL, and UTF-8 that must be validated).
constexpr auto kStopTable = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[c] = c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>';
  }
  return t;
}();

// ---------------------------------------------------------------------------------------------
// Output: raw pointer writes into the caller's string, grown geometrically. Every Put* must be
// preceded by a Reserve covering it; Append/Push reserve themselves.

class Writer {
 public:
  Writer(std::string* s, size_t hint) : s_(s) {
    const size_t start = s->size();
    s->resize(start + hint);
    p_ = s->data() + start;
    end_ = s->data() + s->size();
  }
  ~Writer() { s_->resize(static_cast<size_t>(p_ - s_->data())); }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  [[gnu::always_inline]] void Reserve(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) Grow(n);
  }
  void Put(char c) { *p_++ = c; }
  void Put(const char* data, size_t n) {
    std::memcpy(p_, data, n);
    p_ += n;
  }
  void Push(char c) {
    Reserve(1);
    Put(c);
  }
  void Append(const char* data, size_t n) {
    Reserve(n);
    Put(data, n);
  }
  void Append(std::string_view s) { Append(s.data(), s.size()); }
  // Raw cursor for std::to_chars after a Reserve.
  char* cursor() { return p_; }
  char* limit() { return end_; }
  void Advance(char* to) { p_ = to; }
  size_t written_since(size_t base) const { return static_cast<size_t>(p_ - s_->data()) - base; }

 private:
  [[gnu::noinline]] void Grow(size_t n) {
    const size_t off = static_cast<size_t>(p_ - s_->data());
    s_->resize(std::max(s_->size() * 2, off + n + 256));
    p_ = s_->data() + off;
    end_ = s_->data() + s_->size();
  }

  std::string* s_;
  char* p_;
  char* end_;
};

template <typename Int>
void PutInt(Int v, Writer& w) {
  w.Reserve(24);
  w.Advance(std::to_chars(w.cursor(), w.limit(), v).ptr);
}

template <typename Int>
void PutQuotedInt(Int v, Writer& w) {
  w.Reserve(26);
  w.Put('"');
  w.Advance(std::to_chars(w.cursor(), w.limit(), v).ptr);
  w.Put('"');
}

void AppendU16Escape(uint32_t unit, Writer& w) {
  char buf[6] = {'\\',
                 'u',
                 kHex[(unit >> 12) & 0xf],
                 kHex[(unit >> 8) & 0xf],
                 kHex[(unit >> 4) & 0xf],
                 kHex[unit & 0xf]};
  w.Put(buf, 6);
}

// Mirrors protobuf's util/internal/json_escaping.cc EscapeCodePoint: which code points the
// 3.21 printer escapes, and how. Returns false when `cp` is copied through as UTF-8.
// The caller reserved 12 bytes.
bool EscapeCodePoint(uint32_t cp, Writer& w) {
  if (cp < 0xa0) {
    char short_escape = 0;
    switch (cp) {
      case '\b':
        short_escape = 'b';
        break;
      case '\t':
        short_escape = 't';
        break;
      case '\n':
        short_escape = 'n';
        break;
      case '\f':
        short_escape = 'f';
        break;
      case '\r':
        short_escape = 'r';
        break;
      case '"':
        short_escape = '"';
        break;
      case '\\':
        short_escape = '\\';
        break;
      default:
        break;
    }
    if (short_escape != 0) {
      w.Put('\\');
      w.Put(short_escape);
      return true;
    }
    if (cp < 0x20 || cp == '<' || cp == '>' || cp >= 0x7f) {
      AppendU16Escape(cp, w);
      return true;
    }
    return false;
  }
  if (cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb) || cp == 0xad || cp == 0x6dd || cp == 0x70f ||
      cp == 0x17b4 || cp == 0x17b5 || (cp >= 0x600 && cp <= 0x603) ||
      (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
      (cp >= 0x2060 && cp <= 0x2064) || (cp >= 0x206a && cp <= 0x206f)) {
    AppendU16Escape(cp, w);
    return true;
  }
  if (cp == 0xe0001 || (cp >= 0x1d173 && cp <= 0x1d17a) || (cp >= 0xe0020 && cp <= 0xe007f)) {
    uint32_t v = cp - 0x10000;
    AppendU16Escape(0xd800 + (v >> 10), w);
    AppendU16Escape(0xdc00 + (v & 0x3ff), w);
    return true;
  }
  return false;
}

// The end of the run of bytes from `i` on that are copied as they are (none in kStopTable).
size_t PlainRunEnd(std::string_view s, size_t i) {
  const size_t n = s.size();
#if defined(__SSE2__)
  // 16 bytes at a time: signed < 0x20 catches controls and every byte >= 0x80.
  const __m128i space = _mm_set1_epi8(0x20);
  const __m128i del = _mm_set1_epi8(0x7f);
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i backslash = _mm_set1_epi8('\\');
  const __m128i lt = _mm_set1_epi8('<');
  const __m128i gt = _mm_set1_epi8('>');
  while (i + 16 <= n) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.data() + i));
    __m128i stop = _mm_or_si128(_mm_cmplt_epi8(v, space), _mm_cmpeq_epi8(v, del));
    stop = _mm_or_si128(stop, _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)));
    stop = _mm_or_si128(stop, _mm_or_si128(_mm_cmpeq_epi8(v, lt), _mm_cmpeq_epi8(v, gt)));
    const int mask = _mm_movemask_epi8(stop);
    if (mask != 0) return i + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(mask)));
    i += 16;
  }
#endif
  while (i < n && !kStopTable[static_cast<unsigned char>(s[i])]) ++i;
  return i;
}

// Appends `s` as a quoted JSON string. Returns false on anything but well-formed UTF-8
// (overlong forms, surrogates, > U+10FFFF), where protobuf's behaviour is left to protobuf.
bool AppendString(std::string_view s, Writer& w) {
  const size_t n = s.size();
  // Room for the common case (nothing escaped) in one go: quotes plus the bytes.
  w.Reserve(n + 2);
  w.Put('"');
  size_t i = 0;
  while (true) {
    size_t start = i;
    i = PlainRunEnd(s, i);
    // +1: the closing quote when the run ends the string.
    w.Reserve(i - start + 1);
    w.Put(s.data() + start, i - start);
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
    w.Reserve(13);
    if (!EscapeCodePoint(cp, w)) w.Put(s.data() + i, static_cast<size_t>(len));
    i += static_cast<size_t>(len);
  }
  w.Put('"');
  return true;
}

// Quoted standard base64 with padding (protobuf's Base64Escape).
void AppendBase64(std::string_view s, Writer& w) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const size_t n = s.size();
  w.Reserve((n + 2) / 3 * 4 + 2);
  w.Put('"');
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8) | p[i + 2];
    char quad[4] = {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63],
                    kAlphabet[v & 63]};
    w.Put(quad, 4);
  }
  if (n - i == 1) {
    const uint32_t v = uint32_t{p[i]} << 16;
    char quad[4] = {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], '=', '='};
    w.Put(quad, 4);
  } else if (n - i == 2) {
    const uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8);
    char quad[4] = {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63], '='};
    w.Put(quad, 4);
  }
  w.Put('"');
}

void AppendNonFinite(double v, Writer& w) {
  if (std::isnan(v)) {
    w.Append("\"NaN\"");
  } else {
    w.Append(v > 0 ? std::string_view("\"Infinity\"") : std::string_view("\"-Infinity\""));
  }
}

// protobuf's SimpleDtoa/SimpleFtoa, without the std::string.
void AppendDouble(double v, Writer& w) {
  if (!std::isfinite(v)) return AppendNonFinite(v, w);
  w.Reserve(google::protobuf::kDoubleToBufferSize);
  char* begin = w.cursor();
  google::protobuf::DoubleToBuffer(v, begin);
  w.Advance(begin + std::strlen(begin));
}

void AppendFloat(float v, Writer& w) {
  if (!std::isfinite(v)) return AppendNonFinite(v, w);
  w.Reserve(google::protobuf::kFloatToBufferSize);
  char* begin = w.cursor();
  google::protobuf::FloatToBuffer(v, begin);
  w.Advance(begin + std::strlen(begin));
}

void AppendBool(bool v, Writer& w) {
  w.Append(v ? std::string_view("true") : std::string_view("false"));
}

// ---------------------------------------------------------------------------------------------
// Plans: what the printer needs to know about a message type, computed once per Descriptor.

// How one value prints.
enum class Kind : uint8_t {
  kInt32,
  kUInt32,
  kInt64,
  kUInt64,
  kDouble,
  kFloat,
  kBool,
  kEnum,
  kString,
  kBytes,
  kMessage,
  kGroup,  // declined
};

// The message type's own JSON form.
enum class Wkt : uint8_t {
  kNone,  // ordinary message: {"field":...}
  kTimestamp,
  kDuration,
  kWrapper,
  kStruct,
  kValue,
  kListValue,
  kFieldMask,
  kDecline,  // Any, or a google.protobuf type of unexpected shape
};

// Enum value names by number, quoted, as FindValueByNumber would give them (the first value
// declared with a number wins). Dense tables only; sparse enums look names up at print time.
struct EnumNames {
  const EnumDescriptor* type = nullptr;
  bool null_value = false;  // google.protobuf.NullValue: prints `null`
  bool dense = false;
  int min = 0;
  std::vector<std::string> quoted;  // index number - min; empty: no such value
};

struct Plan;

// One value's printing: the field itself, or a map entry's value.
struct ValuePlan {
  Kind kind = Kind::kInt32;
  std::unique_ptr<EnumNames> enums;     // kEnum
  const Descriptor* message = nullptr;  // kMessage
  // The message type's plan, resolved on first use (plans never die, so a published pointer
  // stays valid; racing resolvers store the same pointer).
  mutable std::atomic<const Plan*> child{nullptr};
};

constexpr uint32_t kNoHasbit = static_cast<uint32_t>(-1);

struct FieldPlan {
  const FieldDescriptor* field = nullptr;
  std::string key;  // "jsonName":
  int number = 0;
  bool repeated = false;
  bool map = false;
  bool bad_name = false;  // json_name needs escaping: declined when the field is set
  Kind map_key = Kind::kString;
  ValuePlan value;  // the field's values, or for maps the entry's value
  // Direct access in instances of the generated class (Plan::fast_type), mirroring what
  // Reflection does with the same schema: `fast` when the field's storage is a plain value,
  // ArenaStringPtr, Message*, RepeatedField or RepeatedPtrField at `offset`.
  bool fast = false;
  bool in_oneof = false;           // real oneof: present iff its case == number
  uint32_t offset = 0;             // the field's (or its oneof's) storage
  uint32_t oneof_case_offset = 0;  // in_oneof
  uint32_t hasbit = kNoHasbit;     // explicit presence bit, if any
};

// Immutable once published, except the atomics.
struct Plan {
  const Descriptor* descriptor = nullptr;
  Wkt wkt = Wkt::kNone;
  int field_count = 0;
  std::unique_ptr<FieldPlan[]> fields;  // set-able fields in field-number order
  // WKT shape: field 1 (and Timestamp/Duration's field 2), Value's oneof.
  const FieldPlan* f1 = nullptr;
  const FieldPlan* f2 = nullptr;
  const OneofDescriptor* kind_oneof = nullptr;
  // The generated class of a generated-pool type (null otherwise): instances whose dynamic type
  // is exactly this read their `fast` fields directly.
  const std::type_info* fast_type = nullptr;
  const Reflection* fast_reflection = nullptr;
  const Message* default_instance = nullptr;
  uint32_t has_bits_offset = 0;
  // Output size of the last top-level print of this type: the next one reserves it.
  mutable std::atomic<uint32_t> size_hint{0};
};

Kind KindOf(const FieldDescriptor* f) {
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return Kind::kInt32;
    case FieldDescriptor::CPPTYPE_UINT32:
      return Kind::kUInt32;
    case FieldDescriptor::CPPTYPE_INT64:
      return Kind::kInt64;
    case FieldDescriptor::CPPTYPE_UINT64:
      return Kind::kUInt64;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return Kind::kDouble;
    case FieldDescriptor::CPPTYPE_FLOAT:
      return Kind::kFloat;
    case FieldDescriptor::CPPTYPE_BOOL:
      return Kind::kBool;
    case FieldDescriptor::CPPTYPE_ENUM:
      return Kind::kEnum;
    case FieldDescriptor::CPPTYPE_STRING:
      return f->type() == FieldDescriptor::TYPE_BYTES ? Kind::kBytes : Kind::kString;
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return f->type() == FieldDescriptor::TYPE_GROUP ? Kind::kGroup : Kind::kMessage;
  }
  return Kind::kGroup;
}

std::unique_ptr<EnumNames> MakeEnumNames(const EnumDescriptor* type) {
  auto names = std::make_unique<EnumNames>();
  names->type = type;
  names->null_value = type->full_name() == "google.protobuf.NullValue";
  if (type->value_count() == 0) return names;
  int lo = type->value(0)->number();
  int hi = lo;
  for (int i = 1; i < type->value_count(); ++i) {
    lo = std::min(lo, type->value(i)->number());
    hi = std::max(hi, type->value(i)->number());
  }
  // Dense enough for a table (the usual 0..N enums); otherwise FindValueByNumber.
  if (static_cast<int64_t>(hi) - lo >= 4 * int64_t{type->value_count()} + 64) return names;
  names->dense = true;
  names->min = lo;
  names->quoted.resize(static_cast<size_t>(hi - lo) + 1);
  for (int i = 0; i < type->value_count(); ++i) {
    const auto* v = type->value(i);
    std::string& slot = names->quoted[static_cast<size_t>(v->number() - lo)];
    if (slot.empty()) slot = "\"" + v->name() + "\"";
  }
  return names;
}

void FillValuePlan(const FieldDescriptor* f, ValuePlan* v) {
  v->kind = KindOf(f);
  if (v->kind == Kind::kEnum) v->enums = MakeEnumNames(f->enum_type());
  if (v->kind == Kind::kMessage) v->message = f->message_type();
}

bool NeedsEscape(const std::string& name) {
  for (char c : name) {
    if (kStopTable[static_cast<unsigned char>(c)]) return true;
  }
  return false;
}

const FieldPlan* FindFieldPlan(const Plan& plan, int number) {
  for (int i = 0; i < plan.field_count; ++i) {
    if (plan.fields[i].field->number() == number) return &plan.fields[i];
  }
  return nullptr;
}

bool IsSingular(const FieldDescriptor* f, FieldDescriptor::CppType type) {
  return f != nullptr && !f->is_repeated() && f->cpp_type() == type;
}

// Which WKT `d` is, checked against the shape the printer relies on (a pool may define its own
// google.protobuf types; odd ones are declined rather than misread).
void ClassifyWkt(Plan* plan) {
  const Descriptor* d = plan->descriptor;
  if (d->file()->package() != "google.protobuf") return;
  const std::string& name = d->full_name();
  const FieldDescriptor* f1 = d->FindFieldByNumber(1);
  const FieldDescriptor* f2 = d->FindFieldByNumber(2);
  plan->f1 = FindFieldPlan(*plan, 1);
  plan->f2 = FindFieldPlan(*plan, 2);
  auto set = [&](Wkt wkt, bool shape_ok) { plan->wkt = shape_ok ? wkt : Wkt::kDecline; };
  // Timestamp, Duration and wrappers read their fields whether set or not: no real oneofs.
  auto plain = [](const FieldDescriptor* f) {
    return f == nullptr || f->real_containing_oneof() == nullptr;
  };
  if (name == "google.protobuf.Timestamp" || name == "google.protobuf.Duration") {
    set(name == "google.protobuf.Timestamp" ? Wkt::kTimestamp : Wkt::kDuration,
        IsSingular(f1, FieldDescriptor::CPPTYPE_INT64) &&
            IsSingular(f2, FieldDescriptor::CPPTYPE_INT32) && plain(f1) && plain(f2));
  } else if (name == "google.protobuf.DoubleValue" || name == "google.protobuf.FloatValue" ||
             name == "google.protobuf.Int64Value" || name == "google.protobuf.UInt64Value" ||
             name == "google.protobuf.Int32Value" || name == "google.protobuf.UInt32Value" ||
             name == "google.protobuf.BoolValue" || name == "google.protobuf.StringValue" ||
             name == "google.protobuf.BytesValue") {
    set(Wkt::kWrapper, f1 != nullptr && !f1->is_repeated() &&
                           f1->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE && plain(f1));
  } else if (name == "google.protobuf.Struct") {
    set(Wkt::kStruct, f1 != nullptr && f1->is_map());
  } else if (name == "google.protobuf.Value") {
    plan->kind_oneof = d->FindOneofByName("kind");
    bool ok = plan->kind_oneof != nullptr;
    const FieldDescriptor::CppType types[] = {
        FieldDescriptor::CPPTYPE_ENUM,    FieldDescriptor::CPPTYPE_DOUBLE,
        FieldDescriptor::CPPTYPE_STRING,  FieldDescriptor::CPPTYPE_BOOL,
        FieldDescriptor::CPPTYPE_MESSAGE, FieldDescriptor::CPPTYPE_MESSAGE};
    for (int n = 1; ok && n <= 6; ++n) {
      const FieldDescriptor* f = d->FindFieldByNumber(n);
      ok = IsSingular(f, types[n - 1]) && f->containing_oneof() == plan->kind_oneof;
    }
    set(Wkt::kValue, ok);
  } else if (name == "google.protobuf.ListValue") {
    set(Wkt::kListValue,
        f1 != nullptr && f1->is_repeated() && f1->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE);
  } else if (name == "google.protobuf.FieldMask") {
    set(Wkt::kFieldMask,
        f1 != nullptr && f1->is_repeated() && f1->cpp_type() == FieldDescriptor::CPPTYPE_STRING);
  } else if (name == "google.protobuf.Any") {
    plan->wkt = Wkt::kDecline;
  }
  // Empty and the descriptor.proto types are ordinary messages.
}

// Records the generated class's layout for the fields it stores plainly. Anything unusual
// (weak or lazy fields, inlined strings, extensions) stays on the Reflection path.
void AddLayout(Plan* plan) {
  const Message* prototype =
      google::protobuf::MessageFactory::generated_factory()->GetPrototype(plan->descriptor);
  if (prototype == nullptr) return;
  const Reflection* r = prototype->GetReflection();
  const google::protobuf::internal::ReflectionSchema& schema = MapAccess::Schema(r);
  if (schema.HasWeakFields()) return;
  plan->fast_type = &typeid(*prototype);
  plan->fast_reflection = r;
  plan->default_instance = schema.default_instance_;
  plan->has_bits_offset = schema.HasHasbits() ? schema.HasBitsOffset() : 0;
  for (int i = 0; i < plan->field_count; ++i) {
    FieldPlan& fp = plan->fields[i];
    const FieldDescriptor* f = fp.field;
    if (f->is_extension() || f->options().weak() || f->options().lazy() ||
        f->options().unverified_lazy() || fp.map || schema.IsFieldInlined(f)) {
      continue;
    }
    fp.offset = schema.GetFieldOffset(f);
    if (schema.InRealOneof(f)) {
      fp.in_oneof = true;
      fp.oneof_case_offset = schema.GetOneofCaseOffset(f->containing_oneof());
    } else if (!fp.repeated && schema.HasHasbits()) {
      fp.hasbit = schema.HasBitIndex(f);
    }
    fp.fast = true;
  }
}

std::unique_ptr<Plan> BuildPlan(const Descriptor* d) {
  auto plan = std::make_unique<Plan>();
  plan->descriptor = d;
  plan->field_count = d->field_count();
  std::vector<const FieldDescriptor*> by_number;
  by_number.reserve(static_cast<size_t>(d->field_count()));
  for (int i = 0; i < d->field_count(); ++i) by_number.push_back(d->field(i));
  std::sort(
      by_number.begin(), by_number.end(),
      [](const FieldDescriptor* a, const FieldDescriptor* b) { return a->number() < b->number(); });
  plan->fields = std::make_unique<FieldPlan[]>(by_number.size());
  for (size_t i = 0; i < by_number.size(); ++i) {
    const FieldDescriptor* f = by_number[i];
    FieldPlan& fp = plan->fields[i];
    fp.field = f;
    fp.number = f->number();
    fp.key = "\"" + f->json_name() + "\":";
    fp.bad_name = NeedsEscape(f->json_name());
    fp.repeated = f->is_repeated();
    fp.map = f->is_map();
    if (fp.map) {
      fp.map_key = KindOf(f->message_type()->map_key());
      FillValuePlan(f->message_type()->map_value(), &fp.value);
    } else {
      FillValuePlan(f, &fp.value);
    }
  }
  ClassifyWkt(plan.get());
  if (d->file()->pool() == DescriptorPool::generated_pool()) AddLayout(plan.get());
  return plan;
}

// Plans for the generated pool's descriptors, which live as long as the process: built once,
// never freed. Guarded by g_plans_mu; published plans are immutable (but for their atomics).
// Descriptors of other pools may die and their addresses be reused, so their plans live only
// for one PrintMessage call (PrintContext::transient).
std::mutex g_plans_mu;
std::unordered_map<const Descriptor*, std::unique_ptr<const Plan>>* g_plans = nullptr;

const Plan* SharedPlan(const Descriptor* d) {
  // Per-thread front cache: the common lookup takes no lock.
  struct Slot {
    const Descriptor* d;
    const Plan* plan;
  };
  thread_local Slot front[16] = {};
  Slot& slot = front[(reinterpret_cast<uintptr_t>(d) >> 5) & 15];
  if (slot.d == d) return slot.plan;
  const Plan* plan;
  {
    std::lock_guard<std::mutex> lock(g_plans_mu);
    if (g_plans == nullptr)
      g_plans = new std::unordered_map<const Descriptor*, std::unique_ptr<const Plan>>();
    auto& entry = (*g_plans)[d];
    if (entry == nullptr) entry = BuildPlan(d);
    plan = entry.get();
  }
  slot = {d, plan};
  return plan;
}

// State of one PrintMessage call.
struct PrintContext {
  Writer* w;
  std::string scratch;  // for GetStringReference
  // Plans of non-generated descriptors met in this call.
  std::unordered_map<const Descriptor*, std::unique_ptr<const Plan>> transient;

  const Plan* PlanFor(const Descriptor* d) {
    if (d->file()->pool() == DescriptorPool::generated_pool()) return SharedPlan(d);
    auto& entry = transient[d];
    if (entry == nullptr) entry = BuildPlan(d);
    return entry.get();
  }

  const Plan* ChildPlan(const ValuePlan& v) {
    const Plan* plan = v.child.load(std::memory_order_acquire);
    if (plan == nullptr) {
      plan = PlanFor(v.message);
      // A generated plan's children are generated too (a pool's types refer only to its own
      // and its underlays'), so only shared plans are stored in shared plans.
      v.child.store(plan, std::memory_order_release);
    }
    return plan;
  }
};

// ---------------------------------------------------------------------------------------------
// Printing.

void AppendEnum(const EnumNames& names, int number, Writer& w) {
  if (names.null_value) return w.Append("null");
  if (names.dense) {
    const int64_t i = int64_t{number} - names.min;
    if (i >= 0 && i < static_cast<int64_t>(names.quoted.size())) {
      const std::string& q = names.quoted[static_cast<size_t>(i)];
      if (!q.empty()) return w.Append(q);
    }
    return PutInt(number, w);
  }
  const auto* value = names.type->FindValueByNumber(number);
  if (value == nullptr) return PutInt(number, w);
  w.Reserve(value->name().size() + 2);
  w.Put('"');
  w.Put(value->name().data(), value->name().size());
  w.Put('"');
}

// Unknown fields are re-serialized after the known ones, and protobuf's printer reacts to them
// (prints those whose number its type knows, e.g. an out-of-range value of a closed proto2
// enum; drops whole WKT values holding them): messages with any are declined.
bool HasUnknownFields(const Message& message, const Reflection* r) {
  return MapAccess::HasUnknownFields(message, r);
}

bool PrintMessageValue(const Message& message, const Plan& plan, int depth, PrintContext& ctx);
bool PrintStructValue(const Message& value, const Plan& plan, int depth, PrintContext& ctx);

// ---------------------------------------------------------------------------------------------
// Direct reads of a generated class's fields (FieldPlan::fast), each the same as Reflection's
// accessor with the same ReflectionSchema (generated_message_reflection.cc, protobuf 3.21).

template <typename T>
T Load(const char* base, uint32_t offset) {
  T v;
  std::memcpy(&v, base + offset, sizeof(T));
  return v;
}

template <typename T>
const T& RefAt(const char* base, uint32_t offset) {
  return *reinterpret_cast<const T*>(base + offset);
}

template <typename T>
const T& RepeatedAt(const char* base, const FieldPlan& fp, int index) {
  return RefAt<google::protobuf::RepeatedField<T>>(base, fp.offset).Get(index);
}

// Reflection::FieldSize of a repeated (non-map) field.
int FastSize(const char* base, const FieldPlan& fp) {
  using google::protobuf::RepeatedField;
  using google::protobuf::RepeatedPtrField;
  switch (fp.value.kind) {
    case Kind::kInt32:
      return RefAt<RepeatedField<int32_t>>(base, fp.offset).size();
    case Kind::kUInt32:
      return RefAt<RepeatedField<uint32_t>>(base, fp.offset).size();
    case Kind::kInt64:
      return RefAt<RepeatedField<int64_t>>(base, fp.offset).size();
    case Kind::kUInt64:
      return RefAt<RepeatedField<uint64_t>>(base, fp.offset).size();
    case Kind::kDouble:
      return RefAt<RepeatedField<double>>(base, fp.offset).size();
    case Kind::kFloat:
      return RefAt<RepeatedField<float>>(base, fp.offset).size();
    case Kind::kBool:
      return RefAt<RepeatedField<bool>>(base, fp.offset).size();
    case Kind::kEnum:
      return RefAt<RepeatedField<int>>(base, fp.offset).size();
    case Kind::kString:
    case Kind::kBytes:
      return RefAt<RepeatedPtrField<std::string>>(base, fp.offset).size();
    case Kind::kMessage:
    case Kind::kGroup:
      return RefAt<RepeatedPtrField<Message>>(base, fp.offset).size();
  }
  return 0;
}

// Reflection::HasField of a singular field (HasOneofField / HasBit). `message` is not the
// default instance (PrintFields handles that).
bool FastHas(const char* base, const Plan& plan, const FieldPlan& fp) {
  if (fp.in_oneof)
    return Load<uint32_t>(base, fp.oneof_case_offset) == static_cast<uint32_t>(fp.number);
  if (fp.hasbit != kNoHasbit) {
    const uint32_t word = Load<uint32_t>(base, plan.has_bits_offset + (fp.hasbit / 32) * 4);
    return ((word >> (fp.hasbit % 32)) & 1u) != 0;
  }
  // Implicit presence (proto3): a non-zero value, a non-empty string, a sub-message.
  switch (fp.value.kind) {
    case Kind::kMessage:
    case Kind::kGroup:
      return Load<const Message*>(base, fp.offset) != nullptr;
    case Kind::kString:
    case Kind::kBytes:
      return !RefAt<google::protobuf::internal::ArenaStringPtr>(base, fp.offset).Get().empty();
    case Kind::kBool:
      return Load<bool>(base, fp.offset);
    case Kind::kInt32:
    case Kind::kUInt32:
    case Kind::kFloat:
    case Kind::kEnum:
      return Load<uint32_t>(base, fp.offset) != 0;
    case Kind::kInt64:
    case Kind::kUInt64:
    case Kind::kDouble:
      return Load<uint64_t>(base, fp.offset) != 0;
  }
  return false;
}

// Reflection::GetStringReference of a singular field.
const std::string& FastString(const char* base, const FieldPlan& fp) {
  const auto& s = RefAt<google::protobuf::internal::ArenaStringPtr>(base, fp.offset);
  return s.IsDefault() ? fp.field->default_value_string() : s.Get();
}

// PrintFieldValue for a `fast` field of an instance of the plan's generated class.
bool PrintFastValue(const Message& message, const Reflection* r, const FieldPlan& fp, int index,
                    int depth, PrintContext& ctx) {
  const char* base = reinterpret_cast<const char*>(&message);
  const bool rep = index >= 0;
  Writer& w = *ctx.w;
  switch (fp.value.kind) {
    case Kind::kInt32:
      PutInt(rep ? RepeatedAt<int32_t>(base, fp, index) : Load<int32_t>(base, fp.offset), w);
      return true;
    case Kind::kUInt32:
      PutInt(rep ? RepeatedAt<uint32_t>(base, fp, index) : Load<uint32_t>(base, fp.offset), w);
      return true;
    case Kind::kInt64:
      PutQuotedInt(rep ? RepeatedAt<int64_t>(base, fp, index) : Load<int64_t>(base, fp.offset), w);
      return true;
    case Kind::kUInt64:
      PutQuotedInt(rep ? RepeatedAt<uint64_t>(base, fp, index) : Load<uint64_t>(base, fp.offset),
                   w);
      return true;
    case Kind::kDouble:
      AppendDouble(rep ? RepeatedAt<double>(base, fp, index) : Load<double>(base, fp.offset), w);
      return true;
    case Kind::kFloat:
      AppendFloat(rep ? RepeatedAt<float>(base, fp, index) : Load<float>(base, fp.offset), w);
      return true;
    case Kind::kBool:
      AppendBool(rep ? RepeatedAt<bool>(base, fp, index) : Load<bool>(base, fp.offset), w);
      return true;
    case Kind::kEnum:
      AppendEnum(*fp.value.enums,
                 rep ? RepeatedAt<int>(base, fp, index) : Load<int>(base, fp.offset), w);
      return true;
    case Kind::kString:
    case Kind::kBytes: {
      const std::string& s =
          rep ? RefAt<google::protobuf::RepeatedPtrField<std::string>>(base, fp.offset).Get(index)
              : FastString(base, fp);
      if (fp.value.kind == Kind::kString) return AppendString(s, w);
      AppendBase64(s, w);
      return true;
    }
    case Kind::kMessage: {
      const Message* sub =
          rep ? &RefAt<google::protobuf::RepeatedPtrField<Message>>(base, fp.offset).Get(index)
              : Load<const Message*>(base, fp.offset);
      if (sub == nullptr) sub = &r->GetMessage(message, fp.field);  // the type's default
      return PrintMessageValue(*sub, *ctx.ChildPlan(fp.value), depth, ctx);
    }
    case Kind::kGroup:
      return false;
  }
  return false;
}

// Appends one value of `fp` (index `index` when repeated, -1 otherwise).
// `fast`: `message` is an instance of the plan's generated class.
bool PrintFieldValue(const Message& message, const Reflection* r, bool fast, const FieldPlan& fp,
                     int index, int depth, PrintContext& ctx) {
  if (fast && fp.fast) return PrintFastValue(message, r, fp, index, depth, ctx);
  const FieldDescriptor* field = fp.field;
  const bool rep = index >= 0;
  Writer& w = *ctx.w;
  switch (fp.value.kind) {
    case Kind::kInt32:
      PutInt(rep ? r->GetRepeatedInt32(message, field, index) : r->GetInt32(message, field), w);
      return true;
    case Kind::kUInt32:
      PutInt(rep ? r->GetRepeatedUInt32(message, field, index) : r->GetUInt32(message, field), w);
      return true;
    case Kind::kInt64:
      PutQuotedInt(rep ? r->GetRepeatedInt64(message, field, index) : r->GetInt64(message, field),
                   w);
      return true;
    case Kind::kUInt64:
      PutQuotedInt(rep ? r->GetRepeatedUInt64(message, field, index) : r->GetUInt64(message, field),
                   w);
      return true;
    case Kind::kDouble:
      AppendDouble(rep ? r->GetRepeatedDouble(message, field, index) : r->GetDouble(message, field),
                   w);
      return true;
    case Kind::kFloat:
      AppendFloat(rep ? r->GetRepeatedFloat(message, field, index) : r->GetFloat(message, field),
                  w);
      return true;
    case Kind::kBool:
      AppendBool(rep ? r->GetRepeatedBool(message, field, index) : r->GetBool(message, field), w);
      return true;
    case Kind::kEnum:
      AppendEnum(
          *fp.value.enums,
          rep ? r->GetRepeatedEnumValue(message, field, index) : r->GetEnumValue(message, field),
          w);
      return true;
    case Kind::kString:
      return AppendString(rep ? r->GetRepeatedStringReference(message, field, index, &ctx.scratch)
                              : r->GetStringReference(message, field, &ctx.scratch),
                          w);
    case Kind::kBytes:
      AppendBase64(rep ? r->GetRepeatedStringReference(message, field, index, &ctx.scratch)
                       : r->GetStringReference(message, field, &ctx.scratch),
                   w);
      return true;
    case Kind::kMessage:
      return PrintMessageValue(
          rep ? r->GetRepeatedMessage(message, field, index) : r->GetMessage(message, field),
          *ctx.ChildPlan(fp.value), depth, ctx);
    case Kind::kGroup:
      return false;
  }
  return false;
}

// Appends a map key (always a JSON string).
bool PrintMapKey(const google::protobuf::MapKey& key, Writer& w) {
  switch (key.type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      return AppendString(key.GetStringValue(), w);
    case FieldDescriptor::CPPTYPE_BOOL:
      w.Append(key.GetBoolValue() ? std::string_view("\"true\"") : std::string_view("\"false\""));
      return true;
    case FieldDescriptor::CPPTYPE_INT32:
      PutQuotedInt(key.GetInt32Value(), w);
      return true;
    case FieldDescriptor::CPPTYPE_UINT32:
      PutQuotedInt(key.GetUInt32Value(), w);
      return true;
    case FieldDescriptor::CPPTYPE_INT64:
      PutQuotedInt(key.GetInt64Value(), w);
      return true;
    case FieldDescriptor::CPPTYPE_UINT64:
      PutQuotedInt(key.GetUInt64Value(), w);
      return true;
    default:
      return false;
  }
}

bool PrintMapValue(const google::protobuf::MapValueConstRef& value, const ValuePlan& vp, int depth,
                   PrintContext& ctx) {
  Writer& w = *ctx.w;
  switch (vp.kind) {
    case Kind::kInt32:
      PutInt(value.GetInt32Value(), w);
      return true;
    case Kind::kUInt32:
      PutInt(value.GetUInt32Value(), w);
      return true;
    case Kind::kInt64:
      PutQuotedInt(value.GetInt64Value(), w);
      return true;
    case Kind::kUInt64:
      PutQuotedInt(value.GetUInt64Value(), w);
      return true;
    case Kind::kDouble:
      AppendDouble(value.GetDoubleValue(), w);
      return true;
    case Kind::kFloat:
      AppendFloat(value.GetFloatValue(), w);
      return true;
    case Kind::kBool:
      AppendBool(value.GetBoolValue(), w);
      return true;
    case Kind::kEnum:
      AppendEnum(*vp.enums, value.GetEnumValue(), w);
      return true;
    case Kind::kString:
      return AppendString(value.GetStringValue(), w);
    case Kind::kBytes:
      AppendBase64(value.GetStringValue(), w);
      return true;
    case Kind::kMessage:
      return PrintMessageValue(value.GetMessageValue(), *ctx.ChildPlan(vp), depth, ctx);
    case Kind::kGroup:
      return false;
  }
  return false;
}

// Whether `message` is an instance of a generated class (not a DynamicMessage).
bool IsGenerated(const Message& message, const Descriptor* d) {
  if (d->file()->pool() != DescriptorPool::generated_pool()) return false;
  const Message* prototype = google::protobuf::MessageFactory::generated_factory()->GetPrototype(d);
  return prototype != nullptr && typeid(*prototype) == typeid(message);
}

// protobuf's MapFieldBase gains members under ThreadSanitizer (map_field.h), so in a TSan build
// the inline Map code here disagrees with an uninstrumented libprotobuf's maps (Struct's):
// such builds keep to MapIterator, which runs libprotobuf's own code.
#if defined(__SANITIZE_THREAD__) || defined(THREAD_SANITIZER)
constexpr bool kTypedMaps = false;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool kTypedMaps = false;
#else
constexpr bool kTypedMaps = true;
#endif
#else
constexpr bool kTypedMaps = true;
#endif

// Fast path for generated maps whose Map type is known here: iterate the Map itself (the order
// MapBegin's iterator walks), without MapIterator's heap iterator and key copies. GetMap()
// first syncs the Map from the repeated view if that was changed last, as MapBegin does.
// Returns -1 when `base` is not such a map (nothing written), else 1 printed / 0 declined.
template <typename Value, typename PrintValue>
int PrintTypedMap(const google::protobuf::internal::MapFieldBase* base, PrintContext& ctx,
                  PrintValue print_value) {
  using Typed = google::protobuf::internal::TypeDefinedMapFieldBase<std::string, Value>;
  const auto* typed = dynamic_cast<const Typed*>(base);
  if (typed == nullptr) return -1;
  Writer& w = *ctx.w;
  w.Push('{');
  bool first = true;
  for (const auto& [key, value] : typed->GetMap()) {
    if (!first) w.Push(',');
    first = false;
    if (!AppendString(key, w)) return 0;
    w.Push(':');
    if (!print_value(value)) return 0;
  }
  w.Push('}');
  return 1;
}

// Map entries in the order protobuf's (non-deterministic) serializer emits them: the Map's
// iteration order, which MapBegin gives after syncing the Map from the repeated view if that
// was changed last. Exception: a DynamicMessage whose Map is stale serializes the repeated
// view instead (entries as stored, duplicates included); the printer declines those.
// `struct_values`: the values are google.protobuf.Value (Struct.fields).
// MapBegin re-marks the map as the authoritative side: a logically const operation, but not
// safe against concurrent access to `message` (json.h).
bool PrintMap(const Message& message, const Reflection* r, const FieldPlan& fp, bool struct_values,
              int depth, PrintContext& ctx) {
  const google::protobuf::internal::MapFieldBase* base = MapAccess::MapData(message, r, fp.field);
  if (kTypedMaps && fp.map_key == Kind::kString) {
    int done = -1;
    if (struct_values) {
      const Plan* value_plan = ctx.ChildPlan(fp.value);
      done =
          PrintTypedMap<google::protobuf::Value>(base, ctx, [&](const google::protobuf::Value& v) {
            return PrintStructValue(v, *value_plan, depth, ctx);
          });
    } else if (fp.value.kind == Kind::kString) {
      done = PrintTypedMap<std::string>(
          base, ctx, [&](const std::string& v) { return AppendString(v, *ctx.w); });
    }
    if (done >= 0) return done == 1;
  }
  if (!base->IsMapValid() && !IsGenerated(message, message.GetDescriptor())) return false;
  Message* mutable_message = const_cast<Message*>(&message);
  const Plan* value_plan = struct_values ? ctx.ChildPlan(fp.value) : nullptr;
  Writer& w = *ctx.w;
  w.Push('{');
  bool first = true;
  for (auto it = MapAccess::Begin(mutable_message, r, fp.field),
            end = MapAccess::End(mutable_message, r, fp.field);
       it != end; ++it) {
    if (!first) w.Push(',');
    first = false;
    if (!PrintMapKey(it.GetKey(), w)) return false;
    w.Push(':');
    bool ok = struct_values
                  ? PrintStructValue(it.GetValueRef().GetMessageValue(), *value_plan, depth, ctx)
                  : PrintMapValue(it.GetValueRef(), fp.value, depth, ctx);
    if (!ok) return false;
  }
  w.Push('}');
  return true;
}

bool PrintFields(const Message& message, const Reflection* r, bool fast, const Plan& plan,
                 int depth, PrintContext& ctx) {
  Writer& w = *ctx.w;
  // The default instance has no field set (Reflection::ListFields says the same).
  if (fast && &message == plan.default_instance) {
    w.Append("{}");
    return true;
  }
  const char* base = reinterpret_cast<const char*>(&message);
  w.Push('{');
  bool first = true;
  // Field-number order, as protobuf's printer (it walks the serialized form). Extensions are
  // unknown to protobuf's type resolver and so never printed: the plan has none.
  for (int i = 0; i < plan.field_count; ++i) {
    const FieldPlan& fp = plan.fields[i];
    int size = 0;
    if (fast && fp.fast) {
      if (fp.repeated) {
        size = FastSize(base, fp);
        if (size == 0) continue;
      } else if (!FastHas(base, plan, fp)) {
        continue;
      }
    } else if (fp.repeated) {
      size = r->FieldSize(message, fp.field);
      if (size == 0) continue;
    } else if (!r->HasField(message, fp.field)) {
      continue;
    }
    if (fp.bad_name) return false;
    w.Reserve(fp.key.size() + 2);
    if (!first) w.Put(',');
    first = false;
    w.Put(fp.key.data(), fp.key.size());
    if (fp.map) {
      if (!PrintMap(message, r, fp, /*struct_values=*/false, depth, ctx)) return false;
    } else if (fp.repeated) {
      w.Put('[');
      for (int k = 0; k < size; ++k) {
        if (k > 0) w.Push(',');
        if (!PrintFieldValue(message, r, fast, fp, k, depth, ctx)) return false;
      }
      w.Push(']');
    } else if (!PrintFieldValue(message, r, fast, fp, -1, depth, ctx)) {
      return false;
    }
  }
  w.Push('}');
  return true;
}

// Two decimal digits of `v` (0..99).
void PutTwo(int v, Writer& w) {
  w.Put(static_cast<char>('0' + v / 10));
  w.Put(static_cast<char>('0' + v % 10));
}

// ".123", ".123456" or ".123456789" (protobuf's FormatNanos); nothing for 0. Reserved: 10.
void PutNanos(int32_t nanos, Writer& w) {
  if (nanos == 0) return;
  int digits = 9;
  if (nanos % 1000000 == 0) {
    nanos /= 1000000;
    digits = 3;
  } else if (nanos % 1000 == 0) {
    nanos /= 1000;
    digits = 6;
  }
  char buf[10];
  buf[0] = '.';
  for (int i = digits; i >= 1; --i) {
    buf[i] = static_cast<char>('0' + nanos % 10);
    nanos /= 10;
  }
  w.Put(buf, static_cast<size_t>(digits) + 1);
}

bool PrintTimestamp(int64_t seconds, int32_t nanos, Writer& w) {
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
  // "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ": the range check keeps the year in 1..9999.
  w.Reserve(32);
  w.Put('"');
  PutTwo(static_cast<int>(y / 100), w);
  PutTwo(static_cast<int>(y % 100), w);
  w.Put('-');
  PutTwo(static_cast<int>(m), w);
  w.Put('-');
  PutTwo(static_cast<int>(d), w);
  w.Put('T');
  PutTwo(static_cast<int>(rem / 3600), w);
  w.Put(':');
  PutTwo(static_cast<int>(rem / 60 % 60), w);
  w.Put(':');
  PutTwo(static_cast<int>(rem % 60), w);
  PutNanos(nanos, w);
  w.Put("Z\"", 2);
  return true;
}

bool PrintDuration(int64_t seconds, int32_t nanos, Writer& w) {
  if (seconds < -kDurationMaxSeconds || seconds > kDurationMaxSeconds ||
      nanos <= -kNanosPerSecond || nanos >= kNanosPerSecond || (seconds < 0 && nanos > 0) ||
      (seconds > 0 && nanos < 0)) {
    return false;
  }
  w.Reserve(40);
  w.Put('"');
  if (seconds < 0 || nanos < 0) {
    w.Put('-');
    seconds = -seconds;
    nanos = -nanos;
  }
  w.Advance(std::to_chars(w.cursor(), w.limit(), seconds).ptr);
  PutNanos(nanos, w);
  w.Put("s\"", 2);
  return true;
}

// FieldMask paths: only plain snake_case segments ([a-z0-9_.], every '_' between two [a-z]), for
// which protobuf's ToCamelCase is simply "drop '_' and upper-case the next letter".
bool PrintFieldMask(const Message& message, const Reflection* r, const FieldDescriptor* paths,
                    PrintContext& ctx) {
  Writer& w = *ctx.w;
  int n = r->FieldSize(message, paths);
  w.Push('"');
  for (int i = 0; i < n; ++i) {
    const std::string& p = r->GetRepeatedStringReference(message, paths, i, &ctx.scratch);
    w.Reserve(p.size() + 2);  // never longer than the path; ',' and the closing quote
    if (i > 0) w.Put(',');
    for (size_t k = 0; k < p.size(); ++k) {
      char c = p[k];
      if (c == '_') {
        if (k == 0 || p[k - 1] < 'a' || p[k - 1] > 'z' || k + 1 >= p.size() || p[k + 1] < 'a' ||
            p[k + 1] > 'z') {
          return false;
        }
        w.Put(static_cast<char>(p[k + 1] - 'a' + 'A'));
        ++k;
      } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.') {
        w.Put(c);
      } else {
        return false;
      }
    }
  }
  w.Push('"');
  return true;
}

// Struct body; the caller checked unknown fields and that `plan` is Struct's.
bool PrintStructBody(const Message& message, const Reflection* r, const Plan& plan, int depth,
                     PrintContext& ctx) {
  if (r->FieldSize(message, plan.f1->field) == 0) {
    ctx.w->Append("{}");
    return true;
  }
  if (ctx.ChildPlan(plan.f1->value)->wkt != Wkt::kValue) return false;
  return PrintMap(message, r, *plan.f1, /*struct_values=*/true, depth, ctx);
}

// ListValue body; the caller checked unknown fields and that `plan` is ListValue's.
bool PrintListBody(const Message& message, const Reflection* r, const Plan& plan, int depth,
                   PrintContext& ctx) {
  const Plan* value_plan = ctx.ChildPlan(plan.f1->value);
  if (value_plan->wkt != Wkt::kValue) return false;
  const FieldDescriptor* values = plan.f1->field;
  Writer& w = *ctx.w;
  int n = r->FieldSize(message, values);
  w.Push('[');
  for (int i = 0; i < n; ++i) {
    if (i > 0) w.Push(',');
    if (!PrintStructValue(r->GetRepeatedMessage(message, values, i), *value_plan, depth, ctx)) {
      return false;
    }
  }
  w.Push(']');
  return true;
}

// Struct or ListValue held by a Value (kind 5 or 6): no nesting level of its own.
bool PrintValueChild(const Message& message, const FieldDescriptor* f, Wkt want, int depth,
                     PrintContext& ctx) {
  const Plan* plan = ctx.PlanFor(f->message_type());
  if (plan->wkt != want) return false;
  const Reflection* r = message.GetReflection();
  if (HasUnknownFields(message, r)) return false;
  return want == Wkt::kStruct ? PrintStructBody(message, r, *plan, depth, ctx)
                              : PrintListBody(message, r, *plan, depth, ctx);
}

// google.protobuf.Value: kind oneof (null 1, number 2, string 3, bool 4, struct 5, list 6).
// `plan` is Value's (checked by the caller).
bool PrintStructValue(const Message& value, const Plan& plan, int depth, PrintContext& ctx) {
  if (++depth > kMaxDepth) return false;
  const Reflection* r = value.GetReflection();
  if (HasUnknownFields(value, r)) return false;
  const FieldDescriptor* f = r->GetOneofFieldDescriptor(value, plan.kind_oneof);
  if (f == nullptr) return false;  // Unset kind: protobuf's handling is left to protobuf.
  Writer& w = *ctx.w;
  switch (f->number()) {
    case 1:
      w.Append("null");
      return true;
    case 2: {
      double v = r->GetDouble(value, f);
      if (!std::isfinite(v)) return false;
      AppendDouble(v, w);
      return true;
    }
    case 3:
      return AppendString(r->GetStringReference(value, f, &ctx.scratch), w);
    case 4:
      AppendBool(r->GetBool(value, f), w);
      return true;
    case 5:
      return PrintValueChild(r->GetMessage(value, f), f, Wkt::kStruct, depth, ctx);
    case 6:
      return PrintValueChild(r->GetMessage(value, f), f, Wkt::kListValue, depth, ctx);
    default:
      return false;
  }
}

// Timestamp/Duration seconds and nanos (fields 1 and 2, never in a oneof: ClassifyWkt).
std::pair<int64_t, int32_t> SecondsNanos(const Message& message, const Reflection* r, bool fast,
                                         const Plan& plan) {
  const char* base = reinterpret_cast<const char*>(&message);
  return {fast && plan.f1->fast ? Load<int64_t>(base, plan.f1->offset)
                                : r->GetInt64(message, plan.f1->field),
          fast && plan.f2->fast ? Load<int32_t>(base, plan.f2->offset)
                                : r->GetInt32(message, plan.f2->field)};
}

bool PrintMessageValue(const Message& message, const Plan& plan, int depth, PrintContext& ctx) {
  if (++depth > kMaxDepth) return false;
  // Instances of the generated class share its Reflection; anything else (DynamicMessage)
  // brings its own. Exact type identity, so that the plan's layout is the instance's.
  const bool fast = plan.fast_type != nullptr && &typeid(message) == plan.fast_type;
  const Reflection* r = fast ? plan.fast_reflection : message.GetReflection();
  if (HasUnknownFields(message, r)) return false;
  switch (plan.wkt) {
    case Wkt::kNone:
      return PrintFields(message, r, fast, plan, depth, ctx);
    case Wkt::kTimestamp: {
      auto [seconds, nanos] = SecondsNanos(message, r, fast, plan);
      return PrintTimestamp(seconds, nanos, *ctx.w);
    }
    case Wkt::kDuration: {
      auto [seconds, nanos] = SecondsNanos(message, r, fast, plan);
      return PrintDuration(seconds, nanos, *ctx.w);
    }
    case Wkt::kWrapper:
      // The single `value` field, printed bare even when it is the default.
      return PrintFieldValue(message, r, fast, *plan.f1, -1, depth, ctx);
    case Wkt::kStruct:
      return PrintStructBody(message, r, plan, depth, ctx);
    case Wkt::kValue:
      return PrintStructValue(message, plan, depth, ctx);
    case Wkt::kListValue:
      return PrintListBody(message, r, plan, depth, ctx);
    case Wkt::kFieldMask:
      return PrintFieldMask(message, r, plan.f1->field, ctx);
    case Wkt::kDecline:
      return false;
  }
  return false;
}

constexpr uint32_t kMinSizeHint = 128;
constexpr uint32_t kMaxSizeHint = 1 << 20;

}  // namespace

bool PrintMessage(const Message& message, std::string* out) {
  PrintContext ctx;
  const Plan* plan = ctx.PlanFor(message.GetDescriptor());
  const uint32_t hint = std::max(plan->size_hint.load(std::memory_order_relaxed), kMinSizeHint);
  const size_t base = out->size();
  bool ok;
  {
    Writer w(out, hint);
    ctx.w = &w;
    ok = PrintMessageValue(message, *plan, /*depth=*/0, ctx);
    if (ok) {
      // A little headroom so that a slightly larger message does not regrow.
      const size_t n = w.written_since(base);
      plan->size_hint.store(static_cast<uint32_t>(std::min<size_t>(n + n / 8 + 16, kMaxSizeHint)),
                            std::memory_order_relaxed);
    }
  }
  return ok;
}

}  // namespace metald::rpc::json
