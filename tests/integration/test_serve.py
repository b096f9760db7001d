"""`kb serve` as a real process: it starts, answers /healthz and the web chat, and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from core import db
from core.settings import load_settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from tests.conftest import HANDBOOK

pytestmark = pytest.mark.slow
KB = Path(sys.executable).with_name("kb")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def _post_json(url: str, body: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, f"kb serve exited: {log.read_text()}"
        try:
            return _get(url)[1]
        except OSError:
            assert time.monotonic() < deadline, "kb serve did not come up in 90 s"
            time.sleep(0.5)


def test_kb_serve_answers_over_http(tmp_path: Path, embedder: Embedder) -> None:
    data_dir = tmp_path / "var"
    settings = load_settings(data_dir=data_dir)
    engine = db.make_engine(settings)
    db.upgrade(engine)
    assert KnowledgeBase(settings, engine, embedder=embedder).ingest([HANDBOOK]).ok
    engine.dispose()

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env.update(KB_DATA_DIR=str(data_dir), KB_PORT=str(port))
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([str(KB), "serve"], env=env, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        health = json.loads(_wait_for(f"{base}/healthz", process, log))
        assert health["status"] == "ok"
        assert health["documents"] >= 30
        assert "Knowledge assistant" in _get(f"{base}/")[1]
        answer = _post_json(f"{base}/api/ask", {"question": "How do I reset my password?"})
        assert answer["citations"][0]["uri"].startswith("handbook/it/password-reset.md#")
        assert 'kb_questions_total{channel="web",outcome="answered"} 1.0' in _get(f"{base}/metrics")[1]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert "Serving" in log.read_text()
