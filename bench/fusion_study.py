"""Can a learned fusion beat reciprocal rank fusion on the Python FAQ? A study, not a product default.

    .venv/bin/python bench/fusion_study.py      # builds both query sets, ~10 minutes on 2 busy cores

Issue 3 asks hybrid retrieval to beat the better of BM25 and dense by 3 nDCG@10 points on the FAQ.
This measures how much any re-scoring of the two candidate lists can give there:

- a pairwise logistic ranker (RankNet with a linear scorer, fitted by Newton's method) over cheap
  per-candidate features: dense cosine and its gap to the query's best, BM25 relative to the
  query's best and its log, both reciprocal ranks, and (the "text" set) the idf-weighted share of
  query terms in the chunk and of adjacent query term pairs;
- trained WITHOUT the FAQ, on pseudo-queries from the tutorial and HOWTOs (bench/python_pseudo.py:
  section headings as queries, headings removed from the indexed copy), and scored on FAQ halves;
- and, as a ceiling for this feature family, trained on one FAQ half and scored on the other.

It also reports the paired standard error of (hybrid - dense) per query, which says how large a
difference this set can resolve. Writes bench/results/fusion_study.json (no BENCHMARKS.md row:
the retrieval row stays the one people read).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import python_faq, python_pseudo
from bench.common import RESULTS, machine, scratch_kb
from bench.retrieval import _ndcg
from knowledge.evaluation import LabelledQuery, link_matches, load_queries
from knowledge.lexical import tokenize
from knowledge.retrieval import FusionConfig, fuse
from knowledge.service import KnowledgeBase
from knowledge.types import Hit

Matrix = npt.NDArray[np.float64]
FEATURES = ("dense", "dense_gap", "bm25_rel", "bm25_log", "rr_dense", "rr_bm25", "coverage", "pairs")
FEATURE_SETS = {"scores": FEATURES[:6], "text": FEATURES}
DATA = Path(__file__).resolve().parent / "data"


@dataclass
class Candidates:
    """One query's fused candidate pool: ids, feature rows, relevance, and the two source lists."""

    query: LabelledQuery
    ids: list[int]
    features: Matrix
    relevant: npt.NDArray[np.bool_]
    dense: list[tuple[int, float]]
    lexical: list[tuple[int, float]]
    seconds: float  # features of this query, after the searches


def idf_table(kb: KnowledgeBase) -> dict[str, float]:
    """BM25-style idf of every index term of the knowledge base's chunks."""
    counts: Counter[str] = Counter()
    total = 0
    for batch in kb.store.iter_chunk_texts():
        for _, _, _, text in batch:
            counts.update(set(tokenize(text)))
            total += 1
    return {t: math.log(1 + (total - c + 0.5) / (c + 0.5)) for t, c in counts.items()}


def features(
    text: str,
    dense: dict[int, float],
    bm25: dict[int, float],
    ranks: tuple[dict[int, int], dict[int, int]],
    hits: dict[int, Hit],
    idf: dict[str, float],
) -> tuple[list[int], Matrix]:
    """The FEATURES of each candidate (the union of both lists), in first-seen order."""
    ids = list(dict.fromkeys([*ranks[0], *ranks[1]]))
    terms = tokenize(text)
    unseen = max(idf.values(), default=1.0)  # a term no chunk has is as rare as the rarest
    weights = {t: idf.get(t, unseen) for t in set(terms)}
    total = sum(weights.values()) or 1.0
    pairs = set(itertools.pairwise(terms))
    best_dense = max(dense[i] for i in ids)
    best_bm25 = max(bm25.values(), default=0.0) or 1.0
    rows = []
    for chunk_id in ids:
        words = tokenize(hits[chunk_id].text)
        present = set(words)
        rows.append([
            dense[chunk_id],
            dense[chunk_id] - best_dense,
            bm25[chunk_id] / best_bm25,
            math.log1p(bm25[chunk_id]),
            1 / (10 + ranks[0][chunk_id]) if chunk_id in ranks[0] else 0.0,
            1 / (10 + ranks[1][chunk_id]) if chunk_id in ranks[1] else 0.0,
            sum(w for t, w in weights.items() if t in present) / total,
            len(pairs & set(itertools.pairwise(words))) / len(pairs) if pairs else 0.0,
        ])  # fmt: skip
    return ids, np.asarray(rows, dtype=np.float64)


