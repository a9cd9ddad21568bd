"""``QembedEmbeddings``: a LangChain ``Embeddings`` that gives the Qwen3-Embedding model card's
vectors from a qembed / SGLang server.

LangChain's stock ``OpenAIEmbeddings`` tokenizes with tiktoken and sends token ids (no EOS, and
Qwen reads them as other tokens), and its ``embed_query`` adds no query instruction. This class
sends text through :class:`qembed.Client`, with the official instruction on queries only.

Example:
    >>> from langchain_core.vectorstores import InMemoryVectorStore      # doctest: +SKIP
    >>> from qembed.integrations.langchain import QembedEmbeddings
    >>> store = InMemoryVectorStore(QembedEmbeddings(url="http://127.0.0.1:30000"))
    >>> store.add_texts(["Paris is the capital of France.", "Madrid is in Spain."])
    >>> store.as_retriever(search_kwargs={"k": 1}).invoke("capital of France?")
"""

from __future__ import annotations

import weakref
from typing import Literal

from qembed.client.drivers import AsyncClient, Client
from qembed.client.flow import (
    DEFAULT_BACKOFF,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_TOKENS,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
)
from qembed.instructions import DEFAULT_QUERY_TASK
from qembed.integrations import Sides, client_kwargs, missing

try:
    from langchain_core.embeddings import Embeddings
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise missing("langchain-core", "langchain") from exc

__all__ = ["QembedEmbeddings"]


class QembedEmbeddings(Embeddings):
    """LangChain embeddings from a qembed (SGLang) server, as the model card computes them.

    ``embed_documents`` sends the texts as they are; ``embed_query`` sends
    ``Instruct: {instruction}\\nQuery:{text}``. The ``a*`` methods use :class:`qembed.AsyncClient`.

    Args:
        url: server URL; default ``QEMBED_URL``, then the server ``qembed serve --detach``
            recorded, then ``http://127.0.0.1:30000`` (a trailing ``/v1`` is accepted).
        api_key: default ``QEMBED_API_KEY``.
        model: model name to send; default the server's own.
        task: instruction preset for queries (``retrieval``, ``code``, ``sts``, ...; see
            ``qembed.TASKS``). A symmetric preset (``sts``, ``bitext``, ``classification``,
            ``clustering``) also instructs documents.
        instruction: a custom one-sentence task description for queries; wins over ``task``.
        dimensions: Matryoshka size (32 .. the model's full size); default the full vector.
        http, timeout, max_retries, backoff, concurrency, batch_size, batch_tokens, headers:
            as for :class:`qembed.Client` (``timeout=None``: its default).

    Raises:
        InputError: an unknown ``task`` (at construction); a blank or too long text, or bad
            ``dimensions`` (at the call).
        ServerUnreachable, ServerError: as :class:`qembed.Client`.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        task: str | None = DEFAULT_QUERY_TASK,
        instruction: str | None = None,
        dimensions: int | None = None,
        http: Literal["auto", "httpx", "aiohttp"] = "auto",
        timeout: float | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._sides = Sides(task, instruction)
        self.dimensions = dimensions
        kwargs = client_kwargs(api_key=api_key, model=model, timeout=timeout,
                               max_retries=max_retries, backoff=backoff, concurrency=concurrency,
                               batch_size=batch_size, batch_tokens=batch_tokens, headers=headers)
        self._client = Client(url, http=http, **kwargs)
        # frameworks never close an embeddings object: close the client (connections, its
        # event-loop thread) when this one is collected or the interpreter exits, quietly
        self._finalizer = weakref.finalize(self, self._client.close)
        # the async clients use what the sync one resolved (URL, key from a recorded server)
        self._async_kwargs = {**kwargs, "api_key": self._client.api_key, "model": self._client.model}
        self._http = http

    @property
    def url(self) -> str:
        return self._client.base_url

    @property
    def task(self) -> str | None:
        return self._sides.task

    @property
    def instruction(self) -> str | None:
        return self._sides.instruction

    def __repr__(self) -> str:  # never the API key
        return (f"QembedEmbeddings(url={self.url!r}, task={self.task!r}, "
                f"instruction={self.instruction!r}, dimensions={self.dimensions!r})")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents as they are (no instruction, except for a symmetric ``task``)."""
        return self._sides.embed_documents(self._client, list(texts), self.dimensions)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query with the instruction, in the format the model was trained on."""
        return self._sides.embed_queries(self._client, [text], self.dimensions)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await self._sides.aembed_documents(self._async_client, list(texts), self.dimensions)

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._sides.aembed_queries(self._async_client, [text], self.dimensions))[0]

    def _async_client(self) -> AsyncClient:
        return AsyncClient(self._client.base_url, http=self._http, **self._async_kwargs)

    def close(self) -> None:
        """Close the sync client's connections and its background thread (also done when this
        object is collected, or at exit)."""
        self._finalizer()

    def __enter__(self) -> QembedEmbeddings:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
