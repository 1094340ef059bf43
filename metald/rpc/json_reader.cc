#include "metald/rpc/json_reader.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <charconv>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

namespace metald::rpc::json {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Deeper nesting is declined (protobuf's own parser allows more and reports its own errors).
constexpr int kMaxDepth = 32;
// Unquoted integers longer than this are declined: below 2^53 no JSON reader can disagree.
constexpr size_t kMaxUnquotedDigits = 15;

// Message types the reader fills itself: proto3 and not a google.protobuf type (well-known
// types have JSON forms of their own; descriptor.proto is proto2).
bool Supported(const Descriptor* d) {
  return d->file()->syntax() == FileDescriptor::SYNTAX_PROTO3 &&
         d->file()->package() != "google.protobuf";
}

// One pass over the text. Every method returns false to decline; the text is then left to
// protobuf, so a false is never an error message, only "not this reader's to answer".
class Reader {
 public:
  explicit Reader(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

  bool ReadTop(Message* message) {
    if (!Supported(message->GetDescriptor())) return false;
    if (!ReadObject(message, 0)) return false;
    SkipSpace();
    return p_ == end_;
  }

 private:
  void SkipSpace() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  // Skips whitespace, then consumes `c` if it is next.
  bool Take(char c) {
    SkipSpace();
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }
  bool Next(char c) {
    SkipSpace();
    return p_ < end_ && *p_ == c;
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }

  bool ReadHex4(uint32_t* v) {
    if (end_ - p_ < 4) return false;
    uint32_t r = 0;
    for (int i = 0; i < 4; ++i) {
      char c = p_[i];
      r <<= 4;
      if (c >= '0' && c <= '9') {
        r |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        r |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        r |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    p_ += 4;
    *v = r;
    return true;
  }

  // A double-quoted JSON string, decoded into *out (appended). Raw control characters, invalid
  // UTF-8, lone surrogates and U+0000 are declined.
  bool ReadString(std::string* out) {
    if (!Take('"')) return false;
    for (;;) {
      const char* start = p_;
      while (p_ < end_) {
        unsigned char c = static_cast<unsigned char>(*p_);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++p_;
      }
      out->append(start, static_cast<size_t>(p_ - start));
      if (p_ == end_) return false;
      unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20) return false;
      if (c >= 0x80) {
        if (!CopyUtf8(out)) return false;
        continue;
      }
      // Backslash.
      if (++p_ == end_) return false;
      char e = *p_++;
      switch (e) {
        case '"':
          out->push_back('"');
          break;
        case '\\':
          out->push_back('\\');
          break;
        case '/':
          out->push_back('/');
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp;
          if (!ReadHex4(&cp) || cp == 0) return false;
          if (cp >= 0xdc00 && cp <= 0xdfff) return false;
          if (cp >= 0xd800 && cp <= 0xdbff) {
            uint32_t low;
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return false;
            p_ += 2;
            if (!ReadHex4(&low) || low < 0xdc00 || low > 0xdfff) return false;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          return false;
      }
    }
  }

  // Copies one well-formed multi-byte UTF-8 sequence (no overlong forms, surrogates or code
  // points above U+10FFFF).
  bool CopyUtf8(std::string* out) {
    unsigned char c = static_cast<unsigned char>(*p_);
    int len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (end_ - p_ < len) return false;
    for (int k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(p_[k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    out->append(p_, static_cast<size_t>(len));
    p_ += len;
    return true;
  }

  // A decimal integer literal: -?(0|[1-9][0-9]*), at most `max_digits` digits, no fraction or
  // exponent, not "-0". Sets the text span.
  bool ScanInteger(std::string_view* digits, size_t max_digits) {
    const char* start = p_;
    if (p_ < end_ && *p_ == '-') ++p_;
    const char* first = p_;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    size_t n = static_cast<size_t>(p_ - first);
    if (n == 0 || n > max_digits) return false;
    if (n > 1 && *first == '0') return false;
    if (n == 1 && *first == '0' && first != start) return false;  // -0
    if (p_ < end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E')) return false;
    *digits = std::string_view(start, static_cast<size_t>(p_ - start));
    return true;
  }

  template <typename T>
  static bool Convert(std::string_view digits, T* v) {
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), *v);
    return ec == std::errc() && ptr == digits.data() + digits.size();
  }

  // An integer value for a field of type T: a plain literal; for 64-bit types also a quoted
  // decimal (the form proto3 JSON prints them in).
  template <typename T>
  bool ReadInteger(T* v) {
    SkipSpace();
    std::string_view digits;
    if (sizeof(T) == 8 && p_ < end_ && *p_ == '"') {
      ++p_;
      if (!ScanInteger(&digits, 20) || p_ == end_ || *p_ != '"') return false;
      ++p_;
    } else if (!ScanInteger(&digits, kMaxUnquotedDigits)) {
      return false;
    }
    if (std::is_unsigned_v<T> && digits.front() == '-') return false;
    return Convert(digits, v);
  }

  bool ReadBool(bool* v) {
    SkipSpace();
    std::string_view rest(p_, static_cast<size_t>(end_ - p_));
    if (rest.starts_with("true")) {
      *v = true;
      p_ += 4;
    } else if (rest.starts_with("false")) {
      *v = false;
      p_ += 5;
    } else {
      return false;
    }
    // A literal is followed by a delimiter, never by more letters ("trueish").
    return p_ == end_ || !((*p_ >= 'a' && *p_ <= 'z') || (*p_ >= 'A' && *p_ <= 'Z') ||
                           (*p_ >= '0' && *p_ <= '9') || *p_ == '_');
  }

  // One value of `field` (an element, for repeated fields) into `message`.
  bool ReadValue(Message* message, const FieldDescriptor* field, int depth) {
    const Reflection* r = message->GetReflection();
    const bool rep = field->is_repeated();
    switch (field->type()) {
      case FieldDescriptor::TYPE_STRING: {
        std::string s;
        if (!ReadString(&s)) return false;
        rep ? r->AddString(message, field, std::move(s))
            : r->SetString(message, field, std::move(s));
        return true;
      }
      case FieldDescriptor::TYPE_BOOL: {
        bool v;
        if (!ReadBool(&v)) return false;
        rep ? r->AddBool(message, field, v) : r->SetBool(message, field, v);
        return true;
      }
      case FieldDescriptor::TYPE_INT32:
      case FieldDescriptor::TYPE_SINT32:
      case FieldDescriptor::TYPE_SFIXED32: {
        int32_t v;
        if (!ReadInteger(&v)) return false;
        rep ? r->AddInt32(message, field, v) : r->SetInt32(message, field, v);
        return true;
      }
      case FieldDescriptor::TYPE_INT64:
      case FieldDescriptor::TYPE_SINT64:
      case FieldDescriptor::TYPE_SFIXED64: {
        int64_t v;
        if (!ReadInteger(&v)) return false;
        rep ? r->AddInt64(message, field, v) : r->SetInt64(message, field, v);
        return true;
      }
      case FieldDescriptor::TYPE_UINT32:
      case FieldDescriptor::TYPE_FIXED32: {
        uint32_t v;
        if (!ReadInteger(&v)) return false;
        rep ? r->AddUInt32(message, field, v) : r->SetUInt32(message, field, v);
        return true;
      }
      case FieldDescriptor::TYPE_UINT64:
      case FieldDescriptor::TYPE_FIXED64: {
        uint64_t v;
        if (!ReadInteger(&v)) return false;
        rep ? r->AddUInt64(message, field, v) : r->SetUInt64(message, field, v);
        return true;
      }
      case FieldDescriptor::TYPE_ENUM: {
        // NullValue is written as null in JSON; its rules are left to protobuf.
        if (field->enum_type()->file()->package() == "google.protobuf") return false;
        std::string name;
        if (!ReadString(&name)) return false;
        const auto* value = field->enum_type()->FindValueByName(name);
        if (value == nullptr) return false;
        rep ? r->AddEnumValue(message, field, value->number())
            : r->SetEnumValue(message, field, value->number());
        return true;
      }
      case FieldDescriptor::TYPE_MESSAGE: {
        if (!Supported(field->message_type())) return false;
        Message* sub = rep ? r->AddMessage(message, field) : r->MutableMessage(message, field);
        return ReadObject(sub, depth + 1);
      }
      case FieldDescriptor::TYPE_DOUBLE:
      case FieldDescriptor::TYPE_FLOAT: {
        // Integer literals only (exact in a double); fractions, exponents, "NaN" and friends are
        // protobuf's.
        int64_t i;
        SkipSpace();
        if (p_ < end_ && *p_ == '"') return false;
        if (!ReadInteger(&i)) return false;
        const double v = static_cast<double>(i);
        if (field->type() == FieldDescriptor::TYPE_DOUBLE) {
          rep ? r->AddDouble(message, field, v) : r->SetDouble(message, field, v);
        } else {
          const float f = static_cast<float>(v);
          rep ? r->AddFloat(message, field, f) : r->SetFloat(message, field, f);
        }
        return true;
      }
      case FieldDescriptor::TYPE_BYTES: {
        // Only the empty value; base64 text is protobuf's.
        std::string b64;
        if (!ReadString(&b64) || !b64.empty()) return false;
        rep ? r->AddString(message, field, std::string())
            : r->SetString(message, field, std::string());
        return true;
      }
      default:  // group
        return false;
    }
  }

  // A map key (always a JSON string) into the entry's key field.
  bool ReadMapKey(Message* entry, const FieldDescriptor* key, std::string* text) {
    if (!ReadString(text)) return false;
    const Reflection* r = entry->GetReflection();
    switch (key->type()) {
      case FieldDescriptor::TYPE_STRING:
        r->SetString(entry, key, *text);
        return true;
      case FieldDescriptor::TYPE_BOOL:
        if (*text != "true" && *text != "false") return false;
        r->SetBool(entry, key, *text == "true");
        return true;
      default:
        break;
    }
    // Integer keys: the whole key is a decimal integer (any length the type holds).
    Reader digits(*text);
    std::string_view span;
    if (!digits.ScanInteger(&span, 20) || digits.p_ != digits.end_) return false;
    switch (key->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32: {
        int32_t v;
        if (!Convert(span, &v)) return false;
        r->SetInt32(entry, key, v);
        return true;
      }
      case FieldDescriptor::CPPTYPE_INT64: {
        int64_t v;
        if (!Convert(span, &v)) return false;
        r->SetInt64(entry, key, v);
        return true;
      }
      case FieldDescriptor::CPPTYPE_UINT32: {
        uint32_t v;
        if (span.front() == '-' || !Convert(span, &v)) return false;
        r->SetUInt32(entry, key, v);
        return true;
      }
      case FieldDescriptor::CPPTYPE_UINT64: {
        uint64_t v;
        if (span.front() == '-' || !Convert(span, &v)) return false;
        r->SetUInt64(entry, key, v);
        return true;
      }
      default:
        return false;
    }
  }

  bool ReadMap(Message* message, const FieldDescriptor* field, int depth) {
    if (!Take('{')) return false;
    if (Take('}')) return true;
    const Descriptor* entry_type = field->message_type();
    const FieldDescriptor* key = entry_type->map_key();
    const FieldDescriptor* value = entry_type->map_value();
    std::set<std::string> seen;
    const Reflection* r = message->GetReflection();
    for (;;) {
      Message* entry = r->AddMessage(message, field);
      std::string key_text;
      if (!ReadMapKey(entry, key, &key_text)) return false;
      if (!seen.insert(std::move(key_text)).second) return false;  // duplicate key
      if (!Take(':')) return false;
      if (value->type() == FieldDescriptor::TYPE_MESSAGE) {
        if (!Supported(value->message_type())) return false;
        if (!ReadObject(entry->GetReflection()->MutableMessage(entry, value), depth + 1)) {
          return false;
        }
      } else if (!ReadValue(entry, value, depth)) {
        return false;
      }
      if (Take(',')) continue;
      return Take('}');
    }
  }

  // The field named `key` (json_name or proto name); null when none or more than one.
  static const FieldDescriptor* FindField(const Descriptor* d, std::string_view key) {
    const FieldDescriptor* found = nullptr;
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (f->json_name() == key || f->name() == key) {
        if (found != nullptr) return nullptr;
        found = f;
      }
    }
    return found;
  }

  bool ReadObject(Message* message, int depth) {
    if (depth > kMaxDepth) return false;
    if (!Take('{')) return false;
    if (Take('}')) return true;
    const Descriptor* d = message->GetDescriptor();
    // Fields and oneofs already given: each at most once.
    uint64_t seen_small = 0;
    std::vector<bool> seen_large;
    std::vector<const google::protobuf::OneofDescriptor*> oneofs;
    std::string key;
    for (;;) {
      key.clear();
      if (!ReadString(&key)) return false;
      const FieldDescriptor* field = FindField(d, key);
      if (field == nullptr || field->is_extension()) return false;
      const int index = field->index();
      if (index < 64) {
        if (seen_small & (uint64_t{1} << index)) return false;
        seen_small |= uint64_t{1} << index;
      } else {
        if (seen_large.size() <= static_cast<size_t>(index)) seen_large.resize(index + 1);
        if (seen_large[index]) return false;
        seen_large[index] = true;
      }
      if (const auto* oneof = field->real_containing_oneof()) {
        for (const auto* o : oneofs) {
          if (o == oneof) return false;
        }
        oneofs.push_back(oneof);
      }
      if (!Take(':')) return false;
      if (Next('n')) return false;  // null: protobuf's rules for it are left to protobuf
      if (field->is_map()) {
        if (!ReadMap(message, field, depth)) return false;
      } else if (field->is_repeated()) {
        if (!Take('[')) return false;
        if (!Take(']')) {
          for (;;) {
            if (Next('n')) return false;
            if (!ReadValue(message, field, depth)) return false;
            if (Take(',')) continue;
            if (!Take(']')) return false;
            break;
          }
        }
      } else if (!ReadValue(message, field, depth)) {
        return false;
      }
      if (Take(',')) continue;
      return Take('}');
    }
  }

  const char* p_;
  const char* const end_;
};

}  // namespace

bool ReadMessage(std::string_view json, Message* message) {
  Reader reader(json);
  return reader.ReadTop(message);
}

}  // namespace metald::rpc::json