def candidates(kb: KnowledgeBase, queries: list[LabelledQuery], *, depth: int = 20) -> list[Candidates]:
    """Each query's pool from the product's own dense and BM25 lists, `depth` deep each."""
    retriever, idf = kb.retriever(), idf_table(kb)
    out = []
    for labelled in queries:
        vector = retriever.embed(labelled.query)
        (dense_list, lexical_list), _ = retriever.candidates(labelled.query, vector, depth, mode="hybrid")
        started = time.perf_counter()
        pool = list(dict.fromkeys([i for i, _ in dense_list] + [i for i, _ in lexical_list]))
        hits = {hit.chunk_id: hit for hit, _ in kb.store.hits([(i, 0.0) for i in pool], query=vector)}
        pool = [i for i in pool if i in hits]
        dense = {i: hits[i].score for i in pool}
        bm25 = dict(zip(pool, retriever.lexical.score_ids(labelled.query, pool).tolist(), strict=True))
        ranks = (
            {i: r for r, (i, _) in enumerate(dense_list, 1) if i in hits},
            {i: r for r, (i, _) in enumerate(lexical_list, 1) if i in hits},
        )
        ids, rows = features(labelled.query, dense, bm25, ranks, hits, idf)
        seconds = time.perf_counter() - started
        relevant = np.array([any(link_matches(hits[i].link, e) for e in labelled.relevant) for i in ids])
        out.append(Candidates(labelled, ids, rows, relevant, dense_list, lexical_list, seconds))
    return out


def fit_pairwise(pools: list[Candidates], columns: list[int], *, l2: float = 1.0, steps: int = 50) -> Matrix:
    """Weights of a linear scorer minimizing the logistic loss of every (relevant, other) pair
    within a query (RankNet), L2-regularized, on standardized features; returned unstandardized."""
    diffs = []
    for pool in pools:
        rows = pool.features[:, columns]
        good, bad = rows[pool.relevant], rows[~pool.relevant]
        if len(good) and len(bad):
            diffs.append((good[:, None, :] - bad[None, :, :]).reshape(-1, len(columns)))
    if not diffs:
        raise ValueError("no query has both a relevant and an irrelevant candidate")
    scale = np.concatenate([p.features[:, columns] for p in pools]).std(axis=0) + 1e-9
    pairs = np.concatenate(diffs) / scale
    weights = np.zeros(len(columns))
    ridge = l2 * np.eye(len(columns)) / len(pairs)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(pairs @ weights)))
        gradient = -(pairs * (1 - p)[:, None]).mean(axis=0) + ridge @ weights
        hessian = (pairs * (p * (1 - p))[:, None]).T @ pairs / len(pairs) + ridge
        weights -= np.linalg.solve(hessian, gradient)
    return np.asarray(weights / scale, dtype=np.float64)


def ndcg(pools: list[Candidates], hits: dict[int, Hit], rank: str, weights: Matrix | None = None,
         columns: list[int] | None = None) -> npt.NDArray[np.float64]:  # fmt: skip
    """Per-query nDCG@10 of one ranking of each pool: dense, bm25, rrf (the product default) or ltr."""
    config, scores = FusionConfig(), []
    for pool in pools:
        if rank == "dense":
            fused = pool.dense
        elif rank == "bm25":
            fused = pool.lexical
        elif rank == "rrf":
            fused = fuse([pool.dense, pool.lexical], [config.dense_weight, config.lexical_weight], config)
        else:
            assert weights is not None and columns is not None
            values = pool.features[:, columns] @ weights
            fused = [(pool.ids[i], float(values[i])) for i in np.argsort(-values, kind="stable")]
        scores.append(_ndcg(fused, hits, pool.query.relevant))
    return np.asarray(scores)


