"""Retrieval quality on the Python FAQ (Debian's python3.11-doc): BM25, dense and hybrid side by side.

    .venv/bin/python bench/retrieval.py      # builds bench/data/python-faq, then ~1 minute

Writes bench/results/retrieval.json and its row in bench/BENCHMARKS.md. The same numbers come from
`kb bench retrieval --docs bench/data/python-faq/docs --queries bench/data/python-faq/queries.jsonl
--mode all`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_results
from bench.python_faq import DEFAULT_DOCS, build
from core import db
from core.settings import load_settings
from knowledge.evaluation import evaluate, load_queries
from knowledge.service import KnowledgeBase

DATA = Path(__file__).resolve().parent / "data" / "python-faq"


def main() -> None:
    pages, count = build(DEFAULT_DOCS, DATA)
    queries = load_queries(DATA / "queries.jsonl")
    with tempfile.TemporaryDirectory() as scratch:
        settings = load_settings(data_dir=Path(scratch), database_url="")
        engine = db.make_engine(settings)
        db.upgrade(engine)
        kb = KnowledgeBase(settings, engine)
        report = kb.ingest([DATA / "docs"])
        modes = {mode: evaluate(kb, queries, mode=mode) for mode in ("bm25", "dense", "hybrid")}
        stats = kb.stats()
        engine.dispose()
    best_single = max(modes["bm25"]["ndcg@10"], modes["dense"]["ndcg@10"])
    gain = round((modes["hybrid"]["ndcg@10"] - best_single) * 100, 2)
    results = {
        "dataset": {"pages": pages, "queries": count, "chunks": stats.chunks, "skipped": len(report.skipped)},
        "fusion": {
            "method": "rrf",
            "k": settings.rrf_k,
            "weights": [settings.dense_weight, settings.lexical_weight],
        },
        "modes": modes,
        "hybrid_minus_best_single_ndcg_points": gain,
    }
    ndcg = {mode: result["ndcg@10"] for mode, result in modes.items()}
    ndcg = {mode: result["ndcg@10"] for mode, result in modes.items()}
    summary = (
        f"Python FAQ, {count} queries: nDCG@10 bm25 {ndcg['bm25']}, dense {ndcg['dense']}, "
        f"hybrid {ndcg['hybrid']} ({gain:+} points over the better single); "
        f"hybrid p95 {modes['hybrid']['p95_ms']} ms"
    )
    print(summary)
    print(write_results("retrieval", results, summary=summary))


if __name__ == "__main__":
    main()
