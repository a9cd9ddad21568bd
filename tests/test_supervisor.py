"""qembed.serving.supervisor.ServingSession against the fake SGLang (tests/fake_site, a TEST DOUBLE):
claims, checks, records and cleanup, checked by PID and on disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qembed.errors import GPUError, NameInUse, ServerExited, StateDirError
from qembed.host import state
from qembed.serving.profiles.model import Profile
from qembed.serving.profiles.resolve import load_profile
from qembed.serving.supervisor import Event, ServingSession
from tests import fake_nvml
from tests.fake_site import harness


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fake SGLang's environment in this process; kills leftovers if a test fails."""
    pidfile = tmp_path / "pids.json"
    for k, v in harness.fake_env(pidfile).items():
        if k.startswith(("FAKE_", "PYTHONPATH", "HF_HUB_CACHE")):  # the model is in the HF cache
            monkeypatch.setenv(k, v)
    fake_nvml.install(monkeypatch, "a100")
    yield pidfile
    if pidfile.exists():
        harness.kill_leftovers(harness.all_pids(harness.read_pids(pidfile)))


def _profile(**kw: object) -> Profile:
    return load_profile("a100").model_copy(update={"port": harness.free_port(), "ready_timeout": 30.0,
                                                    "shutdown_timeout": 5.0, **kw})


def _session(prof: Profile, events: list[Event], name: str = "emb") -> ServingSession:
    return ServingSession(prof, name=name, api_key=None, python=str(harness.WRAPPER), on_event=events.append)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _claim_is_free(name: str, port: int) -> bool:
    with state.claim(name, port):
        return True


