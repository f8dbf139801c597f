#!/usr/bin/env python3
"""Checks the workspace's minimum Rust version against what its user-facing crates build with.

Usage: check_msrv.py CRATE...

Reads `cargo metadata` for this machine's target and fails when a crate named, or any crate it
depends on (normal and build dependencies, as locked in Cargo.lock), declares a `rust-version`
above the workspace's. (The project's own code is held to the same version by clippy's
`incompatible_msrv` lint, which `.ci/run` denies; a second toolchain cannot be fetched here to
build with it.)
"""

import json
import subprocess
import sys


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    roots = set(sys.argv[1:])
    host = next(
        line.split(": ", 1)[1]
        for line in subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout.splitlines()
        if line.startswith("host: ")
    )
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--filter-platform", host],
            capture_output=True, text=True, check=True,
        ).stdout
    )
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    ours = {packages[i]["rust_version"] for i in metadata["workspace_members"]
            if packages[i]["name"] in roots}
    if len(ours) != 1 or None in ours:
        sys.exit(f"check_msrv: the crates {sorted(roots)} should share one rust-version, found {ours}")
    msrv = ours.pop()
    todo = [i for i in metadata["workspace_members"] if packages[i]["name"] in roots]
    seen = set()
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        for dep in nodes[node]["deps"]:
            if any(kind["kind"] in (None, "build") for kind in dep["dep_kinds"]):
                todo.append(dep["pkg"])
    newer = sorted(
        f"{packages[i]['name']} {packages[i]['version']} needs Rust {packages[i]['rust_version']}"
        for i in seen
        if packages[i].get("rust_version") and version(packages[i]["rust_version"]) > version(msrv)
    )
    if newer:
        sys.exit(f"check_msrv: rust-version is {msrv}, but\n  " + "\n  ".join(newer))
    print(f"check_msrv: {len(seen)} crates build with Rust {msrv}", file=sys.stderr)


if __name__ == "__main__":
    main()
