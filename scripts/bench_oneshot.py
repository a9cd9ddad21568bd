#!/usr/bin/env python
"""Whole-process wall time of `qembed embed "one text"` against a loopback stand-in server.

Starts the stand-in (tests/standin/server.py, a test double) in its own process, then runs each
command ``--runs`` times (after one warm-up) and prints the median, min and max wall time in ms,
next to `python -c pass` and curl (the floor: an interpreter start, and one HTTP exchange).

Usage:
  python scripts/bench_oneshot.py                 # 15 runs each
  python scripts/bench_oneshot.py --runs 31 --json oneshot.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the stand-in exited ({proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise SystemExit("the stand-in did not listen within 30 s")


def _time(cmd: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], bytes]:
    out = b""
    times: list[float] = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, env=env, check=False)
        dt = (time.perf_counter() - t0) * 1000
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode()[-500:]}")
        if i:  # the first run warms the page cache
            times.append(dt)
        out = p.stdout
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--text", default="one text")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QEMBED_")}
    env["PYTHONPATH"] = str(REPO)
    server = subprocess.Popen([sys.executable, "-m", "tests.standin.server", "--port", str(port),
                               "--config", json.dumps({"dim": 1024, "model": "Qwen/Qwen3-Embedding-0.6B"})],
                              cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, server)
        body = json.dumps({"input": [a.text], "encoding_format": "float"})
        cases: list[tuple[str, list[str]]] = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("python -m qembed --help", [sys.executable, "-m", "qembed", "--help"]),
            (f'qembed embed "{a.text}" (json, piped)', [sys.executable, "-m", "qembed", "embed", "--url", url, a.text]),
            (f'qembed embed "{a.text}" "two" "three"', [sys.executable, "-m", "qembed", "embed", "--url", url, a.text,
                                                      "two", "three"]),
            (f'qembed embed --format npy "{a.text}"', [sys.executable, "-m", "qembed", "embed", "--url", url,
                                                    "--format", "npy", a.text]),
        ]
        curl = shutil.which("curl")
        if curl:
            cases.insert(1, ("curl (one POST /v1/embeddings)", [curl, "-s", "-H", "Content-Type: application/json",
                                                                 "-d", body, url + "/v1/embeddings"]))
        rows = []
        print(f"# CPython {sys.version.split()[0]}, {os.cpu_count()} CPUs, {a.runs} runs each (+1 warm-up), "
              f"wall ms")
        print(f"{'command':48} {'median':>7} {'min':>7} {'max':>7}")
        for name, cmd in cases:
            times, _ = _time(cmd, a.runs, env)
            row = {"command": name, "median_ms": statistics.median(times), "min_ms": min(times),
                   "max_ms": max(times)}
            rows.append(row)
            print(f"{name:48} {row['median_ms']:7.1f} {row['min_ms']:7.1f} {row['max_ms']:7.1f}", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=2))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
