// Loads the echo test service's schema at run time from a FileDescriptorSet (the .binpb that
// metald_proto_library writes), so that no generated TypeScript/JavaScript is needed.
import { readFileSync } from "node:fs";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

export const SERVICE_NAME = "metald.test.v1.EchoService";

// Returns { registry, service } for the descriptor set at `path`. Throws with the path in the
// message when the file is missing or does not describe the echo service.
export function loadEchoService(path) {
  let bytes;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new Error(`cannot read descriptor set ${path}: ${e.message}`);
  }
  const set = fromBinary(FileDescriptorSetSchema, bytes);
  const registry = createFileRegistry(set);
  const service = registry.getService(SERVICE_NAME);
  if (service === undefined) {
    throw new Error(`descriptor set ${path} has no service ${SERVICE_NAME}`);
  }
  return { registry, service };
}
