"""Before any model load: is the model here, or can it be fetched? Said in seconds, not minutes.

Offline, with a model that is not in the Hugging Face cache, ``transformers`` retries the Hub for
about 85 s and the engine then dies with the cause in its log only (issue 23: "a silent minute").
:func:`check_available` answers first, from the cache and one short request to the Hub:

* a local directory, or a snapshot with ``config.json`` in the HF cache: available;
* ``HF_HUB_OFFLINE`` set and not cached: refused at once;
* otherwise ``GET {HF_ENDPOINT}/api/models/{id}`` with a deadline (``HF_TOKEN`` sent when set):
  200 means it will be downloaded; 401/403/404 means gated, private or misspelt; no answer means
  the Hub is unreachable from here. Each refusal names the cause and the fix (``hf download``, or
  ``--model DIR``). A Hub that answers 5xx is not a verdict: the load goes on and says what it finds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from qembed.errors import ConfigError

#: Deadline of the one request to the Hub (connect and read).
HUB_PROBE_TIMEOUT_S = 5.0
DEFAULT_ENDPOINT = "https://huggingface.co"

Source = Literal["local", "cached", "download", "unknown"]


@dataclass(frozen=True)
class Availability:
    source: Source
    detail: str  # the directory, or the Hub endpoint


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


#: how a model that names a local path starts (anything else is a Hugging Face id)
PATH_PREFIXES = ("/", "./", "../", "~")


def missing_model_dir(model: str) -> ConfigError:
    """The one error for a local model path with no model directory behind it."""
    return ConfigError(f"the model directory `{model}` does not exist",
                       hint="pass a local model directory (with config.json), or a Hugging Face id "
                            "such as `Qwen/Qwen3-Embedding-4B`")


def _fix(model: str) -> str:
    return (f"fetch it where the Hub is reachable: `hf download {model}` (then copy the HF cache here), "
            "or pass `--model DIR` with a local copy of the model")


def check_available(model: str, *, environ: Mapping[str, str] | None = None,
                    timeout: float = HUB_PROBE_TIMEOUT_S) -> Availability:
    """Where ``model`` will come from; refuse in seconds when it cannot come from anywhere.

    Args:
        model: a local directory or a Hub id (``Qwen/Qwen3-Embedding-0.6B``).
        environ: the environment the engine loads with (``HF_HOME``, ``HF_HUB_OFFLINE``,
            ``HF_ENDPOINT``, ``HF_TOKEN``); default this process's.
        timeout: the deadline of the Hub request, seconds.

    Raises:
        ConfigError: not cached and offline, not on a reachable Hub, or gated/private/misspelt.
    """
    from qembed.models import hf_hub_cache, model_dir

    env = dict(os.environ if environ is None else environ)
    local = os.path.expanduser(model)
    if os.path.isdir(local):
        return Availability("local", local)
    if model.startswith(PATH_PREFIXES):
        raise missing_model_dir(model)
    cached = model_dir(model, env)
    if cached is not None:
        return Availability("cached", str(cached))
    where = hf_hub_cache(env)
    if _truthy(env.get("HF_HUB_OFFLINE")) or _truthy(env.get("TRANSFORMERS_OFFLINE")):
        raise ConfigError(f"`{model}` is not in the Hugging Face cache ({where}) and HF_HUB_OFFLINE is set",
                          hint=_fix(model) + ", or unset HF_HUB_OFFLINE")
    endpoint = (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    import httpx

    headers = {"Authorization": f"Bearer {env['HF_TOKEN']}"} if env.get("HF_TOKEN") else {}
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout), trust_env=True) as client:
            r = client.get(f"{endpoint}/api/models/{model}", headers=headers)
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"`{model}` is not in the Hugging Face cache ({where}) and the Hub ({endpoint}) is not "
            f"reachable: {type(exc).__name__}: {str(exc) or 'no answer'} (within {timeout:.0f} s)",
            hint=_fix(model)) from exc
    if r.status_code in (401, 403, 404):
        token = "with HF_TOKEN" if headers else "anonymously"
        raise ConfigError(
            f"the Hub ({endpoint}) has no model `{model}` this machine can read {token} (HTTP {r.status_code})",
            hint="check the id (e.g. `Qwen/Qwen3-Embedding-4B`); for a gated or private model set HF_TOKEN "
                 "(`hf auth login`), or pass `--model DIR`")
    if r.status_code != 200:
        return Availability("unknown", endpoint)
    return Availability("download", endpoint)


__all__ = ["DEFAULT_ENDPOINT", "HUB_PROBE_TIMEOUT_S", "PATH_PREFIXES", "Availability", "check_available",
           "missing_model_dir"]
