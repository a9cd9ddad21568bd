#!/usr/bin/env python
"""Gateway benchmark (no GPU needed): the REAL smg 1.13 in front of stand-in workers on loopback.

Workers are tests/standin/gpu_model.py processes (a test double with precomputed bodies and an
optional modelled GPU); the gateway is `smg launch` started by qembed.serving.gateway.start_gateway;
the client is qembed.Client with its defaults (the bulk client's: base64, 128 texts/request,
8 in flight). Everything runs in one process tree and is stopped by PID at the end.

Cases (2560-d vectors, texts of ~128 tokens, seeded):
  overhead   instant worker; client CPU per vector going direct vs through the gateway, and the
             gateway's own CPU per vector (utime + stime of the smg process, all threads).
             Added = (client_via + smg) / client_direct - 1. Target: <= 10 %.
  scaling    1 -> 2 -> 3 workers that model GPU time (cases A and B of docs/performance.md 7.1),
             through the gateway. Speed-up = vectors/s with N workers / with 1. Target: >= 2.7x at 3.

Each measurement runs `--repeat` times and the median is kept (the box is shared).

Usage:
  python scripts/bench_gateway.py                      # both cases
  python scripts/bench_gateway.py --only scaling --json gateway.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qembed.fleet.bench.texts import TextSource  # noqa: E402
from tests.fake_site import harness  # noqa: E402
from tests.standin.gpu_model import (  # noqa: E402
    CASE_A,
    CASE_B,
    CASE_DIM,
    CASE_TOKENS,
    GPUModel,
    ServerProcess,
    cpu_seconds,
    spawn,
)


@contextlib.contextmanager
def workers(n: int, gpu: GPUModel | None) -> Iterator[list[ServerProcess]]:
    made: list[ServerProcess] = []
    try:
        for _ in range(n):
            made.append(spawn(dim=CASE_DIM, gpu=gpu, ttl=1800))
        yield made
    finally:
        for w in made:
            w.stop()


@contextlib.contextmanager
def smg(urls: list[str], tmp: Path, policy: str) -> Iterator[Any]:
    from qembed.serving import gateway

    server = gateway.start_gateway(urls, host="127.0.0.1", port=harness.free_port(), policy=policy,
                                   log_path=tmp / f"smg-{time.monotonic_ns()}.log", metrics_port=harness.free_port(),
                                   ready_timeout=60)
    try:
        gateway.wait_gateway(server, timeout=60, min_healthy=len(urls))
        yield server
    finally:
        server.stop(timeout=5)


def run_client(url: str, texts: list[str], repeat: int, *, extra_pids: list[int]) -> dict[str, Any]:
    """Client.embed(texts) ``repeat`` times after a warm-up; medians of wall and CPU per vector."""
    import qembed

    rows = []
    with qembed.Client(url) as client:
        client.embed(texts[:256])
        for _ in range(repeat):
            o0 = {p: cpu_seconds(p) for p in extra_pids}
            c0, t0 = time.process_time(), time.perf_counter()
            out = client.embed(texts)
            t, c = time.perf_counter() - t0, time.process_time() - c0
            o = {p: cpu_seconds(p) - o0[p] for p in extra_pids}
            assert out.shape == (len(texts), CASE_DIM)
            rows.append({"seconds": t, "vectors_per_s": len(texts) / t, "client_us": c / len(texts) * 1e6,
                         "other_us": {str(p): v / len(texts) * 1e6 for p, v in o.items()}})
    med = {
        "vectors": len(texts),
        "vectors_per_s": statistics.median(r["vectors_per_s"] for r in rows),
        "client_us_per_vector": statistics.median(r["client_us"] for r in rows),
        "runs": rows,
    }
    for p in extra_pids:
        med[f"pid{p}_us_per_vector"] = statistics.median(r["other_us"][str(p)] for r in rows)
    return med


def case_overhead(texts: list[str], repeat: int, tmp: Path, policy: str) -> dict[str, Any]:
    """Direct and via-gateway runs alternate (direct, via, direct, via, ...) so that load from
    other work on the box falls on both alike; medians of ``repeat`` runs each."""
    with workers(1, None) as (w,), smg([w.url], tmp, policy) as g:
        rows: dict[str, list[dict[str, Any]]] = {"direct": [], "via": []}
        for _ in range(repeat):
            rows["direct"].append(run_client(w.url, texts, 1, extra_pids=[w.pid]))
            rows["via"].append(run_client(g.url, texts, 1, extra_pids=[w.pid, g.pid]))
        gw_key = f"pid{g.pid}_us_per_vector"
    c_direct = statistics.median(r["client_us_per_vector"] for r in rows["direct"])
    c_via = statistics.median(r["client_us_per_vector"] for r in rows["via"])
    gw_us = statistics.median(r[gw_key] for r in rows["via"])
    added_runs = [(v["client_us_per_vector"] + v[gw_key]) / d["client_us_per_vector"] - 1
                  for d, v in zip(rows["direct"], rows["via"], strict=True)]
    added = (c_via + gw_us) / c_direct - 1
    vps = {k: statistics.median(r["vectors_per_s"] for r in v) for k, v in rows.items()}
    print(f"overhead ({len(texts)} vectors, 2560-d base64, median of {repeat} alternating runs):")
    print(f"  direct        client {c_direct:6.1f} us/vec  {vps['direct']:>9,.0f} vec/s")
    print(f"  via gateway   client {c_via:6.1f} us/vec + smg {gw_us:5.1f} us/vec  {vps['via']:>9,.0f} vec/s")
    print(f"  added per pair of runs: {', '.join(f'{x:+.1%}' for x in added_runs)}")
    verdict = "PASS" if added <= 0.10 else "FAIL"
    print(f"{verdict}  the gateway adds <= 10 % CPU per vector (client + smg vs client direct): {added:+.1%}")
    return {"direct": rows["direct"], "via_gateway": rows["via"], "client_direct_us": c_direct,
            "client_via_us": c_via, "smg_us_per_vector": gw_us, "added_fraction": added,
            "added_per_pair": added_runs, "pass": added <= 0.10}


def case_scaling(texts_per_worker: dict[str, int], texts: list[str], repeat: int, tmp: Path,
                 policy: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, gpu in (("A", CASE_A), ("B", CASE_B)):
        per = texts_per_worker[name]
        rows = {}
        for n in (1, 2, 3):
            with workers(n, gpu) as ws, smg([w.url for w in ws], tmp, policy) as g:
                r = run_client(g.url, texts[: per * n], repeat, extra_pids=[g.pid])
            r["capacity"] = gpu.capacity() * n
            r["share_of_capacity"] = r["vectors_per_s"] / r["capacity"]
            rows[n] = r
            print(f"  case {name}, {n} worker(s): {r['vectors_per_s']:>7,.0f} vec/s "
                  f"({r['share_of_capacity']:.1%} of {r['capacity']:,.0f}); client "
                  f"{r['client_us_per_vector']:.0f} us/vec, smg {r[f'pid{g.pid}_us_per_vector']:.0f} us/vec", flush=True)
        speedups = {n: rows[n]["vectors_per_s"] / rows[1]["vectors_per_s"] for n in rows}
        verdict = "PASS" if speedups[3] >= 2.7 else "FAIL"
        print(f"{verdict}  case {name}: 3 workers >= 2.7x one worker: {speedups[2]:.2f}x at 2, {speedups[3]:.2f}x at 3")
        out[name] = {"rows": rows, "speedup": speedups, "pass": speedups[3] >= 2.7}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="overhead,scaling")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--vectors", type=int, default=20_000, help="overhead case: vectors per run")
    p.add_argument("--policy", default="round_robin")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    from qembed.serving import gateway

    gateway.require_smg()
    only = set(a.only.split(","))
    texts = TextSource(seed=0).texts(CASE_TOKENS, 0, max(a.vectors, 3 * 3000))
    res: dict[str, Any] = {"cpus": os.cpu_count(), "policy": a.policy, "repeat": a.repeat}
    with tempfile.TemporaryDirectory() as tmp:
        if "overhead" in only:
            res["overhead"] = case_overhead(texts[: a.vectors], a.repeat, Path(tmp), a.policy)
        if "scaling" in only:
            print("scaling through the gateway (qembed.Client defaults):", flush=True)
            # about 4 s of modelled GPU time per run at every worker count
            res["scaling"] = case_scaling({"A": 2000, "B": 3000}, texts, a.repeat, Path(tmp), a.policy)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
