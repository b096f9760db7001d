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
# Lists searched per IVF query. On 1M real MiniLM embeddings (nlist 4096, the scale_gpu row of
# bench/BENCHMARKS.md) recall@10 against exact search was 0.931 at 64, 0.948 at 96 and 0.957 at 128.
DEFAULT_NPROBE = 128
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
    "ivf" (approximate; inner-product IVF trained on the vectors it is built from, nprobe lists
    searched). IVF was chosen over HNSW because it deletes natively (HNSW in FAISS cannot remove
    vectors) and builds in seconds rather than minutes; docs/decisions/ivf-at-scale.md
    has the measurements. Searches share a read lock and run concurrently; mutations take the
    write lock.

    Either kind stores vectors in fp32 (exact) or fp16 (`precision`): flat as an
    IndexScalarQuantizer, IVF as an IndexIVFScalarQuantizer whose lists hold fp16 codes of the
    vectors themselves (not residuals). fp16 halves the memory a search streams through: 2.3x
    faster flat at 100k vectors on one thread, with scores within 1e-4 and 0.999 of the top 20
    unchanged (the fp16 index record in docs/decisions/); bench/results/scale_gpu.json times both
    IVF list types.
    """

    def __init__(
        self,
        dim: int,
        *,
        model: str,
        kind: IndexKind = "flat",
        nprobe: int = DEFAULT_NPROBE,
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
        nprobe: int = DEFAULT_NPROBE,
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
        ivf = ivf_storage(dim, nlist, precision)
        ivf.train(np.ascontiguousarray(vectors[np.sort(sample)]))
        index = cls(dim, model=model, kind="ivf", nprobe=nprobe)
        index._index = ivf
        index.add(ids.tolist(), vectors)
        return index

    @property
    def precision(self) -> StoragePrecision:
        """How the index stores its vectors (flat storage or IVF lists)."""
        storage = self._index.index if self.kind == "flat" else self._index
        quantized = (faiss.IndexScalarQuantizer, faiss.IndexIVFScalarQuantizer)
        return "fp16" if isinstance(faiss.downcast_index(storage), quantized) else "fp32"

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
        _apply_threads()
        want = min(k, self.size)
        with self._lock.read():
            scores, ids = self._index.search(query, want, params=params)
            found = int((ids[0] != -1).sum())
            if (
                self.kind == "ivf"
                and allowed is not None
                and found < want
                and found < _allowed_count(allowed[1])
            ):
                # IVF filters only inside the lists it probes: a user with few rights can find fewer
                # than k there while more of their chunks sit in other lists. Probe every list then
                # (exact over what they may read), so filtering never costs results.
                inner: Any = faiss.extract_index_ivf(self._index)
                params = faiss.SearchParametersIVF(sel=selector, nprobe=inner.nlist)  # type: ignore[call-arg]
                scores, ids = self._index.search(query, want, params=params)
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
    def load(cls, directory: Path, *, nprobe: int = DEFAULT_NPROBE) -> tuple[VectorIndex, Manifest]:
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


def ivf_storage(dim: int, nlist: int, precision: StoragePrecision) -> Any:
    """An untrained inner-product IVF with `nlist` lists holding vectors in `precision`."""
    quantizer = faiss.IndexFlatIP(dim)
    if precision == "fp16":
        # by_residual=False: the codes are the unit vectors themselves, so a list scan is a plain
        # fp16 inner product (no per-list residual term) and the error stays ~1e-4 per score.
        return faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT, False
        )
    return faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)


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


_threads = {"count": 0}
_thread_state = threading.local()


def set_threads(count: int) -> None:
    """Cap FAISS's OpenMP threads so searches do not oversubscribe the bot's own threads.

    OpenMP keeps the count per thread: a call on the main thread does not reach the worker threads
    that `asyncio.to_thread` searches run on (they spun two OpenMP threads each, 20-24 ms of CPU per
    search instead of 5.5). So the count is remembered here and each searching thread applies it
    once (`_apply_threads`).
    """
    _threads["count"] = count
    faiss.omp_set_num_threads(count)
    _thread_state.applied = count


def _apply_threads() -> None:
    count = _threads["count"]
    if count and getattr(_thread_state, "applied", 0) != count:
        faiss.omp_set_num_threads(count)
        _thread_state.applied = count


def _allowed_count(bitmap: npt.NDArray[np.uint8]) -> int:
    return int(np.unpackbits(bitmap).sum())


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
