"""NVML snapshot (through the fake pynvml) and the launch checks."""

from __future__ import annotations

from typing import Any

import pytest

from qembed.errors import GPUError
from qembed.models import MiB
from qembed.serving import gpu, policy
from qembed.serving.profiles.model import Profile
from tests import fake_nvml


def make_profile(**kw: Any) -> Profile:
    kw.setdefault("name", "test")
    return Profile(**kw)


def test_snapshot_a100(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "a100")
    snap = gpu.snapshot()
    assert snap.error is None
    assert snap.driver_version == "580.65.06" and snap.driver_major == 580
    assert snap.cuda_driver_version == 13000 and snap.cuda_driver_str == "13.0"
    (g,) = snap.gpus
    assert g.name == "NVIDIA A100-SXM4-80GB" and g.sm == 80
    assert g.memory_total == 81920 * MiB
    assert g.memory_free == g.memory_total - g.memory_used
    assert g.processes == ()


def test_snapshot_no_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "no-driver")
    snap = gpu.snapshot()
    assert snap.gpus == ()
    assert snap.error is not None and "no NVIDIA driver installed" in snap.error


def test_snapshot_driver_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "driver-not-loaded")
    assert "driver not loaded" in (gpu.snapshot().error or "")


def test_snapshot_without_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.remove(monkeypatch)
    snap = gpu.snapshot()
    assert snap.error is not None and "nvidia-ml-py" in snap.error


def test_snapshot_busy_lists_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "busy")
    (g,) = gpu.snapshot().gpus
    assert [(p.pid, p.name, p.used_bytes) for p in g.processes] == [(4242, "python3", 30 * 10**9)]
    assert g.memory_used >= 30 * 10**9


@pytest.mark.parametrize(("value", "expected", "noted"), [
    (None, [0, 1, 2], False),
    ("", [], True),
    ("2,0", [2, 0], False),
    ("1,7,0", [1], True),  # CUDA stops at the first bad entry
    ("GPU-00000002", [2], False),  # UUID prefix
    ("GPU-0000", [], True),  # ambiguous prefix
])
def test_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch, value: str | None,
                              expected: list[int], noted: bool) -> None:
    fake_nvml.install(monkeypatch, "a100", gpus=3)
    if value is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    snap = gpu.snapshot()
    assert [g.index for g in snap.gpus] == expected
    assert bool(snap.notes) is noted
    assert (snap.error is not None) is (expected == [])


def _levels(findings: list[policy.Finding]) -> list[tuple[str, str]]:
    return [(f.level, f.message) for f in findings]


def test_launchable_a100(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "a100")
    assert policy.launch_findings(gpu.snapshot(), make_profile(), sglang_version="0.5.23") == []
    assert policy.require_launchable(gpu.snapshot(), make_profile(), sglang_version="0.5.23") == []


def test_no_driver_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "no-driver")
    with pytest.raises(GPUError) as ei:
        policy.require_launchable(gpu.snapshot(), make_profile(), sglang_version="0.5.23")
    assert "no usable GPU" in ei.value.message and ei.value.hint


def test_old_driver_names_both_ways_out(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "old-driver")
    snap = gpu.snapshot()
    with pytest.raises(GPUError) as ei:
        policy.require_launchable(snap, make_profile(), sglang_version="0.5.23")
    assert "550.54.15" in ei.value.message and "CUDA 13" in ei.value.message
    assert "R580" in (ei.value.hint or "") and "sglang==0.5.19" in (ei.value.hint or "")
    # the last CUDA 12 release is fine on that driver
    assert policy.launch_findings(snap, make_profile(), sglang_version="0.5.19") == []
    assert "0.5.19" in gpu.sglang_for_driver(snap)


