#include "metald/rpc/codegen/generator.h"

#include <google/protobuf/compiler/parser.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <gtest/gtest.h>

namespace metald::rpc::codegen {
namespace {

namespace pb = google::protobuf;

class ErrorCollector : public pb::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    errors += std::to_string(line) + ":" + std::to_string(column) + ": " + message + "\n";
  }
  std::string errors;
};

// Parses `text` as "test.proto" into `pool`.
const pb::FileDescriptor* ParseProto(pb::DescriptorPool& pool, const std::string& text) {
  pb::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  ErrorCollector errors;
  pb::io::Tokenizer tokenizer(&input, &errors);
  pb::compiler::Parser parser;
  pb::FileDescriptorProto proto;
  EXPECT_TRUE(parser.Parse(&tokenizer, &proto)) << errors.errors;
  proto.set_name("a/b/test.proto");
  const pb::FileDescriptor* file = pool.BuildFile(proto);
  EXPECT_NE(file, nullptr);
  return file;
}

TEST(GenerateText, ClientStreamingFailsNamingTheMethod) {
  pb::DescriptorPool pool;
  const pb::FileDescriptor* file = ParseProto(pool, R"(
    syntax = "proto3";
    package x.y;
    message M {}
    service S {
      rpc Ok(M) returns (M);
      rpc Upload(stream M) returns (M);
    }
  )");
  ASSERT_NE(file, nullptr);
  std::string header, source, error;
  EXPECT_FALSE(GenerateText(file, &header, &source, &error));
  EXPECT_NE(error.find("x.y.S.Upload"), std::string::npos) << error;
  EXPECT_NE(error.find("client streaming is not supported"), std::string::npos) << error;
}

TEST(GenerateText, BidiStreamingFails) {
  pb::DescriptorPool pool;
  const pb::FileDescriptor* file = ParseProto(pool, R"(
    syntax = "proto3";
    message M {}
    service S { rpc Chat(stream M) returns (stream M); }
  )");
  ASSERT_NE(file, nullptr);
  std::string header, source, error;
  EXPECT_FALSE(GenerateText(file, &header, &source, &error));
  EXPECT_NE(error.find("S.Chat"), std::string::npos) << error;
}

TEST(GenerateText, NamesNamespacesPathsAndComments) {
  pb::DescriptorPool pool;
  const pb::FileDescriptor* file = ParseProto(pool, R"(
    syntax = "proto3";
    package acme.v2;
    message Req { message Inner {} }
    message Resp {}
    service Widget {
      rpc Get(Req.Inner) returns (Resp) { option idempotency_level = NO_SIDE_EFFECTS; }
    }
  )");
  ASSERT_NE(file, nullptr);
  std::string header, source, error;
  ASSERT_TRUE(GenerateText(file, &header, &source, &error)) << error;
  EXPECT_NE(header.find("namespace acme::v2 {"), std::string::npos);
  EXPECT_NE(header.find("#include \"a/b/test.pb.h\""), std::string::npos);
  EXPECT_NE(header.find("kWidgetName = \"acme.v2.Widget\""), std::string::npos);
  EXPECT_NE(header.find("const ::acme::v2::Req_Inner& request"), std::string::npos) << header;
  EXPECT_NE(source.find("#include \"a/b/test.metald.h\""), std::string::npos);
  EXPECT_NE(source.find("\"/acme.v2.Widget/Get\""), std::string::npos);
  EXPECT_NE(source.find("no_side_effects = true"), std::string::npos);
}

}  // namespace
}  // namespace metald::rpc::codegen
