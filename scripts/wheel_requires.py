"""Print a wheel's requirements for pip, less the excluded names (setup_sglang.sh, setup_peers.sh).

Usage: python scripts/wheel_requires.py DIR GLOB EXCLUDE_RE

The ``Requires-Dist`` lines of the one wheel matching GLOB in DIR that belong to no extra, minus
the names EXCLUDE_RE matches (case-insensitive); environment markers are kept for pip to judge.
"""

from __future__ import annotations

import pathlib
import re
import sys
import zipfile


def main(folder: str, pattern: str, exclude_re: str) -> None:
    wheel = next(pathlib.Path(folder).glob(pattern))
    exclude = re.compile(exclude_re, re.I)
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].strip()
        if "extra ==" in req:
            continue
        m = re.match(r"[A-Za-z0-9_.\-]+", req)
        if m and not exclude.match(m.group(0)):
            print(req)


if __name__ == "__main__":
    main(*sys.argv[1:4])
