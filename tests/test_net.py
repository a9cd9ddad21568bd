from __future__ import annotations

import pytest

from qembed.net import is_loopback, is_this_machine


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.255.254", True), ("localhost", True), ("LOCALHOST", True),
    ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True), ("a.localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("128.0.0.1", False), ("example.com", False),
    ("localhost.example.com", False), ("", False), ("gpu-box", False),
])
def test_the_one_loopback_test(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("host", "local"), [("0.0.0.0", True), ("::", True), ("127.0.0.2", True),
                                              ("10.1.2.3", False)])
def test_wildcards_are_this_machine_but_not_loopback(host: str, local: bool) -> None:
    assert is_this_machine(host) is local


def test_bench_treats_all_of_127_8_as_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench used its own list, which missed 127.0.0.2; it now asks qembed.net."""
    from types import SimpleNamespace

    import qembed.serving.gpu
    from qembed.fleet.bench.shared import local_gpu_name

    monkeypatch.setattr(qembed.serving.gpu, "snapshot", lambda: SimpleNamespace(gpus=[SimpleNamespace(name="NVIDIA H100")]))
    assert local_gpu_name("http://127.0.0.2:30000") == "NVIDIA H100"
    assert local_gpu_name("http://[::1]:30000") == "NVIDIA H100"
    assert local_gpu_name("http://10.0.0.5:30000") is None
