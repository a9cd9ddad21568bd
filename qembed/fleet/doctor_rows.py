"""``qembed doctor``'s rows (:class:`Check`), their exit code and JSON, and the context every check
section adds rows to (:class:`Ctx`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from qembed.fleet.doctor_probe import Probe
    from qembed.serving.gpu import GPUSnapshot
    from qembed.serving.profiles.model import Profile


Status = Literal["PASS", "WARN", "FAIL", "SKIP"]


PASS: Status = "PASS"


WARN: Status = "WARN"


FAIL: Status = "FAIL"


SKIP: Status = "SKIP"


@dataclass(frozen=True)
class Check:
    """One row of the doctor report. ``fix`` is set when the status is not PASS."""

    section: str
    name: str
    status: Status
    found: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def exit_code(checks: Iterable[Check]) -> int:
    """0 when all pass (or skip), 1 on any FAIL, 6 (``ExitCode.WARNINGS``) for warnings only."""
    from qembed.errors import ExitCode

    statuses = {c.status for c in checks}
    if FAIL in statuses:
        return int(ExitCode.FAILURE)
    if WARN in statuses:
        return int(ExitCode.WARNINGS)
    return int(ExitCode.OK)


def summary(checks: Iterable[Check]) -> dict[str, int]:
    out: dict[str, int] = {PASS: 0, WARN: 0, FAIL: 0, SKIP: 0}
    for c in checks:
        out[c.status] += 1
    return out


def report_json(checks: list[Check]) -> dict[str, Any]:
    """The ``--json`` document: rows, counts and the exit code."""
    return {"checks": [c.to_json() for c in checks], "summary": summary(checks),
            "exit_code": exit_code(checks)}


@dataclass
class Ctx:
    profile_ref: str
    url: str | None
    python: str | None
    log: str | None
    snap: GPUSnapshot | None = None
    profile: Profile | None = None
    probe: Probe | None = None
    rows: list[Check] = field(default_factory=list)
    overrides: Sequence[str] = ()
    options: Mapping[str, object] = field(default_factory=dict)
    env: dict[str, str] | None = None  # the environment SGLang would run with
    port_row: int | None = None  # index of a "port in use" row the server check may clear
    fit_rows: list[Check] = field(default_factory=list)  # rendered after the Model section

    @property
    def settings(self) -> Profile:
        """The loaded profile, else the default settings (what checks assume without one)."""
        if self.profile is not None:
            return self.profile
        from qembed.serving.profiles.model import Profile

        return Profile()

    def add(self, section: str, name: str, status: Status, found: str, fix: str | None = None) -> None:
        self.rows.append(Check(section, name, status, found, fix if status != PASS else None))


__all__ = ["FAIL", "PASS", "SKIP", "WARN", "Check", "Ctx", "Status", "exit_code", "report_json", "summary"]
