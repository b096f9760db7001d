"""The catalog's cached masks: a cached mask must never outlive the metadata it was computed from."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from core.settings import Settings
from knowledge.catalog import ChunkCatalog, ChunkMeta, Filters
from knowledge.embeddings import Embedder
from knowledge.index import VectorIndex
from knowledge.lexical import LexicalIndex
from knowledge.retrieval import Retriever
from knowledge.service import KnowledgeBase
from knowledge.store import Store
from knowledge.types import Question

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


def _meta(chunk_id: int, acl: tuple[str, ...] = (), source: str = "handbook", days: int = 0) -> ChunkMeta:
    return ChunkMeta(chunk_id, source, acl, (), NOW - timedelta(days=days))


def _allowed_ids(catalog: ChunkCatalog, groups: tuple[str, ...], filters: Filters | None = None) -> set[int]:
    """The chunk ids that both the mask and the FAISS bitmap let through."""
    allowed = catalog.allowed(groups, filters)
    if allowed is None:
        return set(catalog.ids.tolist())
    size, bits = allowed.bitmap
    in_bitmap = np.flatnonzero(np.unpackbits(bits, bitorder="little")[:size]).tolist()
    assert set(in_bitmap) == set(catalog.ids[allowed.mask].tolist())
    return set(in_bitmap)


def test_a_new_restricted_chunk_never_passes_through_a_mask_cached_before_it() -> None:
    public = [_meta(1), _meta(2)]
    before = ChunkCatalog(public)
    assert before.mask(()) is None  # all public: "nothing excluded" is what gets cached
    assert before.mask(()) is None
    after = ChunkCatalog([*public, _meta(3, acl=("finance",))])
    assert _allowed_ids(after, ()) == {1, 2}
    assert _allowed_ids(after, ("Finance",)) == {1, 2, 3}
    assert before.mask(()) is None  # the old catalog is unchanged for whoever still holds it


def test_a_chunk_made_restricted_is_excluded_under_the_same_id() -> None:
    before = ChunkCatalog([_meta(1), _meta(2), _meta(3, acl=("hr",))])
    assert _allowed_ids(before, ()) == {1, 2}
    after = ChunkCatalog([_meta(1), _meta(2, acl=("legal",)), _meta(3, acl=("hr",))])
    assert _allowed_ids(after, ()) == {1}
    assert _allowed_ids(after, ("hr",)) == {1, 3}


def test_masks_are_cached_per_groups_and_filters_and_cannot_be_changed() -> None:
    catalog = ChunkCatalog([_meta(1), _meta(2, acl=("hr",)), _meta(3, source="wiki")])
    first = catalog.allowed(())
    assert first is not None
    assert catalog.allowed(()) is first
    assert catalog.allowed(("HR",)) is None
    # Order and case of groups do not matter to can_read, so they share one entry.
    assert catalog.allowed(("hr", "it")) is catalog.allowed(("IT", "hr"))
    wiki = catalog.allowed((), Filters(sources=("wiki",)))
    assert wiki is not None and wiki is not first
    assert wiki.mask.tolist() == [False, False, True]
    with pytest.raises(ValueError, match="read-only"):
        first.mask[0] = False
    with pytest.raises(ValueError, match="read-only"):
        first.bitmap[1][0] = 0xFF
    with pytest.raises(ValueError, match="read-only"):
        catalog.acl_code[1] = 0  # the catalog itself cannot change under its cache


def test_time_bounds_apply_on_top_of_the_cached_mask_without_filling_the_cache() -> None:
    catalog = ChunkCatalog([_meta(1, days=1), _meta(2, days=10), _meta(3, acl=("hr",), days=1)])
    for hours in range(100):  # "in the last N days" differs on every question: never cached
        recent = Filters(updated_after=NOW - timedelta(days=2, hours=hours))
        assert _allowed_ids(catalog, (), recent) == {1}
    assert catalog.cached == 1  # only the time-free part, shared by all of them
    assert catalog.mask(()) is not None and catalog.mask(()).tolist() == [True, True, False]


def test_the_cache_is_bounded_and_keeps_the_recently_used() -> None:
    rows = [_meta(i, acl=(f"g{i}",)) for i in range(1, 40)]
    catalog = ChunkCatalog(rows, cache_size=8)
    keep = catalog.allowed(("g1",))
    for i in range(2, 30):
        assert catalog.allowed(("g1",)) is keep
        assert _allowed_ids(catalog, (f"g{i}",)) == {i}
    assert catalog.cached == 8
    assert catalog.allowed(("g1",)) is keep
    assert catalog.allowed(("g2",)) is not None


def test_concurrent_readers_get_the_same_answers() -> None:
    rows = [_meta(i, acl=(f"g{i % 7}",) if i % 3 else ()) for i in range(1, 3000)]
    catalog = ChunkCatalog(rows, cache_size=4)
    expected = {g: _allowed_ids(ChunkCatalog(rows, cache_size=0), (f"g{g}",)) for g in range(7)}
    errors: list[str] = []

    def reader(offset: int) -> None:
        for n in range(200):
            g = (n + offset) % 7
            if _allowed_ids(catalog, (f"g{g}",)) != expected[g]:
                errors.append(f"group g{g}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert catalog.cached <= 4


@pytest.fixture
def kb(settings: Settings, migrated: Engine, embedder: Embedder, tmp_path: Path) -> KnowledgeBase:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "vpn.md").write_text(
        f"---\ntitle: VPN\nupdated: {date.today()}\n---\nInstall HaldenConnect to reach the intranet.\n"
    )
    kb = KnowledgeBase(settings, migrated, embedder=embedder)
    assert kb.ingest([root]).ok
    return kb


def _candidate_ids(kb: KnowledgeBase, text: str, groups: tuple[str, ...]) -> set[int]:
    """Every chunk id either search would consider: the ACL must hold before the final re-check."""
    retriever = kb.retriever()
    allowed = retriever.catalog.allowed(groups)
    lists, _ = retriever.candidates(text, retriever.embed(text), 20, allowed=allowed, mode="hybrid")
    return {chunk_id for scored in lists for chunk_id, _ in scored}


def test_a_restricted_document_ingested_after_a_cached_public_mask_never_becomes_a_candidate(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    question = "HaldenConnect salary bands for the intranet"
    before = _candidate_ids(kb, question, ())  # the public mask (nothing excluded) is now cached
    assert before
    extra = tmp_path / "more"
    extra.mkdir()
    (extra / "salaries.md").write_text(
        f"---\ntitle: Salary bands\nupdated: {date.today()}\nacl_groups: [finance]\n---\n"
        "HaldenConnect salary bands for the intranet team, by level.\n"
    )
    assert kb.ingest([extra]).ok
    secret = set(kb.retriever().catalog.ids.tolist()) - before
    assert secret
    assert not _candidate_ids(kb, question, ()) & secret
    assert _candidate_ids(kb, question, ("finance",)) & secret
    for mode in ("hybrid", "dense", "bm25"):
        titles = [hit.title for hit in kb.retrieve(Question(question), 5, mode=mode)]
        assert "Salary bands" not in titles, mode
        finance = [hit.title for hit in kb.retrieve(Question(question, groups=("finance",)), 5, mode=mode)]
        assert "Salary bands" in finance, mode


def _dense_setup(embedder: Embedder, restricted: set[int], vectors: np.ndarray) -> Retriever:
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    index = VectorIndex.build(vectors.shape[1], model="m", ids=ids, vectors=vectors, ann_threshold=len(ids))
    catalog = ChunkCatalog([_meta(int(i), acl=("finance",) if int(i) in restricted else ()) for i in ids])
    unused = Store(sa.create_engine("sqlite://"))  # dense candidates never read the database
    return Retriever(unused, embedder, index, LexicalIndex.build([], []), catalog)


def _unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, 16)).astype(np.float32)
    return np.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), dtype=np.float32)


def test_dense_search_filters_after_an_unfiltered_search_only_when_that_gives_the_same_result(
    embedder: Embedder,
) -> None:
    vectors = _unit(2000, seed=1)
    restricted = set(range(10, 2001, 10))
    retriever = _dense_setup(embedder, restricted, vectors)
    public = retriever.catalog.allowed(())
    assert public is not None and public.share == 0.9
    for row in (9, 19, 500, 1234):  # each query sits on a restricted chunk's own vector
        query = vectors[row]
        (dense,), _ = retriever.candidates("", query, 20, allowed=public, mode="dense")
        exact = retriever.index.search(query, 20, allowed=public.bitmap)
        assert [i for i, _ in dense] == [i for i, _ in exact]
        assert len(dense) == 20 and not {i for i, _ in dense} & restricted
    (everything,), _ = retriever.candidates("", vectors[9], 20, allowed=None, mode="dense")
    assert everything[0][0] == 10  # the finance reader's view: the restricted chunk itself


def test_dense_search_falls_back_to_the_selector_when_restricted_chunks_crowd_the_top(
    embedder: Embedder,
) -> None:
    vectors = _unit(1000, seed=2)
    restricted = set(range(1, 401))  # 40% restricted, and all of them right on the query
    query = vectors[999]
    vectors[:400] = query + 0.001 * _unit(400, seed=3)
    vectors[:400] /= np.linalg.norm(vectors[:400], axis=1, keepdims=True)
    retriever = _dense_setup(embedder, restricted, vectors)
    public = retriever.catalog.allowed(())
    assert public is not None and public.share == 0.6
    (dense,), _ = retriever.candidates("", query, 20, allowed=public, mode="dense")
    exact = retriever.index.search(query, 20, allowed=public.bitmap)
    assert [i for i, _ in dense] == [i for i, _ in exact]
    assert dense[0][0] == 1000 and len(dense) == 20
    assert not {i for i, _ in dense} & restricted
    assert not public.permits(0) and not public.permits(5) and public.permits(1000)
    assert not public.permits(10**6)  # an id the catalog never saw
