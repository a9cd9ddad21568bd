"""``QembedEmbedding``: a LlamaIndex ``BaseEmbedding`` that gives the Qwen3-Embedding model
card's vectors from a qembed / SGLang server.

LlamaIndex's ``OpenAIEmbedding`` and ``OpenAILikeEmbedding`` replace every ``"\\n"`` with a space,
which changes every document with a newline and every instructed query (the instruction itself
ends in ``\\n``). This class sends text unchanged through :class:`qembed.Client`, with the
official instruction on queries only.

Example:
    >>> from llama_index.core import VectorStoreIndex                    # doctest: +SKIP
    >>> from llama_index.core.schema import TextNode
    >>> from qembed.integrations.llamaindex import QembedEmbedding
    >>> embed = QembedEmbedding(url="http://127.0.0.1:30000")
    >>> index = VectorStoreIndex([TextNode(text="Paris is the capital of France.")], embed_model=embed)
    >>> index.as_retriever(similarity_top_k=1).retrieve("capital of France?")
"""

from __future__ import annotations

import weakref
from typing import Any, Literal

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
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise missing("llama-index-core", "llamaindex") from exc

__all__ = ["QembedEmbedding"]


class QembedEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from a qembed (SGLang) server, as the model card computes them.

    Query embeddings (``get_query_embedding``) carry ``Instruct: {instruction}\\nQuery:``; text
    embeddings (``get_text_embedding``, ``get_text_embedding_batch``, what indexing calls) do
    not. Text is sent unchanged, newlines included. The async methods use
    :class:`qembed.AsyncClient`.

    Args:
        url: server URL; default ``QEMBED_URL``, then the server ``qembed serve --detach``
            recorded, then ``http://127.0.0.1:30000`` (a trailing ``/v1`` is accepted).
        api_key: default ``QEMBED_API_KEY``; never shown in ``repr`` or payloads.
        model: model name to send; default the server's own.
        task: instruction preset for queries (see ``qembed.TASKS``); a symmetric preset
            (``sts``, ...) also instructs texts.
        instruction: a custom one-sentence task description for queries; wins over ``task``.
        dimensions: Matryoshka size (32 .. the model's full size); default the full vector.
        embed_batch_size: texts LlamaIndex hands over per call (qembed then splits them into
            requests of ``batch_size`` texts, ``concurrency`` in flight).
        http, timeout, max_retries, backoff, concurrency, batch_size, batch_tokens, headers:
            as for :class:`qembed.Client` (``timeout=None``: its default).
    """

    model_name: str = Field(default="qembed", description="A label for this embedding model.")
    embed_batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0, le=2048,
                                  description="Texts per call to the qembed client.")
    url: str | None = Field(default=None, description="The qembed / SGLang server URL.")
    api_key: str | None = Field(default=None, exclude=True, repr=False)
    model: str | None = Field(default=None, description="Model name sent to the server.")
    task: str | None = Field(default=DEFAULT_QUERY_TASK, description="Query instruction preset.")
    instruction: str | None = Field(default=None, description="Custom query instruction.")
    dimensions: int | None = Field(default=None, description="Matryoshka size.")
    http: Literal["auto", "httpx", "aiohttp"] = Field(default="auto")
    timeout: float | None = Field(default=None)
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0)
    backoff: float = Field(default=DEFAULT_BACKOFF, ge=0)
    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1)
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1)
    batch_tokens: int = Field(default=DEFAULT_BATCH_TOKENS, ge=1)
    headers: dict[str, str] | None = Field(default=None, exclude=True, repr=False)

    _client: Client = PrivateAttr()
    _sides: Sides = PrivateAttr()
    _async_kwargs: dict[str, Any] = PrivateAttr()
    _finalizer: weakref.finalize[Any, Any] = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        self._sides = Sides(self.task, self.instruction)
        kwargs = client_kwargs(api_key=self.api_key, model=self.model, timeout=self.timeout,
                               max_retries=self.max_retries, backoff=self.backoff,
                               concurrency=self.concurrency, batch_size=self.batch_size,
                               batch_tokens=self.batch_tokens, headers=self.headers)
        self._client = Client(self.url, http=self.http, **kwargs)
        # frameworks never close an embeddings object: close the client (connections, its
        # event-loop thread) when this one is collected or the interpreter exits, quietly
        self._finalizer = weakref.finalize(self, self._client.close)
        self._async_kwargs = {**kwargs, "api_key": self._client.api_key, "model": self._client.model}

    @classmethod
    def class_name(cls) -> str:
        return "QembedEmbedding"

    # -- queries: with the instruction ------------------------------------------------------

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._sides.embed_queries(self._client, [query], self.dimensions)[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._sides.aembed_queries(self._async_client, [query], self.dimensions))[0]

    # -- texts (documents): as they are ----------------------------------------------------

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._sides.embed_documents(self._client, [text], self.dimensions)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._sides.embed_documents(self._client, list(texts), self.dimensions)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._sides.aembed_documents(self._async_client, [text], self.dimensions))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._sides.aembed_documents(self._async_client, list(texts), self.dimensions)

    def _async_client(self) -> AsyncClient:
        return AsyncClient(self._client.base_url, http=self.http, **self._async_kwargs)

    def close(self) -> None:
        """Close the sync client's connections and its background thread (also done when this
        object is collected, or at exit)."""
        self._finalizer()
