"""Profile -> SGLang 0.5.23 command line, and the parser check in SGLang's own interpreter.

Every flag name here comes from the reference (``../shared/reference/sglang-0.5.23.md``,
sections 1.2-1.5) and is fed to the real parser by ``tests/test_conformance.py``.

Entry point. The console script ``sglang serve`` is ``sglang.cli.main:main``; ``python -m
sglang.launch_server`` still works but prints a deprecation ``UserWarning`` (``launch_server.py``),
and ``sglang.cli`` has no ``__main__``. qembed must run from an interpreter path alone
(``--python``, ``profile.python``, ``QEMBED_SGLANG_PYTHON``): the ``sglang`` script does not always
sit next to the interpreter (``--user`` installs, system pythons, symlinked venvs). So we run::

    PYTHON -c "from sglang.cli.main import main; main()" serve --model-type llm FLAGS...

which is what the console script does. ``--model-type llm`` (``cli/serve.py``,
``_extract_model_type_override``) skips the "is it a diffusion model?" probe that otherwise asks
the HF Hub for ``model_index.json`` for a non-local model path: that probe costs a network round
trip and hangs or fails slowly offline. With ``-c`` the children SGLang spawns (start method
``spawn``) do not re-run a main script, since there is none.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from qembed.errors import FlagsRejected, LaunchError, MissingDependency
from qembed.habits import HABIT_FLAGS
from qembed.redact import REDACTED, redact_argv, redact_env

if TYPE_CHECKING:
    from qembed.serving.profiles.model import Profile

logger = logging.getLogger(__name__)

ENTRY_CODE = "from sglang.cli.main import main; main()"
ENTRY_ARGS: tuple[str, ...] = ("-c", ENTRY_CODE, "serve", "--model-type", "llm")


def keyed_entry_args(api_key_env: str) -> tuple[str, ...]:
    """:data:`ENTRY_ARGS` for a container with an API key: SGLang's own entry point, preceded by
    :func:`qembed.redact.key_from_env_code` (key from ``api_key_env``, fail closed, redacted
    logs). One design for every container shape: ``docs/deploy.md``, "Keys and logs"."""
    from qembed.errors import ExitCode
    from qembed.redact import key_from_env_code

    code = key_from_env_code(api_key_env, missing_exit=int(ExitCode.USAGE)) + ENTRY_CODE
    return ("-c", code, *ENTRY_ARGS[2:])


def keyed_argv(argv: Sequence[str], api_key_env: str) -> list[str]:
    """``argv`` (``PYTHON -c ENTRY_CODE serve ...``) with the entry swapped for :func:`keyed_entry_args`."""
    if tuple(argv[1:1 + len(ENTRY_ARGS)]) != ENTRY_ARGS:
        raise ValueError("not an SGLang argv from build_command")
    return [argv[0], *keyed_entry_args(api_key_env), *argv[1 + len(ENTRY_ARGS):]]


LOOPBACK_NO_PROXY: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
INSTALL_HINT = "pip install 'qembed[serve]'"
#: SGLang selects its CPU platform for `--device cpu` only when this is "1" (srt/platforms)
CPU_ENGINE_ENV = "SGLANG_USE_CPU_ENGINE"

# vLLM / TEI flags that SGLang 0.5.23 rejects: qembed.habits.HABIT_FLAGS (one table with the keys).


@dataclass(frozen=True)
class LaunchCommand:
    """The full SGLang command line plus the environment additions it needs."""

    argv: list[str]  # [python, "-c", ENTRY_CODE, "serve", "--model-type", "llm", flags...]
    env: dict[str, str] = field(default_factory=dict)  # CUDA_VISIBLE_DEVICES, NO_PROXY, profile env

    def redacted_argv(self) -> list[str]:
        return redact_argv(self.argv)

    def redacted_env(self) -> dict[str, str]:
        return redact_env(self.env)

    def display(self) -> str:
        """Shell-quoted ``ENV=... python ...`` with the API key shown as ``[...]``."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.redacted_env().items())
        cmd = shlex.join(self.redacted_argv())
        return f"{env} {cmd}" if env else cmd

    def __repr__(self) -> str:  # the default repr would print the API key
        return f"LaunchCommand({self.display()!r})"

    __str__ = display


