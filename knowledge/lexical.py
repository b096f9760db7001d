"""The lexical index: BM25 (bm25s) over chunk texts, for English and Chinese.

English is lower-cased, stop words are dropped and words are Snowball-stemmed, so "resetting"
finds "reset". Chinese has no spaces: each run of CJK characters becomes its single characters
and their bigrams, the usual dictionary-free way to index it. Mixed text gets both.

Like the vector index this is derived from the database: it is rebuilt from the chunk texts
when the database changes and saved atomically beside its fingerprint.
"""

from __future__ import annotations

import os
import pickle
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import Stemmer

from knowledge.errors import VectorIndexError
from knowledge.index import Fingerprint, atomic_write

# bm25s imports JAX where it is installed and runs one JAX operation on import; on a GPU machine
# that starts JAX's GPU backend, which takes 75% of the card's memory up front, out of reach of the
# PyTorch training beside it. The index uses bm25s's scores only (the top-k is NumPy's, below), so
# JAX has nothing to do here: it stays on the CPU unless the operator chose its platform.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import bm25s

LEXICAL_FILE = "lexical.pkl"
_FORMAT = 1

_WORD = re.compile(r"[0-9a-zà-öø-ÿ]+(?:['’][a-z]+)?|[\u3400-\u9fff\uf900-\ufaff]+", re.IGNORECASE)
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")  # a Chinese (CJK ideograph) character
# A short list on purpose: BM25's idf already discounts common words; these only add noise.
STOP_WORDS = frozenset(
    (
        "a", "about", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could", "do",
        "does", "for", "from", "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its",
        "me", "my", "no", "not", "of", "on", "or", "our", "so", "such", "than", "that", "the", "their",
        "them", "then", "there", "these", "they", "this", "to", "was", "we", "were", "what", "when",
        "where", "which", "who", "why", "will", "with", "would", "you", "your", "的", "了", "和", "是", "在",
        "我", "有", "吗", "呢", "吧", "啊", "与", "及", "或", "把", "被",
    )
)  # fmt: skip


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    return Stemmer.Stemmer("english")


_LATIN = re.compile(r"[a-zà-öø-ÿ]", re.IGNORECASE)


def is_chinese(text: str) -> bool:
    """True when at least a third of the text's letters are CJK characters (a question or a passage
    in Chinese, English product names in it or not)."""
    cjk = len(CJK.findall(text))
    # A CJK character carries about a word: weigh it against Latin letters at 4 letters a word.
    return cjk > 0 and 3 * cjk >= (cjk + len(_LATIN.findall(text)) / 4)


def tokenize(text: str) -> list[str]:
    """Index terms of a text: stemmed English words, and Chinese characters with their bigrams."""
    words: list[str] = []
    for match in _WORD.finditer(text.lower()):
        token = match.group(0)
        if CJK.match(token):
            chars = [c for c in token if c not in STOP_WORDS]
            words.extend(chars)
            words.extend(token[i : i + 2] for i in range(len(token) - 1))
        elif token not in STOP_WORDS:
            words.append(token.replace("’", "'"))
    latin = [w for w in words if not CJK.match(w)]
    stemmed = iter(_stemmer().stemWords(latin))
    return [next(stemmed) if not CJK.match(w) else w for w in words]


class LexicalIndex:
    """BM25 over chunks; results are chunk ids. Rebuilt as a whole, searched concurrently."""

    def __init__(self, ids: npt.NDArray[np.int64], model: Any, fingerprint: Fingerprint) -> None:
        self.ids = ids
        self._model = model
        self.fingerprint = fingerprint
        self._position = {int(chunk_id): i for i, chunk_id in enumerate(ids)}
        self._lock = threading.Lock()

    @classmethod
    def build(cls, ids: list[int], texts: list[str]) -> LexicalIndex:
        model = bm25s.BM25()
        array = np.asarray(ids, dtype=np.int64)
        if ids:
            model.index([tokenize(text) for text in texts], show_progress=False)
        return cls(array, model if ids else None, Fingerprint.of(array))

    @property
    def size(self) -> int:
        return len(self.ids)

    def positions(self, chunk_ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.asarray([self._position.get(int(i), -1) for i in chunk_ids], dtype=np.int64)

    def search(
        self, query: str, k: int, *, mask: npt.NDArray[np.bool_] | None = None
    ) -> list[tuple[int, float]]:
        """The k best chunk ids by BM25, best first; `mask` (aligned with `ids`) limits the candidates."""
        terms = tokenize(query)
        if self._model is None or not terms or k <= 0:
            return []
        weights = None if mask is None else mask.astype(np.float32)
        with self._lock:  # bm25s keeps per-call state on the model object
            scores = self._model.get_scores(terms, weight_mask=weights)
        count = min(k, int(np.count_nonzero(scores)))
        if count == 0:
            return []
        top = np.argpartition(-scores, count - 1)[:count]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self.ids[i]), float(scores[i])) for i in top]

    def score_ids(self, query: str, chunk_ids: list[int]) -> npt.NDArray[np.float32]:
        """BM25 scores of `query` for the given chunk ids (0 for an id this index does not hold), so
        a candidate that only the dense search found can still be compared on its lexical score."""
        terms = tokenize(query)
        out = np.zeros(len(chunk_ids), dtype=np.float32)
        if self._model is None or not terms or not chunk_ids:
            return out
        with self._lock:
            scores = self._model.get_scores(terms)
        for slot, chunk_id in enumerate(chunk_ids):
            position = self._position.get(int(chunk_id))
            if position is not None:
                out[slot] = scores[position]
        return out

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"format": _FORMAT, "ids": self.ids, "model": self._model, "fingerprint": self.fingerprint}
        atomic_write(directory / LEXICAL_FILE, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex:
        # Our own derived file, written by this process's code under the data directory.
        try:
            payload = pickle.loads((directory / LEXICAL_FILE).read_bytes())
            if payload.get("format") != _FORMAT:
                raise ValueError(f"format {payload.get('format')} is not {_FORMAT}")
            return cls(payload["ids"], payload["model"], payload["fingerprint"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, pickle.UnpicklingError) as exc:
            raise VectorIndexError(f"cannot load the lexical index in {directory}: {exc}") from exc
