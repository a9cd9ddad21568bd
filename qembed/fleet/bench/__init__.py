"""``qembed bench``: a server benchmark (sweep) and a comparison with the plain openai SDK.

The sweep crosses concurrency x inputs per request x input length. Each cell sends a warm-up
(excluded), then a fixed number of requests or as many as fit in a duration, from an async load
generator on the client's transports (aiohttp when installed, else httpx; proxies ignored),
always with ``encoding_format: "base64"``. It reports requests/s, texts/s, tokens/s (from the
server's ``usage``), latency p50/p95/p99, errors, and, when the GPU is known, MFU = tokens/s x
FLOPs per token / the GPU's dense bf16 peak.

Inputs are seeded synthetic multilingual text (EN/ZH/ES/AR/JA/code word pools). They are sized
with the model's tokenizer when it is on disk (transformers, offline), else with the estimate
"4 UTF-8 bytes per token + 1 EOS" (:func:`qembed.client.flow.estimate_tokens`). Every text starts with its own
index, so no two inputs share a prefix: SGLang's radix cache stays on for embeddings and would
otherwise serve repeated inputs from cache (a figure above 100 % MFU is that artefact).

FLOPs per token follow ``../shared/reference/performance.md`` section 2.1:
``2 x matmul params + 4 x layers x ctx x head_dim x heads`` with ctx = the input length (the PaLM
MFU convention; causal attention really does about half of the second term).

Layout, one concern per module:

* :mod:`.sweep`: the axes, :class:`BenchOptions`, :func:`run_bench`, the quick/full presets, and
  :func:`launched` (a server from a profile for the run);
* :mod:`.load`: the load generator over :mod:`qembed.transport`;
* :mod:`.texts`: the synthetic inputs and the offline tokenizer;
* :mod:`.report`: cells, results, :class:`BenchReport`, :func:`percentile`;
* :mod:`.compare`: ``--compare`` against the openai SDK;
* :mod:`.shared`: the ``/v1/models`` probe and the local GPU's name;
* FLOPs and MFU live next to :class:`qembed.models.ModelShape`, GPU peaks in
  :data:`qembed.serving.gpu.GPU_CLASSES` (:func:`qembed.serving.gpu.gpu_peak`).

Import each name from the module that defines it (this package re-exports nothing).
This package never prints. Numbers go back as dataclasses; ``qembed.output`` renders them.
"""

from __future__ import annotations

__all__: list[str] = []
