// protoc-gen-metald: protoc plugin entry point (see generator.h).
#include <google/protobuf/compiler/plugin.h>

#include "metald/rpc/codegen/generator.h"

int main(int argc, char* argv[]) {
  metald::rpc::codegen::MetaldGenerator generator;
  return google::protobuf::compiler::PluginMain(argc, argv, &generator);
}
