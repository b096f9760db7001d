"""Retrieval quality on the Python FAQ (Debian's python3.11-doc): BM25, dense and hybrid side by side.

    .venv/bin/python bench/retrieval.py      # builds bench/data/python-faq, then ~2 minutes

The mode figures are those of `kb bench retrieval --docs bench/data/python-faq/docs --queries
bench/data/python-faq/queries.jsonl --mode all`. Fusion is tuned on half the queries (even or odd
lines) over a fixed grid (RRF with k 5/10/20/60, or convex min-max fusion; dense weight 0.30-0.95
by 0.05, lexical 1 - dense; 20 or 50 candidates per list), and the pick scored once on the other
half: that held-out figure is the one to publish, both ways (A->B and B->A) to show the spread.
The product's default (core/settings/groups.py) is the pick on half A; the run says if it still is.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import open_kb, write_results
from bench.python_faq import DEFAULT_DOCS, build
from knowledge.evaluation import LabelledQuery, evaluate, load_queries, score_ranking
from knowledge.retrieval import FusionConfig, Mode, Scored, fuse
from knowledge.service import KnowledgeBase
from knowledge.types import Hit

DATA = Path(__file__).resolve().parent / "data" / "python-faq"
MODES: tuple[Mode, ...] = ("bm25", "dense", "hybrid")
WEIGHTS = [round(w, 2) for w in np.arange(0.30, 0.951, 0.05)]


def grid() -> list[FusionConfig]:
    configs = []
    for candidates in (20, 50):
        for weight in WEIGHTS:
            for k in (5, 10, 20, 60):
                configs.append(FusionConfig("rrf", k, weight, round(1 - weight, 2), candidates))
            configs.append(FusionConfig("convex", 60, weight, round(1 - weight, 2), candidates))
    return configs


def _ndcg(fused: Scored, hits: dict[int, Hit], relevant: tuple[str, ...], k: int = 10) -> float:
    ranking, seen = [], set()
    for chunk_id, _ in fused:  # one chunk per section, as Retriever.search returns them
        hit = hits[chunk_id]
        if hit.link not in seen:
            seen.add(hit.link)
            ranking.append(hit)
    return score_ranking(ranking[:k], relevant, k=k)["ndcg@10"]


def tune(kb: KnowledgeBase, queries: list[LabelledQuery]) -> dict[str, Any]:
    """The fusion grid on each half, the pick scored on the other half (see the module docstring)."""
    retriever = kb.retriever()
    lists: list[tuple[list[Scored], list[float]]] = []
    for labelled in queries:  # the product's own candidate lists, fetched once at the widest depth
        vector = retriever.embed(labelled.query)
        lists.append(retriever.candidates(labelled.query, vector, 50, mode="hybrid"))
    ids = sorted({i for scored, _ in lists for items in scored for i, _ in items})
    hits = {hit.chunk_id: hit for hit, _ in kb.store.hits([(i, 0.0) for i in ids])}
    configs = grid()
    table = np.zeros((len(configs), len(queries)))
    for row, config in enumerate(configs):
        weights = [config.dense_weight, config.lexical_weight]
        for col, (scored, _) in enumerate(lists):
            cut = [items[: config.candidates] for items in scored]
            table[row, col] = _ndcg(fuse(cut, weights, config), hits, queries[col].relevant)
    halves = {"A": np.arange(0, len(queries), 2), "B": np.arange(1, len(queries), 2)}
    out: dict[str, Any] = {"grid_size": len(configs)}
    for tune_on, test_on in (("A", "B"), ("B", "A")):
        scores = table[:, halves[tune_on]].mean(axis=1)
        best = int(np.argmax(scores))  # the first of equals, in grid order
        out[f"{tune_on}->{test_on}"] = {
            "config": _describe(configs[best]),
            f"ndcg@10_{tune_on}_tuning": round(float(scores[best]), 4),
            f"ndcg@10_{test_on}_held_out": round(float(table[best, halves[test_on]].mean()), 4),
        }
    # Ceilings, not publishable (they look at the test labels): the best fixed configuration tuned on
    # all queries (if short of the target, no fixed fusion of these lists reaches it) and per-query
    # oracles (what a perfect router could add).
    dense_or_bm25 = [
        max(_ndcg(scored[0], hits, q.relevant), _ndcg(scored[1], hits, q.relevant))
        for (scored, _), q in zip(lists, queries, strict=True)
    ]
    out["ceiling_ndcg@10"] = {
        "best_fixed_config_tuned_on_all_queries": round(float(table.mean(axis=1).max()), 4),
        "per_query_oracle_config": round(float(table.max(axis=0).mean()), 4),
        "per_query_oracle_dense_or_bm25": round(float(np.mean(dense_or_bm25)), 4),
    }
    pick = configs[int(np.argmax(table[:, halves["A"]].mean(axis=1)))]
    default = FusionConfig.from_settings(kb.settings)
    out["product_default"] = _describe(default)
    out["product_default_is_the_A_pick"] = _describe(default) == _describe(pick)
    return out


def _describe(config: FusionConfig) -> dict[str, Any]:
    return {
        "method": config.method,
        "rrf_k": config.rrf_k if config.method == "rrf" else None,
        "weights": [config.dense_weight, config.lexical_weight],
        "candidates": config.candidates,
    }


def main() -> None:
    pages, count = build(DEFAULT_DOCS, DATA)
    queries = load_queries(DATA / "queries.jsonl")
    with tempfile.TemporaryDirectory() as scratch:
        kb = open_kb(Path(scratch), database_url="")
        report = kb.ingest([DATA / "docs"])
        modes = {mode: evaluate(kb, queries, mode=mode) for mode in MODES}
        halves: dict[str, dict[str, Any]] = {
            name: {mode: evaluate(kb, part, mode=mode)["ndcg@10"] for mode in MODES}
            for name, part in (("A", queries[0::2]), ("B", queries[1::2]))
        }
        tuning = tune(kb, queries)
        stats = kb.stats()
        kb.store.engine.dispose()
    for half in halves.values():
        half["hybrid_minus_best_single_points"] = round(
            (half["hybrid"] - max(half["bm25"], half["dense"])) * 100, 2
        )
    best_single = max(modes["bm25"]["ndcg@10"], modes["dense"]["ndcg@10"])
    gain = round((modes["hybrid"]["ndcg@10"] - best_single) * 100, 2)
    held_out = halves["B"]["hybrid_minus_best_single_points"]
    results = {
        "dataset": {"pages": pages, "queries": count, "chunks": stats.chunks, "skipped": len(report.skipped)},
        "fusion": _describe(FusionConfig.from_settings(kb.settings)),
        "modes": modes,
        "halves_ndcg@10": halves,
        "tuning": tuning,
        "hybrid_minus_best_single_ndcg_points": gain,
        "held_out_B_hybrid_minus_best_single_ndcg_points": held_out,
        "target_points": 3.0,
    }
    ndcg = {mode: result["ndcg@10"] for mode, result in modes.items()}
    ceiling = tuning["ceiling_ndcg@10"]
    fixed, oracle = ceiling["best_fixed_config_tuned_on_all_queries"], ceiling["per_query_oracle_config"]
    summary = (
        f"Python FAQ, {count} queries: nDCG@10 bm25 {ndcg['bm25']}, dense {ndcg['dense']}, "
        f"hybrid {ndcg['hybrid']} ({gain:+} points over the better single; held-out half "
        f"{held_out:+}, target +3 not met); hybrid p95 {modes['hybrid']['p95_ms']} ms; ceilings that look "
        f"at the labels: the best fixed fusion tuned on all queries {fixed}, a per-query oracle over "
        f"the grid {oracle}"
    )
    if held_out >= 3.0:
        summary = summary.replace(", target +3 not met", ", target +3 met")
    print(summary)
    print(write_results("retrieval", results, summary=summary))


if __name__ == "__main__":
    main()
