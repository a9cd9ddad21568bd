"""`qembed bench`: sweep logic, percentiles, FLOPs/MFU arithmetic, output shapes, and a tiny real
run against the fast stand-in server (tests/standin/gpu_model.py, a test double)."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qembed.cli import app
from qembed.client.flow import estimate_tokens
from qembed.errors import ConfigError, ExitCode, ServerError
from qembed.fleet.bench.compare import compare, compare_caveat
from qembed.fleet.bench.report import BenchReport, Cell, CellResult, percentile
from qembed.fleet.bench.sweep import (
    DEFAULT_BATCH,
    DEFAULT_CONCURRENCY,
    DEFAULT_LENGTHS,
    BenchOptions,
    parse_axis,
    planned_seconds,
    run_bench,
    sweep,
    sweep_options,
)
from qembed.fleet.bench.texts import WORD_POOLS, TextSource, load_tokenizer
from qembed.models import KNOWN_SHAPES, flops_per_token, matmul_params, mfu
from qembed.serving.gpu import gpu_peak
from tests.standin.gpu_model import GPUModel, ServerProcess, count_tokens, spawn

SHAPE_4B = KNOWN_SHAPES["Qwen/Qwen3-Embedding-4B"]
SHAPE_06B = KNOWN_SHAPES["Qwen/Qwen3-Embedding-0.6B"]
SHAPE_8B = KNOWN_SHAPES["Qwen/Qwen3-Embedding-8B"]


# -- sweep --------------------------------------------------------------------------------------


def test_default_sweep_is_the_full_cross_product_length_major() -> None:
    cells = sweep()
    assert len(cells) == 5 * 2 * 3
    assert cells[0] == Cell(concurrency=1, batch=1, tokens=64)
    assert cells[4] == Cell(concurrency=256, batch=1, tokens=64)
    assert cells[5] == Cell(concurrency=1, batch=32, tokens=64)
    assert cells[-1] == Cell(concurrency=256, batch=32, tokens=2048)
    assert len(set(cells)) == len(cells)


def test_narrowed_axes() -> None:
    cells = sweep([4, 16], [32], [512])
    assert cells == [Cell(4, 32, 512), Cell(16, 32, 512)]


@pytest.mark.parametrize("axes", [([], [1], [64]), ([1], [0], [64]), ([1], [1], [-5])])
def test_sweep_rejects_empty_or_non_positive_axes(axes: tuple[list[int], list[int], list[int]]) -> None:
    with pytest.raises(ConfigError):
        sweep(*axes)


def test_parse_axis() -> None:
    assert parse_axis("1, 4,16", "--concurrency") == [1, 4, 16]
    with pytest.raises(ConfigError, match="--batch"):
        parse_axis("1,x", "--batch")
    with pytest.raises(ConfigError):
        parse_axis(",", "--length")


# -- percentiles --------------------------------------------------------------------------------


def test_percentile_hand_computed() -> None:
    xs = [float(v) for v in range(1, 11)]  # 1..10
    assert percentile(xs, 50) == pytest.approx(5.5)
    assert percentile(xs, 95) == pytest.approx(9.55)  # 9 + 0.55 x (10 - 9)
    assert percentile(xs, 99) == pytest.approx(9.91)
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 100) == 10.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    assert np.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(xs, 101)


def test_percentile_matches_numpy_linear() -> None:
    rng = random.Random(3)
    xs = [rng.expovariate(1.0) for _ in range(997)]
    for p in (50, 90, 95, 99, 99.9):
        assert percentile(xs, p) == pytest.approx(float(np.percentile(xs, p)))


# -- FLOPs and MFU ------------------------------------------------------------------------------


def test_matmul_params_by_hand() -> None:
    # 4B per layer: q 2560x4096 + k,v 2x2560x1024 + o 4096x2560 + MLP 3x2560x9728 = 100,925,440
    assert matmul_params(SHAPE_4B) == 36 * 100_925_440 == 3_633_315_840
    # 0.6B per layer: 1024x2048 + 2x1024x1024 + 2048x1024 + 3x1024x3072 = 15,728,640
    assert matmul_params(SHAPE_06B) == 28 * 15_728_640
    # 8B per layer: 4096x4096 + 2x4096x1024 + 4096x4096 + 3x4096x12288 = 192,937,984
    assert matmul_params(SHAPE_8B) == 36 * 192_937_984


def test_flops_per_token_matches_performance_reference() -> None:
    # performance.md 2.1: 7.267 GFLOP of matmuls + 589,824 x ctx
    assert flops_per_token(SHAPE_4B, 0) == 2 * 3_633_315_840
    assert flops_per_token(SHAPE_4B, 512) == 7_266_631_680 + 589_824 * 512
    assert flops_per_token(SHAPE_4B, 512) / 1e9 == pytest.approx(7.57, abs=0.005)
    assert flops_per_token(SHAPE_4B, 32768) / 1e9 == pytest.approx(26.59, abs=0.005)
    # 0.6B attention term: 4 x 28 x 128 x 16 = 229,376 per context token
    assert flops_per_token(SHAPE_06B, 1) - flops_per_token(SHAPE_06B, 0) == 229_376


def test_mfu_hand_computed() -> None:
    # 65,000 tok/s of 512-token inputs on an H100 SXM: 65,000 x 7,568,621,568 / 989e12 = 0.49743
    f = flops_per_token(SHAPE_4B, 512)
    assert mfu(65_000, f, 989.0) == pytest.approx(0.49743, abs=1e-5)
    # the whole A100 peak: 312e12 / 7,568,621,568 tok/s is 100 %
    assert mfu(312e12 / f, f, 312.0) == pytest.approx(1.0)


@pytest.mark.parametrize(("name", "label"), [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100-PCIE-40GB", "A100"),
    ("NVIDIA A10", "A10"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA L40S", "L40S"),
    ("Tesla T4", "T4 (fp16)"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("NVIDIA H200", "H200"),
    ("H100 SXM", "H100 SXM"),
])
def test_gpu_peak_by_nvml_name(name: str, label: str) -> None:
    found = gpu_peak(name)
    assert found is not None and found[0] == label


@pytest.mark.parametrize("name", ["NVIDIA A10G", "NVIDIA L40", "NVIDIA H100 NVL", "Radeon"])
def test_gpu_peak_unknown_names_are_not_guessed(name: str) -> None:
    assert gpu_peak(name) is None


# -- inputs -------------------------------------------------------------------------------------


def test_text_source_is_seeded_distinct_and_sized() -> None:
    a = TextSource(seed=1).texts(512, 0, 300)
    b = TextSource(seed=1).texts(512, 0, 300)
    c = TextSource(seed=2).texts(512, 0, 300)
    assert a == b
    assert a != c
    assert len(set(a)) == 300
    assert len({t.split(" ", 1)[0] for t in a}) == 300  # every input starts differently
    sizes = [estimate_tokens(t) for t in a]
    assert min(sizes) >= 480 and max(sizes) <= 530
    # the stand-in server counts tokens the same way, so `usage` matches the estimate
    assert [count_tokens(t) for t in a] == sizes


def test_text_source_covers_every_language_pool() -> None:
    texts = TextSource(seed=0).texts(64, 0, 256)
    joined = "".join(texts)
    for lang, (words, _) in WORD_POOLS.items():
        assert any(w in joined for w in words if len(w) > 1), lang


def test_estimate_tokens() -> None:
    assert estimate_tokens("abcd" * 10) == 11  # 40 bytes / 4 + EOS
    assert estimate_tokens("模型") == 2  # 6 bytes -> 1 + EOS


# -- output shapes ------------------------------------------------------------------------------


def _report() -> BenchReport:
    cell = CellResult(
        concurrency=4, batch=32, tokens_target=512, requests=10, errors=1, texts=320, tokens=163_840,
        seconds=2.0, requests_per_s=5.0, texts_per_s=160.0, tokens_per_s=81_920.0,
        latency_p50_ms=10.0, latency_p95_ms=20.0, latency_p99_ms=30.0, tokens_per_text=512.0,
        client_cpu_pct=3.0, mfu=0.5, first_error="HTTP 503: queue full")
    return BenchReport(url="http://x", model="Qwen/Qwen3-Embedding-4B", gpu="H100 SXM",
                             gpu_peak_tflops=989.0, loader="aiohttp", sizing="estimate",
                             dimensions=None, cells=[cell, CellResult(**{**cell.__dict__, "mfu": None})])


def test_csv_shape() -> None:
    text = _report().to_csv()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2
    assert list(rows[0]) == list(CellResult.__dataclass_fields__)
    assert rows[0]["tokens_per_s"] == "81920.0"
    assert rows[0]["mfu"] == "0.5" and rows[1]["mfu"] == ""
    assert rows[0]["first_error"] == "HTTP 503: queue full"


def test_json_shape_and_table_rows() -> None:
    rep = _report()
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["gpu"] == "H100 SXM" and d["loader"] == "aiohttp"
    assert d["cells"][0]["latency_p99_ms"] == 30.0
    rows = rep.rows()
    assert len(rows[0]) == len(rep.COLUMNS)
    assert rows[0][5] == "82k" and rows[0][-1] == "50.0%" and rows[1][-1] == ""


# -- real runs against the stand-in (a subprocess, stopped by PID) --------------------------------


@pytest.fixture(scope="module")
def standin() -> Iterator[ServerProcess]:
    # a modelled GPU with a 20 ms floor per forward: latencies below it would mean a broken timer
    srv = spawn(dim=256, gpu=GPUModel(overhead_s=0.020, per_vector_s=0.0), ttl=120)
    try:
        yield srv
    finally:
        srv.stop()


def test_run_bench_counts_requests_texts_and_usage_tokens(standin: ServerProcess) -> None:
    opts = BenchOptions(concurrency=[2], batch=[1, 4], lengths=[64], requests=6, warmup=1,
                              gpu="H100 SXM")
    rep = run_bench(standin.url, opts)
    assert rep.model == "Qwen/Qwen3-Embedding-4B"
    assert rep.gpu_peak_tflops == 989.0
    assert [(c.batch, c.requests, c.texts, c.errors) for c in rep.cells] == [(1, 6, 6, 0), (4, 6, 24, 0)]
    src = TextSource(seed=0)
    for c in rep.cells:
        assert c.latency_p50_ms >= 20.0
        assert c.latency_p50_ms <= c.latency_p95_ms <= c.latency_p99_ms
        assert 55 <= c.tokens_per_text <= 70
        assert c.tokens_per_s == pytest.approx(c.tokens / c.seconds)
        assert c.mfu == pytest.approx(mfu(c.tokens_per_s, flops_per_token(SHAPE_4B, c.tokens_per_text), 989.0))
    # usage tokens are exactly the stand-in's count of the texts that were sent
    warm, first = 1, 6  # warm-up texts come first, then the measured ones
    sent = src.texts(64, warm, first)
    assert rep.cells[0].tokens == sum(count_tokens(t) for t in sent)


def test_run_bench_httpx_loader_and_duration(standin: ServerProcess) -> None:
    opts = BenchOptions(concurrency=[1], batch=[2], lengths=[64], duration=0.2, warmup=0,
                              loader="httpx")
    rep = run_bench(standin.url, opts)
    (cell,) = rep.cells
    assert rep.loader == "httpx"
    # 20 ms per forward, one request in flight: roughly 10 requests fit in 0.2 s (+ the last one)
    assert 2 <= cell.requests <= 12
    assert cell.seconds >= 0.2
    assert any("GPU unknown" in n for n in rep.notes)


def test_run_bench_rejects_a_budget_of_nothing(standin: ServerProcess) -> None:
    with pytest.raises(ConfigError):
        run_bench(standin.url, BenchOptions(requests=None, duration=None))


def test_cli_bench_json(standin: ServerProcess) -> None:
    r = CliRunner().invoke(app, ["bench", "--url", standin.url, "-c", "1", "-b", "3", "-l", "64",
                                 "-n", "2", "--warmup", "0", "--gpu", "NVIDIA L4", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["gpu_peak_tflops"] == 121.0
    (cell,) = d["cells"]
    assert cell["requests"] == 2 and cell["texts"] == 6 and cell["errors"] == 0
    assert cell["mfu"] > 0


def test_cli_bench_csv_goes_to_stdout(standin: ServerProcess) -> None:
    r = CliRunner().invoke(app, ["bench", "--url", standin.url, "-c", "1,2", "-b", "1", "-l", "64",
                                 "-n", "2", "--csv"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["concurrency"] for row in rows] == ["1", "2"]


def test_every_warmup_failing_is_an_error(standin: ServerProcess) -> None:
    # the stand-in's vectors have 256 dims: asking for more fails every request with HTTP 400
    opts = BenchOptions(concurrency=[1], batch=[1], lengths=[64], requests=2, dimensions=1000)
    with pytest.raises(ServerError, match="every warm-up request failed: HTTP 400"):
        run_bench(standin.url, opts)


def test_cells_count_failed_requests_as_errors(standin: ServerProcess) -> None:
    # warm-up succeeds (no dims), then the measured requests all fail: errors are counted, not raised
    opts = BenchOptions(concurrency=[1], batch=[1], lengths=[64], requests=3, warmup=0,
                              dimensions=1000)
    rep = run_bench(standin.url, opts)
    (cell,) = rep.cells
    assert (cell.requests, cell.errors, cell.texts) == (0, 3, 0)
    assert cell.first_error is not None and cell.first_error.startswith("HTTP 400")


def test_wrong_api_key_is_an_error() -> None:
    srv = spawn(dim=64, api_key="right", ttl=60)
    try:
        with pytest.raises(ServerError):
            # /v1/models answers 401 too: the probe turns it into a ServerError with a hint
            run_bench(srv.url, BenchOptions(concurrency=[1], batch=[1], lengths=[64],
                                                        requests=1), api_key="wrong")
        rep = run_bench(srv.url, BenchOptions(concurrency=[1], batch=[1], lengths=[64],
                                                          requests=2), api_key="right")
        assert rep.cells[0].errors == 0 and rep.cells[0].requests == 2
    finally:
        srv.stop()


def test_cli_bench_unreachable_url_exit_code() -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "qembed", "bench", "--url", "http://127.0.0.1:9",
                        "-n", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == ExitCode.UNREACHABLE
    assert r.stderr.startswith("error: no server answers at http://127.0.0.1:9")
    assert "hint:" in r.stderr


def test_compare_runs_the_three_patterns_on_the_same_texts(standin: ServerProcess) -> None:
    rows = compare(standin.url, texts=6, tokens=64, batch=4)
    assert [r.pattern for r in rows] == ["qembed Client.embed", "openai, 1 text/call, float",
                                         "openai, 4 texts/call, SDK defaults"]
    assert [r.texts for r in rows] == [6, 6, 6]
    assert rows[0].speedup == 1.0
    for r in rows:
        assert r.seconds > 0 and r.texts_per_s == pytest.approx(r.texts / r.seconds)
        assert r.speedup == pytest.approx(rows[0].texts_per_s / r.texts_per_s)


def test_cli_bench_compare_json(standin: ServerProcess) -> None:
    r = CliRunner().invoke(app, ["bench", "--url", standin.url, "-c", "1", "-b", "2", "-l", "64",
                                 "-n", "1", "--compare", "--compare-texts", "4", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert len(d["cells"]) == 1
    assert [c["texts"] for c in d["compare"]] == [4, 4, 4]


def test_cli_bench_profile_launches_measures_and_stops(tmp_path: Path) -> None:
    """`qembed bench --profile FILE` against the fake SGLang (tests/fake_site, a test double)."""
    from tests.fake_site import harness

    pidfile = tmp_path / "pids.json"
    port = harness.free_port()
    profile = tmp_path / "bench.yaml"
    profile.write_text(f"extends: a100-80g\nport: {port}\npython: {harness.WRAPPER}\n"
                       "ready_timeout: 60\nshutdown_timeout: 10\n")
    env = harness.fake_env(pidfile, FAKE_SGLANG_LOAD_DELAY="0.2",
                           QEMBED_STATE_DIR=str(tmp_path / "state"))
    spawned: list[int] = []
    try:
        r = harness.run_qembed(["bench", "--profile", str(profile), "-c", "1", "-b", "2", "-l", "64",
                                "-n", "2", "--warmup", "1", "--json"], env, timeout=120)
        if pidfile.exists():
            spawned = harness.all_pids(harness.read_pids(pidfile))
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        assert d["url"] == f"http://127.0.0.1:{port}"
        (cell,) = d["cells"]
        assert (cell["requests"], cell["texts"], cell["errors"]) == (2, 4, 0)
        assert spawned, "the fake SGLang did not record its PIDs"
        harness.assert_gone(spawned)  # the server was stopped after the run
    finally:
        harness.kill_leftovers(spawned)


def test_inputs_sized_by_a_local_tokenizer(tmp_path: Path) -> None:
    """With the model's tokenizer on disk (the tiny Qwen3 fixture), texts hit the target length."""
    from tests.numerics.tiny_model import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny")
    tok = load_tokenizer(str(tiny.path))
    assert tok is not None
    count, _ = tok
    src = TextSource(seed=0, tokenizer=tok)
    assert src.sizing == "tokenizer"
    for target in (64, 512):
        sizes = [count(t) for t in src.texts(target, 0, 20)]
        assert all(abs(n - target) <= 6 for n in sizes), (target, sizes)
    assert load_tokenizer(str(tmp_path / "missing")) is None


