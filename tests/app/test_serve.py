"""`kb serve` from the command line: a taken port is one line; `--with-model` starts, falls back, stops.

The model is the fake vLLM of tests/app/server/fake_vllm.py behind KB_VLLM_PYTHON, so these
tests check the supervisor's wiring (one line on failure, the model attached once it answers,
no process left after SIGINT/SIGTERM), not vLLM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app
from core import db
from core.settings import load_settings
from tests.app.server.test_model import FAKE_VLLM, free_port

KB = Path(sys.executable).with_name("kb")


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_taken_port_is_one_line_naming_kb_port(listening: int, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve"], env={"KB_PORT": str(listening), "KB_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert f"port {listening} on 127.0.0.1 is taken" in lines[0] and "KB_PORT" in lines[0]
    assert "Traceback" not in result.output


def test_a_taken_port_given_as_option_is_one_line(listening: int, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--port", str(listening)], env={"KB_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1 and "--port" in result.output and "Traceback" not in result.output


@pytest.fixture
def served(tmp_path: Path) -> tuple[dict[str, str], int, Path]:
    """An empty migrated database, a fake vLLM environment and a model folder for `kb serve`."""
    data_dir = tmp_path / "var"
    engine = db.make_engine(load_settings(data_dir=data_dir))
    db.upgrade(engine)
    engine.dispose()
    python = tmp_path / "vllm-env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_VLLM}" "$@"\n')
    python.chmod(0o755)
    model = tmp_path / "tiny-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 64)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env.update(KB_DATA_DIR=str(data_dir), KB_PORT=str(port), KB_VLLM_PYTHON=str(python))
    return env, port, model


def _health(port: int, process: subprocess.Popen[bytes], log: Path, *, until: str) -> dict[str, object]:
    while True:
        assert process.poll() is None, log.read_text()
        # Not listening yet: wait and poll again (a dead server fails the assert above).
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
                health: dict[str, object] = json.loads(response.read())
            if health["answers"] == until:
                return health
        time.sleep(0.2)


def _serve(env: dict[str, str], model: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        args = [str(KB), "serve", "--with-model", str(model), "--model-port", str(free_port())]
        process = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT)
    return process, log


@pytest.mark.slow
def test_with_model_that_dies_at_start_serves_extractively(
    served: tuple[dict[str, str], int, Path], tmp_path: Path
) -> None:
    env, port, model = served
    process, log = _serve({**env, "FAKE_VLLM_EXIT": "1"}, model, tmp_path)
    try:
        _health(port, process, log, until="extractive")
        while "answers are extractive" not in log.read_text():
            assert process.poll() is None, log.read_text()
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    text = log.read_text()
    failure = [line for line in text.splitlines() if "answers are extractive" in line]
    assert len(failure) == 1 and "exited with code 1" in failure[0], text
    assert "Traceback" not in text


@pytest.mark.slow
def test_with_model_answers_with_it_and_ctrl_c_stops_both(
    served: tuple[dict[str, str], int, Path], tmp_path: Path
) -> None:
    env, port, model = served
    process, log = _serve(env, model, tmp_path)
    try:
        _health(port, process, log, until="tiny-model")
        state = json.loads((Path(env["KB_DATA_DIR"]) / "model-server.json").read_text())
        assert state["state"] == "ready" and state["pid"] == process.pid
        status = subprocess.run([str(KB), "status", "--json"], env=env, capture_output=True, check=True)
        answers = json.loads(status.stdout)["answers"]
        assert answers["mode"] == "model" and answers["model"] == "tiny-model" and answers["reachable"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    with pytest.raises(ProcessLookupError):  # the model server's whole process group is gone
        os.killpg(int(state["server_pid"]), 0)
    assert "Traceback" not in log.read_text()


def test_make_run_serves_the_store_default_model() -> None:
    from core.llm.store import DEFAULT_MODEL

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert f"MODEL ?= {DEFAULT_MODEL}\n" in makefile
    assert "kb serve --with-model $(MODEL)" in makefile
