"""A cache of SGLang parser verdicts, so that a repeated dry run or doctor costs no SGLang import.

Importing SGLang's argument parser takes 3-25 s (torch, transformers, sglang). Its verdict on an
argv depends only on:

* the SGLang target: the interpreter (its real path and version) and the part of the environment
  that can change what imports or what the parser reads: everything but the names that describe
  the terminal or the shell (:data:`VOLATILE`), qembed's own ``QEMBED_*`` settings and secrets
  (never written anywhere, not even hashed into a key);
* the installed SGLang, its kernels, torch and transformers, each identified by the SHA-256 of
  its ``RECORD`` (every file and its hash: :data:`DISTRIBUTIONS`);
* the subject: the argv for a parser verdict, or the CPU kernel check (:mod:`qembed.serving.cpu`).

A verdict is stored under the hash of all three, in ``<state dir>/parser-verdicts/``. The
fingerprint of the installed SGLang is read by the target interpreter without importing SGLang
(``importlib.metadata``, about 0.05 s). When it cannot be read (no SGLang, a broken interpreter)
nothing is cached and the real check runs, which then says what is wrong. Crashes and timeouts
are never cached. A verdict holds no secret: the parser saw a placeholder key and the parsed
arguments come back redacted.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qembed.redact import is_secret_name

#: Environment names that never change what SGLang imports or parses.
VOLATILE: frozenset[str] = frozenset({
    "PWD", "OLDPWD", "SHLVL", "_", "TERM", "COLORTERM", "TERM_PROGRAM", "TERM_PROGRAM_VERSION", "COLUMNS",
    "LINES", "DISPLAY", "PS1", "PS2", "PROMPT_COMMAND", "HISTFILE", "HISTSIZE", "HISTCONTROL", "LS_COLORS",
    "MAIL", "TMUX", "TMUX_PANE", "STY", "WINDOWID", "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "SSH_AUTH_SOCK",
    "XDG_SESSION_ID", "XDG_SESSION_TYPE", "XDG_SESSION_CLASS", "XDG_VTNR", "NO_COLOR", "FORCE_COLOR",
    "PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER",
})
#: Deadline of the fingerprint probe (a plain interpreter start, no SGLang import).
FINGERPRINT_TIMEOUT_S = 20.0
_DIR = "parser-verdicts"

#: The distributions whose files decide a verdict: SGLang (its parser), its kernels (the CPU
#: kernel check), torch and transformers (what both import). SGLang itself must be there.
DISTRIBUTIONS: tuple[str, ...] = ("sglang", "sglang-kernel", "sgl-kernel", "torch", "transformers")

_FINGERPRINT = r"""
import hashlib, importlib.metadata as md, json, os, sys
out = {"executable": os.path.realpath(sys.executable), "python": sys.version, "dists": {}}
for name in json.loads(sys.argv[1]):
    try:
        d = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    record = d.read_text("RECORD") or ""
    out["dists"][name] = [d.version, hashlib.sha256(record.encode()).hexdigest() if record else None]
print("QEMBED-FP " + json.dumps(out))
"""


def relevant_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of ``env`` a verdict depends on (see the module docstring)."""
    return {k: v for k, v in sorted(env.items())
            if k not in VOLATILE and not k.startswith("QEMBED_") and not is_secret_name(k)}


#: fingerprints read by this process: a dry run or a serve asks for the same target twice (the CPU
#: kernel check, then the parser), and each read starts an interpreter
_SEEN: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any] | None] = {}


def fingerprint(python: str, env: Mapping[str, str]) -> dict[str, Any] | None:
    """The installed SGLang as ``python`` sees it under ``env``; ``None`` when it cannot be told
    (no SGLang RECORD, no interpreter, a timeout): then nothing is cached. Read once per process
    for each interpreter and environment."""
    seen = (python, tuple(sorted(env.items())))
    if seen not in _SEEN:
        _SEEN[seen] = _read_fingerprint(python, env)
    return _SEEN[seen]


def _read_fingerprint(python: str, env: Mapping[str, str]) -> dict[str, Any] | None:
    try:
        proc = subprocess.run([python, "-c", _FINGERPRINT, json.dumps(DISTRIBUTIONS)], capture_output=True,
                              text=True, env=dict(env),
                              timeout=FINGERPRINT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("QEMBED-FP ")]
    if proc.returncode != 0 or not lines:
        return None
    try:
        data: dict[str, Any] = json.loads(lines[-1].removeprefix("QEMBED-FP "))
        sglang = data["dists"].get("sglang")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not sglang or not sglang[1]:  # no SGLang, or one without a RECORD: never cached
        return None
    return data


def key(python: str, env: Mapping[str, str], subject: Sequence[str]) -> str | None:
    """The cache key of one verdict about ``subject`` (``["parser", *flags]``, ``["cpu-kernels"]``),
    or ``None`` when the SGLang target cannot be fingerprinted."""
    fp = fingerprint(python, env)
    if fp is None:
        return None
    doc = {"target": fp, "python": python, "env": relevant_env(env), "subject": list(subject)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _path(cache_key: str) -> Path:
    from qembed.host.state import state_dir

    return state_dir() / _DIR / f"{cache_key}.json"


def load_verdict(cache_key: str) -> dict[str, Any] | None:
    """A stored verdict, or ``None`` (missing or unreadable: then it is checked). The caller checks
    its fields: a verdict of the wrong shape counts as missing."""
    try:
        data = json.loads(_path(cache_key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def store_verdict(cache_key: str, verdict: Mapping[str, Any]) -> None:
    """Save a verdict (atomically); a cache that cannot be written is only a slower next run."""
    path = _path(cache_key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(dict(verdict)), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


__all__ = ["DISTRIBUTIONS", "FINGERPRINT_TIMEOUT_S", "VOLATILE", "fingerprint", "key", "load_verdict", "relevant_env", "store_verdict"]
