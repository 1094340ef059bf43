#!/usr/bin/env python3
"""Enforces the layer rule of ../shared/design/style.md: code under metald/<component>/ may include
only its own component, components of a lower layer, or the exceptions the table lists.
Production code may not include tests/ or any */testing/ header. Exits 1 listing violations."""
import os
import re
import sys

LAYER = {
    "base": 0, "model": 1, "observe": 1, "rpc": 2, "store": 2, "process": 2, "net": 2, "auth": 2,
    "backend": 3, "billing": 3, "service": 4, "api": 5, "billaged": 5, "daemon": 6, "cli": 6, "proto": 5,
}
# What each component may include besides itself and base (the table in style.md).
ALLOWED = {
    "base": set(),
    "model": set(),
    "observe": set(),
    "rpc": {"observe"},
    "store": {"model", "observe"},
    "process": {"observe"},
    "net": {"model", "observe", "process", "store"},  # store: the lease database (SQLite)
    "auth": {"model", "observe"},
    "backend": {"model", "observe", "rpc", "process"},
    "billing": {"model", "observe", "store", "rpc"},
    "service": {"model", "observe", "rpc", "store", "process", "net", "auth", "backend", "billing"},
    "api": {"model", "observe", "rpc", "auth", "service", "proto"},
    "billaged": {"model", "observe", "rpc", "store", "auth"},
    "daemon": set(LAYER) - {"proto"},
    "cli": {"rpc", "proto"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


# Generated code of proto/metald/<version>/ is included as "metald/v1/vm.pb.h"; it counts as the
# pseudo-component "proto" (layer 5), which only api/ and cli/ may use (architecture.md §6: proto
# types stop at api/; metalctl is a client of the API).
PROTO_DIR = re.compile(r"^v[0-9]+$")


def component_of(path):
    parts = path.split("/")
    if len(parts) >= 2 and parts[0] == "metald":
        return "proto" if PROTO_DIR.match(parts[1]) else parts[1]
    return None


def check(root):
    problems = []
    for dirpath, _, files in os.walk(os.path.join(root, "metald")):
        for name in files:
            if not name.endswith((".h", ".cc")):
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            comp = component_of(rel)
            is_test = name.endswith(("_test.cc", "_fuzz.cc")) or "/testing/" in rel
            with open(full, encoding="utf-8", errors="replace") as f:
                for lineno, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    inc = m.group(1)
                    if inc.startswith("tests/") or ("/testing/" in inc and not is_test):
                        problems.append(f"{rel}:{lineno}: production code includes test code {inc}")
                        continue
                    target = component_of(inc)
                    if target is None or target == comp or target == "base":
                        continue
                    if target not in LAYER:
                        problems.append(f"{rel}:{lineno}: unknown component in {inc}")
                        continue
                    if comp == "backend" and inc.startswith("metald/backend/"):
                        continue
                    if comp == "observe" and "/export/" in rel and target == "rpc":
                        continue  # observe/export counts as layer 3 (style.md)
                    if is_test and LAYER[target] <= LAYER.get(comp, 9):
                        continue  # a component's tests may use lower layers' test helpers
                    if target not in ALLOWED.get(comp, set()):
                        problems.append(
                            f"{rel}:{lineno}: {comp} (layer {LAYER.get(comp)}) may not include "
                            f"{inc} ({target}, layer {LAYER[target]})")
    # backend subfolders never include each other, only backend/common.
    for dirpath, _, files in os.walk(os.path.join(root, "metald", "backend")):
        rel_dir = os.path.relpath(dirpath, os.path.join(root, "metald", "backend"))
        sub = rel_dir.split("/")[0]
        if sub in (".", "common"):
            continue
        for name in files:
            full = os.path.join(dirpath, name)
            with open(full, encoding="utf-8", errors="replace") as f:
                for lineno, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    inc = m.group(1)
                    mm = re.match(r"metald/backend/([^/]+)/", inc)
                    if mm and mm.group(1) not in (sub, "common"):
                        problems.append(f"{os.path.relpath(full, root)}:{lineno}: backend/{sub} "
                                        f"includes another backend: {inc}")
    return problems


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    problems = check(root)
    for p in problems:
        print(p)
    print(f"check_includes: {len(problems)} violation(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
