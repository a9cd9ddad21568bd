"""Profile resolution: locate a shipped or file profile, follow ``extends``, apply overrides, pick ``auto``.

Profiles are YAML files: the shipped ones live in ``profiles/`` of the repository and are packaged
into the wheel as ``qembed/_profiles``. A reference is a shipped name, an alias (:data:`ALIASES`),
``auto`` (:func:`pick_auto` by the detected GPU) or a file path. Keys people copy from vLLM, TEI
or SGLang's own flag names are answered with the qembed key (:data:`qembed.habits.HABIT_KEYS`),
unknown keys with the closest valid key, and keys named like a secret
(:func:`qembed.redact.is_secret_name`) with where API keys go instead.

Example:
    >>> from qembed.serving.profiles.resolve import load_profile
    >>> p = load_profile("a100", overrides=["port=31000"])   # doctest: +SKIP
    >>> p.name, p.port                                         # doctest: +SKIP
    ('a100-80g', 31000)
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qembed.errors import ProfileError
from qembed.habits import HABIT_KEYS
from qembed.redact import REDACTED, is_secret_name, redact_profile_dump
from qembed.serving.profiles.loader import MAX_BYTES, load_yaml_file, load_yaml_text
from qembed.serving.profiles.model import FIELDS, Profile

if TYPE_CHECKING:
    from qembed.serving.gpu import GPUInfo, GPUSnapshot

DEFAULT_PROFILE = "auto"
#: shipped profile used when no GPU is detected or the GPU has no profile of its own
FALLBACK_PROFILE = "generic"
#: other names for shipped profiles
ALIASES: dict[str, str] = {"a100": "a100-80g", "h100-80g": "h100", "4090": "rtx4090"}


# -- shipped profiles ---------------------------------------------------------------------------


def shipped_dir() -> Path:
    """The directory with the shipped profile YAML files.

    An installed wheel has them as ``qembed/_profiles`` (pyproject force-include); an editable
    checkout has them in the repository's ``profiles/``.
    """
    from importlib import resources

    try:
        packaged = resources.files("qembed") / "_profiles"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover - exotic loaders
        pass
    return Path(__file__).resolve().parents[3] / "profiles"


def shipped_names() -> list[str]:
    """The names of the shipped profile files, sorted."""
    d = shipped_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


@dataclass
class ResolvedProfile:
    """A loaded profile plus where each value came from (for ``qembed profiles show``)."""

    profile: Profile
    sources: dict[str, str]  # key -> "default", "<name>.yaml", "override", ...
    chain: list[str]  # files read, the profile itself first, then what it extends
    auto_reason: str | None = None  # set when `auto` picked the profile
    requested: str = DEFAULT_PROFILE


# -- auto pick ----------------------------------------------------------------------------------


def _pick_one(g: GPUInfo) -> tuple[str, str]:
    from qembed.serving import gpu as gpu_mod

    name, reason = gpu_mod.profile_for(g)
    if name is not None:
        return name, reason
    if g.sm < gpu_mod.MIN_SM:
        return FALLBACK_PROFILE, f"{reason}; using `{FALLBACK_PROFILE}` (run `qembed doctor`)"
    return FALLBACK_PROFILE, (
        f"{reason}; `{FALLBACK_PROFILE}` leaves memory sizing to SGLang's own rules for this GPU"
    )


def pick_auto(gpus: GPUSnapshot | None) -> tuple[str, str]:
    """Pick a shipped profile for the detected GPU.

    Matches the first visible GPU by name (A100/A800, H100/H800, L4, A10/A10G, RTX 4090, T4;
    :data:`qembed.serving.gpu.GPU_CLASSES`), else by memory and compute capability
    (:func:`qembed.serving.gpu.profile_for_memory`: an L40S takes the A100 40GB sizing, a 16 GB sm75
    card the T4's); a GPU no profile fits, and a machine without a usable GPU, get ``generic``,
    which sets no sizing and lets SGLang apply its own rules at launch.

    Args:
        gpus: an NVML snapshot (:func:`qembed.serving.gpu.snapshot`), or ``None`` for "no GPU".

    Returns:
        ``(profile name, one-line reason)``.
    """
    if gpus is None or not gpus.gpus:
        why = f" ({gpus.error})" if gpus is not None and gpus.error else ""
        return FALLBACK_PROFILE, (
            f"no GPU detected{why}; using `{FALLBACK_PROFILE}`, which leaves memory sizing to "
            "SGLang's own rules at launch"
        )
    first = gpus.gpus[0]
    name, reason = _pick_one(first)
    if len(gpus.gpus) > 1:
        names = {g.name for g in gpus.gpus}
        more = "" if len(names) == 1 else " (the GPUs differ; sized for the first)"
        reason += f"; GPU {first.index} of {len(gpus.gpus)}{more}"
    return name, reason


# -- loading ------------------------------------------------------------------------------------

# Keys a profile file may not set itself.
_LOADER_KEYS = {"name"}
_DICT_KEYS = {"env", "model_override_args"}


def _closest(key: str, candidates: Sequence[str]) -> str | None:
    norm = key.replace("-", "_").lower()
    if norm in candidates and norm != key:
        return norm
    m = difflib.get_close_matches(norm, candidates, n=1, cutoff=0.6)
    return m[0] if m else None


def _key_error(key: str, where: str) -> ProfileError:
    """The error for a key that is not a profile field."""
    norm = key.replace("-", "_").lower()
    if norm in HABIT_KEYS:
        qkey, use = HABIT_KEYS[norm]
        if norm == "api_key":
            return ProfileError(
                f"`{key}` in {where}: API keys are never stored in a profile",
                hint="export the key as `QEMBED_API_KEY` (or name another variable with "
                "`api_key_env`), or put it in a file and set `api_key_file`",
            )
        return ProfileError(
            f"`{key}` in {where} is not a qembed key (a vLLM/TEI/SGLang habit)",
            hint=f"use {use}" + ("" if qkey is None else "; see docs/profiles.md"),
        )
    close = _closest(key, [f for f in FIELDS if f not in _LOADER_KEYS])
    # `max_prefil_tokens` is a typo, not a secret: only keys close to a token-count key escape.
    if is_secret_name(key) and not (close and "tokens" in close):
        return ProfileError(
            f"`{key}` in {where} looks like a secret; secrets are never stored in a profile",
            hint="export the API key as `QEMBED_API_KEY` (or name the variable with `api_key_env`), "
            "or set `api_key_file`",
        )
    hint = f"did you mean `{close}`?" if close else "see `qembed profiles show` for the valid keys"
    return ProfileError(f"unknown key `{key}` in {where}", hint=hint)


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    data = load_yaml_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProfileError(f"`{path}` must be a YAML mapping of keys to values, not a {type(data).__name__}")
    errors: list[ProfileError] = []
    for key in data:
        if not isinstance(key, str):
            errors.append(ProfileError(f"key `{key}` in `{path}` is not a string"))
        elif key in _LOADER_KEYS:
            errors.append(ProfileError(f"`{key}` in `{path}` is set by the loader (the file name)",
                                       hint=f"remove `{key}`; the profile is named `{label}`"))
        elif key not in FIELDS:
            errors.append(_key_error(key, f"`{path}`"))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        # every bad key at once, each with its own answer
        raise ProfileError(
            f"{len(errors)} keys in `{path}` are not profile keys",
            details=[e.message + (f" ({e.hint})" if e.hint else "") for e in errors],
            hint="fix each of them; `qembed profiles show` lists the valid keys (docs/profiles.md)",
        )
    return data


def _locate(ref: str, *, base: Path | None = None) -> tuple[Path, str]:
    """A profile reference -> (file path, label). Shipped names and aliases first, then paths."""
    name = ALIASES.get(ref, ref)
    is_pathlike = "/" in ref or os.sep in ref or ref.endswith((".yaml", ".yml"))
    if not is_pathlike:
        path = shipped_dir() / f"{name}.yaml"
        if path.is_file():
            return path, name
    candidate = Path(ref).expanduser()
    if base is not None and not candidate.is_absolute():
        candidate = base / candidate
    if candidate.is_file():
        return candidate, candidate.stem
    names = shipped_names() + list(ALIASES)
    hint = "run `qembed profiles list` for the shipped profiles, or pass a YAML file path"
    from qembed.serving import gpu as gpu_mod

    cls = gpu_mod.match_gpu_name(ref)
    same_name = sorted({c.profile for c in gpu_mod.GPU_CLASSES if c.profile and c.label.split()[0] == (cls.label.split()[0] if cls else None)})
    if cls is not None and cls.profile is not None:
        # a GPU that has profiles (`a100-80`): the closest of those, by spelling
        close = difflib.get_close_matches(ref, same_name, n=1, cutoff=0.0)
        hint = f"did you mean `{close[0] if close else cls.profile}`? " + hint
    elif cls is not None:
        # a GPU without a profile: answer by memory and compute capability, never by spelling
        # (`l40s` is no `l4`)
        made_for = gpu_mod.profile_for_memory(cls.memory_gib * 0.95, cls.sm)[0]
        if made_for:
            hint = (f"no profile is named after the {cls.label} ({cls.memory_gib:.0f} GB, sm{cls.sm}); "
                    f"by memory and compute capability it takes `{made_for}`, and `auto` picks it "
                    f"on that GPU; {hint}")
        else:
            hint = f"no shipped profile fits the {cls.label}; use `{FALLBACK_PROFILE}` or `auto`; {hint}"
    else:
        close = difflib.get_close_matches(ref, names, n=1)
        hint = (f"did you mean `{close[0]}`? " if close else "") + hint
    if is_pathlike:
        raise ProfileError(f"profile file `{candidate}` does not exist", hint=hint)
    raise ProfileError(f"unknown profile `{ref}`", hint=hint)


def read_chain(
    path: Path, *, label: str, seen: tuple[Path, ...] = (), labels: tuple[str, ...] = ()
) -> tuple[dict[str, tuple[Any, str]], list[str]]:
    """Read a profile and what it extends -> ({key: (value, source)}, chain of labels).

    ``seen`` and ``labels`` are the files and names already read, for the recursion (cycle check).
    """
    real = path.resolve()
    if real in seen:
        cycle = " -> ".join((*labels, label))
        raise ProfileError(f"profile `{labels[0]}` extends itself: {cycle}",
                           hint="remove one of the `extends` keys in that chain")
    data = _read_yaml(path, label)
    merged: dict[str, tuple[Any, str]] = {}
    chain = [label]
    parent_ref = data.get("extends")
    if parent_ref is not None:
        if not isinstance(parent_ref, str) or not parent_ref.strip():
            raise ProfileError(f"`extends` in `{path}` must be a profile name or a file path")
        if parent_ref.strip() == DEFAULT_PROFILE:
            raise ProfileError(f"`extends: auto` in `{path}` is not supported",
                               hint="extend a concrete profile, e.g. `extends: a100-80g`")
        ppath, plabel = _locate(parent_ref, base=path.parent)
        merged, pchain = read_chain(ppath, label=plabel, seen=(*seen, real), labels=(*labels, label))
        chain += pchain
    source = f"{label}.yaml" if path.parent == shipped_dir() else str(path)
    for key, value in data.items():
        if key == "extends":
            continue
        if key in _DICT_KEYS and isinstance(value, dict) and key in merged and isinstance(merged[key][0], dict):
            value = {**merged[key][0], **value}
        merged[key] = (value, source)
    return merged, chain


def _parse_overrides(overrides: Sequence[str] | Mapping[str, object]) -> list[tuple[str, Any, str]]:
    """-> [(key, value, text for messages)]. ``key`` may be dotted (``env.FOO``).

    ``KEY=VALUE`` strings (``--set``) are the only values parsed, as YAML, with the bounds of a
    profile file (:func:`load_yaml_text`); a mapping's values are taken as they are.
    """
    out: list[tuple[str, Any, str]] = []
    if isinstance(overrides, Mapping):
        return [(str(k), v, f"{k}={v}") for k, v in overrides.items()]
    for item in overrides:
        if "=" not in item:
            raise ProfileError(f"override `{item}` is not `key=value`",
                               hint="e.g. `--set port=31000` or `--set env.HF_HOME=/data/hf`")
        key, _, text = item.partition("=")
        key = key.strip()
        if key.startswith("env."):
            # Environment values stay strings: YAML would turn `yes` into True and `010` into 8.
            out.append((key, text, item))
            continue
        if len(text) > MAX_BYTES:
            raise ProfileError(f"the value of `--set {key}` is larger than {MAX_BYTES // 1024} KiB")
        try:
            value = load_yaml_text(text, f"the value of `--set {key}`") if text.strip() else None
        except ProfileError as exc:
            if exc.message.endswith("is not valid YAML") or " is not valid YAML at " in exc.message:
                value = text  # not YAML: the text itself (`--set model=/data/run:1`)
            else:
                raise
        out.append((key, value, item))
    return out


def _apply_overrides(values: dict[str, tuple[Any, str]], overrides: Sequence[str] | Mapping[str, object],
                     source: str = "override") -> None:
    for key, value, _text in _parse_overrides(overrides):
        # No value in messages: it may be a secret someone tried to pass (`api_key=...`).
        where = "an override"
        top, _, sub = key.partition(".")
        if top not in FIELDS or top in _LOADER_KEYS or top == "extends":
            if top == "extends":
                raise ProfileError(f"`extends` cannot be overridden ({where})",
                                   hint="pass the other profile with `--profile`")
            raise _key_error(top, where)
        if sub:
            if top not in _DICT_KEYS:
                raise ProfileError(f"`{top}` has no sub-keys ({where})",
                                   hint=f"write `{top}=VALUE`")
            current = values.get(top, ({}, "default"))[0]
            current = dict(current) if isinstance(current, dict) else {}
            current[sub] = value
            values[top] = (current, source)
        else:
            values[top] = (value, source)


def _validate(values: dict[str, tuple[Any, str]], label: str) -> Profile:
    import pydantic  # loaded with the model already

    data = {k: v for k, (v, _) in values.items()}
    data["name"] = label
    try:
        return Profile.model_validate(data)
    except pydantic.ValidationError as exc:
        errs = exc.errors()
        first = errs[0]
        key = str(first["loc"][0]) if first["loc"] else ""
        src = values.get(key, (None, "default"))[1] if key else label
        where = {"override": "an override", "option": "a command-line option"}.get(src, f"`{src}`")
        msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        if key:
            got = data.get(key)
            if key == "env" and isinstance(got, Mapping):
                got = redact_profile_dump({"env": got})["env"]
            elif isinstance(got, str) and is_secret_name(key):
                got = REDACTED
            shown = "" if got is None or "got" in msg else f" (got {_short(got)})"
            message = f"invalid `{key}` in {where}: {msg}{shown}"
        else:
            message = f"invalid profile `{label}`: {msg}"
        details = []
        for e in errs[1:]:
            k = ".".join(str(p) for p in e["loc"])
            details.append(f"`{k}`: {str(e.get('msg', '')).removeprefix('Value error, ')}")
        hint = f"fix `{key}` (see docs/profiles.md)" if key else "see docs/profiles.md"
        raise ProfileError(message, hint=hint, details=details) from exc


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:199] + "…"


def resolve_profile(
    ref: str = DEFAULT_PROFILE,
    *,
    overrides: Sequence[str] | Mapping[str, object] = (),
    options: Mapping[str, object] | None = None,
    gpus: GPUSnapshot | None = None,
) -> ResolvedProfile:
    """Like :func:`load_profile`, but also says where each value came from."""
    ref = (ref or DEFAULT_PROFILE).strip()
    auto_reason: str | None = None
    if ref == "auto":
        if gpus is None:
            from qembed.serving import gpu as gpu_mod

            gpus = gpu_mod.snapshot()
        ref, auto_reason = pick_auto(gpus)
    path, label = _locate(ref)
    values, chain = read_chain(path, label=label)
    _apply_overrides(values, overrides)
    _apply_overrides(values, {k: v for k, v in (options or {}).items() if v is not None}, source="option")
    profile = _validate(values, label)
    sources = {k: values[k][1] if k in values else "default" for k in FIELDS}
    sources = {k: ("override" if v == "option" else v) for k, v in sources.items()}
    sources["name"] = "auto" if auto_reason else "loader"
    return ResolvedProfile(profile=profile, sources=sources, chain=chain,
                           auto_reason=auto_reason, requested=ref if auto_reason is None else "auto")


def load_profile(
    ref: str = DEFAULT_PROFILE,
    *,
    overrides: Sequence[str] | Mapping[str, object] = (),
    options: Mapping[str, object] | None = None,
    gpus: GPUSnapshot | None = None,
) -> Profile:
    """Load a profile by shipped name, alias or YAML path, apply ``extends`` and overrides.

    Args:
        ref: a shipped name (``a100-80g``; ``a100`` is an alias), ``auto`` (picks from ``gpus``
            with :func:`pick_auto`), or a path to a YAML file.
        overrides: ``"key=value"`` strings (``--set``: values parsed as bounded YAML,
            ``env.NAME=value`` sets one environment variable as a string), or a mapping of keys
            to values (taken as they are).
        options: typed values applied after ``overrides``, never parsed (``qembed serve
            --model/--port/--host/--python``: ``{"model": "/data/run #3", "port": 31000}``);
            ``None`` values are skipped.
        gpus: the GPU snapshot ``auto`` picks from; ``None`` takes one with
            :func:`qembed.serving.gpu.snapshot` (only when ``ref`` is ``auto``).

    Returns:
        The validated :class:`Profile`; ``name`` is the shipped name or the file stem.

    Raises:
        ProfileError: unknown profile or key, bad value, ``extends`` cycle.

    Example:
        >>> load_profile("l4", overrides=["port=31000", "env.HF_HOME=/data/hf"]).port  # doctest: +SKIP
        31000
    """
    return resolve_profile(ref, overrides=overrides, options=options, gpus=gpus).profile


def resolve_api_key(profile: Profile) -> str | None:
    """The API key: the ``api_key_env`` variable, else the ``api_key_file``; never from YAML.

    Returns ``None`` when neither is set. Surrounding whitespace (a trailing newline) is removed
    by :func:`qembed.net.clean_api_key`, the rule every client applies too.

    Raises:
        ProfileError: ``api_key_file`` is set but missing, unreadable or empty.
        ConfigError: the key holds a control character (named by variable or file, not shown).
    """
    from qembed.net import clean_api_key

    value = clean_api_key(os.environ.get(profile.api_key_env), source=f"`{profile.api_key_env}`")
    if value:
        return value
    if profile.api_key_file:
        path = Path(profile.api_key_file).expanduser()
        try:
            text = clean_api_key(path.read_text(encoding="utf-8"), source=f"`api_key_file` (`{path}`)") or ""
        except FileNotFoundError as exc:
            raise ProfileError(f"API key file `{path}` does not exist",
                               hint=f"create it, fix `api_key_file`, or export `{profile.api_key_env}`") from exc
        except OSError as exc:
            raise ProfileError(f"cannot read API key file `{path}`: {exc.strerror}",
                               hint=f"check its permissions, or export `{profile.api_key_env}`") from exc
        if not text:
            raise ProfileError(f"API key file `{path}` is empty",
                               hint=f"write the key into it, or export `{profile.api_key_env}`")
        return text
    return None


__all__ = [
    "ALIASES",
    "DEFAULT_PROFILE",
    "FALLBACK_PROFILE",
    "ResolvedProfile",
    "load_profile",
    "pick_auto",
    "read_chain",
    "resolve_api_key",
    "resolve_profile",
    "shipped_dir",
    "shipped_names",
]
