"""qembed: serve and use Qwen3-Embedding models on NVIDIA GPUs with SGLang.

The public API is imported lazily (module ``__getattr__``) so that ``import qembed`` and
``qembed --help`` stay fast; numpy and httpx load only when a client is created.

Example:
    >>> import qembed
    >>> client = qembed.Client("http://127.0.0.1:30000")          # doctest: +SKIP
    >>> q = client.embed_queries(["what is the capital of France?"])  # doctest: +SKIP
    >>> d = client.embed_documents(["Paris is the capital of France."])  # doctest: +SKIP
    >>> float(q @ d.T)                                              # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from qembed._version import __version__

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "Client": "qembed.client.drivers",
    "AsyncClient": "qembed.client.drivers",
    "Embeddings": "qembed.client.results",
    "TASKS": "qembed.instructions",
    "format_query": "qembed.instructions",
    "Profile": "qembed.serving.profiles.model",
    "load_profile": "qembed.serving.profiles.resolve",
    "QembedError": "qembed.errors",
    "ProfileError": "qembed.errors",
    "ConfigError": "qembed.errors",
    "MissingDependency": "qembed.errors",
    "GPUError": "qembed.errors",
    "LaunchError": "qembed.errors",
    "FlagsRejected": "qembed.errors",
    "PortInUse": "qembed.errors",
    "ServerExited": "qembed.errors",
    "NotReady": "qembed.errors",
    "ServerUnreachable": "qembed.errors",
    "ServerError": "qembed.errors",
    "BadReply": "qembed.errors",
    "InputError": "qembed.errors",
    "StorageError": "qembed.errors",
    "ExitCode": "qembed.errors",
}

__all__ = [
    "TASKS",
    "AsyncClient",
    "BadReply",
    "Client",
    "ConfigError",
    "Embeddings",
    "ExitCode",
    "FlagsRejected",
    "GPUError",
    "InputError",
    "LaunchError",
    "MissingDependency",
    "NotReady",
    "PortInUse",
    "Profile",
    "ProfileError",
    "QembedError",
    "ServerError",
    "ServerExited",
    "ServerUnreachable",
    "StorageError",
    "__version__",
    "format_query",
    "load_profile",
]

if TYPE_CHECKING:
    from qembed.client.drivers import AsyncClient, Client
    from qembed.client.results import Embeddings
    from qembed.errors import (
        BadReply,
        ConfigError,
        ExitCode,
        FlagsRejected,
        GPUError,
        InputError,
        LaunchError,
        MissingDependency,
        NotReady,
        PortInUse,
        ProfileError,
        QembedError,
        ServerError,
        ServerExited,
        ServerUnreachable,
        StorageError,
    )
    from qembed.instructions import TASKS, format_query
    from qembed.serving.profiles.model import Profile
    from qembed.serving.profiles.resolve import load_profile


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qembed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
