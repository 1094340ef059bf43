#pragma once
// protoc-gen-metald: for every .proto file that declares services, generates
// `<name>.metald.h` / `<name>.metald.cc` beside protoc's `<name>.pb.h`, holding per service:
//   - `kFooServiceName`, the fully-qualified service name;
//   - `FooServiceHandler`, an abstract class with one pure virtual method per RPC;
//   - `RegisterFooService(Router&, FooServiceHandler*)`, adding one rpc::MethodHandler per RPC;
//   - `FooServiceClient`, a typed wrapper over rpc::Client.
// Only unary and server-streaming RPCs are supported; any other kind fails generation with an
// error that names the method.
//
// Thread-safety: protoc runs a generator from one thread; the class keeps no state.

#include <google/protobuf/compiler/code_generator.h>
#include <google/protobuf/descriptor.h>

#include <string>

namespace metald::rpc::codegen {

class MetaldGenerator : public google::protobuf::compiler::CodeGenerator {
 public:
  bool Generate(const google::protobuf::FileDescriptor* file, const std::string& parameter,
                google::protobuf::compiler::GeneratorContext* context,
                std::string* error) const override;
  uint64_t GetSupportedFeatures() const override { return FEATURE_PROTO3_OPTIONAL; }
};

// The generated header's and source's text for `file` (exposed for tests). Returns false and
// sets *error when a method has an unsupported streaming kind.
bool GenerateText(const google::protobuf::FileDescriptor* file, std::string* header,
                  std::string* source, std::string* error);

}  // namespace metald::rpc::codegen
