#include "metald/rpc/codegen/generator.h"

#include <google/protobuf/compiler/cpp/names.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/io/printer.h>
#include <google/protobuf/io/zero_copy_stream.h>

#include <memory>
#include <string_view>
#include <vector>

namespace metald::rpc::codegen {
namespace {

namespace pb = google::protobuf;

std::string StripProto(std::string_view name) {
  if (name.ends_with(".proto")) name.remove_suffix(6);
  return std::string(name);
}

// "metald.test.v1" -> "metald::test::v1".
std::string CppNamespace(std::string_view package) {
  std::string out;
  for (char c : package) {
    if (c == '.') {
      out += "::";
    } else {
      out += c;
    }
  }
  return out;
}

std::string MessageType(const pb::Descriptor* d) {
  return pb::compiler::cpp::QualifiedClassName(d);
}

// Renders protoc's leading comments as `//` lines indented by `indent`.
std::string DocComment(const std::string& comments, std::string_view indent) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= comments.size()) {
    size_t nl = comments.find('\n', start);
    if (nl == std::string::npos) nl = comments.size();
    std::string line = comments.substr(start, nl - start);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r' ||
                             line.back() == '\\')) {
      // A trailing backslash would splice the next source line into the comment.
      line.pop_back();
    }
    lines.push_back(std::move(line));
    start = nl + 1;
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  std::string out;
  for (const std::string& line : lines) {
    out += indent;
    out += line.empty() ? "//" : "//" + line;
    out += '\n';
  }
  return out;
}

template <typename D>
std::string LeadingComments(const D* d) {
  pb::SourceLocation loc;
  if (!d->GetSourceLocation(&loc)) return "";
  return loc.leading_comments;
}

bool IsServerStreaming(const pb::MethodDescriptor* m) {
  return !m->client_streaming() && m->server_streaming();
}

bool NoSideEffects(const pb::MethodDescriptor* m) {
  return m->options().idempotency_level() == pb::MethodOptions::NO_SIDE_EFFECTS;
}

std::string HandlerSignature(const pb::MethodDescriptor* m) {
  std::string s = "::metald::base::Status " + m->name() +
                  "(::metald::rpc::CallContext& ctx, const " + MessageType(m->input_type()) +
                  "& request, ";
  if (IsServerStreaming(m)) {
    s += "::metald::rpc::TypedStreamWriter<" + MessageType(m->output_type()) + ">& writer)";
  } else {
    s += MessageType(m->output_type()) + "& response)";
  }
  return s;
}

void GenerateServiceHeader(const pb::ServiceDescriptor* service, std::string& h) {
  const std::string& name = service->name();
  h +=
      "inline constexpr std::string_view k" + name + "Name = \"" + service->full_name() + "\";\n\n";
  h += DocComment(LeadingComments(service), "");
  h += "// Implement this class and pass it to Register" + name +
       ". Methods are called concurrently\n"
       "// from the server's handler threads, so implementations must be thread-safe.\n";
  h += "class " + name + "Handler {\n public:\n";
  h += "  virtual ~" + name + "Handler() = default;\n";
  for (int i = 0; i < service->method_count(); ++i) {
    const pb::MethodDescriptor* m = service->method(i);
    h += "\n";
    h += DocComment(LeadingComments(m), "  ");
    h += "  virtual " + HandlerSignature(m) + " = 0;\n";
  }
  h += "};\n\n";

  h += "// Adds every " + name +
       " method to `router`. `handler` is not owned and must outlive the\n"
       "// server that serves `router`. Fails (already_exists) when a path is taken.\n";
  h += "::metald::base::Status Register" + name + "(::metald::rpc::Router& router, " + name +
       "Handler* handler);\n\n";

  h += "// A typed client for " + service->full_name() +
       " over a Connect rpc::Client. Thread-safe as the\n"
       "// underlying Client is.\n";
  h += "class " + name + "Client {\n public:\n";
  h += "  // `client` is not owned and must outlive this object.\n";
  h += "  explicit " + name + "Client(::metald::rpc::Client* client);\n";
  for (int i = 0; i < service->method_count(); ++i) {
    const pb::MethodDescriptor* m = service->method(i);
    h += "\n";
    h += DocComment(LeadingComments(m), "  ");
    std::string in = MessageType(m->input_type());
    std::string out = MessageType(m->output_type());
    if (IsServerStreaming(m)) {
      h += "  // Calls `on_message` for each message; returning false cancels the stream.\n";
      h += "  ::metald::base::Status " + m->name() + "(const " + in +
           "& request,\n      const std::function<bool(const " + out +
           "&)>& on_message,\n      const ::metald::rpc::CallOptions& options = {});\n";
    } else {
      h += "  ::metald::base::Result<" + out + "> " + m->name() + "(const " + in +
           "& request,\n      const ::metald::rpc::CallOptions& options = {});\n";
    }
  }
  h += "\n private:\n  ::metald::rpc::Client* client_;\n};\n\n";
}