def test_sglang_cuda_major() -> None:
    assert gpu.sglang_cuda_major("0.5.23") == 13
    assert gpu.sglang_cuda_major("0.5.20rc1") == 13
    assert gpu.sglang_cuda_major("0.5.19") == 12
    assert gpu.sglang_cuda_major("0.4.6.post5") == 12
    assert gpu.sglang_cuda_major(None) is None


def test_t4_bf16_warns_and_fp8_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "t4")
    snap = gpu.snapshot()
    found = policy.launch_findings(snap, make_profile(dtype="bfloat16", gpu_memory_fraction=0.85,
                                                   context_length=8192), sglang_version="0.5.23")
    assert [f.level for f in found] == ["warn"]
    assert "float16" in found[0].message and "`dtype: float16`" in (found[0].hint or "")
    found = policy.launch_findings(snap, make_profile(dtype="float16", quantization="fp8",
                                                   gpu_memory_fraction=0.85, context_length=8192),
                                sglang_version="0.5.23")
    assert [f.level for f in found] == ["fail"]
    assert "compute capability 80" in found[0].message and "`quantization`" in (found[0].hint or "")


def test_sm70_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "v100")
    found = policy.launch_findings(gpu.snapshot(), make_profile(), sglang_version="0.5.23")
    assert found[0].level == "fail" and "sm75" in found[0].message


def test_busy_gpu_warns_with_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "busy")
    found = policy.launch_findings(gpu.snapshot(), make_profile(), sglang_version="0.5.23")
    assert _levels(found) == [("warn", "GPU 0 is already in use: pid 4242 python3 28610 MiB")]


def test_not_enough_gpus_and_missing_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "a100", gpus=2)
    snap = gpu.snapshot()
    found = policy.launch_findings(snap, make_profile(dp_size=4), sglang_version="0.5.23")
    assert found[0].level == "fail" and "needs 4 GPUs" in found[0].message
    found = policy.launch_findings(snap, make_profile(gpu_ids=[1, 5]), sglang_version="0.5.23")
    assert found[0].level == "fail" and "[5]" in found[0].message and "`gpu_ids`" in (found[0].hint or "")


def test_model_does_not_fit_names_profile_values(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "t4")
    prof = make_profile(name="t4", model="Qwen/Qwen3-Embedding-8B", dtype="float16")
    with pytest.raises(GPUError) as ei:
        policy.require_launchable(gpu.snapshot(), prof, sglang_version="0.5.23")
    assert "will not fit" in ei.value.message
    assert "profile `t4`" in (ei.value.hint or "")


def test_tiny_pool_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "t4")
    # free 15356 MiB = 16,101,933,056 B (the fake driver keeps 4 MiB)
    # 0.51 x 16,101,933,056 = 8,211,985,858.56 - 8,043,548,672 = 168,437,186 B / 147,456 -> 1,142 tokens < 2048
    prof = make_profile(name="t4", dtype="float16", gpu_memory_fraction=0.51, context_length=8192)
    with pytest.raises(GPUError) as ei:
        policy.require_launchable(gpu.snapshot(), prof, sglang_version="0.5.23")
    assert "will not fit" in ei.value.message and "1,142 tokens" in ei.value.message
    assert "`gpu_memory_fraction: " in (ei.value.hint or "")


def test_4b_on_t4_fits_with_short_context_only(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.install(monkeypatch, "t4")
    snap = gpu.snapshot()
    # auto fraction 0.735 on 15360 MiB: 0.735*(15360-4)MiB - 8.04 GB = 3.79 GB -> 25.7k tokens < 32768
    found = policy.launch_findings(snap, make_profile(dtype="float16"), sglang_version="0.5.23")
    # SGLang starts with a short pool (it only warns), so this is a warning, not a refusal
    assert [f.level for f in found] == ["warn"]
    assert "fewer than one context" in found[0].message
    assert "`context_length: " in (found[0].hint or "")
    ok = policy.launch_findings(snap, make_profile(dtype="float16", context_length=8192),
                             sglang_version="0.5.23")
    assert ok == []