def build_flags(profile: Profile, *, api_key: str | None = None) -> list[str]:
    """The SGLang server flags for ``profile`` (no interpreter, no entry point).

    ``--is-embedding`` is always there: Qwen3-Embedding ships as ``Qwen3ForCausalLM`` and would
    otherwise start as a generator (reference, "Traps for a launcher" 1). Keys left ``None``
    are not passed, so SGLang applies its own rule at launch.
    """
    p = profile
    flags = ["--model-path", p.model, "--is-embedding", "--host", p.host, "--port", str(p.port)]
    if p.device == "cpu":
        flags += ["--device", "cpu"]
        if "--sleep-on-idle" not in p.extra_args:
            # SGLang's scheduler otherwise polls in a busy loop: one core at 100 % while idle,
            # taken from the cores that embed (measured on the CPU engine). Its idle sleeper
            # blocks on the request sockets, so a request still wakes it at once.
            flags.append("--sleep-on-idle")
    if p.served_model_name:
        flags += ["--served-model-name", p.served_model_name]
    if p.dtype != "auto":
        flags += ["--dtype", p.dtype]
    if p.gpu_memory_fraction is not None:
        flags += ["--mem-fraction-static", _num(p.gpu_memory_fraction)]
    for flag, value in (
        ("--max-running-requests", p.max_running_requests),
        ("--chunked-prefill-size", p.chunked_prefill_size),
        ("--max-prefill-tokens", p.max_prefill_tokens),
        ("--max-queued-requests", p.max_queued_requests),
        ("--context-length", p.context_length),
        ("--max-total-tokens", p.max_total_tokens),
    ):
        if value is not None:
            flags += [flag, str(value)]
    if p.torch_compile:
        flags.append("--enable-torch-compile")
    overrides = dict(p.model_override_args)
    if p.matryoshka:
        overrides.setdefault("is_matryoshka", True)
    if overrides:
        flags += ["--json-model-override-args", json.dumps(overrides, separators=(", ", ": "))]
    if p.metrics:
        flags.append("--enable-metrics")
    if p.attention_backend:
        flags += ["--attention-backend", p.attention_backend]
    if p.quantization:
        flags += ["--quantization", p.quantization]
    if p.kv_cache_dtype:
        flags += ["--kv-cache-dtype", p.kv_cache_dtype]
    if p.tp_size != 1:
        flags += ["--tp-size", str(p.tp_size)]
    if p.dp_size != 1:
        flags += ["--dp-size", str(p.dp_size)]
    flags += ["--log-level", p.log_level]
    if api_key:
        flags += ["--api-key", api_key]
    flags += list(p.extra_args)
    return flags


def _num(x: float) -> str:
    return repr(float(x))


def merge_no_proxy(*values: str | None) -> str:
    """A ``NO_PROXY`` value: the entries of ``values`` (in order, each once), plus loopback."""
    parts = [s.strip() for v in values for s in (v or "").split(",") if s.strip()]
    return ",".join(dict.fromkeys([*parts, *LOOPBACK_NO_PROXY]))


