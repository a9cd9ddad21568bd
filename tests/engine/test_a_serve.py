"""Item 1 of the real-engine lane: `qembed serve --profile xeon` on real SGLang 0.5.23 (CPU).

Readiness against the real `/health` (503 until SGLang's own warm-up request is done), the ready
banner, `ps`, `logs`; `stop` is the shared engine's teardown (tests/engine/conftest.py) and
test_e_mistakes.py's, each checked by PID over the whole process tree."""

from __future__ import annotations

import json
from pathlib import Path

from tests.engine.real import Engine, engine_env, qembed
from tests.numerics.tiny_model import TinyModel


def test_ready_only_after_health_turns_200(engine: Engine) -> None:
    seen = engine.health.seen
    statuses = [s for _, s in seen]
    assert statuses and statuses[-1] == 200, f"/health never answered 200 while qembed waited: {seen}"
    # what /health answered before 200: nothing (port not bound) or 503 (warming up), never 200
    assert set(statuses[:-1]) <= {None, 503}, seen
    assert "ready in" in engine.serve.stderr + engine.serve.stdout


def test_banner_names_the_real_engine_and_model(engine: Engine) -> None:
    text = engine.serve.stdout + engine.serve.stderr
    assert engine.url in text
    assert "vector size:    64" in text  # the tiny model's hidden size, read from a real reply
    assert "SGLang pid" in text
    # the phases came from SGLang's own log lines, in order
    phases = ["starting SGLang", "loading weights", "port bound, warming up", "checking an embedding", "ready"]
    positions = [engine.serve.stderr.find(f"s] {p}") for p in phases]
    assert all(p >= 0 for p in positions), (phases, engine.serve.stderr)
    assert positions == sorted(positions), engine.serve.stderr


def test_ps_shows_the_engine_ready(engine: Engine) -> None:
    out = qembed(["ps", "--json"], engine.env)
    assert out.returncode == 0, out.stderr
    (rec,) = [r for r in json.loads(out.stdout) if r["name"] == engine.name]
    assert rec["url"] == engine.url
    assert rec["status"] == "ready"
    assert rec["dimensions"] == 64


def test_logs_are_sglangs_own(engine: Engine) -> None:
    out = qembed(["logs", engine.name, "--lines", "400"], engine.env)
    assert out.returncode == 0, out.stderr
    # lines only real SGLang writes (tokenizer manager / scheduler)
    assert "The server is fired up and ready to roll!" in out.stdout, out.stdout[-2000:]


def test_the_tree_is_the_server_and_its_children(engine: Engine) -> None:
    import psutil

    names = {psutil.Process(p).name() for p in engine.tree()}
    assert {"sglang::scheduler", "sglang::detokenizer"} <= names, names


def test_dry_run_plans_the_real_cpu_build(sglang_python: Path, engine_model: TinyModel, tmp_path: Path) -> None:
    """The profile's own choice on this machine, from the real kernel check in the real venv: the
    torch-native path (no compiled AMX kernels here), so `float32`, whatever the CPU flags say;
    the planned argv passes SGLang's parser."""
    out = qembed(["serve", "--profile", "xeon", "--model", str(engine_model.path), "--python", str(sglang_python),
                  "--dry-run", "--json"], engine_env(tmp_path), timeout=180)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    cpu = plan["cpu_plan"]
    assert cpu["path"] == "torch-native" and cpu["kernels"]["path"] == "torch-native"
    values = {v["key"]: v for v in cpu["values"]}
    assert values["dtype"]["value"] == "float32" and values["dtype"]["source"] == "qembed"
    assert plan["parser_check"] == "ok" and not plan["serve_would_refuse"]
    argv = plan["argv"]
    assert argv[argv.index("--dtype") + 1] == "float32" and "--max-total-tokens" in argv
    assert {"--device", "--sleep-on-idle"} <= set(argv) and plan["env"]["SGLANG_USE_CPU_ENGINE"] == "1"
