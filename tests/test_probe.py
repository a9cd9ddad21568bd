"""The one server probe (qembed/probe.py) and its two users, `qembed doctor` and `qembed bench`,
against the misbehaving stand-in server: a bad reply is a named failure, never a PASS, never a
traceback, never a hang."""

from __future__ import annotations

import time
from typing import Any

import pytest

from qembed.errors import BadReply, ServerError, ServerUnreachable
from qembed.fleet import doctor
from qembed.fleet.bench.shared import probe_model
from qembed.fleet.bench.sweep import BenchOptions, run_bench
from qembed.probe import probe_server
from tests import fake_nvml
from tests.helpers.doctor import probe_with, rows
from tests.helpers.faults import EXPECTED
from tests.standin.server import Fault, StandinConfig, serve_in_thread

# modes whose single-item reply is broken (the probe sends one text, so "repeated" is index 0 twice ...)
# (a short or long vector alone is only wrong against the model's known size: see below)
REPLY_MODES = ["negative_index", "missing_index", "index_out_of_range", "string_index", "invalid_base64", "nan", "inf", "not_unit", "zero_vector", "too_few", "too_many",
               "null_embedding", "non_json", "html_200", "empty_200", "no_data"]


def test_a_good_server_gives_every_fact(standin: Any) -> None:
    f = probe_server(standin.url, None, dimensions=True)
    assert f.expected_dimensions == 2560 and f.size_mismatch is not None  # the stand-in's 16-d "4B"
    assert (f.health, f.model, f.model_path, f.max_model_len, f.dimensions) == (
        200, "Qwen/Qwen3-Embedding-4B", "Qwen/Qwen3-Embedding-4B", 32768, 16)
    assert f.norm == pytest.approx(1.0, abs=1e-6)
    assert f.supports_dimensions is True and f.matryoshka_dimensions == 8
    assert f.embedding_error is None and f.models_error is None


@pytest.mark.parametrize("mode", REPLY_MODES)
def test_the_probe_refuses_every_bad_reply(standin: Any, mode: str) -> None:
    standin.state.config.faults.append(Fault("bad", mode=mode))
    f = probe_server(standin.url, None)
    assert isinstance(f.embedding_error, BadReply), f.embedding_error
    assert f"{standin.url}/v1/embeddings is invalid" in f.embedding_error.message
    assert f.dimensions is None and f.norm is None
    with pytest.raises(BadReply):
        f.raise_for_embedding()


def test_the_probe_has_a_total_deadline(standin: Any) -> None:
    standin.state.config.faults.append(Fault("bad", mode="trickle", seconds=0.3, count=3))
    t0 = time.monotonic()
    f = probe_server(standin.url, None, timeout=1.0)
    assert time.monotonic() - t0 < 4
    assert isinstance(f.embedding_error, ServerUnreachable) and "deadline" in f.embedding_error.message


def test_a_bad_models_reply_is_named(standin: Any) -> None:
    standin.state.config.models_body = "<html><title>nginx</title></html>"
    f = probe_server(standin.url, None)
    assert f.models_error is not None and "HTML page" in f.models_error
    assert f.dimensions == 16  # the embedding step still runs and passes


# -- doctor -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["negative_index", "short_base64", "long_base64", "nan", "not_unit",
                                  "non_json", "html_200", "no_data", "null_embedding", "too_many"])
def test_doctor_fails_a_server_whose_reply_is_wrong(monkeypatch: pytest.MonkeyPatch, quiet_env: None,
                                                    mode: str) -> None:
    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    with serve_in_thread(StandinConfig(dim=2560, faults=[Fault("bad", mode=mode)])) as srv:
        r = rows(doctor.run_checks(profile="generic", url=srv.url))
    row = r["Server/embedding"]
    assert row.status == "FAIL", row
    if mode in ("short_base64", "long_base64"):  # one vector: wrong against Qwen3-Embedding-4B's 2560
        assert "but Qwen/Qwen3-Embedding-4B makes 2560" in row.found
    else:
        assert "is invalid" in row.found


def test_doctor_bad_models_reply_warns_and_still_checks_the_embedding(monkeypatch: pytest.MonkeyPatch,
                                                                       quiet_env: None) -> None:
    fake_nvml.install(monkeypatch, "no-driver")
    monkeypatch.setattr(doctor, "run_probe", lambda python, timeout=60.0, env=None: probe_with())
    with serve_in_thread(StandinConfig(dim=64, models_body='{"data": "none"}')) as srv:
        r = rows(doctor.run_checks(profile="generic", url=srv.url))
    assert r["Server//v1/models"].status == "WARN" and "no `data` list" in r["Server//v1/models"].found
    assert r["Server/embedding"].status == "PASS"


# -- bench --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["negative_index", "too_many", "inf", "not_unit", "html_200", "empty_200"])
def test_bench_stops_before_the_sweep_on_a_wrong_reply(mode: str) -> None:
    with serve_in_thread(StandinConfig(dim=64, faults=[Fault("bad", mode=mode)])) as srv:
        with pytest.raises(BadReply, match="is invalid"):
            run_bench(srv.url, BenchOptions(concurrency=[1], batch=[1], lengths=[64], requests=1))
        assert srv.state.embedding_requests == 1  # only the probe: no sweep against a broken server


def test_bench_probe_names_401_and_unreachable() -> None:
    with serve_in_thread(StandinConfig(dim=64, api_key="right")) as srv, pytest.raises(ServerError) as info:
        probe_model(srv.url, api_key="wrong")
    assert info.value.status == 401 and "QEMBED_API_KEY" in (info.value.hint or "")
    with pytest.raises(ServerUnreachable, match="no server answers"):
        probe_model("http://127.0.0.1:9", api_key=None)


def test_expected_table_is_shared() -> None:
    assert set(REPLY_MODES) <= set(EXPECTED)
