from __future__ import annotations

from pathlib import Path

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