def test_notes_flag_impossible_mfu(standin: ServerProcess) -> None:
    # The stand-in does no work, so a tiny GPU peak makes MFU exceed 100 %: the report must say so.
    opts = BenchOptions(concurrency=[1], batch=[8], lengths=[512], requests=3, warmup=0,
                              gpu="Tesla T4")
    rep = run_bench(standin.url, opts)
    (cell,) = rep.cells
    assert cell.mfu is not None
    flagged = any("MFU above 100 %" in n for n in rep.notes)
    assert flagged == (cell.mfu > 1.0)


# -- the quick default, --full, and --compare's CPU column (issue 11) -----------------------------


def test_bare_bench_is_about_a_minute_and_full_is_the_whole_sweep() -> None:
    quick = sweep_options()
    planned = planned_seconds(quick)
    assert planned is not None and 30 <= planned <= 60  # warm-ups come on top
    assert len(sweep(quick.concurrency, quick.batch, quick.lengths)) == 6
    full = sweep_options(full=True)
    assert (full.concurrency, full.batch, full.lengths) == (
        DEFAULT_CONCURRENCY, DEFAULT_BATCH, DEFAULT_LENGTHS)
    assert planned_seconds(full) == 30 * 10.0
    # an explicit axis or duration wins over either preset; requests leave no planned time
    mixed = sweep_options(full=True, concurrency=[8], duration=2.0)
    assert mixed.concurrency == (8,) and mixed.lengths == DEFAULT_LENGTHS
    assert planned_seconds(mixed) == 1 * 2 * 3 * 2.0
    assert planned_seconds(sweep_options(requests=5)) is None


