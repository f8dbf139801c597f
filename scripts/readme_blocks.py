#!/usr/bin/env python3
"""Checks that the files the README shows are the files of examples/hello, so the crate CI
builds and runs is exactly what the README tells users to write.

Usage: readme_blocks.py README.md DIR

A file is a fenced code block directly preceded by a line `<!-- file: PATH -->`; it must equal
DIR/PATH, and DIR must hold no other file. The files depend on `waypost` from crates.io, as a
user's would; scripts/check-build builds them against this checkout through `[patch.crates-io]`.
"""

import pathlib
import re
import sys

MARKER = re.compile(r"^<!-- file: (\S+) -->$")


def blocks(text):
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i].strip())
        if marker and i + 1 < len(lines) and lines[i + 1].startswith("```"):
            end = i + 2
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            if end == len(lines):
                sys.exit(f"unterminated code block for {marker.group(1)}")
            yield marker.group(1), "\n".join(lines[i + 2 : end]) + "\n"
            i = end
        i += 1


def main():
    readme, directory = sys.argv[1:3]
    directory = pathlib.Path(directory)
    shown = {path: body for path, body in blocks(pathlib.Path(readme).read_text())}
    if not shown:
        sys.exit(f"{readme} has no <!-- file: ... --> blocks")
    on_disk = {
        str(p.relative_to(directory)): p.read_text()
        for p in directory.rglob("*")
        if p.is_file() and "target" not in p.parts and p.name != "Cargo.lock"
    }
    problems = [f"{path}: in {readme}, not in {directory}" for path in shown.keys() - on_disk.keys()]
    problems += [f"{path}: in {directory}, not in {readme}" for path in on_disk.keys() - shown.keys()]
    problems += [f"{path}: differs between {readme} and {directory}" for path in shown.keys() & on_disk.keys()
                 if shown[path] != on_disk[path]]
    if problems:
        sys.exit("\n".join(problems))
    print(f"{readme} shows the {len(shown)} files of {directory}", file=sys.stderr)


if __name__ == "__main__":
    main()