def all_hits(kb: KnowledgeBase, pools: list[Candidates]) -> dict[int, Hit]:
    ids = sorted({i for p in pools for i in (*p.ids, *(i for i, _ in p.dense), *(i for i, _ in p.lexical))})
    return {hit.chunk_id: hit for hit, _ in kb.store.hits([(i, 0.0) for i in ids])}


def study(faq: list[Candidates], faq_hits: dict[int, Hit], pseudo: list[Candidates]) -> dict[str, Any]:
    halves = {
        "A": list(range(0, len(faq), 2)),
        "B": list(range(1, len(faq), 2)),
        "full": list(range(len(faq))),
    }

    def summary(values: npt.NDArray[np.float64]) -> dict[str, float]:
        return {name: round(float(values[part].mean()), 4) for name, part in halves.items()}

    out: dict[str, Any] = {}
    for name in ("bm25", "dense", "rrf"):
        out[name] = summary(ndcg(faq, faq_hits, name))
    for set_name, names in FEATURE_SETS.items():
        columns = [FEATURES.index(n) for n in names]
        weights = fit_pairwise(pseudo, columns)
        out[f"ltr_{set_name}_trained_on_pseudo"] = summary(ndcg(faq, faq_hits, "ltr", weights, columns))
        out[f"ltr_{set_name}_trained_on_pseudo"]["weights"] = dict(
            zip(names, np.round(weights, 3).tolist(), strict=True)
        )
        for tune_on, test_on in (("A", "B"), ("B", "A")):
            fitted = fit_pairwise([faq[i] for i in halves[tune_on]], columns)
            held = ndcg([faq[i] for i in halves[test_on]], faq_hits, "ltr", fitted, columns)
            out[f"ltr_{set_name}_FAQ_{tune_on}->{test_on}"] = round(float(held.mean()), 4)
    diff = ndcg(faq, faq_hits, "rrf") - ndcg(faq, faq_hits, "dense")
    for name in ("B", "full"):
        part = diff[halves[name]]
        out[f"rrf_minus_dense_{name}"] = {
            "points": round(float(part.mean()) * 100, 2),
            "paired_se_points": round(float(part.std(ddof=1) / math.sqrt(len(part))) * 100, 2),
            "queries_better": int((part > 0).sum()),
            "queries_worse": int((part < 0).sum()),
        }
    feature_ms = np.array([p.seconds for p in faq]) * 1000
    out["ltr_feature_ms"] = {"p50": round(float(np.percentile(feature_ms, 50)), 2),
                             "p95": round(float(np.percentile(feature_ms, 95)), 2)}  # fmt: skip
    return out


def main() -> None:
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work", type=Path, help="keep the two scratch knowledge bases here (re-runs skip ingest)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    python_faq.build(python_faq.DEFAULT_DOCS, DATA / "python-faq")
    python_pseudo.build(python_faq.DEFAULT_DOCS, DATA / "python-pseudo")
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        one, two = work / "faq", work / "pseudo"
        faq_kb = scratch_kb(DATA / "python-faq" / "docs", Path(one))
        faq = candidates(faq_kb, load_queries(DATA / "python-faq" / "queries.jsonl"))
        faq_hits = all_hits(faq_kb, faq)
        pseudo_kb = scratch_kb(DATA / "python-pseudo" / "docs", Path(two))
        pseudo = candidates(pseudo_kb, load_queries(DATA / "python-pseudo" / "queries.jsonl"))
        pseudo_hits = all_hits(pseudo_kb, pseudo)
        results = study(faq, faq_hits, pseudo)
        results["pseudo_set"] = {
            "queries": len(pseudo),
            "chunks": pseudo_kb.stats().chunks,
            **{
                name: round(float(ndcg(pseudo, pseudo_hits, name).mean()), 4)
                for name in ("bm25", "dense", "rrf")
            },
        }
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    payload = {
        "benchmark": "fusion_study",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        **results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "fusion_study.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(path)


if __name__ == "__main__":
    main()
