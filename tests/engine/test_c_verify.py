"""Item 3 of the real-engine lane: `qembed verify --url` against real SGLang.

- the shared engine (fp32, Matryoshka on): pass, with server-side truncation at 32 dims;
- a real engine started with a planted mistake SGLang has a flag for: `--tokenizer-path` to a
  copy of the tokenizer without its EOS post-processor: fail, naming the missing EOS;
- a real engine started without `is_matryoshka`: SGLang refuses `dimensions` with HTTP 400, and
  verify passes, reporting that the client truncates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.real import Engine, qembed, running
from tests.numerics.tiny_model import TinyModel, build_tiny_model


@pytest.fixture(scope="module")
def engine_no_eos(sglang_python: Path, engine_model: TinyModel, engine_state: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The right weights, served with `--tokenizer-path` to a tokenizer that appends no EOS."""
    tok = build_tiny_model(tmp_path_factory.mktemp("tokenizer-no-eos"), eos_post_processor=False)
    extra = json.dumps(["--tokenizer-path", str(tok.path)])
    with running("real-no-eos", engine_model.path, engine_state, python=sglang_python,
                 sets=(f"extra_args={extra}",)) as eng:
        yield eng


def _verify(url: str, env: dict[str, str]) -> tuple[int, dict[str, object], str]:
    out = qembed(["verify", "--url", url, "--precision", "fp32", "--dimensions", "32", "--json"], env,
                 timeout=240)
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, json.loads(out.stdout), out.stderr


def test_verify_passes_against_real_sglang(engine: Engine) -> None:
    rc, report, err = _verify(engine.url, engine.env)
    assert rc == 0, (report, err)
    full, cut = report["results"]  # type: ignore[misc]
    assert full["dimensions"] == 64 and full["min_cos"] >= 1 - 1e-6
    assert cut["dimensions"] == 32 and cut["truncation"] == "server" and cut["min_cos"] >= 1 - 1e-6


def test_verify_names_the_missing_eos(engine_no_eos: Engine) -> None:
    rc, report, err = _verify(engine_no_eos.url, engine_no_eos.env)
    assert rc == 1, (report, err)
    reproducing = [d["name"] for d in report["diagnosis"] if d["reproduces"]]  # type: ignore[union-attr]
    assert reproducing == ["no-eos"], report["diagnosis"]


def test_verify_passes_a_server_without_matryoshka_and_says_the_client_truncates(
        engine_no_mrl: Engine) -> None:
    import httpx

    # real SGLang refuses `dimensions` without the override (sglang-cpu-engine.md)
    r = httpx.post(engine_no_mrl.url + "/v1/embeddings", json={"input": "x", "model": "m", "dimensions": 32},
                   timeout=60, trust_env=False)
    assert r.status_code == 400 and "matryoshka" in r.text.lower(), r.text
    rc, report, err = _verify(engine_no_mrl.url, engine_no_mrl.env)
    assert rc == 0, (report, err)
    cut = report["results"][1]  # type: ignore[index]
    assert cut["truncation"] == "client" and cut["min_cos"] >= 1 - 1e-6
    # the human view words it "client-side truncation (the server refused `dimensions`)"
