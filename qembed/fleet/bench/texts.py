"""Seeded synthetic multilingual inputs (EN/ZH/ES/AR/JA/code word pools) for ``qembed bench``.

Inputs are sized with the model's tokenizer when it is on disk (transformers, offline), else
with the estimate :func:`qembed.client.flow.estimate_tokens`. Every text starts with its own
index, so no two inputs share a prefix: SGLang's radix cache stays on for embeddings and would
otherwise serve repeated inputs from cache (a figure above 100 % MFU is that artefact).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from qembed.client.flow import BYTES_PER_TOKEN, estimate_tokens

logger = logging.getLogger(__name__)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_EN = _words("the model reads every document and returns one vector per chunk so that search can rank "
             "passages by meaning rather than by shared words while the server batches requests on the "
             "graphics card and keeps latency low for short queries")
_ES = _words("el modelo lee cada documento y devuelve un vector por fragmento para que la búsqueda "
             "ordene los pasajes por significado y no por palabras compartidas mientras el servidor "
             "agrupa las peticiones")
_AR = _words("يقرأ النموذج كل مستند ويعيد متجها واحدا لكل مقطع حتى يرتب البحث المقاطع حسب المعنى "
             "وليس حسب الكلمات المشتركة بينما يجمع الخادم الطلبات")
_ZH = _words("模型 读取 每个 文档 并 为 每个 片段 返回 一个 向量 以便 搜索 按 含义 而 不是 共同 的 词语 "
             "对 段落 排序 同时 服务器 在 显卡 上 合并 请求")
_JA = _words("モデル は すべて の 文書 を 読み 各 断片 に 一つ の ベクトル を 返す ので 検索 は 共通 の 単語 "
             "では なく 意味 で 段落 を 並べ 替え られる")
_CODE = _words("def embed ( texts : list [ str ] ) -> np.ndarray : return client.embed ( texts , "
               "dimensions = 256 ) for i , row in enumerate ( rows ) : if not row . strip ( ) : "
               "continue yield i , row")

# language -> (word pool, joiner); CJK text has no spaces
WORD_POOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "en": (_EN, " "),
    "zh": (_ZH, ""),
    "es": (_ES, " "),
    "ar": (_AR, " "),
    "ja": (_JA, ""),
    "code": (_CODE, " "),
}


TokenCounter = Callable[[str], int]


def load_tokenizer(model: str) -> tuple[TokenCounter, Callable[[str, int], str]] | None:
    """``(count, truncate)`` from the model's own tokenizer, offline; ``None`` if not on disk.

    ``count(text)`` includes the EOS SGLang's fast tokenizer appends; ``truncate(text, n)`` cuts
    ``text`` to ``n`` tokens (EOS included).
    """
    from qembed.models import model_dir

    path = model_dir(model)
    if path is None or not ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        return None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # optional: any failure falls back to the estimate
        logger.info("tokenizer for %s not usable (%s); using the estimate", model, exc)
        return None

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=True)["input_ids"])

    def truncate(text: str, n: int) -> str:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return str(tok.decode(ids[: max(1, n - 1)]))

    return count, truncate


class TextSource:
    """Seeded synthetic inputs of about ``tokens`` tokens each; text ``i`` is always the same.

    A pool of ``pool`` base texts per length is built once; text ``i`` is ``"{i} "`` + base
    ``i % pool``, so every input is distinct from its first token on.
    """

    PREFIX_TOKENS = 3  # what "{i} " costs, roughly, for the indices a run reaches

    def __init__(self, *, seed: int = 0, pool: int = 256,
                 tokenizer: tuple[TokenCounter, Callable[[str, int], str]] | None = None) -> None:
        self.seed = seed
        self.pool = pool
        self.tokenizer = tokenizer
        self._bases: dict[int, list[str]] = {}

    @property
    def sizing(self) -> str:
        return "tokenizer" if self.tokenizer else f"estimate ({BYTES_PER_TOKEN} UTF-8 bytes/token + EOS)"

    def count(self, text: str) -> int:
        return self.tokenizer[0](text) if self.tokenizer else estimate_tokens(text)

    def _base(self, tokens: int, j: int) -> str:
        rng = random.Random(f"{self.seed}:{tokens}:{j}")
        lang = sorted(WORD_POOLS)[rng.randrange(len(WORD_POOLS))]
        words, joiner = WORD_POOLS[lang]
        target = max(1, tokens - self.PREFIX_TOKENS)
        parts: list[str] = []
        nbytes = 0
        goal = (target - 1) * BYTES_PER_TOKEN  # the estimate's budget, EOS excluded
        while nbytes < goal or not parts:
            w = words[rng.randrange(len(words))]
            parts.append(w)
            nbytes += len(w.encode("utf-8")) + len(joiner)
        text = joiner.join(parts)
        if self.tokenizer is not None:
            count, truncate = self.tokenizer
            while count(text) < target:
                text = text + joiner + joiner.join(parts[: max(1, len(parts) // 4)])
            text = truncate(text, target)
        else:
            raw = text.encode("utf-8")[:goal]
            text = raw.decode("utf-8", errors="ignore")
        return text.strip() or words[0]

    def texts(self, tokens: int, start: int, n: int) -> list[str]:
        bases = self._bases.get(tokens)
        if bases is None:
            bases = [self._base(tokens, j) for j in range(self.pool)]
            self._bases[tokens] = bases
        return [f"{i} {bases[i % self.pool]}" for i in range(start, start + n)]
