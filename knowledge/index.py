"""The vector index: FAISS inner product over normalized vectors, keyed by chunk id.

The database is the source of truth. The index lives in `<index_dir>/vectors.faiss` with a
`manifest.json` beside it that records the embedding model, the dimension and a fingerprint of
the chunk ids it holds; both are written atomically (temp file, fsync, rename). At start,
:func:`open_index` compares the fingerprint with the database and rebuilds from the stored
embeddings when they disagree (a crash between a commit and a save, a deleted file, a new model).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from knowledge.embeddings import Vectors
from knowledge.errors import VectorIndexError

INDEX_FILE = "vectors.faiss"
MANIFEST_FILE = "manifest.json"
ID_CHECKSUM_MOD = 2**61 - 1  # keeps the id checksum an exact integer in JSON and in SQL


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A cheap summary of a set of chunk ids that both FAISS and SQL can compute."""

    count: int
    max_id: int
    id_sum: int

    @classmethod
    def of(cls, ids: npt.NDArray[np.int64]) -> Fingerprint:
        if len(ids) == 0:
            return cls(0, 0, 0)
        return cls(len(ids), int(ids.max()), int(sum(int(i) for i in ids) % ID_CHECKSUM_MOD))


@dataclass(frozen=True, slots=True)
class Manifest:
    model: str
    dim: int
    fingerprint: Fingerprint
    last_change: int = 0  # the newest document_changes row this index reflects


class VectorIndex:
    """Chunk-id-keyed cosine search. Mutations hold a lock; so does search, which is microseconds
    at the flat index's sizes (the approximate index for large bases arrives with issue 3)."""

    def __init__(self, dim: int, *, model: str) -> None:
        self.dim = dim
        self.model = model
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> npt.NDArray[np.int64]:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def add(self, ids: list[int], vectors: Vectors) -> None:
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(ids) == 0:
            return
        if vectors.shape[1] != self.dim:
            raise VectorIndexError(f"vectors have dimension {vectors.shape[1]}, the index {self.dim}")
        with self._lock:
            self._index.add_with_ids(np.ascontiguousarray(vectors), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: list[int]) -> int:
        if not ids:
            return 0
        with self._lock:
            return int(self._index.remove_ids(np.asarray(ids, dtype=np.int64)))

    def search(
        self, vector: Vectors, k: int, *, allowed: tuple[int, npt.NDArray[np.uint8]] | None = None
    ) -> list[tuple[int, float]]:
        """The k nearest chunk ids with their cosine similarity, best first.

        `allowed` is a (size, bitmap) pair over chunk ids (see ChunkCatalog.bitmap): only those
        ids are considered, inside FAISS, so filtering never costs results.
        """
        if self.size == 0 or k <= 0:
            return []
        params = None
        if allowed is not None:
            size, bitmap = allowed
            selector = faiss.IDSelectorBitmap(size, faiss.swig_ptr(bitmap))
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        with self._lock:
            scores, ids = self._index.search(query, min(k, self.size), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]

    def save(self, directory: Path, *, last_change: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            data = faiss.serialize_index(self._index)
            fingerprint = Fingerprint.of(self.ids())
            manifest = Manifest(
                model=self.model, dim=self.dim, fingerprint=fingerprint, last_change=last_change
            )
        atomic_write(directory / INDEX_FILE, data.tobytes())
        atomic_write(directory / MANIFEST_FILE, json.dumps(asdict(manifest), indent=2).encode())

    @classmethod
    def load(cls, directory: Path) -> tuple[VectorIndex, Manifest]:
        try:
            raw = json.loads((directory / MANIFEST_FILE).read_text())
            manifest = Manifest(
                model=raw["model"], dim=raw["dim"], fingerprint=Fingerprint(**raw["fingerprint"])
            )
            data = np.frombuffer((directory / INDEX_FILE).read_bytes(), dtype=np.uint8)
            index = faiss.deserialize_index(data)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise VectorIndexError(f"cannot load the vector index in {directory}: {exc}") from exc
        loaded = cls(manifest.dim, model=manifest.model)
        loaded._index = index
        return loaded, manifest


def set_threads(count: int) -> None:
    """Cap FAISS's OpenMP threads so searches do not oversubscribe the bot's own threads."""
    faiss.omp_set_num_threads(count)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
