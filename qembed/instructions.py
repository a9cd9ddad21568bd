"""Qwen3-Embedding instructions: the exact text the model was trained on.

Queries are sent as ``Instruct: {task}\\nQuery:{text}`` (no space after ``Query:``, as in the
official examples and ``evaluation/run_mteb.sh``); retrieval documents are sent as they are.
Symmetric tasks (semantic similarity, bitext, classification, clustering) put the instruction on
*every* text, because the official evaluation does (QwenLM ``evaluation/qwen3_embedding_model.py``).

Texts always reach the server as text, never token ids: SGLang's tokenizer appends the
``<|endoftext|>`` (id 151643) EOS that last-token pooling reads. A caller that sends token ids
itself must append 151643, or the vectors are wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from qembed.errors import InputError

QUERY_TEMPLATE = "Instruct: {task}\nQuery:{text}"
#: the task of a query that names neither a task nor an instruction (the model card's default):
#: ``format_query``, ``Client.embed_queries``, ``Client.embed_texts(kind="query")`` (and so
#: ``qembed embed --query``, bulk jobs) and the framework adapters
DEFAULT_QUERY_TASK = "retrieval"


@dataclass(frozen=True)
class Task:
    """A preset: the instruction and whether it also applies to the document side."""

    name: str
    instruction: str
    symmetric: bool
    source: str


# Texts are the official ones from QwenLM/Qwen3-Embedding (README and
# evaluation/task_prompts.json, mirrored in mteb's models/model_implementations/qwen3_models.py).
# Classification and clustering prompts are per data set upstream; the presets below take the
# most generic official wording and adapt "news headline/articles" to "text(s)" (marked so).
_PRESETS: tuple[Task, ...] = (
    Task("retrieval", "Given a web search query, retrieve relevant passages that answer the query",
         False, "README default; task_prompts.json MSMARCO"),
    Task("sts", "Retrieve semantically similar text", True,
         "qwen3_embedding_model.py STS/PairClassification rule; task_prompts.json STS12"),
    Task("bitext", "Retrieve parallel sentences", True,
         "qwen3_embedding_model.py Bitext rule; task_prompts.json BUCC.v2"),
    Task("code", "Given a question about coding, retrieval code or passage that can solve user's question",
         False, "task_prompts.json CosQA / StackOverflowQA (verbatim, grammar included)"),
    Task("classification", "Classify the topic or theme of the given text", True,
         "adapted from task_prompts.json HeadlineClassification"),
    Task("clustering", "Identify the topic or theme of the given texts", True,
         "adapted from task_prompts.json TwentyNewsgroupsClustering"),
)

_ALIASES = {
    "similarity": "sts",
    "semantic-similarity": "sts",
    "semantic_similarity": "sts",
    "code-search": "code",
    "code_search": "code",
    "search": "retrieval",
}

#: preset name -> official instruction text
TASKS: dict[str, str] = {t.name: t.instruction for t in _PRESETS}
PRESETS: dict[str, Task] = {t.name: t for t in _PRESETS}


def get_task(name: str) -> Task:
    """The preset called ``name`` (aliases such as ``similarity`` accepted)."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    try:
        return PRESETS[key]
    except KeyError:
        raise InputError(
            f"unknown task `{name}`",
            hint=f"use one of {', '.join(sorted(PRESETS))}, or pass your own text with `--instruction`",
        ) from None


def resolve_instruction(task: str | None = None, instruction: str | None = None) -> str | None:
    """A custom ``instruction`` wins over the ``task`` preset; ``None`` means no instruction."""
    if instruction is not None:
        text = instruction.strip()
        if not text:
            raise InputError("the instruction is empty", hint="drop `--instruction` or give it text")
        return text
    if task is None:
        return None
    return get_task(task).instruction


def format_query(text: str, *, task: str | None = DEFAULT_QUERY_TASK, instruction: str | None = None) -> str:
    """Format one query the way Qwen3-Embedding was trained.

    Args:
        text: the query.
        task: a preset name from :data:`TASKS` (ignored when ``instruction`` is given).
        instruction: a custom one-sentence task description (English works best).

    Returns:
        ``"Instruct: {instruction}\\nQuery:{text}"``, or ``text`` when there is no instruction.

    Example:
        >>> format_query("what is MRL?")
        'Instruct: Given a web search query, retrieve relevant passages that answer the query\\nQuery:what is MRL?'
    """
    inst = resolve_instruction(task, instruction)
    return text if inst is None else QUERY_TEMPLATE.format(task=inst, text=text)


def format_document(text: str, *, task: str | None = None) -> str:
    """Documents carry no instruction, except for symmetric tasks (sts, bitext, ...)."""
    if task is None or not get_task(task).symmetric:
        return text
    return format_query(text, task=task)


def apply_prefix(text: str, prefix: str) -> str:
    """Prepend a raw prefix, e.g. ``"Represent the document for retrieval: "``.

    This is *not* the format Qwen3-Embedding was trained on; it is here for users who want
    another guide's prefix style and accept the (usually small) loss.
    """
    return prefix + text
