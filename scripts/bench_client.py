#!/usr/bin/env python
"""Client-side benchmark of qembed (no GPU needed): runs on a laptop or a 2-core CI box.

Every case talks to a loopback stand-in server (tests/standin/gpu_model.py, a test double) whose
bodies are precomputed, so the server costs almost nothing and the client is what is measured.
The server runs in its own process and is stopped by PID at the end.

Cases (2560-d vectors unless noted; texts of ~128 tokens, seeded):
  bulk          qembed.client.bulk.embed_file(Client, rows.jsonl, vectors.npy): the bulk API, in-process
  qembed        qembed.Client.embed over a list (its defaults: base64, 128 texts/request, 8 in flight)
  naive         openai SDK, one text per call, encoding_format="float" (the loop users write)
  sdk-batched   openai SDK, 64 texts per call, SDK defaults (it asks for base64, returns lists)
  httpx-float   plain httpx, 64 texts per call, float JSON parsed with response.json()
  saturation    qembed.Client against a modelled GPU (cases A and B of performance.md 3.5)
  rss           `qembed embed --input rows.jsonl --output out.parquet --dimensions 32`, peak RSS
  help          `python -m qembed --help` wall time next to `python -c pass`

Metrics: vectors/s (wall); client CPU us per vector = time.process_time() of this process (all
threads) / vectors; server CPU = utime + stime from /proc/<pid>/stat. On a 2-core box the wall
figures include the server's share and vary between runs; CPU per vector is the robust one.

Usage:
  python scripts/bench_client.py                 # everything, 1,000,000 rows for the RSS case
  python scripts/bench_client.py --rows 200000   # a shorter RSS case
  python scripts/bench_client.py --only qembed,naive --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qembed.fleet.bench.texts import TextSource  # noqa: E402
from tests.standin.gpu_model import (  # noqa: E402
    CASE_A,
    CASE_B,
    CASE_DIM,
    CASE_TOKENS,
    GPUModel,
    ServerProcess,
    running,
)


@dataclass
class Measure:
    case: str
    vectors: int
    seconds: float
    client_cpu_s: float
    server_cpu_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vectors_per_s(self) -> float:
        return self.vectors / self.seconds

    @property
    def client_us_per_vector(self) -> float:
        return self.client_cpu_s / self.vectors * 1e6

    @property
    def server_us_per_vector(self) -> float:
        return self.server_cpu_s / self.vectors * 1e6


def measure(case: str, srv: ServerProcess, fn: Callable[[], int], *, repeat: int = 1,
            **extra: Any) -> Measure:
    """Run ``fn`` ``repeat`` times; keep the run with the median client CPU per vector."""
    runs = []
    for _ in range(repeat):
        s0, c0, t0 = srv.cpu_seconds(), time.process_time(), time.perf_counter()
        n = fn()
        t, c, s = time.perf_counter() - t0, time.process_time() - c0, srv.cpu_seconds() - s0
        runs.append(Measure(case, n, t, c, s, dict(extra)))
    runs.sort(key=lambda r: r.client_us_per_vector)
    m = runs[len(runs) // 2]
    if repeat > 1:
        m.extra["runs_client_us_per_vector"] = [round(r.client_us_per_vector, 1) for r in runs]
        m.extra["runs_vectors_per_s"] = [round(r.vectors_per_s) for r in runs]
    print(f"  {case:<44} {m.vectors:>7} vec {m.vectors_per_s:>9,.0f} vec/s  client "
          f"{m.client_us_per_vector:>7,.0f} us/vec  server {m.server_us_per_vector:>6,.0f} us/vec",
          flush=True)
    return m


# -- cases ------------------------------------------------------------------------------------


def case_qembed(srv: ServerProcess, texts: list[str], **client_kw: Any) -> Measure:
    import qembed

    with qembed.Client(srv.url, **client_kw) as client:
        transport = getattr(client, "http", "httpx")
        client.embed(texts[:128])  # warm-up: connections, the dimension probe, /v1/models

        def run() -> int:
            out = client.embed(texts)
            assert out.shape == (len(texts), CASE_DIM) and out.dtype.name == "float32"
            return int(out.shape[0])

        label = "qembed Client.embed" + (f" {client_kw}" if client_kw else " (defaults)")
        return measure(label, srv, run, repeat=3, transport=transport)


def case_bulk(srv: ServerProcess, texts: list[str], workdir: Path) -> Measure:
    """The bulk API: qembed.client.bulk.embed_file(client, rows.jsonl, vectors.npy), in this process."""
    import qembed
    from qembed.client.bulk import embed_file

    src = workdir / "bulk.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    warm = workdir / "warm.jsonl"
    warm.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:256]), encoding="utf-8")
    with qembed.Client(srv.url) as client:
        embed_file(client, warm, workdir / "warm.npy")
        k = [0]

        def run() -> int:
            k[0] += 1
            out = workdir / f"bulk-{k[0]}.npy"
            res = embed_file(client, src, out)
            assert res.rows_out == len(texts)
            out.unlink()
            return int(res.rows_out)

        return measure("qembed bulk.embed_file jsonl -> npy (defaults)", srv, run, repeat=3)


def case_naive(srv: ServerProcess, texts: list[str]) -> Measure:
    import openai

    oa = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
    oa.embeddings.create(model="m", input=texts[0], encoding_format="float")

    def run() -> int:
        n = 0
        for t in texts:
            r = oa.embeddings.create(model="m", input=t, encoding_format="float")
            n += len(r.data[0].embedding) // CASE_DIM
        return n

    return measure("openai, 1 text/call, float (naive)", srv, run)


def case_sdk_batched(srv: ServerProcess, texts: list[str], batch: int = 64) -> Measure:
    import openai

    oa = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
    oa.embeddings.create(model="m", input=texts[:batch])

    def run() -> int:
        n = 0
        for i in range(0, len(texts), batch):
            r = oa.embeddings.create(model="m", input=texts[i:i + batch])
            n += len(r.data)
        return n

    return measure(f"openai, {batch} texts/call, SDK defaults", srv, run, repeat=3)


def case_httpx_float(srv: ServerProcess, texts: list[str], batch: int = 64) -> Measure:
    import httpx
    import numpy as np

    http = httpx.Client(base_url=srv.url)

    def run() -> int:
        n = 0
        for i in range(0, len(texts), batch):
            r = http.post("/v1/embeddings", json={"model": "m", "input": texts[i:i + batch]})
            vecs = np.asarray([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
            n += len(vecs)
        return n

    run_warm = texts[:batch]
    http.post("/v1/embeddings", json={"model": "m", "input": run_warm})
    try:
        return measure(f"httpx, {batch} texts/call, float JSON", srv, run, repeat=3)
    finally:
        http.close()


def case_saturation(texts: list[str], gpu: GPUModel, name: str, *, concurrency: int) -> Measure:
    import httpx

    import qembed

    with running(dim=CASE_DIM, gpu=gpu, ttl=300) as srv, qembed.Client(srv.url, concurrency=concurrency) as client:
        client.embed(texts[:128])
        before = httpx.get(srv.url + "/stats").json()

        def run() -> int:
            return int(client.embed(texts).shape[0])

        m = measure(f"qembed vs modelled GPU {name}, {concurrency} in flight", srv, run)
        after = httpx.get(srv.url + "/stats").json()
    forwards = after["forwards"] - before["forwards"]
    busy = after["busy_s"] - before["busy_s"]
    m.extra.update(capacity=gpu.capacity(), fraction=m.vectors_per_s / gpu.capacity(),
                   gpu_busy=busy / m.seconds, vectors_per_forward=m.vectors / max(1, forwards))
    print(f"    capacity {gpu.capacity():,.0f} vec/s -> {m.extra['fraction']:.2%}; GPU busy "
          f"{m.extra['gpu_busy']:.1%}; {m.extra['vectors_per_forward']:.0f} vectors per forward", flush=True)
    return m


def case_rss(rows: int, dims: int, workdir: Path) -> dict[str, Any]:
    """Stream ``rows`` JSONL rows to parquet through the CLI; peak RSS from wait4 of that child."""
    src = workdir / "rows.jsonl"
    with src.open("w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({"id": i, "text": f"row {i} a short text about embeddings"}) + "\n")
    out = workdir / "out.parquet"
    with running(dim=CASE_DIM, ttl=3600) as srv:
        argv = [sys.executable, "-m", "qembed", "embed", "--url", srv.url, "--input", str(src),
                "--output", str(out), "--dimensions", str(dims), "--id-field", "id"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(REPO))
        samples: list[tuple[float, int, int]] = []  # (seconds, VmRSS, VmHWM = peak so far)
        status = None
        rusage = None
        while status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, rusage = st, ru
                break
            try:
                vm = {k: int(v.split()[0]) * 1024 for k, v in (
                    line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                    if line.startswith(("VmRSS:", "VmHWM:")))}
                samples.append((time.perf_counter() - t0, vm["VmRSS"], vm["VmHWM"]))
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.2)  # sampling interval of the RSS curve (not synchronisation)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    assert rusage is not None
    # wait4's ru_maxrss (KiB on Linux) and the largest VmHWM sampled from /proc should agree;
    # the larger is reported.
    peak = max(rusage.ru_maxrss * 1024, max((hwm for *_, hwm in samples), default=0))
    if proc.returncode != 0:
        print(f"  rss case failed (exit {proc.returncode}): {err[-1500:]}", flush=True)
    n_out = None
    if proc.returncode == 0:
        import pyarrow.parquet as pq

        n_out = pq.ParquetFile(out).metadata.num_rows
    # peak RSS so far (VmHWM) at 25 / 50 / 75 / 100 % of the run: flat means no growth with rows
    curve = []
    for q in (0.25, 0.5, 0.75, 1.0):
        pts = [hwm for t, _, hwm in samples if t <= q * seconds]
        curve.append(max(pts) if pts else 0)
    jump = next(((t, hwm) for t, _, hwm in samples if hwm > 300 * 2**20), None)
    res = {"rows": rows, "rows_written": n_out, "dims": dims, "seconds": seconds,
           "rows_per_s": rows / seconds, "peak_rss_bytes": peak, "rss_curve_bytes": curve,
           "exit": proc.returncode, "cpu_s": rusage.ru_utime + rusage.ru_stime,
           "first_sample_over_300MiB_s": None if jump is None else round(jump[0], 1)}
    print(f"  qembed embed {rows:,} rows jsonl -> parquet (dims {dims}): {seconds:.1f} s, "
          f"{rows / seconds:,.0f} rows/s, peak RSS {peak / 2**20:.0f} MiB; peak so far at 25/50/75/100 % "
          "of the run: " + " / ".join(f"{c / 2**20:.0f}" for c in curve) + " MiB"
          + ("" if jump is None else f"; first above 300 MiB at {jump[0]:.1f} s"), flush=True)
    return res


def case_help(runs: int = 15) -> dict[str, Any]:
    def med(argv: list[str]) -> float:
        for _ in range(2):
            subprocess.run(argv, capture_output=True, check=True, cwd=str(REPO))
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True, cwd=str(REPO))
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    bare = med([sys.executable, "-c", "pass"])
    helpt = med([sys.executable, "-m", "qembed", "--help"])
    bench_help = med([sys.executable, "-m", "qembed", "bench", "--help"])
    print(f"  python -c pass {bare * 1e3:.0f} ms; python -m qembed --help {helpt * 1e3:.0f} ms; "
          f"qembed bench --help {bench_help * 1e3:.0f} ms (median of {runs})", flush=True)
    return {"python_c_pass_s": bare, "qembed_help_s": helpt, "qembed_bench_help_s": bench_help}


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="bulk,qembed,naive,sdk-batched,httpx-float,saturation,rss,help")
    ap.add_argument("--vectors", type=int, default=20_000, help="texts for the qembed case")
    ap.add_argument("--naive-vectors", type=int, default=300)
    ap.add_argument("--batched-vectors", type=int, default=5_000)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows for the RSS case")
    ap.add_argument("--rss-dims", type=int, default=32)
    ap.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    a = ap.parse_args()
    only = set(a.only.split(","))
    import platform

    results: dict[str, Any] = {}
    import qembed

    def _git(*args: str) -> str:
        r = subprocess.run(["git", *args], capture_output=True, text=True, cwd=str(REPO))
        return r.stdout.strip()

    dirty = _git("status", "--porcelain", "--", "qembed/client/", "qembed/transport.py", "qembed/vectors.py")
    with qembed.Client("http://127.0.0.1:9") as probe:
        transport = getattr(probe, "http", "httpx")
    results["env"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                      "commit": _git("rev-parse", "--short", "HEAD"), "client_dirty": bool(dirty),
                      "client_transport": transport}
    print(f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {results['env']['commit']}"
          f"{' (client/bulk modified in the work tree)' if dirty else ''}, qembed.Client transport: "
          f"{transport}", flush=True)
    m: dict[str, Measure] = {}
    # The RSS case runs first: a child's ru_maxrss also counts the parent's pages it inherited
    # before exec, so a parent that already holds large arrays would inflate the figure.
    if "rss" in only:
        print("bulk file streaming:", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            results["rss"] = case_rss(a.rows, a.rss_dims, Path(tmp))
    src = TextSource(seed=0)
    texts = src.texts(CASE_TOKENS, 0, max(a.vectors, a.batched_vectors, 30_000))

    if only & {"bulk", "qembed", "naive", "sdk-batched", "httpx-float"}:
        print("client cost against an instant stand-in (2560-d):", flush=True)
        with running(dim=CASE_DIM, ttl=1800) as srv:
            if "bulk" in only:
                with tempfile.TemporaryDirectory() as tmp:
                    m["bulk"] = case_bulk(srv, texts[: a.vectors], Path(tmp))
            if "qembed" in only:
                m["qembed"] = case_qembed(srv, texts[: a.vectors])
                m["qembed_c8"] = case_qembed(srv, texts[: a.vectors], concurrency=8)
                if m["qembed"].extra.get("transport") == "aiohttp":
                    m["qembed_httpx"] = case_qembed(srv, texts[: a.vectors], http="httpx")
            if "naive" in only:
                m["naive"] = case_naive(srv, texts[: a.naive_vectors])
            if "sdk-batched" in only:
                m["sdk_batched"] = case_sdk_batched(srv, texts[: a.batched_vectors])
            if "httpx-float" in only:
                m["httpx_float"] = case_httpx_float(srv, texts[: a.batched_vectors])
    if "saturation" in only:
        print("saturation: qembed.Client against a modelled GPU (one forward at a time, takes all queued):", flush=True)
        # jobs of about 10 s of modelled GPU time (start-up and tail included)
        m["sat_a4"] = case_saturation(texts[:5_000], CASE_A, "A (5 ms + 2,000 us/vec)", concurrency=4)
        m["sat_a8"] = case_saturation(texts[:5_000], CASE_A, "A (5 ms + 2,000 us/vec)", concurrency=8)
        m["sat_b4"] = case_saturation(texts[:30_000], CASE_B, "B (3 ms + 330 us/vec)", concurrency=4)
        m["sat_b8"] = case_saturation(texts[:30_000], CASE_B, "B (3 ms + 330 us/vec)", concurrency=8)
    if "help" in only:
        print("CLI start-up:", flush=True)
        results["help"] = case_help()

    # -- targets ------------------------------------------------------------------------------
    checks: list[tuple[str, str, bool | None]] = []

    def check(name: str, shown: str, ok: bool | None) -> None:
        checks.append((name, shown, ok))

    q = m.get("bulk") or m.get("qembed")
    if q and "naive" in m:
        cpu_ratio = m["naive"].client_us_per_vector / q.client_us_per_vector
        wall_ratio = q.vectors_per_s / m["naive"].vectors_per_s
        check("qembed >= 80x the naive openai loop (client CPU/vector)",
              f"{cpu_ratio:,.0f}x by CPU, {wall_ratio:,.0f}x by wall vectors/s", cpu_ratio >= 80)
    if q and "sdk_batched" in m:
        cpu_ratio = m["sdk_batched"].client_us_per_vector / q.client_us_per_vector
        wall_ratio = q.vectors_per_s / m["sdk_batched"].vectors_per_s
        check("qembed >= 2x the openai SDK batched with defaults (client CPU/vector)",
              f"{cpu_ratio:,.1f}x by CPU, {wall_ratio:,.1f}x by wall vectors/s", cpu_ratio >= 2)
    if q:
        check(f"client CPU <= 60 us per 2560-d vector ({q.case})", f"{q.client_us_per_vector:,.0f} us",
              q.client_us_per_vector <= 60)
    for key, label in (("sat_a8", "A"), ("sat_b8", "B")):
        if key in m:
            frac = m[key].extra["fraction"]
            check(f"<= 8 in flight reach >= 95% of modelled GPU {label}",
                  f"{frac:.2%} (4 in flight: {m[key.replace('8', '4')].extra['fraction']:.2%})", frac >= 0.95)
    if "rss" in results:
        r = results["rss"]
        ok = r["exit"] == 0 and r["peak_rss_bytes"] < 300 * 2**20 and r["rows_written"] == r["rows"]
        check(f"flat RSS < 300 MB for {r['rows']:,} rows", f"peak {r['peak_rss_bytes'] / 2**20:.0f} MiB", ok)
    if "help" in results:
        h = results["help"]
        check("`qembed --help` <= 250 ms wall", f"{h['qembed_help_s'] * 1e3:.0f} ms "
              f"(python -c pass {h['python_c_pass_s'] * 1e3:.0f} ms)", h["qembed_help_s"] <= 0.250)

    print("\ntargets:")
    for name, shown, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {shown}")
    results["measures"] = {k: {**asdict(v), "vectors_per_s": v.vectors_per_s,
                               "client_us_per_vector": v.client_us_per_vector,
                               "server_us_per_vector": v.server_us_per_vector} for k, v in m.items()}
    results["targets"] = [{"target": n, "value": s, "pass": ok} for n, s, ok in checks]
    if a.json_path:
        Path(a.json_path).write_text(json.dumps(results, indent=2))
    return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
