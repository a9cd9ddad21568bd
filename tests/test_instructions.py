"""Known-answer tests: the exact text Qwen3-Embedding was trained on."""

from __future__ import annotations

import pytest

from qembed.errors import InputError
from qembed.instructions import TASKS, apply_prefix, format_document, format_query, get_task


def test_default_query_is_the_readme_retrieval_instruction_without_space_after_query() -> None:
    assert format_query("what is the capital of China?") == (
        "Instruct: Given a web search query, retrieve relevant passages that answer the query\n"
        "Query:what is the capital of China?"
    )


@pytest.mark.parametrize(
    ("task", "text"),
    [
        ("retrieval", "Given a web search query, retrieve relevant passages that answer the query"),
        ("sts", "Retrieve semantically similar text"),
        ("similarity", "Retrieve semantically similar text"),
        ("bitext", "Retrieve parallel sentences"),
        ("code", "Given a question about coding, retrieval code or passage that can solve user's question"),
    ],
)
def test_official_preset_texts(task: str, text: str) -> None:
    assert get_task(task).instruction == text
    assert format_query("x", task=task) == f"Instruct: {text}\nQuery:x"


def test_custom_instruction_wins_and_is_stripped() -> None:
    assert format_query("q", task="sts", instruction="  Find the fix  ") == "Instruct: Find the fix\nQuery:q"


def test_documents_get_no_instruction_but_symmetric_tasks_apply_to_both_sides() -> None:
    assert format_document("Paris is in France.") == "Paris is in France."
    assert format_document("Paris is in France.", task="retrieval") == "Paris is in France."
    assert format_document("a cat", task="sts") == "Instruct: Retrieve semantically similar text\nQuery:a cat"
    assert format_document("a cat", task="bitext") == format_query("a cat", task="bitext")


def test_no_task_means_raw_text_and_prefix_is_verbatim() -> None:
    assert format_query("q", task=None) == "q"
    assert apply_prefix("doc", "Represent the document for retrieval: ") == "Represent the document for retrieval: doc"


def test_unknown_task_and_empty_instruction_name_the_fix() -> None:
    with pytest.raises(InputError, match="unknown task `nope`") as exc:
        format_query("q", task="nope")
    assert exc.value.hint is not None and "retrieval" in exc.value.hint
    with pytest.raises(InputError, match="instruction is empty"):
        format_query("q", instruction="  ")


def test_tasks_table_is_exported_from_the_package() -> None:
    import qembed

    assert qembed.TASKS is TASKS
    assert qembed.format_query is format_query
    assert set(TASKS) == {"retrieval", "sts", "bitext", "code", "classification", "clustering"}
