"""Defaults written in README.md and docs/ must equal the code's.

Each row names a doc file, a regex whose groups capture the documented value(s), and how to get
the value the code really uses (imported from the code, or measured from it, as the jitter
range is). Tables (exit codes, environment variables, profile keys) are parsed whole, so a code,
variable or key missing from the doc fails too.

Every row and table check is also run on a copy of its doc with the documented value changed
(``test_row_can_fail`` and the ``*_can_fail`` tests): a check that cannot see a changed value
fails the suite.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _read(doc: str) -> str:
    return (ROOT / doc).read_text(encoding="utf-8")


def _num(s: str) -> float:
    return float(s.replace(",", ""))


def _statuses(s: str) -> frozenset[int]:
    return frozenset(int(x) for x in re.findall(r"\d{3}", s))


def _profile_default(key: str) -> Any:
    from qembed.serving.profiles.model import Profile

    field = Profile.model_fields[key]
    return field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]


def _yaml(s: str) -> Any:
    import yaml

    return yaml.safe_load(s)


def _client() -> Any:
    from qembed.client import flow as client

    return client


def _default_url() -> tuple[str]:
    from qembed import env

    return (env.DEFAULT_URL,)


def _exit_code(name: str) -> Callable[[], tuple[float]]:
    def get() -> tuple[float]:
        from qembed.errors import ExitCode

        return (float(ExitCode[name]),)

    return get


def _default_url_port() -> float:
    from qembed import env

    return float(env.DEFAULT_URL.rsplit(":", 1)[1])


def _jitter_range() -> tuple[float, float]:
    """The shortest and the longest wait ``_retry_delay`` draws, as % of the backoff step."""
    from unittest import mock

    client = _client()
    step = 1.0  # backoff 1.0 s, first retry: the step is 1.0 s, below MAX_BACKOFF
    me = SimpleNamespace(backoff=step)
    with mock.patch.object(client.random, "uniform", lambda a, b: a):
        low = client.BaseClient._retry_delay(me, 0, None)
    with mock.patch.object(client.random, "uniform", lambda a, b: b):
        high = client.BaseClient._retry_delay(me, 0, None)
    return low / step * 100, high / step * 100


def _oom_step() -> tuple[float, float]:
    """What the diagnosis proposes for a CUDA OOM under the shipped `h100` profile: (now, to)."""
    from qembed.serving.diagnose import diagnose
    from qembed.serving.profiles.resolve import load_profile

    lines = (ROOT / "tests/logs/cuda_oom.log").read_text(encoding="utf-8").splitlines()
    oom = next(d for d in diagnose(lines, profile=load_profile("h100")) if d.key == "cuda_oom")
    m = re.search(r"\(now ([\d.]+)\) to ([\d.]+)", oom.fix)
    assert m is not None, oom.fix
    return float(m.group(1)), float(m.group(2))


def _exit(name: str) -> Callable[[], tuple[float, ...]]:
    def get() -> tuple[float, ...]:
        from qembed import errors

        return (float(getattr(errors, name).exit_code),)

    return get


def _code(*names: str) -> Callable[[], tuple[float, ...]]:
    def get() -> tuple[float, ...]:
        client = _client()
        return tuple(float(getattr(client, n)) for n in names)

    return get


def _profile(*keys: str) -> Callable[[], tuple[Any, ...]]:
    return lambda: tuple(_profile_default(k) for k in keys)


@dataclass(frozen=True)
class Row:
    id: str
    doc: str
    pattern: str
    expected: Callable[[], tuple[Any, ...]]
    convert: Callable[[str], Any] = _num

    def problems(self, text: str) -> list[str]:
        matches = list(re.finditer(self.pattern, text, re.MULTILINE))
        if not matches:
            return [f"{self.doc}: `{self.pattern}` not found"]
        want = self.expected()
        out = []
        for m in matches:
            got = tuple(self.convert(g) for g in m.groups())
            if got != want:
                line = text.count("\n", 0, m.start()) + 1
                out.append(f"{self.doc}:{line}: documents {got}, the code has {want}")
        return out


@dataclass(frozen=True)
class KeyRow(Row):
    """``(key, value)`` groups: the value must be the Profile default of that key."""

    expected: Callable[[], tuple[Any, ...]] = lambda: ()

    def problems(self, text: str) -> list[str]:
        from qembed.serving.profiles.model import Profile

        matches = list(re.finditer(self.pattern, text, re.MULTILINE))
        if not matches:
            return [f"{self.doc}: `{self.pattern}` not found"]
        out = []
        for m in matches:
            key, value = m.group(1), self.convert(m.group(2))
            if key not in Profile.model_fields:
                out.append(f"{self.doc}: `{key}` is not a profile key")
            elif value != _profile_default(key):
                out.append(f"{self.doc}: `{key}` documented as {value!r}, the code has {_profile_default(key)!r}")
        return out


ROWS: list[Row] = [
    # README.md
    KeyRow("readme-profile-keys", "README.md", r"`(\w+)` \(default `?([^`),]+)`?", convert=_yaml),
    Row("readme-sdk-url", "README.md", r'base_url="(http://[\d.]+:\d+)/v1"',
        _default_url, str),
    Row("readme-client-port", "README.md", r"serve --detach` server, else :(\d+)", lambda: (_default_url_port(),)),
    Row("readme-oom-step", "README.md", r"lower `gpu_memory_fraction` \(e\.g\. ([\d.]+) → ([\d.]+);", _oom_step),
    # docs/client.md
    Row("client-batch", "docs/client.md",
        r"requests of at most (\d+) texts and at most ([\d,]+) estimated tokens",
        _code("DEFAULT_BATCH_SIZE", "DEFAULT_BATCH_TOKENS")),
    Row("client-in-flight", "docs/client.md", r"Up to (\d+) requests are in flight", _code("DEFAULT_CONCURRENCY")),
    Row("client-retries", "docs/client.md", r"Retries \(up to (\d+)\)", _code("DEFAULT_MAX_RETRIES")),
    Row("client-retry-statuses", "docs/client.md",
        r"cover connection errors \(refused, reset\), ((?:\d{3}(?:, | and ))+\d{3})",
        lambda: (_client()._RETRY_STATUSES,), _statuses),
    Row("client-backoff", "docs/client.md", r"Backoff starts at ([\d.]+) s and doubles up to ([\d.]+) s",
        _code("DEFAULT_BACKOFF", "MAX_BACKOFF")),
    Row("client-jitter", "docs/client.md", r"each wait is drawn between (\d+) % and (\d+) % of", _jitter_range),
    Row("client-retry-after", "docs/client.md", r"`Retry-After` is honoured,\s+capped at (\d+) s",
        _code("MAX_RETRY_AFTER")),
    Row("client-timeouts", "docs/client.md", r"Timeouts: connect (\d+) s; read (\d+) s",
        _code("DEFAULT_CONNECT_TIMEOUT", "DEFAULT_READ_TIMEOUT")),
    Row("client-signature", "docs/client.md",
        r"max_retries=(\d+), backoff=([\d.]+), retry_timeout=([\d.]+), expect_unit=True, dimensions_fallback=True,\s+"
        r"concurrency=(\d+), batch_size=(\d+), batch_tokens=(\d+)",
        _code("DEFAULT_MAX_RETRIES", "DEFAULT_BACKOFF", "DEFAULT_RETRY_TIMEOUT", "DEFAULT_CONCURRENCY", "DEFAULT_BATCH_SIZE",
              "DEFAULT_BATCH_TOKENS")),
    Row("client-default-url", "docs/client.md", r"names\), then `(http://[\d.]+:\d+)`",
        _default_url, str),
    Row("client-exit-unreachable", "docs/client.md", r"`ServerUnreachable` \(exit (\d+)\)", _exit("ServerUnreachable")),
    Row("client-exit-input", "docs/client.md", r"`InputError` \(`\.index`, exit (\d+)\)", _exit("InputError")),
    Row("client-exit-config", "docs/client.md", r"`ConfigError` \(exit (\d+)\)", _exit("ConfigError")),
    # docs/interfaces.md is generated from the code (scripts/gen_interfaces.py; tests/test_layers.py)
    # docs/profiles.md, docs/serving.md, docs/deploy.md, docs/doctor.md
    Row("serving-ready-timeout", "docs/serving.md", r"`ready_timeout` \((\d+)\)", _profile("ready_timeout")),
    Row("serving-shutdown-timeout", "docs/serving.md", r"`shutdown_timeout` \((\d+)\)", _profile("shutdown_timeout")),
    Row("serving-shutdown-timeout-s", "docs/serving.md", r"profile `shutdown_timeout`, (\d+) s",
        _profile("shutdown_timeout")),
    Row("deploy-ready-timeout", "docs/deploy.md", r"`ready_timeout` \((\d+) s\)", _profile("ready_timeout")),
    Row("doctor-default-url", "docs/doctor.md", r"the client's default URL `(http://[\d.]+:\d+)`",
        _default_url, str),
    Row("doctor-exit-fail", "docs/doctor.md", r"^\| (\d+) \| at least one FAIL \|",
        _exit_code("FAILURE")),
    Row("doctor-exit-warn", "docs/doctor.md", r"^\| (\d+) \| no FAIL, but at least one WARN \(`ExitCode\.WARNINGS`\)",
        _exit_code("WARNINGS")),
    # the JSON example has FAILs, so its exit code is the table's "at least one FAIL"
    Row("doctor-json-exit", "docs/doctor.md", r'"FAIL": [1-9]\d*,\n.*\n  \},\n  "exit_code": (\d+)',
        _exit_code("FAILURE")),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_documented_value_is_the_codes(row: Row) -> None:
    assert row.problems(_read(row.doc)) == []


def _mutate(value: str) -> str:
    """A different value of the same shape: the first digit bumped, else an `x` appended."""
    for i, ch in enumerate(value):
        if ch.isdigit():
            return value[:i] + str((int(ch) + 1) % 10) + value[i + 1:]
    return value + "x"


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_row_can_fail(row: Row) -> None:
    """Change each documented value in turn (in memory): the row must report it."""
    text = _read(row.doc)
    m = re.search(row.pattern, text, re.MULTILINE)
    assert m is not None
    for group in range(1, (m.lastindex or 0) + 1):
        changed = text[:m.start(group)] + _mutate(m.group(group)) + text[m.end(group):]
        assert row.problems(changed), f"{row.id}: group {group} changed to {_mutate(m.group(group))!r} went unnoticed"


# -- tables --------------------------------------------------------------------------------------


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first table after ``heading``."""
    section = text.split(heading, 1)[1].lstrip("\n")
    lines = []
    for line in section.splitlines():
        if not line.startswith("|"):
            if lines:
                break
            continue
        lines.append(line)
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    return [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]


