// The direct JSON reader (json_reader.h) against protobuf 3.21's JsonStringToMessage: whatever
// the reader accepts, protobuf accepts with the same result; and the common inputs really take
// the reader's path (a reader that declined everything would pass the first half alone).

#include "metald/rpc/json_reader.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "metald/rpc/testdata/json_print_test.pb.h"
#include "metald/rpc/wire.h"

namespace metald::rpc::json {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using jsontest::All;

struct ProtobufResult {
  bool ok = false;
  All message;
};

ProtobufResult ProtobufParse(const std::string& text) {
  ProtobufResult r;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  r.ok = google::protobuf::util::JsonStringToMessage(text, &r.message, options).ok();
  return r;
}

// The differential rule: if the reader accepts `text`, protobuf accepts it too and both
// messages are equal. Returns whether the reader accepted.
bool CheckAgainstProtobuf(const std::string& text) {
  All ours;
  const bool accepted = ReadMessage(text, &ours);
  if (accepted) {
    ProtobufResult want = ProtobufParse(text);
    EXPECT_TRUE(want.ok) << "reader accepted what protobuf rejects: " << text;
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(ours, want.message))
        << "text: " << text << "\nours: " << ours.ShortDebugString()
        << "\nprotobuf: " << want.message.ShortDebugString();
  }
  return accepted;
}

TEST(JsonReader, AcceptsTheCommonSubsetLikeProtobuf) {
  const std::vector<std::string> accepted = {
      "{}",
      " \t\r\n{ } \n",
      R"({"single9":"hello"})",
      R"({"single_9":"hello"})",  // the proto name works too
      R"({"single3":"-9223372036854775808","single4":"18446744073709551615"})",
      R"({"single3":123456789012345,"single4":0,"single5":-2147483648,"single11":4294967295})",
      R"({"single6":"1","single7":7,"single12":-1,"single13":"-2","single14":-3,"single15":"4"})",
      R"({"single8":true,"opt_bool":false,"optStr":"","optInt":"0"})",
      R"({"single1":-12345,"single2":16777217,"rep1":[0,1],"rep2":[-3],"single10":""})",
      R"({"color":"CC","colors":["CA","CB","CC"]})",
      R"({"inner":{"a":1,"sT":"x"},"inners":[{},{"a":2},{"s_t":"y"}]})",
      R"({"child":{"child":{"single9":"deep"}}})",
      R"({"oStr":"one"})",
      R"({"oInner":{}})",
      R"({"myName":5})",
      R"({"custom":6})",
      R"({"mStringInt":{"a":1,"b":-2},"mStringString":{"":"","k":"v"}})",
      R"({"mInt64String":{"-5":"x","9223372036854775807":"y"},"mUint32Color":{"3":"CB"}})",
      R"({"mBoolInner":{"true":{"a":1},"false":{}}})",
      R"({"rep9":["a","b",""],"rep5":[1,-1],"rep3":["1",2],"rep8":[true,false],"rep11":[]})",
      R"({"single9":"esc \" \\ \/ \b \f \n \r \t \u00e9 \u20ac \ud83d\ude00 é 😀"})",
      R"({"single9":"<>&'"})",
      R"({ "single9" : "spaced" , "single5" : 1 })",
  };
  for (const std::string& text : accepted) {
    EXPECT_TRUE(CheckAgainstProtobuf(text)) << "declined: " << text;
  }
}