def test_cli_bare_bench_runs_the_quick_cells(standin: ServerProcess) -> None:
    r = CliRunner().invoke(app, ["bench", "--url", standin.url, "-n", "1", "--warmup", "0", "--json"])
    assert r.exit_code == 0, r.output
    cells = [(c["concurrency"], c["batch"], c["tokens_target"]) for c in json.loads(r.stdout)["cells"]]
    assert cells == [(c, b, 512) for b in (1, 32) for c in (1, 16, 64)]


def test_cli_bench_says_how_long_it_will_take(standin: ServerProcess) -> None:
    r = CliRunner().invoke(app, ["bench", "--url", standin.url, "-c", "1", "-b", "1", "-l", "64",
                                 "--duration", "0.1", "--warmup", "0"])
    assert r.exit_code == 0, r.output
    assert "1 cells of 0.1 s" in r.stderr and "`--full` for the whole sweep" in r.stderr


def test_compare_reports_cpu_ratio_next_to_wall_rate(standin: ServerProcess) -> None:
    rows = compare(standin.url, texts=6, tokens=64, batch=4)
    assert rows[0].cpu_ratio == 1.0
    for r in rows:
        assert r.client_cpu_us_per_text > 0
        assert r.cpu_ratio == pytest.approx(rows[0].client_cpu_us_per_text / r.client_cpu_us_per_text)


