"""``qembed doctor``'s probe subprocess: what the target interpreter has installed (torch, SGLang,
transformers, ...), read from package metadata without importing them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:

    pass


# Runs in the target interpreter as the launch does (no -I). It imports neither torch nor sglang: versions come
# from package metadata, torch's CUDA build from torch/version.py read as text.
_PROBE = r"""
import importlib.metadata as md, importlib.util as iu, json, os, platform, re, sys
out = {"python": platform.python_version(), "executable": sys.executable}
def ver(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
for name in ("torch", "sglang", "transformers", "flashinfer-python", "sglang-kernel", "sentence-transformers"):
    out[name] = ver(name)
out["torch_cuda"] = None
try:
    spec = iu.find_spec("torch")
    if spec and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "version.py")
        text = open(path, encoding="utf-8").read()
        m = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
        out["torch_cuda"] = m.group(1) if m else None
except Exception as exc:
    out["torch_cuda_error"] = str(exc)
out["sglang_spec"] = iu.find_spec("sglang") is not None
print("QEMBED-PROBE " + json.dumps(out))
"""


@dataclass(frozen=True)
class Probe:
    """What the target interpreter has installed."""

    python: str  # the interpreter path asked for
    ok: bool
    error: str | None = None
    python_version: str | None = None
    executable: str | None = None
    torch: str | None = None
    torch_cuda: str | None = None  # "13.0", or None for a CPU-only build
    sglang: str | None = None
    transformers: str | None = None
    flashinfer: str | None = None
    sentence_transformers: str | None = None  # the reference engine (`engine: reference`)
    seconds: float = 0.0


def run_probe(python: str, *, timeout: float = 60.0, env: Mapping[str, str] | None = None) -> Probe:
    """Run the probe in ``python`` and parse its JSON line. Never raises.

    ``env`` is the environment SGLang would run with (:func:`qembed.serving.sglang_args.resolve_sglang`;
    default this process's): ``PYTHONPATH`` and the rest are kept, as the launch keeps them, so
    the probe sees the packages the launch will import.
    """
    t0 = time.perf_counter()
    env = dict(os.environ if env is None else env)
    try:
        proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(python, False, error=f"cannot run `{python}`: {exc}")
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("QEMBED-PROBE ")), None)
    if line is None:
        tail = " ".join(proc.stderr.strip().splitlines()[-2:])
        return Probe(python, False, error=f"`{python}` exited {proc.returncode}: {tail}")
    d = json.loads(line.removeprefix("QEMBED-PROBE "))
    return Probe(python, True, python_version=d.get("python"), executable=d.get("executable"),
                 torch=d.get("torch"), torch_cuda=d.get("torch_cuda"), sglang=d.get("sglang"),
                 transformers=d.get("transformers"), flashinfer=d.get("flashinfer-python"),
                 sentence_transformers=d.get("sentence-transformers"),
                 seconds=time.perf_counter() - t0)


__all__ = ["Probe", "run_probe"]
