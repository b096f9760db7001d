"""`kb serve --with-model`: the checks before the model starts, and the vLLM child as a background service.

A fake vLLM (fake_vllm.py, launched through a shell script standing in for the environment's
python) answers /v1/models, or exits at once with FAKE_VLLM_EXIT: the supervisor must fall back
to extractive answers with one line, attach the model once it answers, notice its death, and
leave no process behind.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.server.model import ModelServerService, prepare_model
from app.server.ports import PortTaken, require_free_port
from core.health import MODEL_STATE_FILE, check_llm, read_model_state
from core.settings import Settings
from knowledge.service import KnowledgeBase

FAKE_VLLM = Path(__file__).with_name("fake_vllm.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """What check_model_dir accepts: config, tokenizer, weights (the fake never reads them)."""
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 1024)
    return folder


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    script = tmp_path / "vllm-env" / "bin" / "python"
    script.parent.mkdir(parents=True)
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_VLLM}" "$@"\n')
    script.chmod(0o755)
    return script


@pytest.fixture
def with_fake_env(make_settings: Callable[..., Settings], fake_python: Path) -> Callable[..., Settings]:
    return lambda **more: make_settings(vllm_python=str(fake_python), **more)


def test_an_unknown_model_is_one_line(with_fake_env: Callable[..., Settings]) -> None:
    plan = prepare_model(with_fake_env(), "no-such-model", port=free_port())
    assert plan.server is None and plan.reason is not None
    assert "no-such-model" in plan.reason and "\n" not in plan.reason


def test_a_known_model_not_fetched_names_the_fetch(
    with_fake_env: Callable[..., Settings], tmp_path: Path
) -> None:
    plan = prepare_model(with_fake_env(model_store=str(tmp_path / "empty")), "smollm2-135m-instruct",
                         port=free_port())  # fmt: skip
    assert plan.reason is not None and "kb models fetch smollm2-135m-instruct" in plan.reason


def test_a_missing_vllm_environment_is_one_line(
    make_settings: Callable[..., Settings], model_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(vllm_python=str(tmp_path / "nowhere" / "bin" / "python"))
    plan = prepare_model(settings, str(model_dir), port=free_port())
    assert plan.server is None and plan.reason is not None
    assert "make vllm-env" in plan.reason and "\n" not in plan.reason


def test_too_little_memory_is_refused_before_starting(
    with_fake_env: Callable[..., Settings], model_dir: Path
) -> None:
    plan = prepare_model(with_fake_env(), str(model_dir), port=free_port(), memory=lambda: 512 * 2**20)
    assert plan.server is None and plan.reason is not None
    assert "0.5 GiB is available" in plan.reason and "smaller model" in plan.reason


def test_a_taken_model_port_names_the_option(
    with_fake_env: Callable[..., Settings], model_dir: Path, listening: int
) -> None:
    plan = prepare_model(with_fake_env(), str(model_dir), port=listening)
    assert plan.server is None and plan.reason is not None
    assert f"port {listening}" in plan.reason and "--model-port" in plan.reason


def test_a_taken_service_port_names_the_variable(listening: int) -> None:
    with pytest.raises(PortTaken, match=rf"port {listening} on 127.0.0.1 is taken.*KB_PORT"):
        require_free_port("127.0.0.1", listening, fix="set KB_PORT or pass --port")
    require_free_port("127.0.0.1", free_port(), fix="unused")


async def _service(
    settings: Settings, engine: Engine, model_dir: Path
) -> tuple[ModelServerService, KnowledgeBase]:
    plan = prepare_model(settings, str(model_dir), port=free_port())
    assert plan.server is not None, plan.reason
    said: list[str] = []
    service = ModelServerService(plan.server, data_dir=settings.data_dir, say=said.append)
    kb = KnowledgeBase(settings.replace(llm_url=plan.server.url, llm_model=service.model), engine)
    service.attach(kb)
    assert kb.llm is None  # extractive until the server answers
    return service, kb


async def test_a_model_server_that_dies_at_start_leaves_extractive_answers(
    with_fake_env: Callable[..., Settings], migrated: Engine, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_EXIT", "3")
    settings = with_fake_env()
    service, kb = await _service(settings, migrated, model_dir)
    await service.start()
    await service.settled.wait()
    assert kb.llm is None
    assert service.failed is not None and "exited with code 3" in service.failed
    backend = await check_llm(settings)
    assert backend.reachable is False and "answers are extractive" in backend.detail
    assert backend.model == "tiny-model"
    await service.stop()
    assert not (settings.data_dir / MODEL_STATE_FILE).exists()


async def test_the_model_answers_once_ready_and_its_death_falls_back(
    with_fake_env: Callable[..., Settings], migrated: Engine, model_dir: Path
) -> None:
    settings = with_fake_env()
    service, kb = await _service(settings, migrated, model_dir)
    await service.start()
    try:
        await service.settled.wait()
        assert service.failed is None and kb.llm is service.client
        backend = await check_llm(settings)  # kb status reads the record this process wrote
        assert backend.reachable is True and backend.model == "tiny-model"
        assert backend.url == service.server.url
        service.server.kill()  # a crash
        await service.down.wait()
        assert kb.llm is None and service.failed is not None and "exited with code" in service.failed
        state = read_model_state(settings.data_dir)
        assert state is not None and state["state"] == "failed"
    finally:
        await service.stop()
    process = service.server.process
    assert process is not None and process.poll() is not None


async def test_stop_leaves_no_model_process(
    with_fake_env: Callable[..., Settings], migrated: Engine, model_dir: Path
) -> None:
    settings = with_fake_env()
    service, _ = await _service(settings, migrated, model_dir)
    await service.start()
    await service.settled.wait()
    process = service.server.process
    assert process is not None
    await service.stop()
    assert process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)
    assert read_model_state(settings.data_dir) is None
