"""Every ``QEMBED_*`` environment variable, in one table.

Options backed by a variable declare ``envvar=`` with the name from here, so ``--help`` shows it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: str | None
    description: str

    def get(self) -> str | None:
        value = os.environ.get(self.name)
        return value if value not in (None, "") else self.default


URL = EnvVar("QEMBED_URL", None, "Base URL of the embedding server (default: the server recorded by `qembed serve --detach`, else http://127.0.0.1:30000)")
API_KEY = EnvVar("QEMBED_API_KEY", None, "API key sent as `Authorization: Bearer` and passed to SGLang's `--api-key`")
PROFILE = EnvVar("QEMBED_PROFILE", "auto", "Deployment profile for `qembed serve`: a shipped name or a YAML path")
MODEL = EnvVar("QEMBED_MODEL", None, "Model name sent in requests (default: the server's own)")
SGLANG_PYTHON = EnvVar("QEMBED_SGLANG_PYTHON", None, "Python interpreter that has SGLang installed (default: this one)")
STATE_DIR = EnvVar("QEMBED_STATE_DIR", None, "Where server records and logs live (default: the platform state dir)")
DEBUG = EnvVar("QEMBED_DEBUG", None, "Set to 1 to show tracebacks for known errors")
LOG_LEVEL = EnvVar("QEMBED_LOG_LEVEL", "warning", "Log level of qembed's own logger")
GATEWAY_ADMIN_KEY = EnvVar("QEMBED_GATEWAY_ADMIN_KEY", None, "The smg gateway's control-plane (admin) key, for `/workers`; never a client key (default: a random key per gateway run)")
LOG_FORMAT = EnvVar("QEMBED_LOG_FORMAT", "text", "`qembed serve` messages on stderr: `text`, or `json` (one JSON object per line, for log shippers)")

ALL: tuple[EnvVar, ...] = (URL, API_KEY, GATEWAY_ADMIN_KEY, PROFILE, MODEL, SGLANG_PYTHON, STATE_DIR, DEBUG, LOG_LEVEL, LOG_FORMAT)

#: Set by qembed itself for a child it starts, never by users: the reference engine's API key
#: travels in the child's environment, not in its argv (qembed/reference/server.py).
REFSERVER_API_KEY = EnvVar("QEMBED_REFSERVER_API_KEY", None, "Internal: the API key `qembed serve --profile cpu` hands the reference engine")
#: ... and the key `qembed serve` hands SGLang: read in memory by the keyed entry
#: (qembed/serving/sglang_args.py, `keyed_entry_args`), so it is in neither `ps` nor SGLang's log.
SGLANG_API_KEY = EnvVar("QEMBED_SGLANG_API_KEY", None, "Internal: the API key `qembed serve` hands SGLang through its environment")
INTERNAL: tuple[EnvVar, ...] = (REFSERVER_API_KEY, SGLANG_API_KEY)

DEFAULT_URL = "http://127.0.0.1:30000"


def debug_enabled() -> bool:
    return (DEBUG.get() or "").lower() in {"1", "true", "yes", "on"}


def env_help(*names: str) -> str:
    """A help epilog listing the given variables (Ollama's appendEnvDocs habit)."""
    rows = [v for v in ALL if not names or v.name in names]
    return "Environment variables:\n\n" + "\n\n".join(f"  {v.name}  {v.description}" for v in rows)
