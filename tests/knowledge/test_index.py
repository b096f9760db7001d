from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from knowledge.errors import VectorIndexError
from knowledge.index import Fingerprint, VectorIndex


def _unit(rows: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_search_returns_ids_by_cosine_and_remove_forgets_them() -> None:
    index = VectorIndex(8, model="m")
    vectors = _unit(20)
    index.add(list(range(100, 120)), vectors)
    best = index.search(vectors[3], 3)
    assert best[0][0] == 103 and best[0][1] == pytest.approx(1.0, abs=1e-5)
    assert index.remove([103, 999]) == 1
    assert 103 not in [i for i, _ in index.search(vectors[3], 20)]
    assert index.size == 19


def test_save_and_load_round_trip_with_manifest(tmp_path: Path) -> None:
    index = VectorIndex(8, model="mini")
    index.add([5, 7, 9], _unit(3))
    index.save(tmp_path)
    loaded, manifest = VectorIndex.load(tmp_path)
    assert manifest.model == "mini" and manifest.dim == 8
    assert manifest.fingerprint == Fingerprint.of(np.array([5, 7, 9])) == Fingerprint(3, 9, 21)
    assert sorted(loaded.ids().tolist()) == [5, 7, 9]
    assert not list(tmp_path.glob(".*tmp*")), "no temporary files are left behind"


def test_corrupt_index_file_is_a_clear_error(tmp_path: Path) -> None:
    index = VectorIndex(8, model="m")
    index.save(tmp_path)
    (tmp_path / "vectors.faiss").write_bytes(b"garbage")
    with pytest.raises(VectorIndexError, match="cannot load the vector index"):
        VectorIndex.load(tmp_path)


def test_wrong_dimension_is_refused() -> None:
    with pytest.raises(VectorIndexError, match="dimension 4"):
        VectorIndex(8, model="m").add([1], _unit(1, dim=4))


def test_large_indexes_are_ivf_and_still_find_and_forget(tmp_path: Path) -> None:
    vectors = _unit(3000, dim=16, seed=1)
    ids = np.arange(10, 3010, dtype=np.int64)
    index = VectorIndex.build(16, model="m", ids=ids, vectors=vectors, ann_threshold=1000, nprobe=64)
    assert index.kind == "ivf"
    assert index.search(vectors[5], 1)[0][0] == 15
    assert index.remove([15, 16]) == 2
    assert 15 not in [i for i, _ in index.search(vectors[5], 10)]
    assert index.size == 2998
    allowed = np.zeros(3010, dtype=bool)
    allowed[[20, 30, 40]] = True
    found = index.search(vectors[5], 10, allowed=(3010, np.packbits(allowed, bitorder="little")))
    assert sorted(i for i, _ in found) == [20, 30, 40]
    index.save(tmp_path)
    loaded, manifest = VectorIndex.load(tmp_path, nprobe=64)
    assert (manifest.kind, loaded.kind) == ("ivf", "ivf")
    assert sorted(loaded.ids().tolist()) == sorted(set(range(10, 3010)) - {15, 16})
    assert manifest.fingerprint == Fingerprint.of(loaded.ids())


def test_small_indexes_stay_exact() -> None:
    index = VectorIndex.build(
        8, model="m", ids=np.arange(5, dtype=np.int64), vectors=_unit(5), ann_threshold=1000
    )
    assert index.kind == "flat"


def test_searches_run_while_another_thread_writes() -> None:
    from concurrent.futures import ThreadPoolExecutor

    index = VectorIndex(8, model="m")
    base = _unit(200, seed=2)
    index.add(list(range(200)), base)

    def writer() -> None:
        for i in range(50):
            index.add([1000 + i], _unit(1, seed=100 + i))
            index.remove([1000 + i])

    def reader(_: int) -> int:
        return index.search(base[7], 1)[0][0]

    with ThreadPoolExecutor(4) as pool:
        writing = pool.submit(writer)
        results = list(pool.map(reader, range(200)))
        writing.result()
    assert set(results) == {7}
    assert index.size == 200


def test_fp16_storage_finds_what_fp32_finds_and_survives_save_load_remove_and_filters(tmp_path: Path) -> None:
    vectors, ids = _unit(2000, dim=64, seed=3), list(range(1, 2001))
    exact = VectorIndex(64, model="m")
    half = VectorIndex(64, model="m", precision="fp16")
    exact.add(ids, vectors)
    half.add(ids, vectors)
    assert (exact.precision, half.precision) == ("fp32", "fp16")
    queries = _unit(20, dim=64, seed=4)
    for query in queries:
        want, got = exact.search(query, 10), half.search(query, 10)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-3)
    half.save(tmp_path, last_change=3)
    loaded, _ = VectorIndex.load(tmp_path)
    assert loaded.precision == "fp16" and loaded.size == 2000
    assert loaded.remove([ids[0], ids[1]]) == 2
    only = np.zeros(2002 // 8 + 1, dtype=np.uint8)
    for chunk_id in (5, 6, 7):
        only[chunk_id // 8] |= 1 << (chunk_id % 8)
    assert {i for i, _ in loaded.search(queries[0], 10, allowed=(2002, only))} == {5, 6, 7}


def test_fp16_ivf_lists_find_what_fp32_lists_find_and_delete_filter_save_and_load(tmp_path: Path) -> None:
    vectors = _unit(3000, dim=32, seed=5)
    ids = np.arange(100, 3100, dtype=np.int64)
    full, half = (
        VectorIndex.build(32, model="m", ids=ids, vectors=vectors, ann_threshold=1000, nprobe=16, precision=p)
        for p in ("fp32", "fp16")
    )
    assert (full.kind, half.kind) == ("ivf", "ivf")
    assert (full.precision, half.precision) == ("fp32", "fp16")
    inner = faiss.downcast_index(half._index)
    assert isinstance(inner, faiss.IndexIVFScalarQuantizer) and not inner.by_residual
    assert inner.code_size == 32 * 2  # two bytes a dimension: fp16 lists
    for query in _unit(20, dim=32, seed=6):
        want, got = full.search(query, 10), half.search(query, 10)
        # Same centroids, same lists probed: the same ten, in order but for near-ties (2e-5 apart).
        assert {i for i, _ in got} == {i for i, _ in want}
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-3)
    assert half.search(vectors[7], 1)[0][0] == 107
    assert half.remove([107, 108, 99999]) == 2
    assert half.size == 2998
    assert not {107, 108} & {i for i, _ in half.search(vectors[7], 50)}
    half.add([107], vectors[7:8])  # a changed document comes back under a new vector
    assert half.search(vectors[7], 1)[0][0] == 107
    allowed = np.zeros(3100, dtype=bool)
    allowed[[150, 250, 350]] = True
    found = half.search(vectors[7], 10, allowed=(3100, np.packbits(allowed, bitorder="little")))
    assert sorted(i for i, _ in found) == [150, 250, 350]
    half.save(tmp_path)
    loaded, manifest = VectorIndex.load(tmp_path, nprobe=16)
    assert (manifest.kind, loaded.kind, loaded.precision) == ("ivf", "ivf", "fp16")
    assert sorted(loaded.ids().tolist()) == sorted(set(range(100, 3100)) - {108})
    assert manifest.fingerprint == Fingerprint.of(loaded.ids())
    assert loaded.search(vectors[7], 1)[0][0] == 107


def test_ivf_user_with_few_rights_still_gets_k_results_from_lists_not_probed() -> None:
    vectors = _unit(4000, dim=16, seed=8)
    ids = np.arange(1, 4001, dtype=np.int64)
    index = VectorIndex.build(16, model="m", ids=ids, vectors=vectors, ann_threshold=1000, nprobe=1)
    assert index.kind == "ivf"
    rng = np.random.default_rng(3)
    readable = rng.choice(ids, size=12, replace=False)  # scattered over many lists
    allowed = np.zeros(4001, dtype=bool)
    allowed[readable] = True
    bitmap = (4001, np.packbits(allowed, bitorder="little"))
    query = _unit(1, dim=16, seed=9)[0]
    found = index.search(query, 5, allowed=bitmap)
    assert len(found) == 5 and {i for i, _ in found} <= set(readable.tolist())
    # Exact over what the user may read: the same five a brute-force scan of their chunks gives.
    exact = sorted(readable.tolist(), key=lambda i: -float(vectors[i - 1] @ query))[:5]
    assert [i for i, _ in found] == exact
    assert len(index.search(query, 50, allowed=bitmap)) == 12


def test_searches_on_worker_threads_use_the_configured_faiss_thread_count() -> None:
    import threading

    from knowledge.index import set_threads

    index = VectorIndex(8, model="m")
    index.add(list(range(10)), _unit(10))
    seen: list[int] = []

    def search() -> None:
        index.search(_unit(1)[0], 3)
        seen.append(faiss.omp_get_max_threads())

    set_threads(1)
    try:
        worker = threading.Thread(target=search)
        worker.start()
        worker.join()
    finally:
        set_threads(1)
    assert seen == [1]
