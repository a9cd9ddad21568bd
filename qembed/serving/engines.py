"""The argv and environment of the reference engine (``engine: reference``, ``serve --profile cpu``).

SGLang's are built by :func:`qembed.serving.sglang_args.build_command`; this is the same hook for
``python -m qembed.reference.server``, kept in the serving layer so that the reference engine's
server never imports serving code.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from qembed.reference.server import API_KEY_ENV
from qembed.serving.sglang_args import LaunchCommand, build_env

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile


def reference_command(profile: Profile, *, api_key: str | None = None, python: str | None = None) -> LaunchCommand:
    """``python -m qembed.reference.server ...`` for a profile with ``engine: reference``.

    The API key travels in the child's environment (``QEMBED_REFSERVER_API_KEY``, :data:`qembed.reference.server.API_KEY_ENV`), never in argv.
    """
    argv = [python or sys.executable, "-m", "qembed.reference.server", "--model", profile.model,
            "--host", profile.host, "--port", str(profile.port)]
    if profile.served_model_name:
        argv += ["--served-model-name", profile.served_model_name]
    if profile.context_length is not None:
        argv += ["--context-length", str(profile.context_length)]
    if profile.max_prefill_tokens is not None:
        argv += ["--batch-tokens", str(profile.max_prefill_tokens)]
    if not profile.matryoshka:
        argv.append("--no-matryoshka")
    if profile.metrics:
        argv.append("--enable-metrics")
    argv += ["--log-level", profile.log_level]
    env = build_env(profile)
    if api_key:
        env[API_KEY_ENV] = api_key
    return LaunchCommand(argv=argv, env=env)


__all__ = ["reference_command"]
