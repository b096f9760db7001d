"""Dense retrieval with access control applied inside the search.

The index is over-fetched and filtered by the asker's groups, widening the fetch until k
readable chunks are found or the index is exhausted: a restricted chunk is never returned, and
a user with few rights still gets k results when k exist.
"""

from __future__ import annotations

import numpy as np

from knowledge.embeddings import Embedder, Vectors
from knowledge.index import VectorIndex
from knowledge.store import Store
from knowledge.types import Hit, Question
from privacy.access import can_read

_OVERFETCH = 4


class Retriever:
    def __init__(self, store: Store, embedder: Embedder, index: VectorIndex) -> None:
        self.store, self.embedder, self.index = store, embedder, index

    def embed(self, text: str) -> Vectors:
        return np.asarray(self.embedder.encode([text])[0], dtype=np.float32)

    def search(self, question: Question, k: int, *, vector: Vectors | None = None) -> list[Hit]:
        """The k best chunks that `question.groups` may read, best first."""
        query = self.embed(question.text) if vector is None else vector
        fetch = k * _OVERFETCH
        while True:
            scored = self.index.search(query, fetch)
            readable = [hit for hit, acl in self.store.hits(scored) if can_read(question.groups, acl)]
            if len(readable) >= k or fetch >= self.index.size:
                return readable[:k]
            fetch *= _OVERFETCH
