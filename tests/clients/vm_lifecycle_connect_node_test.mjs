// The VM lifecycle against a real metald and a real QEMU guest, driven by connect-node
// (@connectrpc/connect-node 2.1.2, a client nobody here wrote) over three transports: Connect
// with JSON (HTTP/1.1), Connect with binary protobuf (HTTP/1.1) and gRPC (h2c). The schema comes
// from the descriptor set the build writes (metald_proto_v1.binpb), no generated code.
//
// Each transport: CreateVm → BootVm → WaitVm RUNNING → guest READY (console log) → PauseVm →
// ResumeVm → RebootVm → READY again → ShutdownVm graceful (graceful = true) → BootVm → READY →
// DeleteVm (force) → GetVmInfo not_found; plus ResumeVm on RUNNING → failed_precondition naming
// the state, and another customer's GetVmInfo → not_found.
//
// Environment (run_with_metald.sh sets the first three): METALD_ADDR, METALD_DATA_DIR,
// METALD_GUEST_DIR; METALD_DESCRIPTORS = path of metald_proto_v1.binpb.
// Run: node --test vm_lifecycle_connect_node_test.mjs
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  Http2SessionManager,
  createConnectTransport,
  createGrpcTransport,
} from "@connectrpc/connect-node";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

const addr = process.env.METALD_ADDR;
const dataDir = process.env.METALD_DATA_DIR;
const guestDir = process.env.METALD_GUEST_DIR;
const descriptors = process.env.METALD_DESCRIPTORS;
if (!addr || !dataDir || !guestDir || !descriptors) {
  throw new Error("METALD_ADDR, METALD_DATA_DIR, METALD_GUEST_DIR and METALD_DESCRIPTORS must be set");
}
const bootTimeoutMs = Number(process.env.METALD_E2E_BOOT_TIMEOUT ?? 300) * 1000;

const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptors)));
const service = registry.getService("metald.v1.VmService");
const vmState = registry.getEnum("metald.v1.VmState");
assert.ok(service && vmState, `${descriptors} does not describe metald.v1.VmService`);
const S = Object.fromEntries(vmState.values.map((v) => [v.name.replace("VM_STATE_", ""), v.number]));
const stateName = (n) => vmState.values.find((v) => v.number === n)?.name ?? `state ${n}`;

const baseUrl = `http://${addr}`;
const sessions = [];
after(() => sessions.forEach((m) => m.abort()));
const h2 = () => {
  const m = new Http2SessionManager(baseUrl);
  sessions.push(m);
  return { baseUrl, httpVersion: "2", sessionManager: m };
};
const auth = (customer) => ({ headers: { authorization: `Bearer dev_customer_${customer}` } });

const variants = [
  { name: "connect http/1.1 json",
    make: () => createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }) },
  { name: "connect http/1.1 proto",
    make: () => createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }) },
  { name: "grpc h2c proto",
    make: () => createGrpcTransport({ ...h2(), useBinaryFormat: true }) },
];

// READY lines of the VM's current boot (after the last POWEROFF line) on its serial console.
function readyCount(id) {
  const f = `${dataDir}/vms/${id}/console.log`;
  if (!existsSync(f)) return 0;
  let n = 0;
  for (const line of readFileSync(f, "latin1").split("\n")) {
    if (line.includes("METALD-GUEST-POWEROFF")) n = 0;
    if (line.includes("METALD-GUEST-READY")) n++;
  }
  return n;
}
async function waitReady(id, n) {
  const deadline = Date.now() + bootTimeoutMs;
  while (readyCount(id) < n) {
    assert.ok(Date.now() < deadline, `no METALD-GUEST-READY x${n} on ${id}'s console`);
    await sleep(200);
  }
}

async function rejection(promise) {
  try {
    const value = await promise;
    assert.fail(`expected an error, got ${JSON.stringify(value, (_, v) =>
      typeof v === "bigint" ? v.toString() : v)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    return ConnectError.from(e);
  }
}

for (const v of variants) {
  describe(v.name, () => {
    const client = createClient(service, v.make());
    const alice = auth("alice");

    it("runs a real guest through the whole lifecycle", async () => {
      const created = await client.createVm({
        config: {
          cpu: { vcpuCount: 1 },
          memory: { sizeBytes: 256n << 20n },
          boot: { kernelPath: `${guestDir}/vmlinuz`, initrdPath: `${guestDir}/initrd.img` },
        },
      }, alice);
      const id = created.vmId || created.vm?.vmId;
      assert.match(id, /^vm-/);
      assert.equal(stateName(created.state), "VM_STATE_CREATED");
      const vm = { vmId: id };
      try {
        let r = await client.bootVm(vm, alice);
        assert.equal(stateName(r.state), "VM_STATE_RUNNING");
        const w = await client.waitVm({ vmId: id, states: [S.RUNNING],
                                        timeout: { seconds: 300n, nanos: 0 } }, alice);
        assert.equal(stateName(w.vm.state), "VM_STATE_RUNNING");
        assert.equal(w.vm.customerId, "alice");
        await waitReady(id, 1);

        let err = await rejection(client.resumeVm(vm, alice));
        assert.equal(err.code, Code.FailedPrecondition, `got ${Code[err.code]}: ${err.message}`);
        assert.match(err.rawMessage, /RUNNING/);
        err = await rejection(client.getVmInfo(vm, auth("bob")));
        assert.equal(err.code, Code.NotFound, `got ${Code[err.code]}: ${err.message}`);
        const bobs = await client.listVms({}, auth("bob"));
        assert.ok(!bobs.vms.some((x) => x.vmId === id), "bob's ListVms shows alice's VM");

        r = await client.pauseVm(vm, alice);
        assert.equal(stateName(r.state), "VM_STATE_PAUSED");
        const info = await client.getVmInfo(vm, alice);
        assert.equal(stateName(info.vm.state), "VM_STATE_PAUSED");
        r = await client.resumeVm(vm, alice);
        assert.equal(stateName(r.state), "VM_STATE_RUNNING");

        r = await client.rebootVm(vm, alice);
        assert.equal(stateName(r.state), "VM_STATE_RUNNING");
        await waitReady(id, 2);

        const sd = await client.shutdownVm({ vmId: id, timeout: { seconds: 180n, nanos: 0 } }, alice);
        assert.equal(stateName(sd.state), "VM_STATE_STOPPED");
        assert.equal(sd.graceful, true, "the guest did not power off on the ACPI power button");

        r = await client.bootVm(vm, alice);
        assert.equal(stateName(r.state), "VM_STATE_RUNNING");
        await waitReady(id, 1);
      } finally {
        await client.deleteVm({ vmId: id, force: true }, alice);
      }
      const err = await rejection(client.getVmInfo(vm, alice));
      assert.equal(err.code, Code.NotFound, `got ${Code[err.code]}: ${err.message}`);
      assert.ok(!existsSync(`${dataDir}/vms/${id}`), "the VM directory is still there");
    });
  });
}
