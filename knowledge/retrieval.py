"""Hybrid retrieval: dense (FAISS) and lexical (BM25) results fused into one ranking.

Access control and metadata filters are applied inside both searches through one mask over all
chunks (see ChunkCatalog), so a restricted chunk is never a candidate and a user with few rights
still gets k results when k exist. Every returned hit is checked again against its document's
ACL as it is read from the database (defence in depth against a stale catalog).

Fusion (see FusionConfig): weighted reciprocal rank fusion, score(d) = sum over lists of
weight / (k + rank(d)) (Cormack et al., 2009), or a convex combination of min-max normalized
scores. The defaults were chosen by bench/retrieval.py on one half of the Python FAQ queries and
checked on the other half: RRF with k = 10 (not the textbook 60: with only `candidates` ranks per
list, a small k lets the top ranks decide), dense 0.7 against lexical 0.3 (BM25 is the weaker
list on prose questions and mostly breaks ties between close dense candidates), 20 candidates
per list. On the held-out half this gains about 1 nDCG@10 point over dense alone (the issue asks
for 3; bench/results/retrieval.json has the figures of both halves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from knowledge.catalog import Allowed, BoolArray, ChunkCatalog, Filters
from knowledge.embeddings import Embedder, Vectors
from knowledge.index import VectorIndex
from knowledge.lexical import LexicalIndex, is_chinese
from knowledge.store import Store
from knowledge.types import Hit, Question
from privacy.access import can_read

if TYPE_CHECKING:
    from core.settings import Settings

Mode = Literal["hybrid", "dense", "bm25"]
# Above this share of allowed chunks, dense search over-fetches and checks the bitmap itself.
_POST_FILTER_SHARE = 0.5
FusionMethod = Literal["rrf", "convex"]
Scored = list[tuple[int, float]]


@dataclass(frozen=True, slots=True)
class FusionConfig:
    """How the dense and the lexical list become one ranking (defaults: the measured best)."""

    method: FusionMethod = "rrf"
    rrf_k: int = 10
    dense_weight: float = 0.7
    lexical_weight: float = 0.3
    candidates: int = 20  # taken from each list before fusing (at least the k asked for)
    # A hit whose language (Chinese or not) differs from the question's moves this many places down:
    # the English-only embedding model puts a Chinese passage's few Latin words (product names) close to
    # a short English question, which ranked the Chinese translation of a page above the page itself.
    language_demotion: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> FusionConfig:
        return cls(
            method=settings.retrieval.fusion_method,
            rrf_k=settings.retrieval.rrf_k,
            dense_weight=settings.retrieval.dense_weight,
            lexical_weight=settings.retrieval.lexical_weight,
            candidates=settings.retrieval.fusion_candidates,
            language_demotion=settings.retrieval.language_demotion,
        )


def reciprocal_rank_fusion(
    ranked: list[list[int]], weights: list[float], *, k: int = 60
) -> list[tuple[int, float]]:
    """Fuse ranked id lists; ties keep the order of first appearance."""
    scores: dict[int, float] = {}
    for ids, weight in zip(ranked, weights, strict=True):
        for rank, chunk_id in enumerate(ids, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


def convex_fusion(scored: list[Scored], weights: list[float]) -> Scored:
    """Weighted sum of scores min-max normalized within each list (best 1, worst listed 0);
    an id missing from a list gets 0 there. Ties keep the order of first appearance."""
    fused: dict[int, float] = {}
    for items, weight in zip(scored, weights, strict=True):
        if not items:
            continue
        values = [score for _, score in items]
        low, span = min(values), max(values) - min(values)
        for chunk_id, score in items:
            normalized = (score - low) / span if span > 0 else 1.0
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight * normalized
    return sorted(fused.items(), key=lambda item: -item[1])


def fuse(scored: list[Scored], weights: list[float], config: FusionConfig) -> Scored:
    """One ranking from several (id, score) lists, each best first, by `config.method`."""
    if len(scored) == 1:  # a single mode: its own order and scores
        return list(scored[0])
    if config.method == "convex":
        return convex_fusion(scored, weights)
    return reciprocal_rank_fusion([[i for i, _ in items] for items in scored], weights, k=config.rrf_k)


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
        """The question's unit vector, through the embedder's question path (ONNX by default)."""
        return np.asarray(self.embedder.encode_query(text), dtype=np.float32)

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
        allowed = self.catalog.allowed(question.groups, filters)
        if allowed is not None and not allowed.mask.any():
            return []
        query = self.embed(question.text) if vector is None and mode != "bm25" else vector
        fetch = max(k, self.fusion.candidates)
        scored, weights = self.candidates(question.text, query, fetch, allowed=allowed, mode=mode)
        fused = fuse(scored, weights, self.fusion)
        hits = self.store.hits(fused[: k * 3], query=query)
        readable = [hit for hit, acl in hits if can_read(question.groups, acl)]
        return _one_per_section(prefer_language(readable, question.text, self.fusion.language_demotion), k)

    def candidates(
        self,
        text: str,
        query: Vectors | None,
        fetch: int,
        *,
        mode: Mode,
        allowed: Allowed | None = None,
    ) -> tuple[list[Scored], list[float]]:
        """Each searched list's best `fetch` (chunk id, score) pairs, with the list's fusion weight.

        The searches are limited by `allowed` (from `catalog.allowed`, cached); None means no limit."""
        mask = None if allowed is None else allowed.mask
        scored: list[Scored] = []
        weights: list[float] = []
        if mode in ("hybrid", "dense") and query is not None:
            scored.append(self._dense(query, fetch, allowed))
            weights.append(self.fusion.dense_weight)
        if mode in ("hybrid", "bm25"):
            scored.append(self.lexical.search(text, fetch, mask=self._lexical_mask(mask)))
            weights.append(self.fusion.lexical_weight)
        return scored, weights

    def _dense(self, query: Vectors, fetch: int, allowed: Allowed | None) -> Scored:
        """The `fetch` nearest allowed chunks.

        When most chunks are allowed (a public user where a tenth of the documents is
        restricted), an unfiltered search for a few more and a bitmap check here is cheaper than
        FAISS's per-vector selector (about 15% of a flat search at 100k chunks, bench/scale.py).
        The result is the same: once `fetch` allowed chunks are among the `want` nearest, no
        allowed chunk outside them can rank higher. Otherwise the selector search runs."""
        if allowed is None:
            return self.index.search(query, fetch)
        if allowed.share >= _POST_FILTER_SHARE:
            want = min(self.index.size, int(fetch / allowed.share * 1.5) + 8)
            found = [hit for hit in self.index.search(query, want) if allowed.permits(hit[0])]
            if len(found) >= fetch or want >= self.index.size:
                return found[:fetch]
        return self.index.search(query, fetch, allowed=allowed.bitmap)

    def _lexical_mask(self, mask: BoolArray | None) -> BoolArray | None:
        if mask is None:
            return None
        if self.lexical.size == self.catalog.size and np.array_equal(self.lexical.ids, self.catalog.ids):
            return mask
        # Built from different database states (an ingest in between): align by chunk id.
        allowed = set(self.catalog.ids[mask].tolist())
        return np.fromiter((int(i) in allowed for i in self.lexical.ids), dtype=bool, count=self.lexical.size)


def prefer_language(hits: list[Hit], question: str, demotion: int) -> list[Hit]:
    """`hits` (best first) with those in another language than `question` moved `demotion` places down.

    Never drops a hit: when only the other language has the answer, it still comes, after at most
    `demotion` hits in the question's language.
    """
    if demotion <= 0 or len(hits) < 2:
        return hits
    chinese = is_chinese(question)
    other = [is_chinese(hit.text) != chinese for hit in hits]
    # At a tie of places, the hit in the question's language goes first.
    order = sorted(range(len(hits)), key=lambda i: (i + demotion * other[i], other[i], i))
    return [hits[i] for i in order]


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
