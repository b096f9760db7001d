"""The vector index: FAISS inner product over normalized vectors, keyed by chunk id.

The database is the source of truth. The index lives in `<index_dir>/vectors.faiss` with a
`manifest.json` beside it that records the embedding model, the dimension and a fingerprint of
the chunk ids it holds; both are written atomically (temp file, fsync, rename). At start,
the knowledge base compares the fingerprint with the database and rebuilds from the stored
embeddings when they disagree (a crash between a commit and a save, a deleted file, a new model).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt

from knowledge.embeddings import Vectors
from knowledge.errors import VectorIndexError

INDEX_FILE = "vectors.faiss"
MANIFEST_FILE = "manifest.json"
IndexKind = Literal["flat", "ivf"]
StoragePrecision = Literal["fp32", "fp16"]
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
    kind: IndexKind = "flat"


class RWLock:
    """Many readers or one writer: searches run concurrently, mutations alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class VectorIndex:
    """Chunk-id-keyed cosine search over FAISS.

    Two kinds: "flat" (IndexIDMap2 over IndexFlatIP, or over an fp16 IndexScalarQuantizer) and
    "ivf" (approximate; IndexIVFFlat with inner product, trained on the vectors it is built from,
    nprobe lists searched). IVF was chosen over HNSW because it deletes natively (HNSW in FAISS
    cannot remove vectors) and builds in seconds rather than minutes; bench/scale.py has the
    measurements. Searches share a read lock and run concurrently; mutations take the write lock.

    A flat index stores vectors in fp32 (exact) or fp16 (`precision`): fp16 halves the memory a
    search streams through and measured 2.3x faster at 100k vectors on one thread, with scores
    within 1e-4 and 0.999 of the top 20 unchanged (NOTES.md, session 2).
    """

    def __init__(
        self,
        dim: int,
        *,
        model: str,
        kind: IndexKind = "flat",
        nprobe: int = 32,
        precision: StoragePrecision = "fp32",
    ) -> None:
        self.dim, self.model, self.kind, self.nprobe = dim, model, kind, nprobe
        self._index: Any = faiss.IndexIDMap2(_flat_storage(dim, precision))
        self._ivf_ids: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._lock = RWLock()

    @classmethod
    def build(
        cls,
        dim: int,
        *,
        model: str,
        ids: npt.NDArray[np.int64],
        vectors: Vectors,
        ann_threshold: int,
        nprobe: int = 32,
        seed: int = 0,
        precision: StoragePrecision = "fp32",
    ) -> VectorIndex:
        """An index holding `vectors`: flat (stored in `precision`) up to `ann_threshold`, IVF above."""
        if len(ids) <= ann_threshold:
            index = cls(dim, model=model, nprobe=nprobe, precision=precision)
            index.add(ids.tolist(), vectors)
            return index
        nlist = ivf_lists(len(ids))
        sample = np.random.default_rng(seed).choice(len(ids), size=min(len(ids), nlist * 64), replace=False)
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(np.ascontiguousarray(vectors[np.sort(sample)]))
        index = cls(dim, model=model, kind="ivf", nprobe=nprobe)
        index._index = ivf
        index.add(ids.tolist(), vectors)
        return index

    @property
    def precision(self) -> StoragePrecision:
        """How a flat index stores its vectors (IVF lists are always fp32)."""
        if self.kind == "flat" and isinstance(
            faiss.downcast_index(self._index.index), faiss.IndexScalarQuantizer
        ):
            return "fp16"
        return "fp32"

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> npt.NDArray[np.int64]:
        if self.kind == "ivf":
            return self._ivf_ids.copy()
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def add(self, ids: list[int], vectors: Vectors) -> None:
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(ids) == 0:
            return
        if vectors.shape[1] != self.dim:
            raise VectorIndexError(f"vectors have dimension {vectors.shape[1]}, the index {self.dim}")
        array = np.asarray(ids, dtype=np.int64)
        with self._lock.write():
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), array)
            if self.kind == "ivf":
                self._ivf_ids = np.concatenate([self._ivf_ids, array])

    def remove(self, ids: list[int]) -> int:
        if not ids:
            return 0
        array = np.asarray(ids, dtype=np.int64)
        with self._lock.write():
            removed = int(self._index.remove_ids(array))
            if self.kind == "ivf":
                self._ivf_ids = self._ivf_ids[~np.isin(self._ivf_ids, array)]
            return removed

    def search(
        self, vector: Vectors, k: int, *, allowed: tuple[int, npt.NDArray[np.uint8]] | None = None
    ) -> list[tuple[int, float]]:
        """The k nearest chunk ids with their cosine similarity, best first.

        `allowed` is a (size, bitmap) pair over chunk ids (see ChunkCatalog.bitmap): only those
        ids are considered, inside FAISS, so filtering never costs results.
        """
        if self.size == 0 or k <= 0:
            return []
        selector = None if allowed is None else faiss.IDSelectorBitmap(allowed[0], faiss.swig_ptr(allowed[1]))
        if self.kind == "ivf":
            params: Any = faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)  # type: ignore[call-arg]
        else:
            params = None if selector is None else faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        with self._lock.read():
            scores, ids = self._index.search(query, min(k, self.size), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]

    def save(self, directory: Path, *, last_change: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock.read():
            data = faiss.serialize_index(self._index)
            fingerprint = Fingerprint.of(self.ids())
        manifest = Manifest(
            model=self.model, dim=self.dim, fingerprint=fingerprint, last_change=last_change, kind=self.kind
        )
        atomic_write(directory / INDEX_FILE, data.tobytes())
        atomic_write(directory / MANIFEST_FILE, json.dumps(asdict(manifest), indent=2).encode())

    @classmethod
    def load(cls, directory: Path, *, nprobe: int = 32) -> tuple[VectorIndex, Manifest]:
        try:
            raw = json.loads((directory / MANIFEST_FILE).read_text())
            manifest = Manifest(
                model=raw["model"],
                dim=raw["dim"],
                fingerprint=Fingerprint(**raw["fingerprint"]),
                last_change=int(raw.get("last_change", 0)),
                kind=raw.get("kind", "flat"),
            )
            data = np.frombuffer((directory / INDEX_FILE).read_bytes(), dtype=np.uint8)
            index = faiss.deserialize_index(data)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise VectorIndexError(f"cannot load the vector index in {directory}: {exc}") from exc
        loaded = cls(manifest.dim, model=manifest.model, kind=manifest.kind, nprobe=nprobe)
        loaded._index = index
        if manifest.kind == "ivf":
            loaded._ivf_ids = _ivf_ids(index)
        return loaded, manifest


def _flat_storage(dim: int, precision: StoragePrecision) -> Any:
    if precision == "fp16":
        return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    return faiss.IndexFlatIP(dim)


def ivf_lists(count: int) -> int:
    """About 4·sqrt(n) inverted lists, a power of two (the usual FAISS rule of thumb), with at
    least 39 training points per list as FAISS's k-means wants."""
    wanted = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(count))))
    affordable = 2 ** int(math.log2(max(1, count // 39)))
    return int(max(1, min(wanted, affordable)))


def _ivf_ids(index: Any) -> npt.NDArray[np.int64]:
    invlists: Any = faiss.extract_index_ivf(index).invlists
    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
        for i in range(invlists.nlist)
        if invlists.list_size(i)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


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