def build_env(profile: Profile, *, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment additions: the profile's ``env``, ``CUDA_VISIBLE_DEVICES`` (and
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) from ``gpu_ids``,
    and loopback in ``NO_PROXY``/``no_proxy`` (appended to what is already set).

    The loopback entries keep SGLang's warm-up request to itself away from an HTTP proxy, which
    otherwise answers 502 and makes the server kill itself (reference section 6).
    """
    base = os.environ if environ is None else environ
    env = dict(profile.env)
    if profile.device == "cpu":
        # `--device cpu` selects SGLang's CPU platform only with this set (srt/platforms)
        env.setdefault(CPU_ENGINE_ENV, "1")
    if profile.gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in profile.gpu_ids)
        # `gpu_ids` are the indices nvidia-smi and NVML show (PCI bus order); CUDA's own default
        # order is "fastest first", which differs on mixed-GPU machines.
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = merge_no_proxy(env.get(name, base.get(name)))
    return env


def sglang_python(profile: Profile | None = None, cli_python: str | None = None) -> str:
    """The interpreter that runs SGLang, as ``qembed serve`` ranks them: ``--python``
    (``cli_python``), else ``profile.python``, else ``QEMBED_SGLANG_PYTHON``, else this
    interpreter."""
    from qembed import env as qenv

    if cli_python:
        return os.path.expanduser(cli_python)
    if profile is not None and profile.python:
        return os.path.expanduser(profile.python)
    configured = qenv.SGLANG_PYTHON.get()
    if configured:
        return os.path.expanduser(configured)
    return sys.executable


class SGLangTarget(NamedTuple):
    """Where SGLang runs: the interpreter and the FULL environment (not an overlay) it gets.

    Produced only by :func:`resolve_sglang`; the launch's parser check, the dry run, doctor and
    the gateway's replica check all take it, so they cannot disagree about what SGLang imports.
    """

    python: str
    env: dict[str, str]


def resolve_sglang(
    profile: Profile | None, cli_python: str | None = None, *, environ: Mapping[str, str] | None = None
) -> SGLangTarget:
    """The interpreter SGLang runs in and the full environment it runs with: the one rule that
    ``qembed serve``, ``qembed doctor`` and ``qembed profiles show`` share.

    The interpreter is ranked by :func:`sglang_python`. The environment is this process's
    (``PYTHONPATH``, ``PYTHONHOME`` and the rest kept, as the launch keeps them) plus the
    profile's additions (:func:`build_env`: ``env``, ``CUDA_VISIBLE_DEVICES``, loopback in
    ``NO_PROXY``).

    Returns:
        the :class:`SGLangTarget` ``(python, env)``.
    """
    base = dict(os.environ if environ is None else environ)
    python = sglang_python(profile, cli_python)
    if profile is not None:
        base.update(build_env(profile, environ=base))
    else:
        for name in ("NO_PROXY", "no_proxy"):
            base[name] = merge_no_proxy(base.get(name))
    return SGLangTarget(python, base)


def build_command(
    profile: Profile,
    *,
    api_key: str | None = None,
    python: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> LaunchCommand:
    """The full command: interpreter, entry point (see the module docstring), flags, env.

    Args:
        profile: the loaded profile.
        api_key: handed to SGLang's ``--api-key`` by :func:`keyed_entry_args` from the child's
            environment (never in the argv).
        python: interpreter path; default :func:`sglang_python`.
        environ: the environment the additions are merged with (default ``os.environ``).

    Example:
        >>> from qembed.serving.profiles.model import Profile
        >>> build_command(Profile(), python="python3").argv[:4]
        ['python3', '-c', 'from sglang.cli.main import main; main()', 'serve']
    """
    from qembed import env as qenv

    py = python or sglang_python(profile)
    env = build_env(profile, environ=environ)
    if not api_key:
        return LaunchCommand(argv=[py, *ENTRY_ARGS, *build_flags(profile)], env=env)
    # the key travels in the child's environment and the keyed entry appends `--api-key` in
    # memory and redacts SGLang's log: the same design as the containers (docs/deploy.md,
    # "Keys and logs"), and `ps` never shows it
    env[qenv.SGLANG_API_KEY.name] = api_key
    return LaunchCommand(argv=[py, *keyed_entry_args(qenv.SGLANG_API_KEY.name), *build_flags(profile)], env=env)


def profile_warnings(profile: Profile, *, exposure: bool = True) -> list[str]:
    """Settings that are valid but probably not what the user wants (one sentence each).

    ``exposure=False`` leaves out the keyless network address (:func:`qembed.serving.policy.exposure`):
    a serving session says that one itself, louder (:func:`qembed.serving.supervisor.exposure_warning`)."""
    p = profile
    out: list[str] = []
    if p.torch_compile:
        out.append("`torch_compile` has no effect on embedding forwards in SGLang 0.5.23: it only "
                   "compiles decode-graph batch sizes, and embedding models capture no decode graphs")
    if p.quantization:
        out.append(f"`quantization: {p.quantization}` changes the embeddings; check retrieval "
                   "quality against bfloat16 before using it")
    if p.kv_cache_dtype and p.kv_cache_dtype not in {"auto", "bf16", "bfloat16"}:
        out.append(f"`kv_cache_dtype: {p.kv_cache_dtype}` changes the embeddings of chunked inputs")
    if p.log_level in {"warning", "error", "critical"}:
        out.append(f"`log_level: {p.log_level}` hides SGLang's INFO lines (load phases, the ready "
                   "line), so progress and failure diagnosis see less")
    from qembed.serving.policy import exposure as exposure_rule

    exposed = exposure_rule(p.host, keyed=bool(os.environ.get(p.api_key_env) or p.api_key_file),
                            level="warn", listener="profile", key_env=p.api_key_env) if exposure else None
    if exposed is not None:
        out.append(exposed.message)
    if p.chunked_prefill_size == -1:
        out.append("`chunked_prefill_size: -1` prefills each input whole: a long input needs its "
                   "full activations at once")
    if p.dtype == "float32" and p.device != "cpu":  # on CPU float32 is qembed's own choice (qembed.serving.cpu)
        out.append("`dtype: float32` doubles weight memory and is much slower; use it only to "
                   "compare numerics")
    return out


# -- the parser check ------------------------------------------------------------------------

# Runs in SGLang's interpreter exactly as the launch does (no `-I`, same environment), so the
# check sees the SGLang that will really run, be it from the venv, a user-site install or a
# PYTHONPATH checkout. (An isolated `-I` check could pass while the launch runs something else.)
# Reads a JSON list of argvs on stdin, writes one marked JSON line on stdout. For an accepted
# argv the row carries the parsed ServerArgs fields (a msgspec Struct in 0.5.23, a dataclass
# before), so tests can check that every value qembed sets arrives as meant. Secret fields
# (`*api_key`, `*password`, `watermark_key*`) come back as @REDACTED@ when set: the values never
# leave SGLang's interpreter. A value JSON cannot carry comes back as its repr.
_CHECK_SCRIPT = r"""
import contextlib, io, json, sys, time
_out = sys.stdout
def _fields(args):
    names = getattr(type(args), "__struct_fields__", None)
    if names is None:
        import dataclasses
        names = [f.name for f in dataclasses.fields(args)] if dataclasses.is_dataclass(args) else sorted(vars(args))
    out = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None and (name.endswith(("api_key", "password")) or name.startswith("watermark_key")):
            value = @REDACTED@
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        out[name] = value
    return out
