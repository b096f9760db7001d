"""Fusion of the dense and lexical lists: RRF and convex min-max fusion, and the configured defaults."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.settings import Settings
from knowledge.retrieval import FusionConfig, convex_fusion, fuse, reciprocal_rank_fusion


def test_convex_fusion_normalizes_each_list_before_weighting() -> None:
    dense = [(1, 0.90), (2, 0.80), (3, 0.70)]  # cosine: a narrow range
    lexical = [(3, 30.0), (4, 10.0)]  # BM25: a wide, unbounded range
    fused = dict(convex_fusion([dense, lexical], [0.5, 0.5]))
    assert fused[1] == pytest.approx(0.5)  # best dense, absent from BM25
    assert fused[3] == pytest.approx(0.5)  # worst dense (0) + best BM25
    assert fused[2] == pytest.approx(0.25)
    assert fused[4] == pytest.approx(0.0)  # worst listed BM25 scores 0, like an absent one


def test_convex_fusion_weights_decide_between_the_lists() -> None:
    dense = [(1, 0.9), (2, 0.1)]
    lexical = [(2, 5.0), (1, 1.0)]
    assert convex_fusion([dense, lexical], [0.7, 0.3])[0][0] == 1
    assert convex_fusion([dense, lexical], [0.3, 0.7])[0][0] == 2


def test_convex_fusion_of_a_list_with_equal_scores_and_of_empty_lists() -> None:
    assert convex_fusion([[(5, 2.0), (6, 2.0)], []], [1.0, 1.0]) == [(5, 1.0), (6, 1.0)]
    assert convex_fusion([[], []], [1.0, 1.0]) == []


def test_small_rrf_k_lets_the_top_ranks_decide() -> None:
    lists = [[1, 2, 3], [9, 2, 8]]  # 1: first in dense only; 2: second in both
    textbook = reciprocal_rank_fusion(lists, [0.7, 0.3], k=60)
    assert textbook[0][0] == 2  # with k=60, agreement at rank 2 outweighs a dense first place
    tuned = reciprocal_rank_fusion(lists, [0.7, 0.3], k=1)
    assert tuned[0][0] == 1
    assert tuned[0][1] == pytest.approx(0.7 / 2)


def test_fuse_dispatches_on_the_method_and_passes_a_single_list_through() -> None:
    dense = [(1, 0.9), (2, 0.5)]
    lexical = [(2, 9.0), (3, 1.0)]
    single = fuse([dense], [1.0], FusionConfig())
    assert single == dense  # one mode keeps its own order and scores
    rrf = fuse([dense, lexical], [1.0, 1.0], FusionConfig(method="rrf", rrf_k=60))
    assert rrf == reciprocal_rank_fusion([[1, 2], [2, 3]], [1.0, 1.0], k=60)
    convex = fuse([dense, lexical], [1.0, 1.0], FusionConfig(method="convex"))
    assert convex == convex_fusion([dense, lexical], [1.0, 1.0])


def test_defaults_are_the_tuned_configuration(make_settings: Callable[..., Settings]) -> None:
    # bench/retrieval.py picked this on half A of the Python FAQ queries; it reports when they differ.
    assert FusionConfig.from_settings(make_settings()) == FusionConfig()
    assert FusionConfig() == FusionConfig(
        method="rrf", rrf_k=10, dense_weight=0.7, lexical_weight=0.3, candidates=20
    )


def test_fusion_settings_reach_the_config(make_settings: Callable[..., Settings]) -> None:
    custom = make_settings(fusion_method="convex", dense_weight=0.6, lexical_weight=0.4, fusion_candidates=50)
    config = FusionConfig.from_settings(custom)
    assert (config.method, config.dense_weight, config.lexical_weight, config.candidates) == (
        "convex",
        0.6,
        0.4,
        50,
    )
