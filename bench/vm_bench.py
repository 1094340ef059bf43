#!/usr/bin/env python3
"""Create→ready benchmark: a VM booted through metald vs the same QEMU command run by hand.

Usage: vm_bench.py --addr HOST:PORT --data-dir DIR --guest-dir DIR --out FILE [--reps N]

metald must already run on ADDR with DIR as --data-dir and GUEST_DIR as an image root
(run_vm_bench.sh does that). Each repetition runs both paths, alternating which goes first:

  metald   CreateVm + BootVm (Connect JSON over HTTP/1.1, one keep-alive connection), then the
           guest's METALD-GUEST-READY on the console; then DeleteVm (force).
  by hand  the argv of the QEMU process metald started (taken from /proc/<pid>/cmdline of the
           first metald VM, with the QMP socket and console paths moved to a scratch dir), i.e.
           the same -S command; the script connects to QMP, sends qmp_capabilities and cont,
           waits for READY, then quits QEMU over QMP and waits for the process to exit.

Both paths do the same VMM work (spawn with -S, QMP handshake, cont, boot, stop), so
    metald overhead = (CreateVm + BootVm + DeleteVm RPC time) − (spawn→QMP ready + cont + quit)
is the time metald adds around the VMM (validation, SQLite writes, directory set-up, its own
QMP round trips such as query-status, process bookkeeping). Figures are medians over the
repetitions and ratios of medians measured in the same run; nothing here is a pass/fail timing.
The guest is polled every 5 ms (console file size + search), which bounds the resolution.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

READY = b"METALD-GUEST-READY"


def now():
    return time.monotonic()


class Api:
    """Connect unary calls with JSON on one keep-alive HTTP/1.1 connection."""

    def __init__(self, addr, customer="bench"):
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=600)
        self.headers = {"Content-Type": "application/json",
                        "Authorization": f"Bearer dev_customer_{customer}"}

    def call(self, method, body):
        self.conn.request("POST", f"/metald.v1.VmService/{method}", json.dumps(body),
                          self.headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{method}: HTTP {resp.status}: {data[:500]!r}")
        return json.loads(data or b"{}")


def field(obj, *names):
    """obj[name] for the first name present, trying snake_case and lowerCamelCase."""
    for n in names:
        for k in (n, "".join(p if i == 0 else p.title() for i, p in enumerate(n.split("_")))):
            if isinstance(obj, dict) and k in obj:
                return obj[k]
    return None


def wait_ready(console, deadline_s=600.0, proc=None):
    """Waits until `console` contains READY; returns the monotonic time it was seen."""
    end = now() + deadline_s
    while True:
        try:
            with open(console, "rb") as f:
                if READY in f.read():
                    return now()
        except FileNotFoundError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"QEMU exited ({proc.returncode}) before READY")
        if now() > end:
            raise RuntimeError(f"no READY in {console} within {deadline_s}s")
        time.sleep(0.005)


def spec(guest):
    return {"config": {"cpu": {"vcpu_count": 1}, "memory": {"size_bytes": str(256 << 20)},
                       "boot": {"kernel_path": f"{guest}/vmlinuz",
                                "initrd_path": f"{guest}/initrd.img"}}}


def run_metald(api, data_dir, guest):
    t0 = now()
    created = api.call("CreateVm", spec(guest))
    t1 = now()
    vm_id = field(created, "vm_id") or field(field(created, "vm"), "vm_id")
    api.call("BootVm", {"vm_id": vm_id})
    t2 = now()
    ready = wait_ready(os.path.join(data_dir, "vms", vm_id, "console.log"))
    info = field(api.call("GetVmInfo", {"vm_id": vm_id}), "vm")
    pid = int(field(info, "process_id") or 0)
    argv = None
    if pid:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
    t3 = now()
    api.call("DeleteVm", {"vm_id": vm_id, "force": True})
    t4 = now()
    return {"create_ms": (t1 - t0) * 1e3, "boot_ms": (t2 - t1) * 1e3,
            "ready_ms": (ready - t0) * 1e3, "delete_ms": (t4 - t3) * 1e3,
            "rpc_ms": (t1 - t0 + t2 - t1 + t4 - t3) * 1e3}, argv, vm_id


class Qmp:
    def __init__(self, path, deadline):
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if now() > deadline:
                    raise
                time.sleep(0.001)
        self.f = self.sock.makefile("rw")
        json.loads(self.f.readline())  # greeting

    def run(self, cmd):
        self.f.write(json.dumps({"execute": cmd}) + "\n")
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                return None  # QEMU closed the socket (quit)
            reply = json.loads(line)
            if "return" in reply or "error" in reply:
                return reply


def rewrite_argv(argv, scratch):
    """The metald argv with its QMP socket and console moved into `scratch`."""
    out, qmp, console = [], os.path.join(scratch, "qmp.sock"), os.path.join(scratch, "console.log")
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-qmp", "-serial") and i + 1 < len(argv):
            out += [a, f"unix:{qmp},server=on,wait=off" if a == "-qmp" else f"file:{console}"]
            i += 2
            continue
        if a == "-name" and i + 1 < len(argv):
            out += [a, "guest=bench-by-hand,debug-threads=on"]
            i += 2
            continue
        out.append(a)
        i += 1
    return out, qmp, console


def run_by_hand(argv):
    scratch = tempfile.mkdtemp(prefix="vmb-", dir="/tmp")
    try:
        cmd, qmp_path, console = rewrite_argv(argv, scratch)
        t0 = now()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            qmp = Qmp(qmp_path, now() + 60)
            qmp.run("qmp_capabilities")
            t1 = now()
            reply = qmp.run("cont")
            if not reply or "return" not in reply:
                raise RuntimeError(f"cont: {reply}")
            t2 = now()
            ready = wait_ready(console, proc=proc)
            t3 = now()
            qmp.run("quit")
            proc.wait(timeout=60)
            t4 = now()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return {"spawn_qmp_ms": (t1 - t0) * 1e3, "cont_ms": (t2 - t1) * 1e3,
                "ready_ms": (ready - t0) * 1e3, "quit_ms": (t4 - t3) * 1e3,
                "vmm_ms": (t2 - t0 + t4 - t3) * 1e3}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--guest-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()

    api = Api(args.addr)
    # Warm-up (page cache, first SQLite writes, QEMU binary): one metald VM, not counted; it also
    # gives the argv used by hand.
    _, argv, _ = run_metald(api, args.data_dir, args.guest_dir)
    if not argv:
        sys.exit("no QEMU argv: GetVmInfo returned no process_id")
    run_by_hand(argv)

    via_metald, by_hand = [], []
    for i in range(args.reps):
        order = ("metald", "hand") if i % 2 == 0 else ("hand", "metald")
        for which in order:
            if which == "metald":
                r, _, _ = run_metald(api, args.data_dir, args.guest_dir)
                via_metald.append(r)
            else:
                by_hand.append(run_by_hand(argv))
        print(f"rep {i + 1}/{args.reps}: metald ready {via_metald[-1]['ready_ms']:.0f} ms, "
              f"by hand {by_hand[-1]['ready_ms']:.0f} ms", file=sys.stderr)

    m_ready, h_ready = med(via_metald, "ready_ms"), med(by_hand, "ready_ms")
    m_rpc, h_vmm = med(via_metald, "rpc_ms"), med(by_hand, "vmm_ms")
    per_rep_overhead = [m["rpc_ms"] - h["vmm_ms"] for m, h in zip(via_metald, by_hand)]
    accel = "kvm" if "kvm" in argv else "tcg"
    lines = [
        f"# metald create→ready benchmark ({time.strftime('%Y-%m-%d %H:%M:%S %Z')})",
        f"host: {os.uname().nodename}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; accel {accel}; reps {args.reps} "
        f"(alternating order, after one warm-up of each)",
        f"qemu argv: {' '.join(argv)}",
        "",
        "| path | create→READY median (ms) | min | max |",
        "| --- | --- | --- | --- |",
        f"| metald: CreateVm + BootVm → READY | {m_ready:.0f} | "
        f"{min(r['ready_ms'] for r in via_metald):.0f} | {max(r['ready_ms'] for r in via_metald):.0f} |",
        f"| by hand: same qemu argv (-S) + QMP cont → READY | {h_ready:.0f} | "
        f"{min(r['ready_ms'] for r in by_hand):.0f} | {max(r['ready_ms'] for r in by_hand):.0f} |",
        "",
        f"ratio metald / by hand (create→READY medians): {m_ready / h_ready:.3f}",
        "",
        "| metald RPC | median (ms) |",
        "| --- | --- |",
        f"| CreateVm | {med(via_metald, 'create_ms'):.1f} |",
        f"| BootVm | {med(via_metald, 'boot_ms'):.1f} |",
        f"| DeleteVm (force, running VM) | {med(via_metald, 'delete_ms'):.1f} |",
        f"| sum | {m_rpc:.1f} |",
        "",
        "| by hand (VMM only) | median (ms) |",
        "| --- | --- |",
        f"| spawn → QMP handshake done | {med(by_hand, 'spawn_qmp_ms'):.1f} |",
        f"| QMP cont | {med(by_hand, 'cont_ms'):.1f} |",
        f"| QMP quit → process exit | {med(by_hand, 'quit_ms'):.1f} |",
        f"| sum | {h_vmm:.1f} |",
        "",
        f"metald overhead per create+boot+delete (RPC sum − VMM sum, per-rep median): "
        f"{statistics.median(per_rep_overhead):.1f} ms",
        "",
        "raw (ms):",
    ]
    for i, (m, h) in enumerate(zip(via_metald, by_hand)):
        lines.append(f"  rep {i + 1}: metald " + " ".join(f"{k}={v:.1f}" for k, v in m.items())
                     + " | hand " + " ".join(f"{k}={v:.1f}" for k, v in h.items()))
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