TEST(JsonReader, DeclinesWhatItDoesNotReproduce) {
  const std::vector<std::string> declined = {
      "",
      "[]",
      "null",
      R"("x")",
      "{",
      R"({"single9":"x"} trailing)",
      R"({"single9":"x",})",
      R"({"unknownField":1})",              // protobuf ignores it; left to protobuf
      R"({"single9":"a","single9":"b"})",   // duplicate
      R"({"single9":"a","single_9":"b"})",  // the same field under both names
      R"({"oStr":"a","oInt":1})",           // two members of one oneof
      R"({"single9":null})",
      R"({"single1":1.5})",
      R"({"single2":1e3})",
      R"({"single1":"1"})",
      R"({"single10":"AAAA"})",
      R"({"single5":1.0})",
      R"({"single5":1e2})",
      R"({"single5":"1"})",  // quoted 32-bit
      R"({"single5":01})",
      R"({"single5":-0})",
      R"({"single5":2147483648})",  // out of range
      R"({"single11":-1})",
      R"({"single3":1234567890123456})",        // 16 unquoted digits
      R"({"single4":"18446744073709551616"})",  // out of range
      R"({"single8":"true"})",
      R"({"single8":truex})",
      R"({"color":1})",  // enum by number
      R"({"color":"NOPE"})",
      R"({"ts":"2020-01-01T00:00:00Z"})",  // well-known type
      R"({"w_int64":"5"})",
      R"({"single9":"raw	tab"})",  // raw control character
      "{\"single9\":\"\xff\"}",           // invalid UTF-8
      "{\"single9\":\"\xc0\xaf\"}",       // overlong
      R"({"single9":"\ud800"})",          // lone surrogate
      R"({"single9":"\u0000"})",
      R"({"single9":"\x41"})",  // not a JSON escape
      R"({'single9':'x'})",
      R"({single9:"x"})",
      R"({"mStringInt":{"a":1,"a":2}})",  // duplicate map key
      R"({"mInt64String":{"x":"y"}})",
      R"({"mBoolInner":{"yes":{}}})",
      R"({"mStringTs":{"a":"2020-01-01T00:00:00Z"}})",
      R"({"rep9":["a",null]})",
      R"({"rep9":"a"})",
  };
  for (const std::string& text : declined) {
    All m;
    EXPECT_FALSE(ReadMessage(text, &m)) << "accepted: " << text;
  }
  // Nesting deeper than 32 levels.
  std::string deep;
  for (int i = 0; i < 40; ++i) deep += R"({"child":)";
  deep += "{}";
  for (int i = 0; i < 40; ++i) deep += "}";
  All m;
  EXPECT_FALSE(ReadMessage(deep, &m));
}

// Random messages of the kinds the reader handles, printed by protobuf in both naming styles:
// the reader must accept every one and agree with protobuf. Then random edits of those texts:
// whatever the reader still accepts, protobuf must read the same way.
class RandomReadTest : public ::testing::Test {
 protected:
  std::mt19937_64 rng_{20261127};

