#!/usr/bin/env python3
"""Writes the files a README shows into a directory, so a test can build exactly what the README
tells users to write.

Usage: readme_blocks.py README.md OUT_DIR REPO_ROOT

A file is a fenced code block directly preceded by a line `<!-- file: PATH -->`; it is written
to OUT_DIR/PATH. In the written files, the dependency paths `../rpc/` (where the README
assumes a checkout of this repository) point at REPO_ROOT instead.
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
    readme, out, root = sys.argv[1:4]
    out = pathlib.Path(out)
    written = 0
    for path, body in blocks(pathlib.Path(readme).read_text()):
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body.replace('"../rpc/', f'"{root}/'))
        written += 1
    if written == 0:
        sys.exit(f"{readme} has no <!-- file: ... --> blocks")
    print(f"wrote {written} files from {readme} to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