#: a word of each exit code's meaning that its README row must contain
EXIT_WORDS = {"OK": "success", "FAILURE": "runtime failure", "USAGE": "bad input", "NO_GPU": "GPU",
              "NOT_READY": "not ready", "SERVER_EXITED": "exited", "WARNINGS": "warnings",
              "UNREACHABLE": "no server answers", "INCOMPLETE": "could not complete",
              "INTERRUPTED": "interrupted"}


def readme_exit_code_problems(text: str) -> list[str]:
    from qembed.errors import ExitCode

    rows = {int(r[0]): r[1] for r in _table_rows(text, "## Exit codes") if r[0].isdigit()}
    out = []
    for code in ExitCode:
        if code.value not in rows:
            out.append(f"README.md: no row for exit code {code.value} ({code.name})")
        elif EXIT_WORDS[code.name].lower() not in rows[code.value].lower():
            out.append(f"README.md: exit code {code.value} reads {rows[code.value]!r}, not {code.name}")
    for value in rows.keys() - {c.value for c in ExitCode}:
        out.append(f"README.md: exit code {value} is not in ExitCode")
    return out


def test_readme_exit_codes_are_exitcode() -> None:
    from qembed.errors import ExitCode

    assert set(EXIT_WORDS) == {c.name for c in ExitCode}, "add the new ExitCode to EXIT_WORDS and the README"
    assert readme_exit_code_problems(_read("README.md")) == []


