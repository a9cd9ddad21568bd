"""Test support for this machine only: never shipped, never imported by qembed.

SGLang's CPU mode needs ``sgl_kernel`` compiled for CPU (SGLang's Xeon image, or the source build
in its ``docs/platforms/cpu_server.md``). PyPI has no such build, and its C++ source can't be
built here. Without the compiled CPU kernels SGLang serves Qwen3 on its plain-PyTorch path
(``torch_native`` attention, ``forward_native`` norms and rotary), which calls exactly one
``torch.ops.sgl_kernel`` op (``../shared/reference/sglang-cpu-engine.md``)::

    assign_req_to_token_pool_cpu(Tensor req_pool_indices, Tensor(a!) req_to_token,
                                 Tensor start_offset, Tensor end_offset,
                                 Tensor out_cache_loc, int pool_len) -> ()

PyPI's ``sglang-kernel`` 0.4.10 (the version sglang pins) has importable Python files, but its
compiled ``common_ops`` is a CUDA build that needs ``libcuda.so.1``. ``sgl_kernel/__init__.py``
tries that build, then falls back to ``import common_ops``; this hook answers that import with an
empty module, so ``import sgl_kernel`` succeeds with no compiled op at all, as it would with
SGLang's CPU build before the op below is added.

This module defines that op in Python with ``torch.library``. ``scripts/setup_sglang.sh`` copies
it into the test SGLang venv with a ``.pth`` line that registers an import hook: the op is
defined right after ``import sgl_kernel``, and only then, so a plain ``python`` start in that venv
(the parser checks) does not import torch. The launch code that runs is SGLang's own, and
qembed's check for the CPU build (``torch.ops.sgl_kernel.assign_req_to_token_pool_cpu`` resolves
after ``import sgl_kernel``) passes in that venv as it would with the real CPU build.

What it stands in for: ``sgl-kernel/csrc/cpu`` ``assign_req_to_token_pool_cpu``, the C++ kernel
of SGLang's CPU build. Everything else that kernel build provides (AMX GEMMs, ``intel_amx``
attention, fused norms) is absent, and SGLang takes its torch-native path.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

OP = "assign_req_to_token_pool_cpu"
SCHEMA = (f"{OP}(Tensor req_pool_indices, Tensor(a!) req_to_token, Tensor start_offset, "
          "Tensor end_offset, Tensor out_cache_loc, int pool_len) -> ()")
_LIB: Any = None  # the torch.library.Library must stay alive for the op to stay registered


def _assign(req_pool_indices: Any, req_to_token: Any, start_offset: Any, end_offset: Any,
            out_cache_loc: Any, pool_len: int) -> None:
    """For request i: ``req_to_token[req_pool_indices[i], start_i:end_i] =
    out_cache_loc[prefix_i : prefix_i + (end_i - start_i)]``, prefix_i the running sum of the
    earlier lengths."""
    starts = start_offset.tolist()
    ends = end_offset.tolist()
    rows = req_pool_indices.tolist()
    src = out_cache_loc.to(req_to_token.dtype)
    prefix = 0
    for row, start, end in zip(rows, starts, ends, strict=True):
        n = end - start
        if n > 0:
            req_to_token[row, start:end] = src[prefix:prefix + n]
        prefix += n


def register() -> None:
    """Define the op under ``sgl_kernel`` unless a CPU kernel for it is already there."""
    global _LIB
    import torch

    name = f"sgl_kernel::{OP}"
    exists = torch._C._dispatch_has_kernel(name)
    if exists and torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"):
        return
    lib = torch.library.Library("sgl_kernel", "FRAGMENT")
    if not exists:  # else a CUDA-only build registered the schema: add the CPU kernel only
        lib.define(SCHEMA)
    lib.impl(OP, _assign, "CPU")
    _LIB = lib


class _EmptyModule(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__doc__ = "qembed test support: no compiled sgl_kernel ops on this machine"
        module.__file__ = __file__


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs :func:`register` right after ``sgl_kernel`` finishes importing."""

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "common_ops":  # sgl_kernel's last fallback for its compiled library
            return importlib.util.spec_from_loader(fullname, _EmptyModule())
        if fullname != "sgl_kernel":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module  # type: ignore[attr-defined]

        def exec_module(module: ModuleType) -> None:
            original(module)
            register()

        loader.exec_module = exec_module  # type: ignore[attr-defined]
        return spec


def install() -> None:
    if not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
