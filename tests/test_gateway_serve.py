"""`qembed serve --gpus ...` (SGLang `--dp-size`) and `--gpus ... --gateway` (one server per GPU
behind the real smg): argv through the real SGLang parser, GPU checks over every chosen GPU,
and the spawned group against the fake SGLang (tests/fake_site), checked by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from qembed.errors import ConfigError, GPUError
from qembed.serving import gateway, gpu, policy
from qembed.serving.profiles.resolve import load_profile
from qembed.serving.sglang_args import build_command, build_flags, check_many
from tests import fake_nvml
from tests.fake_site import harness

# -- argv and profile mapping ----------------------------------------------------------------------


def test_gpus_map_to_gpu_ids_and_dp_size() -> None:
    p = load_profile("a100-80g", options=gateway.dp_options(gateway.parse_gpus("0,1,2,3")))
    cmd = build_command(p, python="python3")
    assert cmd.argv[cmd.argv.index("--dp-size") + 1] == "4"
    assert cmd.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" and cmd.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    tp2 = load_profile("a100-80g", overrides=["tp_size=2"], options=gateway.dp_options([0, 1, 2, 3], 2))
    assert (tp2.dp_size, tp2.tp_size, tp2.gpu_ids) == (2, 2, [0, 1, 2, 3])


@pytest.mark.parametrize("text", ["0,x", "1,1", "-1", ""])
def test_bad_gpu_lists_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        gateway.parse_gpus(text)


def test_gpu_count_must_divide_by_tp_size() -> None:
    with pytest.raises(ConfigError, match="multiple of `tp_size` 2"):
        gateway.dp_options([0, 1, 2], 2)


def test_replica_profiles_one_gpu_group_and_port_each() -> None:
    p = load_profile("a100-80g", overrides=["port=31000", "host=0.0.0.0", "tp_size=2", "gpu_ids=[0,1,2,3]", "dp_size=2"])
    reps = gateway.replica_profiles(p, [0, 1, 2, 3])
    assert [(r.gpu_ids, r.port, r.host, r.dp_size, r.tp_size) for r in reps] == [
        ([0, 1], 31001, "127.0.0.1", 1, 2), ([2, 3], 31002, "127.0.0.1", 1, 2)]


def test_every_argv_for_many_gpus_passes_the_real_sglang_parser() -> None:
    py = os.environ.get("QEMBED_SGLANG_PARSER_PYTHON") or str(harness.REPO / ".venv-sglang" / "bin" / "python")
    if not Path(py).exists():
        pytest.fail(f"no SGLang parser interpreter at {py} (set QEMBED_SGLANG_PARSER_PYTHON)")
    dp = load_profile("a100-80g", options=gateway.dp_options([0, 1, 2, 3]))
    tp = load_profile("a100-80g", overrides=["tp_size=2"], options=gateway.dp_options([0, 1, 2, 3], 2))
    reps = gateway.replica_profiles(dp, [0, 1, 2, 3]) + gateway.replica_profiles(tp, [0, 1, 2, 3])
    argvs = [build_flags(p, api_key="k") for p in (dp, tp, *reps)]
    assert "--dp-size" in argvs[0] and all("--dp-size" not in a for a in argvs[2:])
    for argv, r in zip(argvs, check_many(argvs, python=py), strict=True):
        assert r.ok, f"SGLang rejected {argv}: {r.message}"


# -- the GPU check covers every chosen GPU ---------------------------------------------------------


def test_gpu_check_covers_every_chosen_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "a100", gpus=[fake_nvml.A100, fake_nvml.A100, fake_nvml.V100])
    snap = gpu.snapshot()
    ok = load_profile("a100-80g", options=gateway.dp_options([0, 1]))
    policy.require_launchable(snap, ok, sglang_version="0.5.23")
    bad = load_profile("a100-80g", options=gateway.dp_options([0, 2]))
    with pytest.raises(GPUError, match="GPU 2"):
        policy.require_launchable(snap, bad, sglang_version="0.5.23")


def test_memory_fit_covers_every_chosen_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # 8B in bf16 is ~16 GB of weights: fits the A100, not the 16 GB V100-sized card at index 1
    small = fake_nvml.GPUSpec("NVIDIA A2", 15360, (8, 6), used_mib=4)
    fake_nvml.install(monkeypatch, "a100", gpus=[fake_nvml.A100, small])
    snap = gpu.snapshot()
    prof = load_profile("a100-80g", overrides=["model=Qwen/Qwen3-Embedding-8B"], options=gateway.dp_options([0, 1]))
    with pytest.raises(GPUError, match=r"GPU 1 \(NVIDIA A2"):
        policy.require_launchable(snap, prof, sglang_version="0.5.23")
    one = load_profile("a100-80g", overrides=["model=Qwen/Qwen3-Embedding-8B", "gpu_ids=[0]"])
    policy.require_launchable(snap, one, sglang_version="0.5.23")


# -- spawned: fake SGLang replicas, real smg in front ----------------------------------------------


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.port = harness.free_port()
        # replicas take the ports after the gateway's: make sure they are free too
        while not all(_free(self.port + k) for k in range(1, 4)):
            self.port = harness.free_port()
        self.env = harness.fake_env(tmp_path / "pids.json", QEMBED_FAKE_NVML="2xa100",
                                    FAKE_SGLANG_LOAD_DELAY="0.3")
        self.state = Path(self.env["QEMBED_STATE_DIR"])  # conftest sets it for each test
        self.seen: list[int] = []

    def args(self, *extra: str) -> list[str]:
        return ["serve", "-p", "a100", "--python", str(harness.WRAPPER), "--port", str(self.port), *extra]

    def tree(self, pids: list[int]) -> list[int]:
        """The pids and all their descendants (the fake's `sglang::scheduler` children)."""
        out = list(pids)
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                out += [c.pid for c in psutil.Process(pid).children(recursive=True)]
        self.seen += out
        return out


def _free(port: int) -> bool:
    from qembed.host.ports import port_is_free

    return port_is_free("127.0.0.1", port)


@pytest.fixture
def fx(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    harness.kill_leftovers(e.seen)


def _ps(fx: Env) -> list[dict[str, object]]:
    r = harness.run_qembed(["ps", "--json"], fx.env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(x.decode().split("=", 1) for x in raw if b"=" in x)



@pytest.mark.slow
def test_gateway_group_detached_ps_and_stop_leave_nothing(fx: Env) -> None:
    r = harness.run_qembed([*fx.args("--gpus", "0,1", "--gateway", "--detach", "--name", "emb", "--json")],
                           fx.env, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["healthy_workers"] == 2 and info["url"] == f"http://127.0.0.1:{fx.port}"
    rows = {str(p["name"]): p for p in _ps(fx)}
    assert set(rows) == {"emb", "emb.r0", "emb.r1"}
    assert (rows["emb"]["role"], rows["emb.r0"]["role"]) == ("gateway", "replica")
    assert rows["emb.r0"]["gpu_ids"] == [0] and rows["emb.r1"]["gpu_ids"] == [1]
    assert rows["emb.r1"]["url"] == f"http://127.0.0.1:{fx.port + 2}"
    assert all(p["status"] == "ready" for p in rows.values())
    for name, want in (("emb.r0", "0"), ("emb.r1", "1")):
        assert _environ(int(str(rows[name]["pid"])))["CUDA_VISIBLE_DEVICES"] == want
    pids = fx.tree([int(str(p["pid"])) for p in rows.values()])
    assert len(pids) >= 5  # smg, two SGLang mains, their schedulers
    body = {"model": info["served_model_name"], "input": ["a", "b", "c"]}
    res = httpx.post(f"{info['url']}/v1/embeddings", json=body, timeout=30)
    assert res.status_code == 200 and [d["index"] for d in res.json()["data"]] == [0, 1, 2]
    # issue 20: the real smg's control plane takes only the (random, per-run) admin key: a
    # client can neither list nor register workers
    assert httpx.post(f"{info['url']}/workers", json={"url": "http://127.0.0.1:1"}, timeout=10).status_code == 401
    assert httpx.get(f"{info['url']}/workers", timeout=10).status_code == 401

    # the default server for clients is the group's front door, not a replica
    from qembed.host import state

    assert state.state_dir() == fx.state  # conftest points this process at the same dir
    front = state.default_server()
    assert front is not None and front.name == "emb"

    stop = harness.run_qembed(["stop", "emb", "--timeout", "5"], fx.env, timeout=60)
    assert stop.returncode == 0, stop.stderr
    harness.assert_gone(pids)
    assert _ps(fx) == []


@pytest.mark.slow
def test_gateway_group_foreground_ctrl_c_stops_every_process(fx: Env) -> None:
    proc = harness.start_qembed(fx.args("--gpus", "0,1", "--gateway", "--name", "fg"), fx.env)
    fx.seen.append(proc.pid)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    lines: list[str] = []
    while "Press Ctrl-C to stop." not in "".join(lines):
        line = proc.stdout.readline()
        assert line, f"qembed exited ({proc.wait()}): {''.join(lines)} {proc.stderr.read() if proc.stderr else ''}"
        lines.append(line)
        assert time.monotonic() < deadline
    text = "".join(lines)
    assert "2 of 2 healthy" in text
    pids = fx.tree([int(str(p["pid"])) for p in _ps(fx)] + [proc.pid])
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)  # closes the pipes too
    assert proc.returncode == 130, err
    harness.assert_gone([p for p in pids if p != proc.pid])
    assert list((fx.state / "servers").glob("*.json")) == []


@pytest.mark.slow
def test_dp_mode_is_one_server_on_every_gpu(fx: Env) -> None:
    r = harness.run_qembed([*fx.args("--gpus", "0,1", "--detach", "--name", "dp", "--json")], fx.env, timeout=90)
    assert r.returncode == 0, r.stderr
    (row,) = _ps(fx)
    pids = fx.tree([int(str(row["pid"]))])
    try:
        assert row["gpu_ids"] == [0, 1]
        info = harness.read_pids(Path(fx.env["FAKE_SGLANG_PIDFILE"]))
        assert info["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"
        assert info["argv"][info["argv"].index("--dp-size") + 1] == "2"
    finally:
        stop = harness.run_qembed(["stop", "dp", "--timeout", "5"], fx.env, timeout=60)
    assert stop.returncode == 0, stop.stderr
    harness.assert_gone(pids)


def test_gateway_flag_needs_gpus(fx: Env) -> None:
    r = harness.run_qembed(fx.args("--gateway"), fx.env)
    assert r.returncode == 2 and "`--gateway` needs `--gpus`" in r.stderr


def test_gateway_dry_run_shows_every_replica_and_the_gateway(fx: Env) -> None:
    r = harness.run_qembed(fx.args("--gpus", "0,1", "--gateway", "--dry-run", "--json"),
                           {**fx.env, "QEMBED_API_KEY": "s3cret"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [(x["gpu_ids"], x["port"], x["env"]["CUDA_VISIBLE_DEVICES"]) for x in out["replicas"]] == [
        ([0], fx.port + 1, "0"), ([1], fx.port + 2, "1")]
    argv = out["gateway"]["argv"]
    assert argv[argv.index("--port") + 1] == str(fx.port) and "--api-key" not in argv
    assert "s3cret" not in r.stdout + r.stderr
    assert not list((fx.state / "servers").glob("*.json"))  # nothing started, nothing recorded


def test_group_on_a_network_address_without_key_is_refused_before_loading(fx: Env) -> None:
    r = harness.run_qembed(fx.args("--gpus", "0,1", "--gateway", "--host", "0.0.0.0"), fx.env)
    assert r.returncode == 2 and "without an API key" in r.stderr, r.stderr
    assert not Path(fx.env["FAKE_SGLANG_PIDFILE"]).exists()  # no SGLang was started


# -- gateway and group sessions in the library (issue 22 item 2) -----------------------------------


@pytest.fixture
def inproc(fx: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    """The fake SGLang and two fake A100s in this process too (a session run without the CLI)."""
    for k, v in fx.env.items():
        if k.startswith(("FAKE_", "PYTHONPATH", "HF_HUB_CACHE")):  # the planted HF cache too
            monkeypatch.setenv(k, v)
    fake_nvml.install(monkeypatch, "2xa100")
    return fx


def test_a_name_in_use_refuses_group_and_gateway_before_anything_starts(inproc: Env) -> None:
    from qembed.errors import NameInUse
    from qembed.host import state
    from qembed.serving.gateway_session import GatewaySession, GroupSession

    fx = inproc
    prof = load_profile("a100", options=gateway.dp_options([0, 1])).model_copy(update={"port": fx.port})
    with state.claim("taken", harness.free_port()):
        with pytest.raises(NameInUse):
            GroupSession(prof, name="taken", api_key=None, python=str(harness.WRAPPER)).prepare()
        with pytest.raises(NameInUse):
            GatewaySession(name="taken", host="127.0.0.1", port=harness.free_port(), api_key=None).prepare()
        group = harness.run_qembed(fx.args("--gpus", "0,1", "--gateway", "--name", "taken"), fx.env)
        gw = harness.run_qembed(["gateway", "--worker", "http://127.0.0.1:9", "--name", "taken",
                                 "--port", str(harness.free_port())], fx.env)
    for r in (group, gw):
        assert r.returncode == 2 and "a server named `taken` is already running" in r.stderr, r.stderr
    assert "checking" not in gw.stderr  # refused before it probed a worker
    assert not Path(fx.env["FAKE_SGLANG_PIDFILE"]).exists()  # no SGLang was started
    assert state.list_records(clean=False) == []
    with state.claim("taken", fx.port):  # every claim was released
        pass


@pytest.mark.slow
def test_a_group_session_records_and_cleans_up_without_the_cli(inproc: Env) -> None:
    from qembed.errors import NameInUse
    from qembed.host import state
    from qembed.serving.gateway_session import GroupSession

    fx = inproc
    prof = load_profile("a100", options=gateway.dp_options([0, 1])).model_copy(
        update={"port": fx.port, "ready_timeout": 60.0, "shutdown_timeout": 5.0})
    session = GroupSession(prof, name="lib", api_key=None, python=str(harness.WRAPPER))
    try:
        session.prepare()
        group = session.launch()
        info = session.wait_ready()
        assert group.gateway is not None
        records = {r.name: r for r in state.list_records()}
        assert set(records) == {"lib", "lib.r0", "lib.r1"}
        assert (records["lib"].role, records["lib"].pid, records["lib"].group) == ("gateway", group.gateway.pid, "lib")
        assert [records[f"lib.r{k}"].dimensions for k in (0, 1)] == [info.dimensions] * 2
        with pytest.raises(NameInUse):  # the group holds its name while it runs
            state.claim("lib", harness.free_port())
        pids = fx.tree([r.pid for r in records.values()])
    finally:
        session.stop()
    harness.assert_gone(pids)
    assert state.list_records(clean=False) == []
    with state.claim("lib", fx.port):
        pass


@pytest.mark.slow
def test_a_group_whose_replica_fails_leaves_nothing(inproc: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from qembed.errors import LaunchError
    from qembed.host import state
    from qembed.serving.gateway_session import GroupSession

    fx = inproc
    monkeypatch.setenv("FAKE_SGLANG_MODE", "oom")  # each replica dies while loading
    prof = load_profile("a100", options=gateway.dp_options([0, 1])).model_copy(
        update={"port": fx.port, "ready_timeout": 60.0, "shutdown_timeout": 5.0})
    with pytest.raises(LaunchError), GroupSession(prof, name="bad", api_key=None, python=str(harness.WRAPPER)) as s:
        s.prepare()
        s.launch()
        assert {r.name for r in state.list_records(clean=False)} == {"bad.r0", "bad.r1"}
        s.wait_ready()
    harness.assert_gone(harness.all_pids(harness.read_pids(Path(fx.env["FAKE_SGLANG_PIDFILE"]))))
    assert state.list_records(clean=False) == []
    with state.claim("bad", fx.port), state.claim("bad.r0", fx.port + 1):
        pass
