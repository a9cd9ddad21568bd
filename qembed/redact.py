"""Hide API keys and similar secrets in text that qembed shows or records: the one place.

SGLang writes its API key into its own log (the startup ``server_args=`` line, a Python ``repr``),
and takes it as ``--api-key`` on the command line; a profile's ``env`` may hold tokens
(``HF_TOKEN``). Every log line, argv, environment and profile dump qembed displays passes through
this module first. The table of what counts as a secret name lives here once
(:data:`SECRET_WORDS`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

REDACTED = "[...]"

#: An environment variable (or field) whose name contains one of these words, case-insensitive,
#: holds a secret: ``HF_TOKEN``, ``QEMBED_API_KEY``, ``AWS_SECRET_ACCESS_KEY``, ``DB_PASSWORD``.
SECRET_WORDS: tuple[str, ...] = ("TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "AUTH", "BEARER", "CREDENTIAL")


def is_secret_name(name: str) -> bool:
    """Whether a variable or field called ``name`` holds a secret (see :data:`SECRET_WORDS`)."""
    up = name.upper()
    return any(w in up for w in SECRET_WORDS)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` with the values of secret-named variables replaced by ``[...]``."""
    return {k: (REDACTED if is_secret_name(k) and v else v) for k, v in env.items()}


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A copy of ``argv`` with the value of ``--api-key`` replaced by ``[...]``."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
        elif arg == "--api-key":
            out.append(arg)
            hide_next = True
        elif arg.startswith("--api-key="):
            out.append(f"--api-key={REDACTED}")
        else:
            out.append(arg)
    return out


def key_from_env_code(api_key_env: str, *, missing_exit: int) -> str:
    """Stdlib-only Python that a container's SGLang runs before SGLang itself (issue 20).

    SGLang 0.5.23 logs ``server_args={...}`` with ``'api_key': '<key>'`` in clear (only the
    watermark fields are hidden), and a container's stdout goes to the cluster's log pipeline
    without passing through qembed. This code, run as the start of ``python3 -c``:

    * pops the key from ``api_key_env`` (so SGLang's children do not inherit it) and appends
      ``--api-key KEY`` to ``sys.argv`` in memory: the pod spec, ``docker inspect`` and ``ps``
      never hold it;
    * exits with ``missing_exit`` and an ``error:``/``hint:`` message when the variable is unset or
      empty (fail closed);
    * installs a log-record factory that replaces the key (and its ``repr`` form) by ``[...]`` in
      every record of the process, whatever handler or format SGLang configures later.
    """
    var = repr(api_key_env)
    return (
        "import logging, os, sys\n"
        f"k = os.environ.pop({var}, '').strip()\n"
        "if not k:\n"
        f"    sys.stderr.write('error: the API key variable `{api_key_env}` is unset or empty: refusing to "
        "serve without a key\\n\\nhint: pass it into the container (`docker run -e "
        f"{api_key_env}`, or the Secret in Kubernetes); for a keyless server, generate with "
        "`--no-api-key`\\n')\n"
        f"    sys.exit({int(missing_exit)})\n"
        "sys.argv += ['--api-key', k]\n"
        "_forms = {k, repr(k)[1:-1]}\n"
        "_make = logging.getLogRecordFactory()\n"
        "def _redacting(*a, **kw):\n"
        "    r = _make(*a, **kw)\n"
        "    try:\n"
        "        m = r.getMessage()\n"
        "    except Exception:\n"
        "        return r\n"
        "    if any(f in m for f in _forms):\n"
        "        for f in _forms:\n"
        f"            m = m.replace(f, {REDACTED!r})\n"
        "        r.msg, r.args = m, ()\n"
        "    return r\n"
        "logging.setLogRecordFactory(_redacting)\n"
    )


def redact_profile_dump(dump: Mapping[str, Any]) -> dict[str, Any]:
    """A profile's ``model_dump()`` with secret-named ``env`` values replaced by ``[...]``."""
    out = dict(dump)
    env = out.get("env")
    if isinstance(env, Mapping):
        out["env"] = redact_env({str(k): str(v) for k, v in env.items()})
    return out


_SECRET_NAME = r"[\w-]*(?:api[_-]?key|password|secret|token)"
# A quoted value as Python's repr (or JSON) writes it: backslash escapes included, so a key with
# `'`, `"` or `\` in it (`'ab\'c'`, `"a\"b"`, `'a\\b'`) is hidden whole.
_QUOTED = r"""(?P<v>['"])(?P<val>(?:\\.|(?!(?P=v))[^\\])*)(?P=v)"""
_SECRET_PATTERNS = (
    # SGLang logs `server_args={..., 'api_key': 'KEY', ...}` at startup (only watermark keys are
    # redacted there), and reprs write `api_key='KEY'`.
    re.compile(rf"""(?P<pre>(?P<q>['"]){_SECRET_NAME}(?P=q)\s*:\s*){_QUOTED}""", re.I),
    re.compile(rf"""(?P<pre>\b{_SECRET_NAME}\s*=\s*){_QUOTED}""", re.I),
    # a command line: --api-key KEY / --api-key=KEY
    re.compile(r"""(?P<pre>--[\w-]*api-key(?:\s+|=))(?!'?\[\.\.\.\])(?P<val>'[^']*'|"[^"]*"|[^\s'"]+)""", re.I),
)


def _hide(m: re.Match[str]) -> str:
    val = m.group("val")
    if val.strip("'\"") in ("", "None", REDACTED):
        return m.group(0)
    quote = m.groupdict().get("v") or ""
    return f"{m.group('pre')}{quote}{REDACTED}{quote}"


def _forms(secret: str) -> list[str]:
    """``secret`` as written raw, inside a Python ``repr`` and inside JSON (escapes differ)."""
    forms = [secret, repr(secret)[1:-1], json.dumps(secret)[1:-1],
             secret.replace("\\", "\\\\").replace("'", "\\'"),
             secret.replace("\\", "\\\\").replace('"', '\\"')]
    # longest first, so an escaped form is replaced before the raw text inside it
    return sorted(dict.fromkeys(forms), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with API keys and similar values replaced by ``[...]``.

    Hides the given ``secrets`` wherever they appear (raw, or escaped as ``repr`` and JSON write
    them), and values of ``api_key``-, ``password``-, ``secret``- or ``token``-named fields in the
    forms SGLang logs them (dict repr, ``name='value'``, ``--api-key VALUE``), escaped quotes and
    backslashes included.
    """
    for secret in secrets:
        if secret and len(secret) >= 3:
            for form in _forms(secret):
                text = text.replace(form, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_hide, text)
    return text


__all__ = ["REDACTED", "SECRET_WORDS", "is_secret_name", "redact", "redact_argv", "redact_env",
           "redact_profile_dump"]