try:
    from sglang.srt.server_args import prepare_server_args
except BaseException as exc:
    _out.write("QEMBED-CHECK " + json.dumps({"import_error": "%s: %s" % (type(exc).__name__, exc)}) + "\n")
    sys.exit(0)
results = []
for argv in json.load(sys.stdin):
    err, out = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    row = {"ok": False, "message": "", "exit_code": None, "crashed": False, "args": None}
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            parsed = prepare_server_args(list(argv))
        row["ok"] = True
        row["args"] = _fields(parsed)
    except SystemExit as exc:
        row["exit_code"] = exc.code if isinstance(exc.code, int) else 1
        lines = [l for l in err.getvalue().splitlines() if l.strip()]
        errs = [l for l in lines if "error:" in l]
        row["message"] = (errs or lines or ["exited with status %s" % exc.code])[-1].strip()
    except BaseException as exc:
        row["crashed"] = True
        row["message"] = "%s: %s" % (type(exc).__name__, exc)
    row["seconds"] = time.perf_counter() - t0
    results.append(row)
_out.write("QEMBED-CHECK " + json.dumps({"results": results}) + "\n")
""".replace("@REDACTED@", json.dumps(REDACTED))


@dataclass(frozen=True)
class ParserCheck:
    """What SGLang's own parser said about one argv."""

    ok: bool
    message: str  # argparse's `error:` line when rejected, the exception when it crashed
    seconds: float  # the parse itself (check_many) or the whole interpreter run (check_flags)
    exit_code: int | None = None  # 2 for an argparse rejection
    crashed: bool = False  # an exception other than SystemExit (e.g. `--log-level verbose`)
    #: the parsed ``ServerArgs`` fields when ``ok`` (``mem_fraction_static``, ``context_length``,
    #: ``is_embedding``, ``json_model_override_args``, ...); secrets set come back as ``[...]``
    args: dict[str, object] | None = field(default=None, repr=False, compare=False)
    #: the verdict came from :mod:`qembed.host.verdicts` (no SGLang import this time)
    cached: bool = False


def _missing_python(python: str) -> MissingDependency:
    return MissingDependency(
        f"no Python interpreter at `{python}` to run SGLang",
        hint="pass `--python PATH` (or set `QEMBED_SGLANG_PYTHON`) to the interpreter where "
        f"SGLang is installed, or `{INSTALL_HINT}`",
    )


