"""Hide API keys and similar secrets in text that qembed shows or records.

SGLang writes its API key into its own log (the startup ``server_args=`` line), and takes it as
``--api-key`` on the command line, so every log line, argv and error qembed displays passes
through :func:`redact` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SECRET_NAME = r"[\w-]*(?:api[_-]?key|password|secret|token)"
_SECRET_PATTERNS = (
    # SGLang logs `server_args={..., 'api_key': 'KEY', ...}` at startup (only watermark keys are
    # redacted there), and reprs write `api_key='KEY'`.
    re.compile(rf"""(?P<pre>(?P<q>['"]){_SECRET_NAME}(?P=q)\s*:\s*)(?P<v>['"])(?P<val>(?:(?!(?P=v)).)*)(?P=v)""", re.I),
    re.compile(rf"""(?P<pre>\b{_SECRET_NAME}\s*=\s*)(?P<v>['"])(?P<val>(?:(?!(?P=v)).)*)(?P=v)""", re.I),
    # a command line: --api-key KEY / --api-key=KEY
    re.compile(r"""(?P<pre>--[\w-]*api-key(?:\s+|=))(?!'?\[\.\.\.\])(?P<val>'[^']*'|"[^"]*"|[^\s'"]+)""", re.I),
)


def _hide(m: re.Match[str]) -> str:
    val = m.group("val")
    if val.strip("'\"") in ("", "None", "[...]"):
        return m.group(0)
    quote = m.groupdict().get("v") or ""
    return f"{m.group('pre')}{quote}[...]{quote}"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with API keys and similar values replaced by ``[...]``.

    Hides the given ``secrets`` wherever they appear, and values of ``api_key``-, ``password``-
    or ``token``-named fields in the forms SGLang logs them (dict repr, ``name='value'``,
    ``--api-key VALUE``).
    """
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "[...]")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_hide, text)
    return text
