// Differential tests: json::PrintMessage against protobuf's util::MessageToJsonString with
// the options wire::SerializeMessage uses. Byte-identical output is the contract.
#include "metald/rpc/json.h"

#include <google/protobuf/any.pb.h>
#include <google/protobuf/api.pb.h>
#include <google/protobuf/arena.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/duration.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/empty.pb.h>
#include <google/protobuf/field_mask.pb.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/type.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/wrappers.pb.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <cmath>
#include <cstring>
#include <latch>
#include <limits>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "metald/rpc/testdata/json_print_test.pb.h"
#include "metald/rpc/wire.h"

namespace metald::rpc::json {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::DynamicMessageFactory;
using google::protobuf::FieldDescriptor;
using google::protobuf::FieldDescriptorProto;
using google::protobuf::FileDescriptorProto;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Protobuf's output, or nullopt-like empty + false when protobuf reports an error.
bool ProtobufJson(const Message& m, std::string* out) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = false;
  out->clear();
  return google::protobuf::util::MessageToJsonString(m, out, options).ok();
}

// The printer must handle `m` and match protobuf exactly.
void ExpectSame(const Message& m) {
  std::string want;
  ASSERT_TRUE(ProtobufJson(m, &want)) << m.DebugString();
  std::string got;
  ASSERT_TRUE(PrintMessage(m, &got)) << m.DebugString();
  EXPECT_EQ(got, want) << m.DebugString();
}

// Either the printer matches protobuf or it declines; either way SerializeMessage must be
// unchanged from protobuf's result. Returns whether the printer handled it.
bool ExpectSameOrDeclined(const Message& m) {
  std::string want;
  bool want_ok = ProtobufJson(m, &want);
  std::string got;
  bool handled = PrintMessage(m, &got);
  if (handled) {
    EXPECT_TRUE(want_ok) << "printer accepted what protobuf rejects: " << m.DebugString();
    EXPECT_EQ(got, want) << m.DebugString();
  }
  auto wired = wire::SerializeMessage(Codec::kJson, m);
  EXPECT_EQ(wired.ok(), want_ok);
  if (wired.ok() && want_ok) {
    EXPECT_EQ(*wired, want);
  }
  return handled;
}

TEST(JsonPrint, Timestamps) {
  for (int64_t s : {int64_t{0}, int64_t{-1}, int64_t{1}, int64_t{951782400}, int64_t{1700000000},
                    int64_t{-62135596800}, int64_t{253402300799}, int64_t{-2208988800},
                    int64_t{4102444800}, int64_t{68169600}}) {
    for (int32_t n : {0, 1, 1000, 1000000, 500000000, 123456789, 999999999, 10000, 120000000}) {
      google::protobuf::Timestamp t;
      t.set_seconds(s);
      t.set_nanos(n);
      ExpectSame(t);
    }
  }
  google::protobuf::Timestamp bad;
  bad.set_seconds(253402300800);
  std::string out;
  EXPECT_FALSE(PrintMessage(bad, &out));
  ExpectSameOrDeclined(bad);
  bad.set_seconds(0);
  bad.set_nanos(-1);
  EXPECT_FALSE(PrintMessage(bad, &out));
  ExpectSameOrDeclined(bad);
}

TEST(JsonPrint, Durations) {
  for (int64_t s : {int64_t{0}, int64_t{1}, int64_t{-1}, int64_t{315576000000},
                    int64_t{-315576000000}, int64_t{86400}}) {
    for (int32_t n : {0, 1, 1000, 1000000, 500000000, 999999999}) {
      google::protobuf::Duration d;
      d.set_seconds(s);
      d.set_nanos(s < 0 ? -n : n);
      ExpectSame(d);
    }
  }
  google::protobuf::Duration d;
  d.set_nanos(-500000000);
  ExpectSame(d);  // "-0.5s"
  d.set_seconds(1);
  EXPECT_FALSE(ExpectSameOrDeclined(d));  // sign mismatch is left to protobuf
}

TEST(JsonPrint, Wrappers) {
  google::protobuf::Int64Value i64;
  ExpectSame(i64);
  i64.set_value(-5);
  ExpectSame(i64);
  google::protobuf::UInt64Value u64;
  u64.set_value(std::numeric_limits<uint64_t>::max());
  ExpectSame(u64);
  google::protobuf::Int32Value i32;
  i32.set_value(std::numeric_limits<int32_t>::min());
  ExpectSame(i32);
  google::protobuf::UInt32Value u32;
  u32.set_value(7);
  ExpectSame(u32);
  google::protobuf::BoolValue b;
  ExpectSame(b);
  b.set_value(true);
  ExpectSame(b);
  google::protobuf::StringValue s;
  ExpectSame(s);
  s.set_value("a<b>&\"\\\n\x01\u2028");
  ExpectSame(s);
  google::protobuf::BytesValue by;
  by.set_value(std::string("\0\xff\x10z", 4));
  ExpectSame(by);
  google::protobuf::DoubleValue dv;
  ExpectSame(dv);
  for (double v : {0.1, -2.5, 1e300, 5e-324, std::numeric_limits<double>::infinity(),
                   -std::numeric_limits<double>::infinity(),
                   std::numeric_limits<double>::quiet_NaN(), 123456789012345678.0}) {
    dv.set_value(v);
    ExpectSame(dv);
  }
  google::protobuf::FloatValue fv;
  for (float v : {0.1f, -2.5f, 3.4e38f, 1e-45f, std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN(), 16777217.0f}) {
    fv.set_value(v);
    ExpectSame(fv);
  }
}