def _run_checks(flag_lists: Sequence[Sequence[str]], *, python: str, timeout: float,
                env: Mapping[str, str] | None = None) -> list[dict[str, object]]:
    payload = json.dumps([list(map(str, f)) for f in flag_lists])
    env = dict(os.environ if env is None else env)
    try:
        proc = subprocess.run(
            [python, "-c", _CHECK_SCRIPT],
            input=payload, capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        raise _missing_python(python) from exc
    except subprocess.TimeoutExpired as exc:
        raise LaunchError(f"SGLang's parser check in `{python}` took longer than {timeout:.0f} s",
                          hint="check that interpreter by hand: "
                          f"`{python} -c 'import sglang.srt.server_args'`") from exc
    marked = [line for line in proc.stdout.splitlines() if line.startswith("QEMBED-CHECK ")]
    if not marked:
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-5:]
        raise LaunchError(f"SGLang's parser check in `{python}` failed (exit status {proc.returncode})",
                          details=tail, hint=f"run `{python} -c 'import sglang.srt.server_args'`")
    data = json.loads(marked[-1].removeprefix("QEMBED-CHECK "))
    if "import_error" in data:
        raise MissingDependency(
            f"SGLang cannot be imported in `{python}` ({data['import_error']})",
            hint=f"`{INSTALL_HINT}` in that environment, or pass `--python PATH` to an "
            "interpreter that has SGLang",
        )
    results: list[dict[str, object]] = data["results"]
    return results


def check_many(flag_lists: Sequence[Sequence[str]], *, python: str, timeout: float = 180.0,
               env: Mapping[str, str] | None = None) -> list[ParserCheck]:
    """Run many flag lists through ``prepare_server_args`` in ONE SGLang interpreter.

    Imports take about 3 s, each parse a few milliseconds, so tests check dozens of argvs in
    one call. ``flag_lists`` are server flags only (:func:`build_flags`), no entry point.

    Raises:
        MissingDependency: no interpreter at ``python``, or SGLang does not import there.
        LaunchError: the check itself failed or timed out.
    """
    if not flag_lists:
        return []
    rows = _run_checks(flag_lists, python=python, timeout=timeout, env=env)
    return [
        ParserCheck(ok=bool(r["ok"]), message=str(r["message"]), seconds=float(r["seconds"]),  # type: ignore[arg-type]
                    exit_code=r["exit_code"] if isinstance(r["exit_code"], int) else None,
                    crashed=bool(r["crashed"]),
                    args=dict(r["args"]) if isinstance(r.get("args"), dict) else None)  # type: ignore[call-overload]
        for r in rows
    ]


#: What a CLI says before the slow import, when no verdict is cached for this target (issue 23).
PARSER_IMPORT_NOTE = ("checking the flags with SGLang's own parser (first time for this SGLang install and "
                      "environment: it imports SGLang, 3-25 s) ...")


def verdict_source(result: ParserCheck) -> str:
    """How a verdict was reached, for a status line: ``cached verdict`` or ``3.2 s``."""
    return "cached verdict" if result.cached else f"{result.seconds:.1f} s"


def _verdict_key(flags: Sequence[str], python: str, env: Mapping[str, str]) -> str | None:
    from qembed.host import verdicts

    return verdicts.key(python, env, ["parser", *flags])


def _cached(cache_key: str, t0: float) -> ParserCheck | None:
    from qembed.host import verdicts

    hit = verdicts.load_verdict(cache_key)
    if hit is None or not isinstance(hit.get("ok"), bool) or not isinstance(hit.get("message"), str):
        return None
    args = hit.get("args")
    return ParserCheck(ok=hit["ok"], message=hit["message"], seconds=time.perf_counter() - t0,
                       exit_code=hit.get("exit_code") if isinstance(hit.get("exit_code"), int) else None,
                       args=args if isinstance(args, dict) else None, cached=True)


def _remember(cache_key: str, result: ParserCheck) -> None:
    from qembed.host import verdicts

    if not result.crashed:
        verdicts.store_verdict(cache_key, {"ok": result.ok, "message": result.message, "exit_code": result.exit_code,
                                   "args": result.args})


def check_flags(flags: Sequence[str], *, python: str, timeout: float = 180.0,
                env: Mapping[str, str] | None = None, cache: bool = True,
                on_import: Callable[[], None] | None = None) -> ParserCheck:
    """Run one flag list through SGLang's parser (``prepare_server_args``) in ``python``.

    ``seconds`` is the whole run, interpreter start and imports included (3-25 s). ``env``
    is the environment to run it in (default this process's; :func:`resolve_sglang` gives the
    launch's). With ``cache``, a verdict for the same SGLang target, installed SGLang and argv
    comes from :mod:`qembed.host.verdicts` without importing SGLang (``cached=True``); ``on_import``
    is called just before the slow import when there is no such verdict.
    """
    t0 = time.perf_counter()
    full_env = dict(os.environ if env is None else env)
    cache_key = _verdict_key(flags, python, full_env) if cache else None
    if cache_key is not None and (hit := _cached(cache_key, t0)) is not None:
        return hit
    if on_import is not None:
        on_import()
    (result,) = check_many([list(flags)], python=python, timeout=timeout, env=full_env)
    result = ParserCheck(ok=result.ok, message=result.message, seconds=time.perf_counter() - t0,
                         exit_code=result.exit_code, crashed=result.crashed, args=result.args)
    if cache_key is not None:
        _remember(cache_key, result)
    return result