def test_readme_exit_codes_can_fail() -> None:
    text = _read("README.md")
    assert readme_exit_code_problems(text.replace("| 7 | no server answers", "| 8 | no server answers"))
    assert readme_exit_code_problems(text.replace("| 6 | `qembed doctor`: warnings only |\n", ""))
    assert readme_exit_code_problems(text.replace("| 4 | the server was not ready", "| 4 | the server exited"))


def doctor_exit_code_problems(text: str) -> list[str]:
    from qembed.errors import ExitCode

    codes = {int(r[0]) for r in _table_rows(text, "## Exit codes") if r[0].isdigit()}
    want = {ExitCode.OK.value, ExitCode.FAILURE.value, ExitCode.WARNINGS.value}
    return [] if codes == want else [f"docs/doctor.md: exit codes {sorted(codes)}, doctor uses {sorted(want)}"]


def test_doctor_exit_codes() -> None:
    assert doctor_exit_code_problems(_read("docs/doctor.md")) == []
    assert doctor_exit_code_problems(_read("docs/doctor.md").replace("| 6 | no FAIL", "| 2 | no FAIL"))


#: QEMBED_* variables that only the tests and scripts read (CONTRIBUTING.md); not in qembed/env.py
TEST_ONLY_VARS = {"QEMBED_SGLANG_PARSER_PYTHON", "QEMBED_REQUIRE_CONFORMANCE", "QEMBED_FAKE_NVML",
                  "QEMBED_TORCH_SPEC", "QEMBED_SGLANG_VENV", "QEMBED_PEERS_RELOCK", "QEMBED_PEERS_VLLM",
                  "QEMBED_TEST_VENV", "QEMBED_TEST_PLAN"}
