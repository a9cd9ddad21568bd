"""Issue 20, with the real SGLang 0.5.23 (CPU): one engine started with an API key.

The key reaches SGLang through the keyed entry (qembed/serving/sglang_args.py `keyed_entry_args`): it
must be enforced, absent from `ps` and from the log file (SGLang logs `server_args=` with it),
and `/ready` and `/health` must answer without it (the probes carry no secret).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.engine.real import qembed, running
from tests.numerics.tiny_model import TinyModel

KEY = "sk-issue20-keyed-engine-7f3a"


def test_a_keyed_real_engine_enforces_the_key_and_never_shows_it(
        sglang_python: Path, engine_model: TinyModel, tmp_path: Path) -> None:
    with running("keyed", engine_model.path, tmp_path, python=sglang_python, api_key=KEY) as eng:
        url = eng.url
        assert httpx.get(f"{url}/ready", timeout=30).status_code == 200  # no key: probes work
        assert httpx.get(f"{url}/health", timeout=60).status_code == 200
        body = {"model": str(engine_model.path), "input": ["hello"]}
        assert httpx.post(f"{url}/v1/embeddings", json=body, timeout=60).status_code == 401
        ok = httpx.post(f"{url}/v1/embeddings", json=body, timeout=60,
                        headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200, ok.text
        for pid in eng.tree():
            try:
                assert KEY not in Path(f"/proc/{pid}/cmdline").read_text()
            except FileNotFoundError:
                continue
        log = Path(str(eng.record["log_path"])).read_text()
        assert "server_args=" in log and "'api_key': '[...]'" in log
        assert KEY not in log
        dry = qembed(["serve", "--profile", "xeon", "--model", str(engine_model.path), "--dry-run", "--json",
                      "--python", str(sglang_python)], eng.env, timeout=120)
        assert dry.returncode == 0, dry.stderr
        assert "--api-key" not in json.loads(dry.stdout)["argv"] and KEY not in dry.stdout
