"""The fusion study's parts: the pseudo-query builder, the pairwise ranker, and BM25 scores by id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.fusion_study import Candidates, fit_pairwise
from bench.python_pseudo import build
from knowledge.evaluation import LabelledQuery
from knowledge.lexical import LexicalIndex

PAGE = """<html><body><div class="body">
<section id="reading-and-writing"><h1>7. Reading and Writing<a class="headerlink" href="#x">¶</a></h1>
<nav class="contents"><a href="#reading-files">Reading Files</a></nav>
<p>See <a href="#reading-files">7.1. Reading Files</a> below.</p>
<section id="reading-files"><h2>7.1. Reading Files<a class="headerlink" href="#reading-files">¶</a></h2>
<p>Call open() with mode r and iterate over the lines.</p></section>
<section id="intro"><h2>Intro<a class="headerlink" href="#intro">¶</a></h2>
<p>One word: not a query.</p></section>
</section></div></body></html>"""


def test_pseudo_builder_turns_headings_into_queries_and_hides_them(tmp_path: Path) -> None:
    docs = tmp_path / "html"
    (docs / "tutorial").mkdir(parents=True)
    (docs / "tutorial" / "inputoutput.html").write_text(PAGE, encoding="utf-8")
    (docs / "tutorial" / "index.html").write_text(PAGE, encoding="utf-8")  # tables of contents only
    pages, count = build(docs, tmp_path / "out", parts=("tutorial",))
    queries = [json.loads(line) for line in (tmp_path / "out" / "queries.jsonl").read_text().splitlines()]
    assert (pages, count) == (1, 1)
    assert queries == [{"query": "Reading Files", "relevant": ["tutorial/inputoutput.html#reading-files"]}]
    indexed = (tmp_path / "out" / "docs" / "tutorial" / "inputoutput.html").read_text(encoding="utf-8")
    assert "Reading Files" not in indexed  # heading, table of contents and cross-reference all gone
    assert 'id="reading-files"' in indexed and "Entry" in indexed  # the section and its anchor stay
    assert "iterate over the lines" in indexed and "Reading and Writing" in indexed  # h1 is no query


def _pool(rows: list[list[float]], relevant: list[bool]) -> Candidates:
    return Candidates(
        query=LabelledQuery("q", ("p.html#a",)),
        ids=list(range(len(rows))),
        features=np.asarray(rows, dtype=np.float64),
        relevant=np.asarray(relevant),
        dense=[],
        lexical=[],
        seconds=0.0,
    )


def test_pairwise_ranker_learns_which_feature_marks_the_relevant_candidate() -> None:
    rng = np.random.default_rng(7)
    pools = []
    for _ in range(40):
        signal, noise = rng.normal(size=6), rng.normal(size=6) * 3
        best = int(np.argmax(signal + rng.normal(size=6) * 0.3))
        pools.append(_pool(np.stack([signal, noise], axis=1).tolist(), [i == best for i in range(6)]))
    weights = fit_pairwise(pools, [0, 1])
    assert weights[0] > 0
    assert abs(weights[1]) < weights[0] / 5
    top_is_relevant = [bool(p.relevant[np.argmax(p.features @ weights)]) for p in pools]
    assert sum(top_is_relevant) >= 30


def test_pairwise_ranker_needs_a_pair() -> None:
    with pytest.raises(ValueError, match="no query"):
        fit_pairwise([_pool([[1.0], [0.5]], [False, False])], [0])


def test_bm25_scores_by_chunk_id_match_the_search() -> None:
    texts = ["reading files with open", "writing files", "the garbage collector frees memory"]
    index = LexicalIndex.build([10, 20, 30], texts)
    found = dict(index.search("reading files", 3))
    scores = index.score_ids("reading files", [30, 10, 20, 99])
    assert scores[0] == 0.0 and scores[3] == 0.0  # no term matches; an id the index does not hold
    assert scores[1] == pytest.approx(found[10]) and scores[2] == pytest.approx(found[20])
    assert scores[1] > scores[2]
    assert not index.score_ids("the of", [10]).any()  # stop words only: no terms
