#!/usr/bin/env python
"""Real SGLang on CPU (`--profile xeon`) against the reference engine (`--profile cpu`), same box,
same texts: time from `qembed serve` to ready, resident memory of the server's process tree, and
texts/s from `qembed bench` at 16 and 512 tokens; plus the SGLang venv's size (and, with
`--fresh-install`, the time `scripts/setup_sglang.sh` takes into an empty folder).

Measured on the tiny random Qwen3 model (tests/numerics/tiny_model.py: 2 layers, 64 dims) with
SGLang's torch-native CPU path (the test venv: no compiled sgl_kernel CPU kernels) and fp32. These
are NOT figures for a Xeon with SGLang's AMX kernels, nor for a real 0.6B/4B model.

Usage (on a quiet machine; it starts one server at a time):
  python scripts/bench_cpu_engine.py                    # prints a markdown table
  python scripts/bench_cpu_engine.py --json out.json --runs 3
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
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ENGINES = {
    # name: (profile, interpreter the server runs in, extra --set)
    "sglang-cpu (xeon)": ("xeon", REPO / ".venv-sglang" / "bin" / "python",
                          ["dtype=float32", "max_total_tokens=65536"]),
    "reference (cpu)": ("cpu", Path(sys.executable), []),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _qembed(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qembed", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def _tree_rss(pid: int) -> int:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def measure(name: str, model: Path, state: Path, runs: int, seconds: float) -> dict[str, Any]:
    profile, python, sets = ENGINES[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QEMBED_")}
    env.update(QEMBED_STATE_DIR=str(state), HF_HUB_OFFLINE="1", NO_COLOR="1", PYTHONPATH=str(REPO))
    ready: list[float] = []
    cells: dict[int, list[float]] = {16: [], 512: []}
    rss: list[int] = []
    for run in range(runs):
        port = _free_port()
        args = ["serve", "--profile", profile, "--model", str(model), "--port", str(port), "--name", f"b{run}",
                "--python", str(python), "--detach"]
        for s in sets:
            args += ["--set", s]
        t0 = time.monotonic()
        out = _qembed(args, env)
        ready.append(time.monotonic() - t0)
        if out.returncode != 0:
            raise SystemExit(f"{name}: serve failed:\n{out.stderr}")
        try:
            ps = json.loads(_qembed(["ps", "--json"], env).stdout)
            pid = next(r["pid"] for r in ps if r["name"] == f"b{run}")
            url = f"http://127.0.0.1:{port}"
            bench = _qembed(["bench", "--url", url, "-c", "4", "-b", "32", "-l", "16,512", "--duration", str(seconds),
                             "--tokenizer", str(model), "--json"], env)
            if bench.returncode != 0:
                raise SystemExit(f"{name}: bench failed:\n{bench.stderr}")
            for cell in json.loads(bench.stdout)["cells"]:
                cells[cell["tokens_target"]].append(cell["texts_per_s"])
            rss.append(_tree_rss(pid))
        finally:
            _qembed(["stop", f"b{run}"], env)
    return {"engine": name, "runs": runs, "ready_s": ready, "texts_per_s_16": cells[16],
            "texts_per_s_512": cells[512], "rss_bytes": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="server starts per engine (medians are reported)")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per bench cell")
    ap.add_argument("--fresh-install", action="store_true", help="also time scripts/setup_sglang.sh into a temp dir")
    ap.add_argument("--json", type=Path, help="write the raw figures here")
    a = ap.parse_args()
    from tests.numerics.tiny_model import build_tiny_model

    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "cpu": _cpu_name()}}
    venv = REPO / ".venv-sglang"
    result["venv_bytes"] = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    with tempfile.TemporaryDirectory() as tmp:
        if a.fresh_install:
            t0 = time.monotonic()
            subprocess.run(["bash", "scripts/setup_sglang.sh"], cwd=REPO, check=True,
                           env={**os.environ, "QEMBED_SGLANG_VENV": f"{tmp}/venv"})
            result["install_s"] = time.monotonic() - t0
            shutil.rmtree(f"{tmp}/venv")
        model = build_tiny_model(Path(tmp) / "tiny").path
        result["engines"] = [measure(n, model, Path(tmp) / "state", a.runs, a.seconds) for n in ENGINES]
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    med = statistics.median
    print(f"machine: {result['machine']['cpus']} CPUs, {result['machine']['cpu']}; SGLang venv "
          f"{result['venv_bytes'] / 1e9:.1f} GB" + (f"; install {result['install_s']:.0f} s" if "install_s" in result else ""))
    print("| engine | serve → ready, s | texts/s at 16 tokens | texts/s at 512 tokens | resident memory |")
    print("|---|---|---|---|---|")
    for e in result["engines"]:
        print(f"| {e['engine']} | {med(e['ready_s']):.1f} | {med(e['texts_per_s_16']):,.0f} | "
              f"{med(e['texts_per_s_512']):,.0f} | {med(e['rss_bytes']) / 1e9:.2f} GB |")
    sg, ref = result["engines"]
    print(f"reference / sglang-cpu texts/s: {med(ref['texts_per_s_16']) / med(sg['texts_per_s_16']):.2f}x at 16 tokens, "
          f"{med(ref['texts_per_s_512']) / med(sg['texts_per_s_512']):.2f}x at 512 tokens "
          f"(medians of {sg['runs']} starts; bench -c 4 -b 32, {a.seconds:.0f} s a cell)")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
