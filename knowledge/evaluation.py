"""Retrieval quality and latency on a labelled query set (`kb bench retrieval`).

A query file is JSONL: {"query": "...", "relevant": ["page.html#anchor" or "page.html", ...]}.
A retrieved chunk hits an entry when its uri (less the source folder) equals the entry; an entry
without "#" matches any section of that page. Each relevant entry counts once, at its best rank.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knowledge.errors import KnowledgeError
from knowledge.retrieval import Mode
from knowledge.service import KnowledgeBase
from knowledge.types import Hit, Question


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    query: str
    relevant: tuple[str, ...]


def load_queries(path: Path) -> list[LabelledQuery]:
    """Read a JSONL query file; a bad line is an error that names its line number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise KnowledgeError(f"cannot read the query file {path}: {exc.strerror or exc}") from exc
    queries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            query, relevant = item["query"], item["relevant"]
            if not isinstance(query, str) or not isinstance(relevant, list) or not relevant:
                raise TypeError("'query' must be text and 'relevant' a non-empty list")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise KnowledgeError(f"{path}, line {number}: not a labelled query ({exc})") from exc
        queries.append(LabelledQuery(query, tuple(str(r) for r in relevant)))
    if not queries:
        raise KnowledgeError(f"{path} has no queries")
    return queries


def link_matches(link: str, entry: str) -> bool:
    """A retrieved link counts for a gold entry: the same section, or the same page for an entry without #."""
    uri = link.split("/", 1)[1] if "/" in link else link  # drop the source folder
    return uri == entry if "#" in entry else uri.split("#", 1)[0] == entry


def score_links(links: list[str], relevant: tuple[str, ...], *, k: int = 10) -> dict[str, float]:
    """recall@1/5/10, reciprocal rank and nDCG@10 (binary gains) for one query's ranked links."""
    first_rank: dict[str, int] = {}
    for rank, link in enumerate(links[:k], start=1):
        for entry in relevant:
            if entry not in first_rank and link_matches(link, entry):
                first_rank[entry] = rank
    ranks = sorted(first_rank.values())
    dcg = sum(1 / math.log2(r + 1) for r in ranks)
    ideal = sum(1 / math.log2(r + 1) for r in range(1, min(len(relevant), k) + 1))
    return {
        "recall@1": sum(r <= 1 for r in ranks) / len(relevant),
        "recall@5": sum(r <= 5 for r in ranks) / len(relevant),
        "recall@10": len(ranks) / len(relevant),
        "mrr@10": 1 / ranks[0] if ranks else 0.0,
        "ndcg@10": dcg / ideal if ideal else 0.0,
    }


def score_ranking(hits: list[Hit], relevant: tuple[str, ...], *, k: int = 10) -> dict[str, float]:
    """score_links over the hits' links."""
    return score_links([hit.link for hit in hits], relevant, k=k)


def evaluate(kb: KnowledgeBase, queries: list[LabelledQuery], *, mode: Mode, k: int = 10) -> dict[str, Any]:
    """Mean metrics over the queries, and latency percentiles of the whole retrieval call."""
    totals: dict[str, float] = {}
    latencies = []
    for labelled in queries[:3]:  # warm caches and lazy loads out of the timings
        kb.retrieve(Question(labelled.query), k, mode=mode)
    for labelled in queries:
        started = time.perf_counter()
        hits = kb.retrieve(Question(labelled.query), k, mode=mode)
        latencies.append((time.perf_counter() - started) * 1000)
        for name, value in score_ranking(hits, labelled.relevant, k=k).items():
            totals[name] = totals.get(name, 0.0) + value
    result: dict[str, Any] = {name: round(value / len(queries), 4) for name, value in totals.items()}
    result.update(
        mode=mode,
        queries=len(queries),
        p50_ms=round(float(np.percentile(latencies, 50)), 2),
        p95_ms=round(float(np.percentile(latencies, 95)), 2),
    )
    return result


def ingest_throughput(kb: KnowledgeBase, docs: Path, *, raw: bool = True) -> dict[str, Any]:
    """Ingest `docs` into `kb` (a scratch one) and time it; with `raw`, also time plain fp32
    sentence-transformers `encode` over the very same chunk texts (`kb bench ingest`, bench/ingest.py).

    Peak memory is the process's, so run each configuration in a process of its own to compare them.
    """
    import resource

    from knowledge.sync import embedding_text

    kb.embedder.encode(["warm up"])  # the model load is not ingest throughput
    started = time.perf_counter()
    report = kb.ingest([docs])
    seconds = time.perf_counter() - started
    texts = [embedding_text(t, s, x) for batch in kb.store.iter_chunk_texts() for _, t, s, x in batch]
    result: dict[str, Any] = {
        "precision": kb.embedder.precision,
        "documents": report.added,
        "skipped": [{"path": Path(p.path).name, "reason": p.reason} for p in report.skipped],
        "chunks": len(texts),
        "seconds": round(seconds, 2),
        "documents_per_s": round(report.added / seconds, 2),
        "chunks_per_s": round(len(texts) / seconds, 2),
    }
    if raw and texts:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(kb.embedder.path), device="cpu", local_files_only=True)
        model.encode(["warm up"])
        started = time.perf_counter()
        model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        raw_rate = len(texts) / (time.perf_counter() - started)
        result["raw_encode_fp32_chunks_per_s"] = round(raw_rate, 2)
        result["ingest_vs_raw_encode_ratio"] = round(len(texts) / seconds / raw_rate, 2)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result
