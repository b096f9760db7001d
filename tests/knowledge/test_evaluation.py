from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app
from knowledge.errors import KnowledgeError
from knowledge.evaluation import load_queries, score_ranking
from knowledge.types import Hit


def _hit(link: str) -> Hit:
    uri, _, anchor = link.partition("#")
    return Hit(0, 0.5, "t", "", anchor, None, "d", "T", f"docs/{uri}", datetime(2026, 1, 1, tzinfo=UTC))


def test_metrics_count_each_relevant_entry_once_at_its_best_rank() -> None:
    hits = [_hit("a.html#x"), _hit("b.html#y"), _hit("b.html#z"), _hit("c.html#q")]
    scores = score_ranking(hits, ("b.html", "c.html#q"))
    assert scores["recall@1"] == 0.0
    assert scores["recall@5"] == scores["recall@10"] == 1.0
    assert scores["mrr@10"] == 0.5
    ideal = 1 + 1 / math.log2(3)
    assert scores["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert score_ranking(hits, ("a.html#y",))["recall@10"] == 0.0  # a different section does not count


def test_bad_query_files_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "a", "relevant": ["x.html"]}\n{"query": "b"}\n')
    with pytest.raises(KnowledgeError, match="line 2"):
        load_queries(path)
    path.write_text("\n")
    with pytest.raises(KnowledgeError, match="no queries"):
        load_queries(path)


def test_kb_bench_retrieval_reports_every_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "unused"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "vpn.md").write_text("# VPN\n\n## Install\n\nInstall HaldenConnect from the Software Center.\n")
    (docs / "food.md").write_text("# Canteen\n\n## Hours\n\nThe canteen serves lunch from 11:30.\n")
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        json.dumps({"query": "how to install the vpn client", "relevant": ["vpn.md#install"]})
        + "\n"
        + json.dumps({"query": "when is lunch", "relevant": ["food.md"]})
        + "\n"
    )
    result = CliRunner().invoke(
        app, ["bench", "retrieval", "--docs", str(docs), "--queries", str(queries), "--mode", "all", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["mode"] for r in report["results"]] == ["bm25", "dense", "hybrid"]
    for r in report["results"]:
        assert r["recall@10"] == 1.0
        assert {"recall@1", "recall@5", "mrr@10", "ndcg@10", "p50_ms", "p95_ms"} <= set(r)
    assert not (tmp_path / "unused").exists(), "the scratch index never touches the configured data dir"


def test_kb_bench_ingest_reports_throughput_and_the_raw_encode_ratio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "unused"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "vpn.md").write_text("# VPN\n\n## Install\n\nInstall HaldenConnect from the Software Center.\n")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7 truncated")
    result = CliRunner().invoke(app, ["bench", "ingest", "--docs", str(docs), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["documents"] == 1
    assert report["skipped"] == 1
    assert report["chunks"] >= 1
    assert report["chunks_per_s"] > 0
    assert report["raw_encode_fp32_chunks_per_s"] > 0
    assert report["ingest_vs_raw_encode_ratio"] > 0
    assert report["peak_rss_mb"] > 0
    missing = CliRunner().invoke(app, ["bench", "ingest", "--docs", str(tmp_path / "nope")])
    assert missing.exit_code == 1
    assert "is not a folder" in missing.stderr