void GenerateServiceSource(const pb::ServiceDescriptor* service, std::string& c) {
  const std::string& name = service->name();
  c += "::metald::base::Status Register" + name + "(::metald::rpc::Router& router, " + name +
       "Handler* handler) {\n";
  for (int i = 0; i < service->method_count(); ++i) {
    const pb::MethodDescriptor* m = service->method(i);
    std::string in = MessageType(m->input_type());
    std::string out = MessageType(m->output_type());
    bool stream = IsServerStreaming(m);
    c += "  {\n    ::metald::rpc::MethodHandler m;\n";
    c += "    m.desc.service = std::string(k" + name + "Name);\n";
    c += "    m.desc.method = \"" + m->name() + "\";\n";
    c += "    m.desc.path = \"/" + service->full_name() + "/" + m->name() + "\";\n";
    c += std::string("    m.desc.kind = ::metald::rpc::MethodKind::") +
         (stream ? "kServerStreaming" : "kUnary") + ";\n";
    c += std::string("    m.desc.no_side_effects = ") + (NoSideEffects(m) ? "true" : "false") +
         ";\n";
    c += "    m.request_prototype = &" + in + "::default_instance();\n";
    c += "    m.response_prototype = &" + out + "::default_instance();\n";
    if (stream) {
      c += "    m.stream = [handler](::metald::rpc::CallContext& ctx,\n"
           "                        const ::google::protobuf::Message& request,\n"
           "                        ::metald::rpc::StreamWriter& writer) {\n";
      c += "      ::metald::rpc::TypedStreamWriter<" + out + "> typed(writer);\n";
      c += "      return handler->" + m->name() +
           "(\n          ctx, ::google::protobuf::internal::down_cast<const " + in +
           "&>(request), typed);\n";
      c += "    };\n";
    } else {
      c += "    m.unary = [handler](::metald::rpc::CallContext& ctx,\n"
           "                       const ::google::protobuf::Message& request,\n"
           "                       ::google::protobuf::Message& response) {\n";
      c += "      return handler->" + m->name() +
           "(\n          ctx, ::google::protobuf::internal::down_cast<const " + in +
           "&>(request),\n          ::google::protobuf::internal::down_cast<" + out +
           "&>(response));\n";
      c += "    };\n";
    }
    c += "    ::metald::base::Status status = router.AddMethod(std::move(m));\n";
    c += "    if (!status.ok()) return status;\n  }\n";
  }
  c += "  return ::metald::base::OkStatus();\n}\n\n";

  c += name + "Client::" + name + "Client(::metald::rpc::Client* client) : client_(client) {}\n\n";
  for (int i = 0; i < service->method_count(); ++i) {
    const pb::MethodDescriptor* m = service->method(i);
    std::string in = MessageType(m->input_type());
    std::string out = MessageType(m->output_type());
    std::string path = "/" + service->full_name() + "/" + m->name();
    if (IsServerStreaming(m)) {
      c += "::metald::base::Status " + name + "Client::" + m->name() + "(const " + in +
           "& request,\n    const std::function<bool(const " + out +
           "&)>& on_message,\n    const ::metald::rpc::CallOptions& options) {\n";
      c += "  return client_->ServerStream(\n      \"" + path + "\", request, " + out +
           "::default_instance(),\n"
           "      [&on_message](const ::google::protobuf::Message& message) {\n"
           "        return on_message(::google::protobuf::internal::down_cast<const " +
           out + "&>(message));\n      },\n      options);\n}\n\n";
    } else {
      c += "::metald::base::Result<" + out + "> " + name + "Client::" + m->name() + "(const " + in +
           "& request,\n    const ::metald::rpc::CallOptions& options) {\n";
      c += "  " + out + " response;\n";
      c += "  ::metald::base::Status status = client_->Unary(\"" + path +
           "\", request, &response, options);\n";
      c += "  if (!status.ok()) return status;\n  return response;\n}\n\n";
    }
  }
}