@pytest.mark.slow
def test_failed_wait_stops_the_group_and_removes_the_record(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SGLANG_MODE", "oom")  # the scheduler child outlives the main process
    prof, events = _profile(), []
    session = _session(prof, events)
    server = session.start()
    assert state.load("emb") is not None and state.load("emb").pid == server.pid  # type: ignore[union-attr]
    with pytest.raises(ServerExited):
        session.wait_ready()
    harness.assert_gone(harness.all_pids(harness.read_pids(fake)))
    assert state.load("emb") is None
    assert _claim_is_free("emb", prof.port)
    assert [e.kind for e in events] == ["spawned"]  # it had exited: nothing to drain


@pytest.mark.slow
def test_a_failed_record_save_stops_sglang(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(record: state.Record) -> Path:
        raise StateDirError("no space left on device")

    monkeypatch.setattr(state, "save", full)
    prof, events = _profile(), []
    session = _session(prof, events)
    with pytest.raises(StateDirError):
        session.start()
    assert session.server is not None
    pgid = session.server.pid  # SGLang leads its own process group: none of it may be left
    harness.wait_until(lambda: not _group_alive(pgid), timeout=10, what=f"process group {pgid} to be gone")
    assert state.load("emb") is None
    assert _claim_is_free("emb", prof.port)
    stopping = [e for e in events if e.kind == "stopping"]
    assert stopping and stopping[0].fields["reason"] == "failed"


@pytest.mark.slow
def test_ready_session_records_what_it_learned_and_stop_cleans_up(fake: Path) -> None:
    prof, events = _profile(), []
    with _session(prof, events) as session:
        session.start()
        info = session.wait_ready()
        rec = state.load("emb")
        assert rec is not None and (rec.dimensions, rec.context_length) == (info.dimensions, 32768) == (2560, 32768)
        with pytest.raises(NameInUse):  # the name (and port) are claimed while it runs
            _session(prof, [], name="emb").prepare()
    harness.assert_gone(harness.all_pids(harness.read_pids(fake)))
    assert state.load("emb") is None
    assert _claim_is_free("emb", prof.port)
    assert [e.fields.get("reason") for e in events if e.kind == "stopping"] == ["requested"]


def test_gpu_refusal_releases_the_claim(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "old-driver")
    prof = _profile()
    with pytest.raises(GPUError):
        _session(prof, []).prepare()
    assert _claim_is_free("emb", prof.port)


def test_reference_engine_skips_the_gpu_checks(fake: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    fake_nvml.install(monkeypatch, "old-driver")  # would refuse an SGLang launch
    # the model is in the HF cache (the Hub check passes without a network; tests/test_hub.py)
    snap = tmp_path / "hf" / "hub" / "models--Qwen--Qwen3-Embedding-4B" / "snapshots" / "x"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    events: list[Event] = []
    with _session(_profile(engine="reference"), events) as session:
        session.prepare()
    assert [e.kind for e in events] == ["notice", "notice"]


def test_a_keyless_network_address_is_said_once(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QEMBED_API_KEY", raising=False)
    events: list[Event] = []
    with _session(_profile(host="0.0.0.0"), events) as session:
        session.prepare()
    about_host = [e for e in events if "0.0.0.0" in e.message]
    assert len(about_host) == 1 and about_host[0].hint and "QEMBED_API_KEY" in about_host[0].hint


def test_an_invalid_name_claims_nothing(fake: Path) -> None:
    from qembed.errors import ConfigError

    session = _session(_profile(), [], name="a/b")
    with pytest.raises(ConfigError):
        session.prepare()
    assert session.claim is None and session.server is None


def test_a_group_replica_whose_name_is_taken_claims_nothing(fake: Path) -> None:
    """`serve --gpus 0,1 --gateway`: each replica is a session; one refused claim releases all."""
    from qembed.serving import gateway

    prof = _profile(gpu_ids=[0, 1], dp_size=2)
    with state.claim("emb.r1", harness.free_port()), pytest.raises(NameInUse):
        gateway.start_replicas(prof, [0, 1], name="emb", api_key=None, python=str(harness.WRAPPER))
    assert _claim_is_free("emb.r0", prof.port + 1)
    assert state.list_records(clean=False) == []


# -- the plan: what a dry run shows is what `serve` refuses (issue 22 item 2) ----------------------


def test_the_plan_claims_nothing_and_prepare_refuses_its_refusal(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "old-driver")
    prof = _profile()
    session = _session(prof, [])
    plan = session.plan()
    assert plan.refusal is not None and plan.refusal.level == "fail"
    assert session.claim is None and _claim_is_free("emb", prof.port)  # planned, nothing claimed
    assert plan.command.argv[plan.command.argv.index("--port") + 1] == str(prof.port)
    with pytest.raises(GPUError) as refused:
        session.prepare()
    assert refused.value.message == plan.refusal.message and refused.value.hint == plan.refusal.hint
    assert _claim_is_free("emb", prof.port)


def test_prepare_says_the_plans_warnings_and_nothing_else(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QEMBED_API_KEY", raising=False)
    events: list[Event] = []
    with _session(_profile(host="0.0.0.0", torch_compile=True), events) as session:
        plan = session.plan()
        session.prepare()
    assert plan.refusal is None and plan.exposure is not None
    planned = [plan.exposure.message, *(f.message for f in plan.warnings), *plan.profile_warnings]
    assert any("torch_compile" in m for m in planned)
    assert [e.message for e in events if e.kind == "warning"] == planned


def test_a_missing_model_directory_is_refused_by_the_plan_itself(fake: Path, tmp_path: Path) -> None:
    from qembed.errors import ConfigError

    session = _session(_profile(model=str(tmp_path / "nope")), [])
    with pytest.raises(ConfigError, match="does not exist"):
        session.plan()
    with pytest.raises(ConfigError, match="does not exist"):
        session.prepare()
    assert session.claim is None and session.server is None


# -- the foreground runner ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_runner_stops_on_sigterm_and_says_which_signal(fake: Path) -> None:
    import signal

    from qembed.serving import foreground

    prof = _profile()
    session = _session(prof, [])
    session.start()
    before = signal.getsignal(signal.SIGTERM)
    ending = foreground.run_session(session, on_ready=lambda info: signal.raise_signal(signal.SIGTERM))
    assert (ending.how, ending.signum, ending.exit_code) == ("stopped", signal.SIGTERM, 0)
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers come back
    harness.assert_gone(harness.all_pids(harness.read_pids(fake)))
    assert state.load("emb") is None and _claim_is_free("emb", prof.port)


@pytest.mark.slow
def test_the_runner_turns_an_exit_after_readiness_into_server_exited(fake: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from qembed.serving import foreground

    monkeypatch.setenv("FAKE_SGLANG_MODE", "crash-after-ready")
    monkeypatch.setenv("FAKE_SGLANG_CRASH_AFTER", "0.5")
    prof = _profile()
    session = _session(prof, [])
    session.start()
    ready: list[str] = []
    with pytest.raises(ServerExited, match="exited while serving"):
        foreground.run_session(session, on_ready=lambda info: ready.append(info.url))
    assert ready == [f"http://127.0.0.1:{prof.port}"]
    assert state.load("emb") is None and _claim_is_free("emb", prof.port)
