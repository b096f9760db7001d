"""`kb status` says which model answers (name, URL, reachable) or why answers are extractive."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app
from core.health import write_model_state


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _status(env: dict[str, str], *args: str) -> str:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    result = runner.invoke(app, ["status", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_no_model_means_extractive(tmp_path: Path) -> None:
    text = _status({"KB_DATA_DIR": str(tmp_path)})
    assert "answers      extractive (no model: set KB_LLM_URL, or run kb serve --with-model NAME)" in text


def test_a_configured_model_that_does_not_answer(tmp_path: Path) -> None:
    url = _closed_url()
    env = {"KB_DATA_DIR": str(tmp_path), "KB_LLM_URL": url, "KB_LLM_MODEL": "qwen2.5-coder-0.5b-instruct"}
    answers = json.loads(_status(env, "--json"))["answers"]
    assert answers["mode"] == "extractive" and answers["reachable"] is False
    assert answers["model"] == "qwen2.5-coder-0.5b-instruct" and answers["url"] == url
    assert "answers are extractive" in answers["detail"]


def test_the_model_kb_serve_started_and_why_it_failed(tmp_path: Path) -> None:
    reason = "the vLLM server exited with code 1 while starting (log: var/logs/model-server.log)"
    write_model_state(tmp_path, model="tiny", url=_closed_url(), state="failed", reason=reason, log="x")
    text = _status({"KB_DATA_DIR": str(tmp_path)})
    assert "answers      extractive for now: tiny at http://127.0.0.1:" in text
    assert f"tiny: {reason}; answers are extractive" in text


def test_a_record_left_by_a_dead_kb_serve_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "model-server.json").write_text(
        json.dumps({"pid": 2**22 + 1, "model": "x", "state": "ready"})
    )
    assert "answers      extractive (no model" in _status({"KB_DATA_DIR": str(tmp_path)})


def test_kb_ask_uses_the_model_a_running_kb_serve_started(tmp_path: Path) -> None:
    from app.commands.ask import _with_running_model
    from core.settings import load_settings

    settings = load_settings(data_dir=tmp_path)
    assert _with_running_model(settings).llm.url is None
    write_model_state(tmp_path, model="tiny", url="http://127.0.0.1:8000", state="starting")
    assert _with_running_model(settings).llm.url is None  # not ready: extractive, no wait
    write_model_state(tmp_path, model="tiny", url="http://127.0.0.1:8000", state="ready")
    ready = _with_running_model(settings)
    assert str(ready.llm.url).rstrip("/") == "http://127.0.0.1:8000" and ready.llm.model == "tiny"
    configured = load_settings(data_dir=tmp_path, llm_url="http://10.0.0.1:9000")
    assert _with_running_model(configured) is configured
