"""Adapters that make LLM frameworks give the model card's vectors.

* :mod:`qembed.integrations.langchain`: ``QembedEmbeddings``, a LangChain ``Embeddings``
  (``pip install 'qembed[langchain]'``).
* :mod:`qembed.integrations.llamaindex`: ``QembedEmbedding``, a LlamaIndex ``BaseEmbedding``
  (``pip install 'qembed[llamaindex]'``).

Both go through :class:`qembed.Client` / :class:`qembed.AsyncClient`, so they send text (never
token ids: SGLang's tokenizer then appends the EOS that last-token pooling reads), keep newlines,
put the official instruction on queries only, and reuse the client's batching, retries and
Matryoshka ``dimensions``. The stock OpenAI classes of both frameworks get one of these wrong
(docs/client.md, "LangChain" and "LlamaIndex").

This package imports neither framework; import the submodule you need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qembed.errors import MissingDependency
from qembed.instructions import resolve_instruction

if TYPE_CHECKING:
    from qembed.client.drivers import AsyncClient, Client

__all__: list[str] = []


def missing(package: str, extra: str) -> MissingDependency:
    """The error raised when a framework adapter is imported without its framework."""
    return MissingDependency(
        f"`qembed.integrations.{extra}` needs the `{package}` package",
        hint=f"pip install 'qembed[{extra}]'",
    )


def client_kwargs(
    *,
    api_key: str | None,
    model: str | None,
    timeout: float | None,
    max_retries: int,
    backoff: float,
    concurrency: int,
    batch_size: int,
    batch_tokens: int,
    headers: dict[str, str] | None,
) -> dict[str, Any]:
    """The :class:`qembed.Client` options both adapters accept; ``timeout=None`` = the client's."""
    from qembed.client.flow import USE_CLIENT_DEFAULT

    # on_error="raise": a framework expects one vector per input, in order; "skip" would shift
    # rows silently.
    return {
        "api_key": api_key,
        "model": model,
        "timeout": USE_CLIENT_DEFAULT if timeout is None else timeout,
        "max_retries": max_retries,
        "backoff": backoff,
        "concurrency": concurrency,
        "batch_size": batch_size,
        "batch_tokens": batch_tokens,
        "headers": headers,
        "on_error": "raise",
    }


class Sides:
    """What the query side and the document side send, from ``task`` and ``instruction``.

    Queries get ``instruction`` if given, else the ``task`` preset's (validated here, so a typo
    fails at construction, not at the first query). Documents get no instruction, except for a
    symmetric preset (``sts``, ``bitext``, ...) with no custom ``instruction``, as in
    :meth:`qembed.Client.embed_documents`. Both go through :meth:`qembed.Client.embed_texts`, so
    a query with neither ``task`` nor ``instruction`` gets the client's default task.
    """

    def __init__(self, task: str | None, instruction: str | None) -> None:
        resolve_instruction(task, instruction)  # raises InputError on an unknown task
        self.task = task
        self.instruction = instruction
        self.document_task = task if instruction is None else None

    def embed_queries(self, client: Client, texts: list[str], dimensions: int | None) -> list[list[float]]:
        return _rows(client.embed_texts(texts, kind="query", task=self.task, instruction=self.instruction,
                                        dimensions=dimensions))

    def embed_documents(self, client: Client, texts: list[str], dimensions: int | None) -> list[list[float]]:
        return _rows(client.embed_texts(texts, kind="document", task=self.document_task, dimensions=dimensions))

    async def aembed_queries(self, make: Callable[[], AsyncClient], texts: list[str],
                             dimensions: int | None) -> list[list[float]]:
        # A fresh AsyncClient per call: its HTTP session belongs to the running event loop, and
        # a framework may call from several loops (asyncio.run per request, worker threads).
        async with make() as client:
            return _rows(await client.embed_texts(texts, kind="query", task=self.task,
                                                  instruction=self.instruction, dimensions=dimensions))

    async def aembed_documents(self, make: Callable[[], AsyncClient], texts: list[str],
                               dimensions: int | None) -> list[list[float]]:
        async with make() as client:
            return _rows(await client.embed_texts(texts, kind="document", task=self.document_task,
                                                  dimensions=dimensions))


def _rows(vectors: Any) -> list[list[float]]:
    rows: list[list[float]] = vectors.tolist()
    return rows