  bool Chance(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_) == 0; }

  std::string RandomString() {
    static const std::vector<std::string> pieces = {
        "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\x01", "é", "€", "😀", "<", "_", "\x7f"};
    std::string s;
    int n = std::uniform_int_distribution<int>(0, 6)(rng_);
    for (int i = 0; i < n; ++i) s += pieces[rng_() % pieces.size()];
    return s;
  }

  // Whether the reader handles `f` (the fields filled below).
  static bool Handled(const FieldDescriptor* f) {
    if (f->is_map()) {
      const FieldDescriptor* v = f->message_type()->map_value();
      return Handled(f->message_type()->map_key()) && Handled(v);
    }
    switch (f->type()) {
      case FieldDescriptor::TYPE_BYTES:
        return false;
      case FieldDescriptor::TYPE_MESSAGE:
        return f->message_type()->file()->package() != "google.protobuf";
      case FieldDescriptor::TYPE_ENUM:
        return f->enum_type()->file()->package() != "google.protobuf";
      default:
        return true;
    }
  }

  void FillScalar(Message* m, const FieldDescriptor* f) {
    const auto* r = m->GetReflection();
    const bool rep = f->is_repeated();
    // 53-bit values: protobuf prints 64-bit ones quoted; 32-bit ones span their range.
    int64_t i64 = static_cast<int64_t>(rng_() >> 11) * (Chance(2) ? 1 : -1);
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32: {
        int32_t v = static_cast<int32_t>(rng_());
        rep ? r->AddInt32(m, f, v) : r->SetInt32(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_INT64:
        rep ? r->AddInt64(m, f, i64) : r->SetInt64(m, f, i64);
        break;
      case FieldDescriptor::CPPTYPE_UINT32: {
        uint32_t v = static_cast<uint32_t>(rng_());
        rep ? r->AddUInt32(m, f, v) : r->SetUInt32(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_UINT64: {
        uint64_t v = Chance(4) ? ~uint64_t{0} : rng_();
        rep ? r->AddUInt64(m, f, v) : r->SetUInt64(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_BOOL:
        rep ? r->AddBool(m, f, Chance(2)) : r->SetBool(m, f, Chance(2));
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE:  // integral values: protobuf prints them bare
        rep ? r->AddDouble(m, f, static_cast<double>(i64 >> 20))
            : r->SetDouble(m, f, static_cast<double>(i64 >> 20));
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        rep ? r->AddFloat(m, f, static_cast<float>(i64 >> 40))
            : r->SetFloat(m, f, static_cast<float>(i64 >> 40));
        break;
      case FieldDescriptor::CPPTYPE_ENUM: {
        int v = static_cast<int>(rng_() % 3);
        rep ? r->AddEnumValue(m, f, v) : r->SetEnumValue(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_STRING:
        rep ? r->AddString(m, f, RandomString()) : r->SetString(m, f, RandomString());
        break;
      case FieldDescriptor::CPPTYPE_MESSAGE: {
        Message* sub = rep ? r->AddMessage(m, f) : r->MutableMessage(m, f);
        Fill(sub, depth_ + 1);
        break;
      }
      default:
        break;
    }
  }

  void Fill(Message* m, int depth) {
    const int saved = depth_;
    depth_ = depth;
    const auto* d = m->GetDescriptor();
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (!Handled(f) || !Chance(3)) continue;
      if (f->message_type() != nullptr && !f->is_map() && depth >= 3) continue;
      if (f->real_containing_oneof() && !Chance(3)) continue;
      if (f->is_map()) {
        int n = std::uniform_int_distribution<int>(0, 3)(rng_);
        const auto* r = m->GetReflection();
        for (int k = 0; k < n; ++k) {
          Message* entry = r->AddMessage(m, f);
          FillScalar(entry, f->message_type()->map_key());
          FillScalar(entry, f->message_type()->map_value());
        }
      } else if (f->is_repeated()) {
        int n = std::uniform_int_distribution<int>(0, 3)(rng_);
        for (int k = 0; k < n; ++k) FillScalar(m, f);
      } else {
        FillScalar(m, f);
      }
    }
    depth_ = saved;
  }

  std::string Mutate(std::string text) {
    int edits = std::uniform_int_distribution<int>(1, 3)(rng_);
    static const std::string alphabet = "{}[]\":,\\ntrufalse0123456789-.eE\x80\xc3\xa9 u";
    for (int e = 0; e < edits && !text.empty(); ++e) {
      size_t at = rng_() % text.size();
      switch (rng_() % 3) {
        case 0:
          text.erase(at, 1);
          break;
        case 1:
          text.insert(at, 1, alphabet[rng_() % alphabet.size()]);
          break;
        default:
          text[at] = alphabet[rng_() % alphabet.size()];
          break;
      }
    }
    return text;
  }

  int depth_ = 0;
};

TEST_F(RandomReadTest, AgreesWithProtobuf) {
  int mutated_accepted = 0;
  for (int i = 0; i < 1500; ++i) {
    All m;
    Fill(&m, 0);
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = Chance(2);
    options.always_print_primitive_fields = Chance(4);
    std::string text;
    ASSERT_TRUE(google::protobuf::util::MessageToJsonString(m, &text, options).ok());
    // (Compared with protobuf's reading of the text, not with `m`: a map filled through
    // reflection may hold a key twice, which its JSON form cannot.)
    ASSERT_TRUE(CheckAgainstProtobuf(text)) << "declined protobuf's own output: " << text;
    for (int k = 0; k < 8; ++k) {
      if (CheckAgainstProtobuf(Mutate(text))) ++mutated_accepted;
    }
  }
  // Some edits keep the text valid (a digit for a digit): the reader still answers those.
  EXPECT_GT(mutated_accepted, 0);
}

// wire::ParseMessage takes the reader's path and falls back to protobuf for the rest: the same
// results either way, and protobuf's errors for what neither accepts.
TEST(JsonReader, WireParseMessageFallsBack) {
  All m;
  ASSERT_TRUE(wire::ParseMessage(Codec::kJson, R"({"single9":"x","single1":1.5})", &m).ok());
  EXPECT_EQ(m.single_9(), "x");
  EXPECT_EQ(m.single_1(), 1.5);
  ASSERT_TRUE(
      wire::ParseMessage(Codec::kJson, R"({"single5":7,"unknown":[1,{"a":null}]})", &m).ok());
  EXPECT_EQ(m.single_5(), 7);
  EXPECT_EQ(m.single_9(), "");  // cleared between parses
  base::Status bad = wire::ParseMessage(Codec::kJson, R"({"single5":"x"})", &m);
  EXPECT_EQ(bad.code(), base::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("metald.rpc.jsontest.All"), std::string::npos) << bad.message();
}

}  // namespace
}  // namespace metald::rpc::json
