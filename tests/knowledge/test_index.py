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