def launch_verdict(flags: Sequence[str], *, python: str, env: Mapping[str, str]) -> str | None:
    """The launch's parser check, without paying SGLang's import twice (issue 23).

    * a cached verdict for this target, install and argv: used (a rejection raises at once);
    * an install that can be fingerprinted but no verdict yet: no pre-check. The server's own
      parser runs before anything loads, in the same seconds the check would take, and a rejection
      comes back from the readiness wait as :class:`FlagsRejected`;
    * otherwise (no SGLang there, no RECORD): the pre-check runs, and says what is wrong.

    Returns:
        the cache key to store the verdict under once the server is ready
        (:func:`remember_accepted`), when nothing was known yet; else ``None``.

    Raises:
        FlagsRejected, MissingDependency: as :func:`ensure_accepted`.
    """
    t0 = time.perf_counter()
    cache_key = _verdict_key(flags, python, env)
    if cache_key is None:
        ensure_accepted(flags, python=python, env=env)
        return None
    hit = _cached(cache_key, t0)
    if hit is None:
        return cache_key
    if not hit.ok:
        raise rejected_error(flags, hit)
    return None


def remember_accepted(cache_key: str) -> None:
    """Store "accepted" for a launch's argv once SGLang got past its parser (it became ready)."""
    _remember(cache_key, ParserCheck(ok=True, message="", seconds=0.0))


def _habit_hint(message: str) -> str | None:
    for flag, use in HABIT_FLAGS.items():
        if flag in message.split() or f"{flag}," in message or f"{flag}:" in message:
            return f"`{flag}` is a vLLM/TEI habit; use {use}"
    return None


def ensure_accepted(flags: Sequence[str], *, python: str, env: Mapping[str, str],
                    on_import: Callable[[], None] | None = None) -> ParserCheck:
    """Fail in seconds, not after a model load, when SGLang would reject ``flags``.

    ``on_import``: see :func:`check_flags` (a verdict cached for this target costs no import).

    Raises:
        FlagsRejected: the parser rejected or crashed on the flags (message quotes it).
        MissingDependency: no SGLang in ``python``.
    """
    result = check_flags(flags, python=python, env=env, on_import=on_import)
    if result.ok:
        return result
    raise rejected_error(flags, result)


def rejected_error(flags: Sequence[str], result: ParserCheck) -> FlagsRejected:
    """The one error for an argv SGLang's parser rejected (or crashed on)."""
    shown = " ".join(shlex.quote(a) for a in redact_argv(list(flags)))
    if result.crashed:
        return FlagsRejected(
            f"SGLang's argument parser crashed on the command line: {result.message}",
            details=[f"flags: {shown}"],
            hint="check the profile values it names; `qembed profiles show PROFILE` prints the flags",
        )
    return FlagsRejected(
        f"SGLang rejected the command line: {result.message}",
        details=[f"flags: {shown}"],
        hint=_habit_hint(result.message)
        or "fix `extra_args` in the profile (or `--set`); `sglang serve --help` lists the flags",
    )


_VERSION_SCRIPT = (
    "import importlib.metadata as m\n"
    "try:\n    print(m.version('sglang'))\n"
    "except m.PackageNotFoundError:\n    print('')\n"
)


def installed_sglang_version(python: str) -> str | None:
    """SGLang's version in ``python`` from its package metadata (no ``import sglang``), or
    ``None`` when it is not installed or the interpreter does not run."""
    try:
        proc = subprocess.run([python, "-c", _VERSION_SCRIPT], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return version or None if proc.returncode == 0 else None


__all__ = [
    "ENTRY_ARGS",
    "PARSER_IMPORT_NOTE",
    "LaunchCommand",
    "ParserCheck",
    "SGLangTarget",
    "build_command",
    "build_env",
    "build_flags",
    "check_flags",
    "check_many",
    "ensure_accepted",
    "installed_sglang_version",
    "keyed_argv",
    "keyed_entry_args",
    "launch_verdict",
    "merge_no_proxy",
    "profile_warnings",
    "rejected_error",
    "remember_accepted",
    "resolve_sglang",
    "sglang_python",
    "verdict_source",
]