@pytest.mark.parametrize(("url", "cpus", "caveat"), [
    ("http://127.0.0.1:30000", 2, True),
    ("http://localhost:30000", 8, True),
    ("http://[::1]:30000", 4, True),
    ("http://127.0.0.1:30000", 16, False),  # enough cores for both
    ("http://gpu-box:30000", 2, False),  # the server is elsewhere
])
def test_compare_caveat_only_when_client_and_server_share_a_small_machine(
    url: str, cpus: int, caveat: bool
) -> None:
    text = compare_caveat(url, cpus=cpus)
    assert (text is not None) == caveat
    if text is not None:
        assert f"{cpus}-CPU machine" in text and "client CPU per text" in text


def test_cli_compare_table_shows_cpu_and_the_caveat(
    standin: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    r = CliRunner().invoke(app, ["bench", "--url", standin.url, "-c", "1", "-b", "2", "-l", "64",
                                 "-n", "1", "--compare", "--compare-texts", "4"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "texts/s (wall)" in r.stdout and "client CPU µs/text" in r.stdout
    assert "qembed CPU/text" in r.stdout
    assert "share this 2-CPU machine" in r.stderr
    j = CliRunner().invoke(app, ["bench", "--url", standin.url, "-c", "1", "-b", "2", "-l", "64",
                                 "-n", "1", "--compare", "--compare-texts", "4", "--json"])
    d = json.loads(j.stdout)
    assert "share this 2-CPU machine" in d["compare_caveat"]
    assert all(c["cpu_ratio"] > 0 for c in d["compare"])


def test_bench_help_examples_do_not_wrap_at_80_columns() -> None:
    from qembed.cli.bench import BENCH_EXAMPLES

    r = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = [line.strip() for line in r.stdout.splitlines()]
    examples = [e.strip() for e in BENCH_EXAMPLES.splitlines() if e.strip().startswith("qembed ")]
    assert len(examples) >= 4
    for example in examples:
        assert example in lines, f"wrapped or missing: {example}"
    assert max(len(line) for line in r.stdout.splitlines()) <= 80


# -- bench reaches servers the way the client does (issue 10) ------------------------------------


def _dead_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every proxy variable at a port where nothing listens: a request that follows them
    fails to connect."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


@pytest.mark.parametrize("loader", ["httpx", "aiohttp"])
def test_load_generator_ignores_http_proxy_like_the_client(
    standin: ServerProcess, monkeypatch: pytest.MonkeyPatch, loader: str
) -> None:
    import asyncio

    from qembed.client.drivers import Client
    from qembed.fleet.bench import load

    _dead_proxy(monkeypatch)
    with Client(standin.url) as client:  # the reference behaviour: the client ignores the proxy
        assert len(client.embed(["a", "b"])) == 2
    cells = [Cell(concurrency=2, batch=2, tokens=64)]
    out = asyncio.run(load.run_cells(
        standin.url, cells, TextSource(seed=0), headers={"Content-Type": "application/json"},
        loader=loader, model=None, dimensions=None, requests=4, duration=None, warmup=1, timeout=30,
        on_cell=None, finish=lambda res: None))
    (cell,) = out
    assert (cell.requests, cell.errors, cell.first_error) == (4, 0, None)


def test_compare_ignores_http_proxy(standin: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    _dead_proxy(monkeypatch)
    rows = compare(standin.url, texts=4, tokens=64, batch=2, model="Qwen/Qwen3-Embedding-4B")
    assert [r.texts for r in rows] == [4, 4, 4]


def test_a_200_reply_that_is_not_json_is_an_error_not_a_crash() -> None:
    from qembed.fleet.bench.load import Tally, check_reply

    tally = Tally()
    check_reply(200, b"<html>proxy error</html>", 1, tally)
    check_reply(200, b'{"data": "nope"}', 1, tally)
    check_reply(200, b'[1, 2]', 1, tally)
    assert (tally.ok, tally.errors) == (0, 3)
    assert tally.first_error is not None and "not JSON" in tally.first_error
    check_reply(200, b'{"data": [{"embedding": "AAAA"}], "usage": {"prompt_tokens": 7}}', 1, tally)
    assert (tally.ok, tally.texts, tally.tokens) == (1, 1, 7)
