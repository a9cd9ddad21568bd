"""``qembed verify``'s text set (:data:`TEXTS`: short and long, queries and documents, several
scripts) and the prompt each text is embedded with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from qembed.reference.engine import ReferenceEngine


Kind = Literal["query", "document"]


@dataclass(frozen=True)
class Text:
    """One text of the set: ``kind`` query (sent with the ``task`` instruction) or document."""

    id: str
    kind: Kind
    text: str
    task: str | None = None  # a preset of qembed.instructions (queries only)


_LONG_SENTENCES = (
    "Embedding models map a passage of text to a single vector, and similar passages end up close together.",
    "The last token of the sequence is the end-of-text marker, and its hidden state is the sentence vector.",
    "A search system stores one vector per document and compares it with the vector of each query.",
    "Matryoshka training makes the first dimensions of a vector carry most of the information.",
    "When a runtime forgets the end-of-text token, the pooled state belongs to the last word instead.",
    "Engineers compare cosine similarities, norms and retrieval rankings before trusting a new server.",
    "Long documents are split into passages, but a single passage may still hold a few thousand tokens.",
    "The instruction tells the model which task the query belongs to, such as retrieval or similarity.",
    "Documents are embedded without an instruction, so that one index serves many kinds of queries.",
    "Numerical precision matters: bfloat16 keeps the range of float32 with fewer bits of mantissa.",
)


def _long_document() -> str:
    """About 12,000 characters of English prose in numbered paragraphs: more than 2,000 tokens with
    Qwen's 151k-token BPE (about 4 characters per token for English), ~5,000 on the tiny test
    tokenizer."""
    paragraphs = []
    for p in range(24):
        body = " ".join(_LONG_SENTENCES[(p * 3 + i) % len(_LONG_SENTENCES)] for i in range(5))
        paragraphs.append(f"Section {p + 1}. {body}")
    return "\n\n".join(paragraphs)


TEXTS: tuple[Text, ...] = (
    # queries, retrieval (the model's own `prompts["query"]`)
    Text("q-en", "query", "what is the capital of France?", "retrieval"),
    Text("q-zh", "query", "北京有哪些著名的景点？", "retrieval"),
    Text("q-es", "query", "¿Cuál es la capital de España?", "retrieval"),
    Text("q-ar", "query", "ما هي عاصمة مصر؟", "retrieval"),
    Text("q-ja", "query", "東京の桜はいつ咲きますか", "retrieval"),
    Text("q-ko", "query", "서울의 유명한 관광지는 어디인가요?", "retrieval"),
    Text("q-emb", "query", "how do text embeddings work", "retrieval"),
    Text("q-short", "query", "x", "retrieval"),
    # queries under other tasks
    Text("q-code", "query", "python function that pools the last token with an attention mask", "code"),
    Text("q-code-zh", "query", "如何在 Python 中反转一个列表", "code"),
    Text("sts-en", "query", "A man is playing a guitar on the stage.", "sts"),
    Text("sts-es", "query", "Un hombre toca la guitarra en el escenario.", "sts"),
    Text("bitext-ko", "query", "나는 매일 아침 커피를 마신다.", "bitext"),
    Text("clf-en", "query", "Stocks rallied after the central bank held interest rates steady.", "classification"),
    # documents
    Text("d-en", "document", "Paris is the capital and most populous city of France."),
    Text("d-en-2", "document", "Embeddings map text to points in a vector space; the cosine measures similarity."),
    Text("d-zh", "document", "故宫、长城和天坛是北京最著名的景点。"),
    Text("d-zh-2", "document", "机器学习模型把文本变成向量，相似的文本在向量空间中彼此靠近。"),
    Text("d-es", "document", "Madrid es la capital de España y su ciudad más poblada."),
    Text("d-es-2", "document", "El motor de búsqueda devuelve los pasajes más relevantes para la consulta."),
    Text("d-ar", "document", "القاهرة هي عاصمة مصر، وهي مدينة كبيرة على ضفاف نهر النيل."),
    Text("d-ar-2", "document", "التعلم الآلي يحول النصوص إلى متجهات رقمية يمكن مقارنتها بسهولة."),
    Text("d-ja", "document", "東京の桜は例年三月下旬から四月上旬に咲きます。"),
    Text("d-ja-2", "document", "東京は日本の首都です。桜の季節には多くの人が公園で花見を楽しみます。"),
    Text("d-ko", "document", "경복궁과 남산타워는 서울에서 가장 유명한 관광지입니다."),
    Text("d-ko-2", "document", "서울은 대한민국의 수도이며 가장 큰 도시입니다."),
    Text("d-code-py", "document",
         "def last_token_pool(h, mask):\n    n = mask.sum(dim=1) - 1\n    return h[torch.arange(h.shape[0]), n]\n"),
    Text("d-code-rev", "document", "def reverse(xs):\n\treturn xs[::-1]\n\n# 反转列表: reverse([1, 2, 3]) == [3, 2, 1]\n"),
    Text("d-code-js", "document", "const add = (a, b) => a + b;\nconsole.log(add(2, 3)); // 5\n"),
    Text("d-sql", "document", "SELECT name, COUNT(*)\nFROM orders\nWHERE status = 'paid'\nGROUP BY name;"),
    Text("d-tabs", "document", "name\tcity\tcountry\nAna\tMadrid\tSpain\nKenji\tTokyo\tJapan\n"),
    Text("d-lines", "document", "Shopping list:\n- apples\n- bread\n\n\nNotes:\r\n  call the bank\ttomorrow"),
    Text("d-md", "document", "# Install\n\n```sh\npip install qembed\n```\n\n| key | value |\n|-----|-------|\n| port | 30000 |"),
    Text("d-mixed", "document", "Mixed: Paris 巴黎 París باريس パリ 파리 Париж 2024! 🚀"),
    Text("d-guitar", "document", "Someone is performing music with a guitar in front of an audience."),
    Text("d-rates", "document", "The central bank left interest rates unchanged, and share prices climbed."),
    Text("d-bio", "document", "Photosynthesis converts light energy into chemical energy stored in glucose."),
    Text("d-a", "document", "a"),
    Text("d-spaces", "document", "  leading and trailing spaces  "),
    Text("d-long", "document", _long_document()),
)


def prompt_for(engine: ReferenceEngine, t: Text) -> str:
    from qembed.instructions import get_task

    if t.kind == "query":
        return engine.query_prompt(get_task(t.task or "retrieval").instruction)
    return engine.document_prompt()


__all__ = ["TEXTS", "Kind", "Text", "prompt_for"]
