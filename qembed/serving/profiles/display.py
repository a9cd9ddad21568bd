"""What ``qembed profiles list/show`` and ``qembed serve --dry-run`` print of a profile.

One summary per shipped profile (:func:`list_profiles`), a profile's values with secret-named
``env`` values hidden (:func:`redacted_values`, by :func:`qembed.redact.redact_profile_dump`), and
each value in words (:func:`display_value`).

Example:
    >>> from qembed.serving.profiles.display import display_value
    >>> display_value("context_length", None), display_value("metrics", True)
    ('(SGLang decides)', 'true')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qembed.errors import ProfileError
from qembed.redact import redact_profile_dump
from qembed.serving.profiles.resolve import ALIASES, read_chain, shipped_dir, shipped_names

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile

#: Keys whose unset value means "SGLang's own rule at launch"; shown as :data:`SGLANG_DECIDES_TEXT`.
SGLANG_DECIDES: frozenset[str] = frozenset({
    "gpu_memory_fraction", "max_running_requests", "chunked_prefill_size", "max_prefill_tokens",
    "max_queued_requests", "context_length", "attention_backend", "quantization", "kv_cache_dtype",
})
SGLANG_DECIDES_TEXT = "(SGLang decides)"


def display_value(key: str, value: Any) -> str:
    """A profile value in words, the same in ``profiles show`` and ``serve --dry-run``.

    ``None`` of a key SGLang sizes itself reads ``(SGLang decides)``; secret-named ``env``
    values are already hidden when the dump came through :func:`redacted_values`.
    """
    if value is None:
        return SGLANG_DECIDES_TEXT if key in SGLANG_DECIDES else "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        import json

        return json.dumps(value) if value else ("{}" if isinstance(value, dict) else "[]")
    return str(value)


def redacted_values(profile: Profile) -> dict[str, Any]:
    """``profile.model_dump(mode="json")`` with secret-named ``env`` values shown as ``[...]``:
    what ``profiles show`` and ``serve --dry-run`` print."""
    return redact_profile_dump(profile.model_dump(mode="json"))


@dataclass(frozen=True)
class ProfileSummary:
    name: str
    description: str
    path: Path
    gpu: str = ""
    aliases: tuple[str, ...] = ()


def list_profiles() -> list[ProfileSummary]:
    """The shipped profiles, sorted by name (``auto`` included)."""
    out: list[ProfileSummary] = []
    for name in shipped_names():
        path = shipped_dir() / f"{name}.yaml"
        try:
            raw = read_chain(path, label=name)[0]
        except ProfileError:
            raw = {}
        aliases = tuple(sorted(a for a, target in ALIASES.items() if target == name))
        out.append(
            ProfileSummary(
                name=name,
                description=str(raw.get("description", ("", ""))[0] or ""),
                path=path,
                gpu=str(raw.get("gpu", ("", ""))[0] or ""),
                aliases=aliases,
            )
        )
    return out


__all__ = [
    "SGLANG_DECIDES",
    "ProfileSummary",
    "display_value",
    "list_profiles",
    "redacted_values",
]