bool Write(pb::compiler::GeneratorContext* context, const std::string& filename,
           const std::string& text) {
  std::unique_ptr<pb::io::ZeroCopyOutputStream> out(context->Open(filename));
  pb::io::Printer printer(out.get(), '$');
  printer.WriteRaw(text.data(), static_cast<int>(text.size()));
  return !printer.failed();
}

}  // namespace

bool GenerateText(const pb::FileDescriptor* file, std::string* header, std::string* source,
                  std::string* error) {
  for (int s = 0; s < file->service_count(); ++s) {
    const pb::ServiceDescriptor* service = file->service(s);
    for (int i = 0; i < service->method_count(); ++i) {
      const pb::MethodDescriptor* m = service->method(i);
      if (m->client_streaming()) {
        *error = m->full_name() + ": " +
                 (m->server_streaming() ? "bidi streaming" : "client streaming") +
                 " is not supported by protoc-gen-metald";
        return false;
      }
    }
  }

  const std::string base = StripProto(file->name());
  const std::string ns = CppNamespace(file->package());
  std::string& h = *header;
  std::string& c = *source;
  h = "// Generated by protoc-gen-metald from " + file->name() + ". Do not edit.\n";
  h += "#pragma once\n\n#include <functional>\n#include <string>\n#include <string_view>\n\n";
  h += "#include \"metald/base/status.h\"\n#include \"metald/rpc/call.h\"\n";
  h += "#include \"metald/rpc/client.h\"\n#include \"metald/rpc/router.h\"\n";
  h += "#include \"" + base + ".pb.h\"\n\n";
  if (!ns.empty()) h += "namespace " + ns + " {\n\n";

  c = "// Generated by protoc-gen-metald from " + file->name() + ". Do not edit.\n";
  c += "#include \"" + base + ".metald.h\"\n\n#include <utility>\n\n";
  if (!ns.empty()) c += "namespace " + ns + " {\n\n";

  for (int s = 0; s < file->service_count(); ++s) {
    GenerateServiceHeader(file->service(s), h);
    GenerateServiceSource(file->service(s), c);
  }
  if (!ns.empty()) {
    h += "}  // namespace " + ns + "\n";
    c += "}  // namespace " + ns + "\n";
  }
  return true;
}

bool MetaldGenerator::Generate(const pb::FileDescriptor* file, const std::string& parameter,
                               pb::compiler::GeneratorContext* context, std::string* error) const {
  if (!parameter.empty()) {
    *error = "protoc-gen-metald takes no parameters, got: " + parameter;
    return false;
  }
  if (file->service_count() == 0) return true;
  std::string header;
  std::string source;
  if (!GenerateText(file, &header, &source, error)) return false;
  const std::string base = StripProto(file->name());
  if (!Write(context, base + ".metald.h", header) || !Write(context, base + ".metald.cc", source)) {
    *error = "Cannot write the output for " + file->name();
    return false;
  }
  return true;
}

}  // namespace metald::rpc::codegen