_VAR = re.compile(r"QEMBED_[A-Z][A-Z_]*[A-Z]")


def _docs() -> dict[str, str]:
    paths = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in paths}


def env_var_problems(docs: dict[str, str]) -> list[str]:
    """Every QEMBED_* a doc names is in qembed/env.py (or test-only); the README table lists
    exactly env.py's variables, each with env.py's default."""
    from qembed import env

    names = {v.name for v in env.ALL}
    internal = {v.name for v in env.INTERNAL}
    out = [f"{doc}: `{name}` is not in qembed/env.py"
           for doc, text in docs.items() for name in sorted(set(_VAR.findall(text)))
           if name not in names | internal | TEST_ONLY_VARS]
    table = {r[0].strip("`"): r[1] for r in _table_rows(docs["README.md"], "## Environment variables")}
    for v in env.ALL:
        want = f"`{v.default}`" if v.default is not None else "none"
        if v.name not in table:
            out.append(f"README.md: `{v.name}` missing from the environment variables table")
        elif table[v.name] != want:
            out.append(f"README.md: `{v.name}` default documented as {table[v.name]}, env.py has {want}")
    out += [f"README.md: `{n}` in the table is not in qembed/env.py" for n in table.keys() - names]
    return out


def test_env_vars_are_env_py() -> None:
    assert env_var_problems(_docs()) == []


def test_env_vars_can_fail() -> None:
    docs = _docs()
    readme = docs["README.md"]
    for changed in (readme.replace("| `QEMBED_LOG_LEVEL` | `warning` |", "| `QEMBED_LOG_LEVEL` | `info` |"),
                    readme.replace("| `QEMBED_DEBUG` | none |", "| `QEMBED_DEBUGX` | none |"),
                    readme + "\nSet `QEMBED_TIMEOUT` to wait longer.\n"):
        assert changed != readme
        assert env_var_problems({**docs, "README.md": changed})


_LITERAL = re.compile(r"^(none|`[^`]*`|-?\d+(?:\.\d+)?)(?:$| \(|: )")


def profile_table_problems(text: str) -> list[str]:
    """docs/profiles.md's key table: one row per Profile field, and each default written as a
    literal (`127.0.0.1`, 30000, `{}`, none, ...) equal to the field's default."""
    from qembed.serving.profiles.model import Profile

    out = []
    table = {}
    for ln in text.splitlines():
        if re.match(r"^\| `\w+` \|", ln):
            cells = [c.strip() for c in ln.strip().strip("|").split("|")]
            table.setdefault(cells[0].strip("`"), cells[2])
    for key in Profile.model_fields:
        if key == "name":
            continue  # set by the loader, not a key users write
        if key not in table:
            out.append(f"docs/profiles.md: no row for profile key `{key}`")
            continue
        m = _LITERAL.match(table[key])
        if not m:
            continue  # a default in words ("SGLang's formula"): nothing literal to compare
        lit = m.group(1)
        value = None if lit == "none" else _yaml(lit.strip("`"))
        want = _profile_default(key)
        if value != want or isinstance(value, bool) != isinstance(want, bool):
            out.append(f"docs/profiles.md: `{key}` default documented as {lit}, the code has {want!r}")
    return out


def test_profiles_md_defaults() -> None:
    assert profile_table_problems(_read("docs/profiles.md")) == []


def test_profiles_md_defaults_can_fail() -> None:
    text = _read("docs/profiles.md")
    for old, new in (("| `port` | int | `30000` |", "| `port` | int | `30001` |"),
                     ("| `ready_timeout` | float | 1800 |", "| `ready_timeout` | float | 600 |"),
                     ("| `matryoshka` | bool | `true` |", "| `matryoshka` | bool | `false` |"),
                     ("| `kv_cache_dtype` | str | none (SGLang: `auto`) |", "| `kv_cache_dtype` | str | `auto` |"),
                     ("| `tp_size` | int ≥ 1 | 1 |", "| `tp_size` | int ≥ 1 | 2 |")):
        assert old in text, old
        assert profile_table_problems(text.replace(old, new)), new
    dropped = "\n".join(ln for ln in text.splitlines() if not ln.startswith("| `shutdown_timeout` |"))
    assert profile_table_problems(dropped)