TEST(JsonPrint, StructTrees) {
  google::protobuf::Struct st;
  ExpectSame(st);
  (*st.mutable_fields())["n"].set_number_value(1.5);
  (*st.mutable_fields())["s"].set_string_value("x\ty");
  (*st.mutable_fields())["b"].set_bool_value(false);
  (*st.mutable_fields())["z"].set_null_value(google::protobuf::NULL_VALUE);
  auto* list = (*st.mutable_fields())["l"].mutable_list_value();
  list->add_values()->set_number_value(-0.0);
  list->add_values()->mutable_struct_value();
  list->add_values()->set_string_value("\xe4\xb8\xad");
  (*(*st.mutable_fields())["o"].mutable_struct_value()->mutable_fields())["k<"].set_number_value(
      1e21);
  ExpectSame(st);
  google::protobuf::Value v;
  v.set_null_value(google::protobuf::NULL_VALUE);
  ExpectSame(v);
  v.set_number_value(3);
  ExpectSame(v);
  google::protobuf::ListValue lv;
  ExpectSame(lv);
  lv.add_values()->set_bool_value(true);
  ExpectSame(lv);
  google::protobuf::Value unset;
  ExpectSameOrDeclined(unset);
  // Unknown fields inside a WKT make protobuf drop the value (found by fuzz_rpc_json_print).
  lv.GetReflection()->MutableUnknownFields(&lv)->AddLengthDelimited(3, "x");
  EXPECT_FALSE(ExpectSameOrDeclined(lv));
  auto* inner_list = (*st.mutable_fields())["l"].mutable_list_value();
  inner_list->GetReflection()->MutableUnknownFields(inner_list)->AddVarint(9, 1);
  EXPECT_FALSE(ExpectSameOrDeclined(st));
}

TEST(JsonPrint, DeepNesting) {
  // Shallow trees print; deep ones are left to protobuf (which has its own recursion limit).
  for (int depth : {5, 20, 40, 80}) {
    google::protobuf::Value root;
    google::protobuf::Value* v = &root;
    for (int i = 0; i < depth; ++i) {
      v = &(*v->mutable_struct_value()->mutable_fields())["k"];
    }
    v->set_string_value("leaf");
    std::string out;
    bool handled = ExpectSameOrDeclined(root);
    EXPECT_EQ(handled, depth <= 20) << depth;
  }
}

TEST(JsonPrint, FieldMaskEmptyAny) {
  google::protobuf::FieldMask fm;
  ExpectSame(fm);
  fm.add_paths("foo_bar");
  fm.add_paths("a.b_c.d");
  fm.add_paths("x1");
  ExpectSame(fm);
  fm.add_paths("Foo");
  EXPECT_FALSE(ExpectSameOrDeclined(fm));
  google::protobuf::Empty e;
  ExpectSame(e);
  google::protobuf::Any any;
  google::protobuf::Int32Value inner;
  inner.set_value(3);
  any.PackFrom(inner);
  EXPECT_FALSE(ExpectSameOrDeclined(any));
}

TEST(JsonPrint, Strings) {
  google::protobuf::StringValue s;
  std::string all;
  for (int c = 1; c < 0x80; ++c) all.push_back(static_cast<char>(c));
  s.set_value(all);
  ExpectSame(s);
  for (const char* str :
       {"\xc2\x80\xc2\x9f\xc2\xa0\xc2\xad", "\xd8\x80\xdb\x9d\xdc\x8f", "\xe1\x9e\xb4\xe1\x9e\xb5",
        "\xe2\x80\x8b\xe2\x80\xa8\xe2\x80\xae\xe2\x81\xa0\xe2\x81\xaa",
        "\xef\xbb\xbf\xef\xbf\xb9\xef\xbf\xbb\xef\xbf\xbd", "\xf0\x9f\x98\x80",
        "\xf3\xa0\x80\x81\xf3\xa0\x80\xa0\xf3\xa0\x81\xbf", "\xf0\x9d\x85\xb3\xf0\x9d\x85\xba",
        "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf", "plain"}) {
    s.set_value(str);
    ExpectSame(s);
  }
  for (const char* bad : {"\xff", "\xc0\x80", "\xed\xa0\x80", "\xe2\x82", "a\x80"}) {
    s.set_value(bad);
    std::string out;
    EXPECT_FALSE(PrintMessage(s, &out));
    ExpectSameOrDeclined(s);
  }
}

TEST(JsonPrint, DescriptorProtos) {
  // proto2 messages with many field kinds, enums, nesting and presence.
  for (const auto* file : {google::protobuf::FileDescriptorProto::descriptor()->file(),
                           google::protobuf::Struct::descriptor()->file(),
                           google::protobuf::Timestamp::descriptor()->file()}) {
    FileDescriptorProto fdp;
    file->CopyTo(&fdp);
    ExpectSame(fdp);
    file->CopySourceCodeInfoTo(&fdp);
    ExpectSame(fdp);
  }
  google::protobuf::FieldOptions opts;
  opts.set_packed(false);
  opts.set_ctype(google::protobuf::FieldOptions::CORD);
  ExpectSame(opts);
  google::protobuf::FieldDescriptorProto f;
  f.set_number(0);
  f.set_default_value("");
  ExpectSame(f);
  // An out-of-range value of a closed enum lands in the unknown fields, which protobuf prints
  // (found by fuzz_rpc_json_print): declined.
  f.mutable_unknown_fields()->AddVarint(FieldDescriptorProto::kLabelFieldNumber, 65);
  EXPECT_FALSE(ExpectSameOrDeclined(f));
}

// ---------------------------------------------------------------------------------------------
// Randomized: a dynamic proto3 message with every scalar kind, maps, oneofs, optionals, enums
// and WKT fields.

class RandomTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // WKTs resolve to the generated pool (underlay), so their fields hold generated
    // messages: the generated Struct is the one whose map the printer can walk.
    factory_.SetDelegateToGeneratedFactory(true);
    FileDescriptorProto fdp;
    fdp.set_name("metald_json_test.proto");
    fdp.set_package("jt");
    fdp.set_syntax("proto3");
    for (const char* dep : {"google/protobuf/timestamp.proto", "google/protobuf/duration.proto",
                            "google/protobuf/wrappers.proto", "google/protobuf/struct.proto",
                            "google/protobuf/field_mask.proto", "google/protobuf/empty.proto"}) {
      fdp.add_dependency(dep);
    }
    auto* color = fdp.add_enum_type();
    color->set_name("Color");
    for (int i = 0; i < 3; ++i) {
      auto* v = color->add_value();
      v->set_name(std::string("C") + static_cast<char>('A' + i));
      v->set_number(i);
    }
    auto* inner = fdp.add_message_type();
    inner->set_name("Inner");
    AddField(inner, "a", 1, FieldDescriptorProto::TYPE_INT32);
    AddField(inner, "s_t", 2, FieldDescriptorProto::TYPE_STRING);

    auto* all = fdp.add_message_type();
    all->set_name("All");
    const FieldDescriptorProto::Type scalars[] = {
        FieldDescriptorProto::TYPE_DOUBLE,   FieldDescriptorProto::TYPE_FLOAT,
        FieldDescriptorProto::TYPE_INT64,    FieldDescriptorProto::TYPE_UINT64,
        FieldDescriptorProto::TYPE_INT32,    FieldDescriptorProto::TYPE_FIXED64,
        FieldDescriptorProto::TYPE_FIXED32,  FieldDescriptorProto::TYPE_BOOL,
        FieldDescriptorProto::TYPE_STRING,   FieldDescriptorProto::TYPE_BYTES,
        FieldDescriptorProto::TYPE_UINT32,   FieldDescriptorProto::TYPE_SFIXED32,
        FieldDescriptorProto::TYPE_SFIXED64, FieldDescriptorProto::TYPE_SINT32,
        FieldDescriptorProto::TYPE_SINT64};
    int n = 1;
    for (auto t : scalars) {
      AddField(all, "single_" + std::to_string(n), n, t);
      AddField(all, "rep_" + std::to_string(n), 100 + n, t)
          ->set_label(FieldDescriptorProto::LABEL_REPEATED);
      ++n;
    }
    AddField(all, "color", 20, FieldDescriptorProto::TYPE_ENUM, ".jt.Color");
    AddField(all, "colors", 21, FieldDescriptorProto::TYPE_ENUM, ".jt.Color")
        ->set_label(FieldDescriptorProto::LABEL_REPEATED);
    AddField(all, "inner", 22, FieldDescriptorProto::TYPE_MESSAGE, ".jt.Inner");
    AddField(all, "inners", 23, FieldDescriptorProto::TYPE_MESSAGE, ".jt.Inner")
        ->set_label(FieldDescriptorProto::LABEL_REPEATED);
    AddField(all, "child", 24, FieldDescriptorProto::TYPE_MESSAGE, ".jt.All");
    // Maps.
    struct MapSpec {
      const char* name;
      FieldDescriptorProto::Type key;
      FieldDescriptorProto::Type value;
      const char* value_type;
    };
    const MapSpec maps[] = {
        {"m_string_int", FieldDescriptorProto::TYPE_STRING, FieldDescriptorProto::TYPE_INT32, ""},
        {"m_int64_string", FieldDescriptorProto::TYPE_INT64, FieldDescriptorProto::TYPE_STRING, ""},
        {"m_bool_inner", FieldDescriptorProto::TYPE_BOOL, FieldDescriptorProto::TYPE_MESSAGE,
         ".jt.Inner"},
        {"m_uint32_color", FieldDescriptorProto::TYPE_UINT32, FieldDescriptorProto::TYPE_ENUM,
         ".jt.Color"},
        {"m_sint32_double", FieldDescriptorProto::TYPE_SINT32, FieldDescriptorProto::TYPE_DOUBLE,
         ""},
        {"m_uint64_bytes", FieldDescriptorProto::TYPE_FIXED64, FieldDescriptorProto::TYPE_BYTES,
         ""},
        {"m_string_ts", FieldDescriptorProto::TYPE_STRING, FieldDescriptorProto::TYPE_MESSAGE,
         ".google.protobuf.Timestamp"},
        {"m_string_value", FieldDescriptorProto::TYPE_STRING, FieldDescriptorProto::TYPE_MESSAGE,
         ".google.protobuf.Value"},
    };
    int mn = 40;
    for (const auto& m : maps) {
      // protoc's naming rule for map entries: CamelCase(field) + "Entry".
      std::string entry;
      bool upper = true;
      for (const char* c = m.name; *c; ++c) {
        if (*c == '_') {
          upper = true;
        } else {
          entry.push_back(upper ? static_cast<char>(std::toupper(*c)) : *c);
          upper = false;
        }
      }
      entry += "Entry";
      auto* e = all->add_nested_type();
      e->set_name(entry);
      e->mutable_options()->set_map_entry(true);
      AddField(e, "key", 1, m.key);
      AddField(e, "value", 2, m.value, m.value_type);
      AddField(all, m.name, mn, FieldDescriptorProto::TYPE_MESSAGE, ".jt.All." + entry)
          ->set_label(FieldDescriptorProto::LABEL_REPEATED);
      ++mn;
    }
    // Oneof, then proto3 optionals (synthetic oneofs come last).
    all->add_oneof_decl()->set_name("choice");
    AddField(all, "o_int", 60, FieldDescriptorProto::TYPE_INT32)->set_oneof_index(0);
    AddField(all, "o_str", 61, FieldDescriptorProto::TYPE_STRING)->set_oneof_index(0);
    AddField(all, "o_inner", 62, FieldDescriptorProto::TYPE_MESSAGE, ".jt.Inner")
        ->set_oneof_index(0);
    AddField(all, "o_double", 63, FieldDescriptorProto::TYPE_DOUBLE)->set_oneof_index(0);
    int oi = 1;
    for (auto [name, num, type] : {std::tuple{"opt_int", 70, FieldDescriptorProto::TYPE_INT64},
                                   std::tuple{"opt_str", 71, FieldDescriptorProto::TYPE_STRING},
                                   std::tuple{"opt_bool", 72, FieldDescriptorProto::TYPE_BOOL}}) {
      all->add_oneof_decl()->set_name(std::string("_") + name);
      auto* f = AddField(all, name, num, type);
      f->set_proto3_optional(true);
      f->set_oneof_index(oi++);
    }
    // Well-known types.
    const std::pair<const char*, const char*> wkts[] = {
        {"ts", ".google.protobuf.Timestamp"},       {"dur", ".google.protobuf.Duration"},
        {"w_int64", ".google.protobuf.Int64Value"}, {"w_uint64", ".google.protobuf.UInt64Value"},
        {"w_int32", ".google.protobuf.Int32Value"}, {"w_uint32", ".google.protobuf.UInt32Value"},
        {"w_bool", ".google.protobuf.BoolValue"},   {"w_string", ".google.protobuf.StringValue"},
        {"w_bytes", ".google.protobuf.BytesValue"}, {"w_double", ".google.protobuf.DoubleValue"},
        {"w_float", ".google.protobuf.FloatValue"}, {"st", ".google.protobuf.Struct"},
        {"val", ".google.protobuf.Value"},          {"lv", ".google.protobuf.ListValue"},
        {"fm", ".google.protobuf.FieldMask"},       {"em", ".google.protobuf.Empty"},
    };
    int wn = 80;
    for (auto [name, type] : wkts) {
      AddField(all, name, wn++, FieldDescriptorProto::TYPE_MESSAGE, type);
    }
    AddField(all, "tss", wn++, FieldDescriptorProto::TYPE_MESSAGE, ".google.protobuf.Timestamp")
        ->set_label(FieldDescriptorProto::LABEL_REPEATED);
    AddField(all, "vals", wn++, FieldDescriptorProto::TYPE_MESSAGE, ".google.protobuf.Value")
        ->set_label(FieldDescriptorProto::LABEL_REPEATED);
    AddField(all, "nulls", wn++, FieldDescriptorProto::TYPE_ENUM, ".google.protobuf.NullValue")
        ->set_label(FieldDescriptorProto::LABEL_REPEATED);
    AddField(all, "custom", wn++, FieldDescriptorProto::TYPE_INT32)->set_json_name("myName");

    const auto* file = pool_.BuildFile(fdp);
    ASSERT_NE(file, nullptr);
    all_ = file->FindMessageTypeByName("All");
    ASSERT_NE(all_, nullptr);
  }

  static FieldDescriptorProto* AddField(google::protobuf::DescriptorProto* m,
                                        const std::string& name, int number,
                                        FieldDescriptorProto::Type type,
                                        const std::string& type_name = "") {
    auto* f = m->add_field();
    f->set_name(name);
    f->set_number(number);
    f->set_type(type);
    f->set_label(FieldDescriptorProto::LABEL_OPTIONAL);
    if (!type_name.empty()) f->set_type_name(type_name);
    return f;
  }

  bool Chance(int one_in) { return std::uniform_int_distribution<int>(0, one_in - 1)(rng_) == 0; }
  int Pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

  int64_t RandInt64() {
    switch (Pick(6)) {
      case 0:
        return 0;
      case 1:
        return -1;
      case 2:
        return std::numeric_limits<int64_t>::max();
      case 3:
        return std::numeric_limits<int64_t>::min();
      case 4:
        return Pick(1000);
      default:
        return static_cast<int64_t>(rng_());
    }
  }
  double RandDouble() {
    switch (Pick(10)) {
      case 0:
        return 0.0;
      case 1:
        return -0.0;
      case 2:
        return std::numeric_limits<double>::quiet_NaN();
      case 3:
        return Chance(2) ? std::numeric_limits<double>::infinity()
                         : -std::numeric_limits<double>::infinity();
      case 4:
        return Pick(1000) / 10.0;
      case 5:
        return std::numeric_limits<double>::denorm_min();
      case 6:
        return 1e22 * (Pick(3) - 1);
      default: {
        uint64_t bits = rng_();
        double d;
        std::memcpy(&d, &bits, sizeof(d));
        return d;
      }
    }
  }
  float RandFloat() {
    if (Chance(3)) return static_cast<float>(RandDouble());
    uint32_t bits = static_cast<uint32_t>(rng_());
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
  }
  std::string RandString() {
    static const char* const kPieces[] = {"a",
                                          "Z",
                                          " ",
                                          "<",
                                          ">",
                                          "&",
                                          "\"",
                                          "\\",
                                          "\n",
                                          "\x01",
                                          "\x7f",
                                          "/",
                                          "'",
                                          "\xc3\xa9",
                                          "\xe4\xb8\xad",
                                          "\xf0\x9f\x98\x80",
                                          "\xe2\x80\xa8",
                                          "\xef\xbb\xbf",
                                          "\xc2\xad",
                                          "\xf3\xa0\x80\x81",
                                          "\xc2\x85",
                                          "hello world"};
    std::string s;
    int n = Pick(6);
    for (int i = 0; i < n; ++i) s += kPieces[Pick(sizeof(kPieces) / sizeof(kPieces[0]))];
    if (Chance(100)) s += "\xff";  // Invalid UTF-8: printer must decline.
    return s;
  }
  std::string RandBytes() {
    std::string s;
    int n = Pick(8);
    for (int i = 0; i < n; ++i) s.push_back(static_cast<char>(rng_()));
    return s;
  }

  void FillTimestamp(Message* m, bool duration) {
    const Reflection* r = m->GetReflection();
    const Descriptor* d = m->GetDescriptor();
    int64_t s;
    switch (Pick(5)) {
      case 0:
        s = 0;
        break;
      case 1:
        s = duration ? -315576000000 : -62135596800;
        break;
      case 2:
        s = duration ? 315576000000 : 253402300799;
        break;
      case 3:
        s = RandInt64();
        break;  // Often out of range.
      default:
        s = std::uniform_int_distribution<int64_t>(duration ? -315576000000 : -62135596800,
                                                   duration ? 315576000000 : 253402300799)(rng_);
    }
    int32_t nanos;
    switch (Pick(5)) {
      case 0:
        nanos = 0;
        break;
      case 1:
        nanos = Pick(1000) * 1000000;
        break;
      case 2:
        nanos = Pick(1000000) * 1000;
        break;
      case 3:
        nanos = Pick(1000000000);
        break;
      default:
        nanos = static_cast<int32_t>(rng_());
        break;
    }
    if (duration && s < 0 && !Chance(10)) nanos = -std::abs(nanos % 1000000000);
    r->SetInt64(m, d->FindFieldByNumber(1), s);
    r->SetInt32(m, d->FindFieldByNumber(2), nanos);
  }

  void FillValue(Message* m, int depth) {
    const Reflection* r = m->GetReflection();
    const Descriptor* d = m->GetDescriptor();
    switch (Pick(depth > 2 ? 5 : 7)) {
      case 0:
        r->SetEnumValue(m, d->FindFieldByNumber(1), 0);
        break;
      case 1:
        r->SetDouble(m, d->FindFieldByNumber(2), Chance(10) ? RandDouble() : Pick(100) * 0.25);
        break;
      case 2:
        r->SetString(m, d->FindFieldByNumber(3), RandString());
        break;
      case 3:
        r->SetBool(m, d->FindFieldByNumber(4), Chance(2));
        break;
      case 4:
        if (Chance(5)) break;
        r->SetBool(m, d->FindFieldByNumber(4), false);
        break;  // sometimes unset
      case 5:
        FillStruct(r->MutableMessage(m, d->FindFieldByNumber(5)), depth + 1);
        break;
      default: {
        Message* lv = r->MutableMessage(m, d->FindFieldByNumber(6));
        const FieldDescriptor* vals = lv->GetDescriptor()->FindFieldByNumber(1);
        int n = Pick(4);
        for (int i = 0; i < n; ++i) FillValue(lv->GetReflection()->AddMessage(lv, vals), depth + 1);
      }
    }
  }
  void FillStruct(Message* m, int depth) {
    const FieldDescriptor* fields = m->GetDescriptor()->FindFieldByNumber(1);
    int n = Pick(4);
    for (int i = 0; i < n; ++i) {
      Message* entry = m->GetReflection()->AddMessage(m, fields);
      const Descriptor* ed = entry->GetDescriptor();
      entry->GetReflection()->SetString(entry, ed->FindFieldByNumber(1), RandString());
      FillValue(entry->GetReflection()->MutableMessage(entry, ed->FindFieldByNumber(2)), depth);
    }
  }

  void FillScalar(Message* m, const FieldDescriptor* f) {
    const Reflection* r = m->GetReflection();
    const bool rep = f->is_repeated();
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32: {
        int32_t v = static_cast<int32_t>(RandInt64());
        rep ? r->AddInt32(m, f, v) : r->SetInt32(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_UINT32: {
        uint32_t v = static_cast<uint32_t>(RandInt64());
        rep ? r->AddUInt32(m, f, v) : r->SetUInt32(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_INT64: {
        int64_t v = RandInt64();
        rep ? r->AddInt64(m, f, v) : r->SetInt64(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_UINT64: {
        uint64_t v = static_cast<uint64_t>(RandInt64());
        rep ? r->AddUInt64(m, f, v) : r->SetUInt64(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_DOUBLE: {
        double v = RandDouble();
        rep ? r->AddDouble(m, f, v) : r->SetDouble(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_FLOAT: {
        float v = RandFloat();
        rep ? r->AddFloat(m, f, v) : r->SetFloat(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_BOOL: {
        bool v = Chance(2);
        rep ? r->AddBool(m, f, v) : r->SetBool(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_ENUM: {
        int v = f->enum_type()->full_name() == "google.protobuf.NullValue" ? 0 : Pick(5) - 1;
        rep ? r->AddEnumValue(m, f, v) : r->SetEnumValue(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_STRING: {
        std::string v = f->type() == FieldDescriptor::TYPE_BYTES ? RandBytes() : RandString();
        rep ? r->AddString(m, f, v) : r->SetString(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_MESSAGE: {
        Message* sub = rep ? r->AddMessage(m, f) : r->MutableMessage(m, f);
        FillMessage(sub, 1);
        break;
      }
    }
  }

  void FillMessage(Message* m, int depth) {
    const Descriptor* d = m->GetDescriptor();
    const std::string& name = d->full_name();
    if (name == "google.protobuf.Timestamp" || name == "google.protobuf.Duration") {
      FillTimestamp(m, name == "google.protobuf.Duration");
      return;
    }
    if (name == "google.protobuf.Struct") return FillStruct(m, 0);
    if (name == "google.protobuf.Value") return FillValue(m, 0);
    if (name == "google.protobuf.ListValue") {
      int n = Pick(3);
      for (int i = 0; i < n; ++i)
        FillValue(m->GetReflection()->AddMessage(m, d->FindFieldByNumber(1)), 1);
      return;
    }
    if (name == "google.protobuf.FieldMask") {
      static const char* const kPaths[] = {"foo",      "foo_bar", "a.b_c", "x1", "Foo",
                                           "foo__bar", "_a",      "a_1",   "a.b"};
      int n = Pick(4);
      for (int i = 0; i < n; ++i) {
        m->GetReflection()->AddString(m, d->FindFieldByNumber(1),
                                      kPaths[Pick(sizeof(kPaths) / sizeof(kPaths[0]))]);
      }
      return;
    }
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (f->message_type() == all_ && depth > 1) continue;
      if (!Chance(d == all_ ? 3 : 2)) continue;
      // Non-empty maps make the printer decline (json.h), so keep them rare.
      if (f->is_map() && !Chance(10)) continue;
      if (f->is_map()) {
        int n = Pick(4);
        for (int k = 0; k < n; ++k) {
          Message* entry = m->GetReflection()->AddMessage(m, f);
          FillScalar(entry, f->message_type()->map_key());
          if (!Chance(8)) FillScalar(entry, f->message_type()->map_value());
        }
      } else if (f->is_repeated()) {
        int n = Pick(4);
        for (int k = 0; k < n; ++k) FillScalar(m, f);
      } else if (f->message_type() == all_) {
        FillMessage(m->GetReflection()->MutableMessage(m, f), depth + 1);
      } else {
        FillScalar(m, f);
      }
    }
  }

  // Fills kIterations random messages of `prototype`'s type (all_) and checks each, and its
  // binary round trip, against protobuf. `min_handled_maps`: how many must be printed (not
  // declined) with a Struct of 2+ entries, `min_handled` how many in all.
  void RunRandom(const Message* prototype, int min_handled, int min_handled_maps);

  DescriptorPool pool_{DescriptorPool::generated_pool()};
  DynamicMessageFactory factory_{&pool_};
  const Descriptor* all_ = nullptr;
  std::mt19937_64 rng_{20261127};
};

void RandomTest::RunRandom(const Message* prototype, int min_handled, int min_handled_maps) {
  int handled = 0;
  int handled_maps = 0;  // handled with a Struct of 2+ entries (map order matters)
  const int kIterations = 2000;
  for (int i = 0; i < kIterations; ++i) {
    std::unique_ptr<Message> m(prototype->New());
    FillMessage(m.get(), 0);
    SCOPED_TRACE(i);
    if (ExpectSameOrDeclined(*m)) {
      ++handled;
      const FieldDescriptor* st = all_->FindFieldByName("st");
      if (m->GetReflection()->HasField(*m, st)) {
        const Message& s = m->GetReflection()->GetMessage(*m, st);  // generated or dynamic
        const FieldDescriptor* fields = s.GetDescriptor()->FindFieldByNumber(1);
        if (s.GetReflection()->FieldSize(s, fields) > 1) ++handled_maps;
      }
    }
    // Round trip through binary: parsed messages are what the server usually prints.
    // (Parsing rejects invalid UTF-8 in proto3 strings; those are covered above.)
    std::unique_ptr<Message> parsed(prototype->New());
    if (parsed->ParseFromString(m->SerializeAsString())) ExpectSameOrDeclined(*parsed);
    // The same on an arena: the server builds its responses on a per-call arena.
    google::protobuf::Arena arena;
    Message* on_arena = prototype->New(&arena);
    if (on_arena->ParseFromString(m->SerializeAsString())) ExpectSameOrDeclined(*on_arena);
    if (HasFailure()) break;
  }
  // Out-of-range times, invalid UTF-8 and odd FieldMask paths decline; most must not.
  EXPECT_GE(handled, min_handled);
  RecordProperty("handled", handled);
  EXPECT_GE(handled_maps, min_handled_maps);
  std::printf("fast path handled %d of %d (%d with a Struct)\n", handled, kIterations,
              handled_maps);
}

TEST_F(RandomTest, MatchesProtobuf) { RunRandom(factory_.GetPrototype(all_), 501, 21); }

// The same shape as a generated class: the printer reads its fields directly (its layout),
// including proto3 implicit presence, oneofs, optionals, repeated scalars and generated maps
// last changed through reflection's repeated view.
TEST_F(RandomTest, GeneratedMatchesProtobuf) {
  all_ = jsontest::All::descriptor();
  RunRandom(&jsontest::All::default_instance(), 501, 21);
}

// A DynamicMessage of a generated type: the shared plan (with the generated layout) must not
// be applied to an instance of another class; the printer goes through Reflection.
TEST_F(RandomTest, DynamicInstanceOfGeneratedTypeMatchesProtobuf) {
  all_ = jsontest::All::descriptor();
  // No delegation: sub-messages are dynamic too, and their non-empty maps (Struct) declined.
  DynamicMessageFactory plain_factory;
  RunRandom(plain_factory.GetPrototype(all_), 400, 0);
}

// ---------------------------------------------------------------------------------------------
// Generated classes (direct layout reads) and the per-type plan cache.

TEST(JsonPrint, GeneratedPresence) {
  jsontest::All m;
  ExpectSame(m);
  ExpectSame(jsontest::All::default_instance());
  std::string out;
  ASSERT_TRUE(PrintMessage(jsontest::All::default_instance(), &out));
  EXPECT_EQ(out, "{}");
  // Implicit presence: -0.0 is set (its bits are not zero), 0 is not.
  m.set_single_1(-0.0);
  m.set_single_5(0);
  m.set_single_9("");
  ExpectSame(m);
  // Oneof members and proto3 optionals are present at their default values.
  m.set_o_int(0);
  m.set_opt_int(0);
  m.set_opt_str("");
  m.set_opt_bool(false);
  ExpectSame(m);
  out.clear();
  ASSERT_TRUE(PrintMessage(m, &out));
  EXPECT_EQ(out, R"({"single1":-0,"oInt":0,"optInt":"0","optStr":"","optBool":false})");
  m.set_o_str("x\u2028");
  ExpectSame(m);
  m.mutable_o_inner();
  ExpectSame(m);
  m.set_o_double(1.5);
  // Empty sub-messages, wrappers at their defaults, repeated and map fields.
  m.mutable_inner();
  m.mutable_w_string();
  m.mutable_w_int64();
  m.mutable_em();
  m.mutable_ts();
  m.add_rep_3(-1);
  m.add_rep_3(std::numeric_limits<int64_t>::min());
  m.add_rep_8(true);
  m.add_rep_10(std::string("\0\xff", 2));
  m.add_colors(jsontest::CC);
  m.add_colors(static_cast<jsontest::Color>(17));  // unnamed value: printed as a number
  m.add_inners()->set_s_t("s");
  m.add_nulls(google::protobuf::NULL_VALUE);
  (*m.mutable_m_string_string())["k"] = "v<";
  (*m.mutable_m_string_string())["\xc3\xa9"] = "";
  (*m.mutable_m_uint32_color())[7] = jsontest::CB;
  (*m.mutable_m_string_value())["n"].set_number_value(2);
  m.mutable_child()->set_custom(3);
  ExpectSame(m);
  out.clear();
  ASSERT_TRUE(PrintMessage(m.child(), &out));
  EXPECT_EQ(out, R"({"myName":3})");
  // Invalid UTF-8 in a generated map value is declined, as elsewhere.
  (*m.mutable_m_string_string())["bad"] = "\xff";
  EXPECT_FALSE(ExpectSameOrDeclined(m));
}

// Enum names from the plan's table: aliases print the first name declared for a number, sparse
// enums fall back to the descriptor's lookup, unknown numbers print as numbers.
TEST(JsonPrint, EnumNames) {
  DescriptorPool pool(DescriptorPool::generated_pool());
  FileDescriptorProto fdp;
  fdp.set_name("enum_names.proto");
  fdp.set_package("en");
  fdp.set_syntax("proto3");
  auto* dense = fdp.add_enum_type();
  dense->set_name("Dense");
  dense->mutable_options()->set_allow_alias(true);
  for (auto [name, number] :
       {std::pair{"D0", 0}, std::pair{"D1", 1}, std::pair{"D1_ALIAS", 1}, std::pair{"D3", 3}}) {
    auto* v = dense->add_value();
    v->set_name(name);
    v->set_number(number);
  }
  auto* sparse = fdp.add_enum_type();
  sparse->set_name("Sparse");
  for (auto [name, number] :
       {std::pair{"S0", 0}, std::pair{"SBIG", 1000000}, std::pair{"SNEG", -5000000}}) {
    auto* v = sparse->add_value();
    v->set_name(name);
    v->set_number(number);
  }
  auto* msg = fdp.add_message_type();
  msg->set_name("M");
  for (auto [name, number, type] :
       {std::tuple{"d", 1, ".en.Dense"}, std::tuple{"s", 2, ".en.Sparse"},
        std::tuple{"ds", 3, ".en.Dense"}, std::tuple{"ss", 4, ".en.Sparse"}}) {
    auto* f = msg->add_field();
    f->set_name(name);
    f->set_number(number);
    f->set_type(FieldDescriptorProto::TYPE_ENUM);
    f->set_type_name(type);
    f->set_label(number > 2 ? FieldDescriptorProto::LABEL_REPEATED
                            : FieldDescriptorProto::LABEL_OPTIONAL);
  }
  const auto* file = pool.BuildFile(fdp);
  ASSERT_NE(file, nullptr);
  const Descriptor* d = file->FindMessageTypeByName("M");
  DynamicMessageFactory factory(&pool);
  std::unique_ptr<Message> m(factory.GetPrototype(d)->New());
  const Reflection* r = m->GetReflection();
  r->SetEnumValue(m.get(), d->FindFieldByName("d"), 1);
  r->SetEnumValue(m.get(), d->FindFieldByName("s"), -5000000);
  for (int v : {0, 1, 2, 3, 4, -1, std::numeric_limits<int>::min()}) {
    r->AddEnumValue(m.get(), d->FindFieldByName("ds"), v);
  }
  for (int v : {0, 1000000, -5000000, 7, std::numeric_limits<int>::max()}) {
    r->AddEnumValue(m.get(), d->FindFieldByName("ss"), v);
  }
  ExpectSame(*m);
  std::string out;
  ASSERT_TRUE(PrintMessage(*m, &out));
  EXPECT_EQ(out, R"({"d":"D1","s":"SNEG","ds":["D0","D1",2,"D3",4,-1,-2147483648],)"
                 R"("ss":["S0","SBIG","SNEG",7,2147483647]})");
}

// Types of pools that come and go: a later pool's descriptors may reuse a dead one's
// addresses, so a plan must never outlive its descriptor. Every round builds a differently
// shaped "p.M" (field names and kinds change) in a fresh pool and prints it.
TEST(JsonPrint, ShortLivedPoolsNeverSeeStalePlans) {
  const FieldDescriptorProto::Type kinds[] = {
      FieldDescriptorProto::TYPE_INT32, FieldDescriptorProto::TYPE_STRING,
      FieldDescriptorProto::TYPE_BOOL,  FieldDescriptorProto::TYPE_INT64,
      FieldDescriptorProto::TYPE_BYTES, FieldDescriptorProto::TYPE_DOUBLE};
  for (int round = 0; round < 60; ++round) {
    SCOPED_TRACE(round);
    auto pool = std::make_unique<DescriptorPool>();
    FileDescriptorProto fdp;
    fdp.set_name("short_lived.proto");
    fdp.set_package("p");
    fdp.set_syntax("proto3");
    auto* msg = fdp.add_message_type();
    msg->set_name("M");
    const int field_count = 1 + round % 4;
    for (int i = 0; i < field_count; ++i) {
      auto* f = msg->add_field();
      f->set_name("r" + std::to_string(round) + "_f" + std::to_string(i));
      f->set_number(i + 1);
      f->set_type(kinds[(round + i) % 6]);
      f->set_label(FieldDescriptorProto::LABEL_OPTIONAL);
    }
    const auto* file = pool->BuildFile(fdp);
    ASSERT_NE(file, nullptr);
    const Descriptor* d = file->FindMessageTypeByName("M");
    auto factory = std::make_unique<DynamicMessageFactory>(pool.get());
    std::unique_ptr<Message> m(factory->GetPrototype(d)->New());
    const Reflection* r = m->GetReflection();
    for (int i = 0; i < field_count; ++i) {
      const FieldDescriptor* f = d->field(i);
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
          r->SetInt32(m.get(), f, round + 1);
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          r->SetInt64(m.get(), f, -round - 1);
          break;
        case FieldDescriptor::CPPTYPE_BOOL:
          r->SetBool(m.get(), f, true);
          break;
        case FieldDescriptor::CPPTYPE_DOUBLE:
          r->SetDouble(m.get(), f, round + 0.5);
          break;
        default:
          r->SetString(m.get(), f, "v" + std::to_string(round));
          break;
      }
    }
    ExpectSame(*m);
    std::string out;
    ASSERT_TRUE(PrintMessage(*m, &out));
    EXPECT_NE(out.find("\"r" + std::to_string(round) + "F0\":"), std::string::npos) << out;
    m.reset();
    factory.reset();
    pool.reset();
  }
}

// Several threads print different generated types at once, none planned before, so that
// plans are built and child plans resolved concurrently; every output must be protobuf's.
TEST(JsonPrint, ConcurrentFirstUseOfManyTypes) {
  // Types no other test in this binary prints: their plans are built here, under contention.
  google::protobuf::Api api;
  api.set_name("a.B");
  api.set_version("v1");
  api.set_syntax(google::protobuf::SYNTAX_PROTO3);
  api.mutable_source_context()->set_file_name("a/b.proto");
  auto* method = api.add_methods();
  method->set_name("Get");
  method->set_request_type_url("type.googleapis.com/a.Req");
  method->set_response_streaming(true);
  method->add_options()->set_name("deprecated");
  api.add_mixins()->set_name("a.C");
  google::protobuf::Type type;
  type.set_name("a.Req");
  type.add_oneofs("choice");
  auto* field = type.add_fields();
  field->set_kind(google::protobuf::Field::TYPE_STRING);
  field->set_cardinality(google::protobuf::Field::CARDINALITY_REPEATED);
  field->set_number(3);
  field->set_name("names");
  field->set_json_name("names");
  field->set_packed(true);
  google::protobuf::Enum en;
  en.set_name("a.E");
  auto* ev = en.add_enumvalue();
  ev->set_name("E0");
  ev->set_number(0);
  en.add_options()->set_name("allow_alias");
  google::protobuf::SourceContext sc;
  sc.set_file_name("x.proto");
  jsontest::Inner inner;
  inner.set_a(5);
  inner.set_s_t("t");

  const std::vector<const Message*> messages = {&api, &type, &en, &sc, &inner};
  std::vector<std::string> want(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) ASSERT_TRUE(ProtobufJson(*messages[i], &want[i]));

  constexpr int kThreads = 6;
  constexpr int kRounds = 300;
  std::latch start(kThreads);
  std::atomic<int> mismatches{0};
  std::atomic<int> prints{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int round = 0; round < kRounds; ++round) {
        for (size_t k = 0; k < messages.size(); ++k) {
          // Each thread walks the types in its own order.
          const size_t i = (k + static_cast<size_t>(t)) % messages.size();
          std::string got;
          if (!PrintMessage(*messages[i], &got) || got != want[i]) ++mismatches;
          ++prints;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(prints.load(), kThreads * kRounds * static_cast<int>(messages.size()));
}

// The plain-run scan goes 16 bytes at a time: every byte class that stops it, at every
// position of strings longer than one block, must still be escaped (or declined) exactly.
TEST(JsonPrint, EscapeAtEveryPosition) {
  const std::string specials[] = {"\"",
                                  "\\",
                                  "<",
                                  ">",
                                  "\x01",
                                  "\x1f",
                                  "\x7f",
                                  "\n",
                                  "\xc3\xa9",
                                  "\xe2\x80\xa8",
                                  "\xf0\x9f\x98\x80",
                                  " ",
                                  "~",
                                  "\xff"};
  google::protobuf::StringValue v;
  for (const std::string& special : specials) {
    for (size_t len : {15, 16, 17, 31, 32, 33, 48}) {
      for (size_t pos = 0; pos <= len; ++pos) {
        std::string text(len, 'a');
        text.insert(pos, special);
        v.set_value(text);
        SCOPED_TRACE(testing::Message() << "len " << len << " pos " << pos);
        if (special == "\xff") {
          EXPECT_FALSE(ExpectSameOrDeclined(v));
        } else {
          ExpectSame(v);
        }
      }
    }
  }
}

// Appending to a non-empty string keeps what was there; repeated prints of one type reuse its
// size hint and still produce identical bytes, large or small.
TEST(JsonPrint, AppendsAndSizeHint) {
  jsontest::All big;
  for (int i = 0; i < 2000; ++i) big.add_rep_9("string number " + std::to_string(i));
  jsontest::All small;
  small.set_single_5(1);
  std::string want_big;
  std::string want_small;
  ASSERT_TRUE(ProtobufJson(big, &want_big));
  ASSERT_TRUE(ProtobufJson(small, &want_small));
  for (int i = 0; i < 3; ++i) {
    std::string out = "prefix:";
    ASSERT_TRUE(PrintMessage(big, &out));
    EXPECT_EQ(out, "prefix:" + want_big);
    out = "p";
    ASSERT_TRUE(PrintMessage(small, &out));
    EXPECT_EQ(out, "p" + want_small);
  }
}

}  // namespace
}  // namespace metald::rpc::json
