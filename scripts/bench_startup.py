#!/usr/bin/env python
"""What qembed adds to SGLang's start: the dry run and doctor, cold and repeated, and `serve`'s
time to ready against SGLang's own start with the same argv (issue 23 item 3).

Runs real SGLang on CPU (`--profile xeon`, the test venv `.venv-sglang` by default) on the tiny
Qwen3 model built here (tests/numerics/tiny_model.py), each qembed command with a fresh state dir
where it says "cold" (no cached parser verdict), and prints medians:

* `serve --dry-run`: cold, then repeated (the verdict cache: no SGLang import);
* `doctor`: repeated;
* `serve --detach` until ready (qembed's whole path: checks, spawn, readiness, probe embedding)
  against the argv `serve --dry-run --json` prints, started by hand and polled on /health until
  200 (SGLang's own start). The goal: the first within 10 % of the second.

Usage:
  python scripts/bench_startup.py                     # 3 runs each
  python scripts/bench_startup.py --runs 5 --json startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KV = "max_total_tokens=65536"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _qembed(args: list[str], state: Path, timeout: float = 600) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "QEMBED_STATE_DIR": str(state), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "qembed", *args], capture_output=True, text=True, env=env,
                       timeout=timeout, check=False)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"qembed {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return took, r


def _sglang_own_start(argv: list[str], env: dict[str, str], url: str, deadline_s: float = 600) -> float:
    """Start the argv by hand; seconds until /health answers 200 (then stop it)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while time.perf_counter() - t0 < deadline_s:
            if proc.poll() is not None:
                raise SystemExit(f"SGLang exited ({proc.returncode}) before /health answered")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.25)  # a benchmark's poll interval, not a test's synchronisation
        raise SystemExit(f"/health did not answer 200 within {deadline_s:.0f} s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=str(REPO / ".venv-sglang" / "bin" / "python"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.numerics.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model = tmp / "tiny"
        build_tiny_model(model)
        base = ["-p", "xeon", "--python", a.python, "-m", str(model), "--set", KV, "--set", "dtype=float32"]
        rows: dict[str, list[float]] = {"dry run, cold": [], "dry run, repeated": [], "doctor, repeated": [],
                                        "serve to ready, first ever (qembed)": [],
                                        "serve to ready, repeated (qembed)": [],
                                        "SGLang's own start (/health 200)": []}
        for k in range(a.runs):
            state = tmp / f"state{k}"
            port = _free_port()
            cold, _ = _qembed(["serve", *base, "--port", str(port), "--dry-run"], state)
            rows["dry run, cold"].append(cold)
            warm, r = _qembed(["serve", *base, "--port", str(port), "--dry-run", "--json"], state)
            rows["dry run, repeated"].append(warm)
            plan = json.loads(r.stdout)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "qembed", "doctor", *base, "--port", str(port), "--json"],
                           capture_output=True, text=True, timeout=600, check=False,
                           env={**os.environ, "QEMBED_STATE_DIR": str(state), "HF_HUB_OFFLINE": "1",
                                "PYTHONPATH": str(REPO)})  # exit 6 (warnings) is an answer too
            rows["doctor, repeated"].append(time.perf_counter() - t0)
            fresh = tmp / f"fresh{k}"  # nothing cached: the first serve on this machine

            order = ["own", "qembed"] if k % 2 == 0 else ["qembed", "own"]  # the first meets colder caches
            for who in order:
                if who == "own":
                    rows["SGLang's own start (/health 200)"].append(
                        _sglang_own_start(plan["argv"], plan["env"], f"http://127.0.0.1:{port}"))
                    continue
                for label in ("serve to ready, first ever (qembed)", "serve to ready, repeated (qembed)"):
                    ready, _ = _qembed(["serve", *base, "--port", str(port), "--detach", "--name", "bench"], fresh)
                    rows[label].append(ready)
                    _qembed(["stop", "bench"], fresh)
        med = {name: statistics.median(v) for name, v in rows.items()}
        own = med["SGLang's own start (/health 200)"]
        ratio = med["serve to ready, repeated (qembed)"] / own
        first = med["serve to ready, first ever (qembed)"] / own
        print(f"{'':38} {'median s':>9} {'min s':>7}   ({a.runs} runs, {os.cpu_count()} CPUs)")
        for name, v in rows.items():
            print(f"{name:38} {statistics.median(v):9.2f} {min(v):7.2f}")
        print(f"serve / SGLang's own start: repeated {ratio:.3f} (goal < 1.10), first ever {first:.3f}; "
              f"dry run repeated / cold: {med['dry run, repeated'] / med['dry run, cold']:.3f}")
        if a.json_out:
            Path(a.json_out).write_text(json.dumps({"runs": rows, "median": med, "ratio": ratio, "ratio_first": first}, indent=2))


if __name__ == "__main__":
    main()
