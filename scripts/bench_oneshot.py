#!/usr/bin/env python
"""Whole-process wall time of `qembed embed "one text"` against a loopback stand-in server.

Starts the stand-in (tests/standin/server.py, a test double) in its own process, then runs each
command ``--runs`` times (after one warm-up) and prints the median and min wall time and the
process's own CPU time (user + system) in ms, next to `python -c pass` and curl (the floor: an
interpreter start, and one HTTP exchange). On a shared or busy machine wall time swings with
the load; CPU time and the minimum are the steadier figures.

``--pythonpath DIR`` runs another checkout of qembed (e.g. `git worktree add /tmp/base HEAD~3`)
with the same server, for a before/after table.

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


def _time(cmd: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system, from wait4) milliseconds of each run."""
    wall: list[float] = []
    cpu: list[float] = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        # `python -m` puts the working directory first on sys.path: run in the checkout timed
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                             cwd=env["PYTHONPATH"])
        assert p.stderr is not None
        err = p.stderr.read()
        _, status, usage = os.wait4(p.pid, 0)
        dt = (time.perf_counter() - t0) * 1000
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err.decode()[-500:]}")
        if i:  # the first run warms the page cache
            wall.append(dt)
            cpu.append((usage.ru_utime + usage.ru_stime) * 1000)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--text", default="one text")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--pythonpath", default=str(REPO), help="the qembed checkout to time (default: this one)")
    a = ap.parse_args()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QEMBED_")}
    server = subprocess.Popen([sys.executable, "-m", "tests.standin.server", "--port", str(port),
                               "--config", json.dumps({"dim": 1024, "model": "Qwen/Qwen3-Embedding-0.6B"})],
                              cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, stderr=subprocess.DEVNULL)
    env["PYTHONPATH"] = a.pythonpath
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
        print(f"# CPython {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
              f"{a.runs} runs each (+1 warm-up); ms")
        print(f"{'command':44} {'wall median':>11} {'wall min':>9} {'CPU median':>10} {'CPU min':>8}")
        for name, cmd in cases:
            wall, cpu = _time(cmd, a.runs, env)
            row = {"command": name, "wall_median_ms": statistics.median(wall), "wall_min_ms": min(wall),
                   "cpu_median_ms": statistics.median(cpu), "cpu_min_ms": min(cpu)}
            rows.append(row)
            print(f"{name:44} {row['wall_median_ms']:11.1f} {row['wall_min_ms']:9.1f} {row['cpu_median_ms']:10.1f} "
                  f"{row['cpu_min_ms']:8.1f}", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=2))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
