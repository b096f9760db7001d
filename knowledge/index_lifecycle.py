"""The on-disk indexes over the chunks: opened and checked against the database, else rebuilt.

The database is the source of truth; the FAISS vector index and the BM25 lexical index in the
index directory are derived from it. Opening one checks its manifest or fingerprint against the
database and rebuilds it from the stored embeddings (or chunk texts) when they disagree, and a
changed embedding model re-embeds every chunk first. `KnowledgeBase` (knowledge.service) decides
when to open or rebuild; this module holds how, apart from the question answering it also serves.
"""

from __future__ import annotations

import logging

import numpy as np

from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.errors import VectorIndexError
from knowledge.index import VectorIndex
from knowledge.lexical import LEXICAL_FILE, LexicalIndex
from knowledge.store import Store
from knowledge.sync import embedding_text

log = logging.getLogger(__name__)


def open_index(settings: Settings, store: Store, embedder: Embedder) -> VectorIndex:
    """The vector index on disk when it matches the database and the configuration, else rebuilt."""
    directory = settings.index_dir
    expected = store.fingerprint()
    reason = "no index on disk"
    if (directory / "manifest.json").exists():
        try:
            index, manifest = VectorIndex.load(directory, nprobe=settings.retrieval.ivf_nprobe)
        except VectorIndexError as exc:
            reason = str(exc)
        else:
            if manifest.model != embedder.name or manifest.dim != embedder.dim:
                log.warning("index built with %s, configured %s: re-embedding", manifest.model, embedder.name)
                return rebuild_index(settings, store, embedder, reembed=True)
            if (stored := index.precision) != (configured := settings.retrieval.index_precision):
                log.warning("index stored in %s, configured %s: rebuilding", stored, configured)
                return rebuild_index(settings, store, embedder, reembed=False)
            if (
                manifest.fingerprint == expected
                and index.ids().size == expected.count
                and manifest.last_change == store.last_change()
            ):
                return index
            reason = f"index holds {index.size} vectors, the database {expected.count} chunks"
    if expected.count:
        log.warning("rebuilding the vector index from the database: %s", reason)
    return rebuild_index(settings, store, embedder, reembed=False)


def open_lexical(settings: Settings, store: Store) -> LexicalIndex:
    """The lexical index on disk when its fingerprint matches the database, else rebuilt and saved."""
    directory, expected = settings.index_dir, store.fingerprint()
    if (directory / LEXICAL_FILE).exists():
        try:
            lexical = LexicalIndex.load(directory)
        except VectorIndexError as exc:
            log.warning("rebuilding the lexical index: %s", exc)
        else:
            if lexical.fingerprint == expected:
                return lexical
    ids: list[int] = []
    texts: list[str] = []
    for batch in store.iter_chunk_texts():
        ids += [row[0] for row in batch]
        texts += [embedding_text(title, section, text) for _, title, section, text in batch]
    lexical = LexicalIndex.build(ids, texts)
    lexical.save(directory)
    return lexical


def rebuild_index(settings: Settings, store: Store, embedder: Embedder, *, reembed: bool) -> VectorIndex:
    """The vector index built from the stored embeddings (computed anew first if `reembed`), and saved."""
    if reembed:
        for batch in store.iter_chunk_texts():
            texts = [embedding_text(t, s, x) for _, t, s, x in batch]
            store.update_embeddings([row[0] for row in batch], embedder.encode(texts))
    last_change = store.last_change()  # read first: a change after it makes the next open rebuild
    batches = list(store.iter_embeddings())
    ids = [np.asarray(i, dtype=np.int64) for i, _ in batches]
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    dim = embedder.dim
    vectors = np.concatenate([v for _, v in batches]) if batches else np.zeros((0, dim), np.float32)
    index = VectorIndex.build(
        embedder.dim,
        model=embedder.name,
        ids=all_ids,
        vectors=vectors,
        ann_threshold=settings.retrieval.ann_threshold,
        nprobe=settings.retrieval.ivf_nprobe,
        precision=settings.retrieval.index_precision,
    )
    index.save(settings.index_dir, last_change=last_change)
    return index
