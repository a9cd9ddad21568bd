"""What `qembed doctor` sees, made by hand: an SGLang venv's probe and the rows of a run."""

from __future__ import annotations

from qembed.fleet import doctor_probe, doctor_rows


def probe_with(**kw: object) -> doctor_probe.Probe:
    base: dict[str, object] = {"python": "/opt/sgl/bin/python", "ok": True, "python_version": "3.12.3",
                               "executable": "/opt/sgl/bin/python", "torch": "2.14.1", "torch_cuda": "13.0",
                               "sglang": "0.5.23"}
    base.update(kw)
    return doctor_probe.Probe(**base)  # type: ignore[arg-type]


def rows(checks: list[doctor_rows.Check], status: str | None = None) -> dict[str, doctor_rows.Check]:
    return {f"{c.section}/{c.name}": c for c in checks if status is None or c.status == status}
