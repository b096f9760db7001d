"""Hybrid retrieval: dense (FAISS) and lexical (BM25) results fused by reciprocal rank.

Access control and metadata filters are applied inside both searches through one mask over all
chunks (see ChunkCatalog), so a restricted chunk is never a candidate and a user with few rights
still gets k results when k exist. Every returned hit is checked again against its document's
ACL as it is read from the database (defence in depth against a stale catalog).

RRF: score(d) = sum over lists of weight / (k + rank(d)), with k = 60 as in Cormack et al. (2009).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from knowledge.catalog import ChunkCatalog, Filters
from knowledge.embeddings import Embedder, Vectors
from knowledge.index import VectorIndex
from knowledge.lexical import LexicalIndex
from knowledge.store import Store
from knowledge.types import Hit, Question
from privacy.access import can_read

Mode = Literal["hybrid", "dense", "bm25"]


@dataclass(frozen=True, slots=True)
class FusionConfig:
    rrf_k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    candidates: int = 50  # taken from each list before fusing


def reciprocal_rank_fusion(
    ranked: list[list[int]], weights: list[float], *, k: int = 60
) -> list[tuple[int, float]]:
    """Fuse ranked id lists; ties keep the order of first appearance."""
    scores: dict[int, float] = {}
    for ids, weight in zip(ranked, weights, strict=True):
        for rank, chunk_id in enumerate(ids, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


class Retriever:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        index: VectorIndex,
        lexical: LexicalIndex,
        catalog: ChunkCatalog,
        *,
        fusion: FusionConfig | None = None,
    ) -> None:
        self.store, self.embedder, self.index = store, embedder, index
        self.lexical, self.catalog = lexical, catalog
        self.fusion = fusion or FusionConfig()

    def embed(self, text: str) -> Vectors:
        return np.asarray(self.embedder.encode([text])[0], dtype=np.float32)

    def search(
        self,
        question: Question,
        k: int,
        *,
        filters: Filters | None = None,
        mode: Mode = "hybrid",
        vector: Vectors | None = None,
    ) -> list[Hit]:
        """The k best chunks that `question.groups` may read under `filters`, best first."""
        mask = self.catalog.mask(question.groups, filters)
        if mask is not None and not mask.any():
            return []
        query = self.embed(question.text) if vector is None and mode != "bm25" else vector
        fetch = max(k, self.fusion.candidates)
        ranked: list[list[int]] = []
        weights: list[float] = []
        if mode in ("hybrid", "dense") and query is not None:
            allowed = None if mask is None else self.catalog.bitmap(mask)
            ranked.append([i for i, _ in self.index.search(query, fetch, allowed=allowed)])
            weights.append(self.fusion.dense_weight)
        if mode in ("hybrid", "bm25"):
            ranked.append(
                [i for i, _ in self.lexical.search(question.text, fetch, mask=self._lexical_mask(mask))]
            )
            weights.append(self.fusion.lexical_weight)
        fused = reciprocal_rank_fusion(ranked, weights, k=self.fusion.rrf_k)
        hits = self.store.hits(fused[: k * 3], query=query)
        return _one_per_section([hit for hit, acl in hits if can_read(question.groups, acl)], k)

    def _lexical_mask(self, mask: np.ndarray | None) -> np.ndarray | None:
        if mask is None:
            return None
        if self.lexical.size == self.catalog.size and np.array_equal(self.lexical.ids, self.catalog.ids):
            return mask
        # Built from different database states (an ingest in between): align by chunk id.
        allowed = set(self.catalog.ids[mask].tolist())
        return np.fromiter((int(i) in allowed for i in self.lexical.ids), dtype=bool, count=self.lexical.size)


def _one_per_section(hits: list[Hit], k: int) -> list[Hit]:
    """The best chunk of each section: a citation names a section, and a long section's several
    chunks would otherwise crowd other sections out of the top k."""
    seen: set[str] = set()
    out = []
    for hit in hits:
        if hit.link not in seen:
            seen.add(hit.link)
            out.append(hit)
    return out[:k]
