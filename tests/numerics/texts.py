"""The text set the numerics tests judge on: mixed languages, scripts and lengths.

A padding or pooling bug only shows on the shorter texts of a mixed batch, so every comparison
runs on all of them and judges the minimum cosine. No text is empty or whitespace-only (the
server rejects those, as SGLang does).
"""

from __future__ import annotations

QUERIES: list[str] = [
    "what is the capital of France?",
    "how do embeddings work",
    "北京有哪些著名的景点？",
    "¿Cuál es la capital de España?",
    "عاصمة مصر",
    "東京の桜はいつ咲きますか",
    "python last token pooling attention mask",
    "x",
]

_SENTENCES = [
    "The capital of France is Paris, a city known for its museums and cafes.",
    "Machine learning models turn text into vectors so that similar texts end up close together.",
    "北京是中国的首都，也是一座历史悠久的文化名城。",
    "El motor de búsqueda devuelve los pasajes más relevantes para la consulta del usuario.",
    "التعلم الآلي يحول النصوص إلى متجهات رقمية يمكن مقارنتها بسهولة.",
    "東京は日本の首都です。桜の季節には多くの人が公園で花見を楽しみます。",
    "Water boils at one hundred degrees Celsius at sea level.",
    "def f(x):\n    return x * 2 + 1\n",
    "Berlin ist die Hauptstadt von Deutschland.",
    "Москва является столицей России.",
]


def _long_document(n: int, offset: int) -> str:
    """A long document stitched from the sentence pool (deterministic)."""
    parts = [_SENTENCES[(offset + 3 * i) % len(_SENTENCES)] for i in range(n)]
    return "\n\n".join(f"{i}. {s}" for i, s in enumerate(parts))


DOCUMENTS: list[str] = [
    "Paris is the capital and most populous city of France.",
    "Embeddings map text to points in a vector space; the cosine measures similarity.",
    "故宫、长城和天坛是北京最著名的景点。",
    "Madrid es la capital de España y su ciudad más poblada.",
    "القاهرة هي عاصمة مصر، وهي مدينة كبيرة على ضفاف نهر النيل.",
    "東京の桜は例年三月下旬から四月上旬に咲きます。",
    "def last_token_pool(h, mask):\n    return h[:, -1]\n",
    "Photosynthesis converts light energy into chemical energy.",
    "a",
    "Mixed: Paris 巴黎 París باريس パリ Париж 2024!",
    _long_document(30, 0),
    _long_document(70, 1),
]

# Queries and documents together: the mixed batch used for order and padding checks.
MIXED: list[str] = [t for pair in zip(DOCUMENTS, QUERIES, strict=False) for t in pair] + DOCUMENTS[
    len(QUERIES) :
]
