"""SmolLM2-135M from the model store, served by the real vLLM CPU build, answers a question.

Runs only where `kb models fetch smollm2-135m-instruct` and `make vllm-env` have been run: the
store lives outside the clone and the test never downloads anything.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from core.llm.server import VLLMServer, VLLMServerError, default_python
from core.llm.store import ModelStore, resolve_model
from core.llm.vllm import VLLMClient

pytestmark = pytest.mark.slow

NAME = "smollm2-135m-instruct"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_smollm2_from_the_store_answers_through_vllm(tmp_path: Path) -> None:
    if ModelStore().get(NAME) is None:
        pytest.skip(f"{NAME} is not in the model store (kb models fetch {NAME})")
    try:
        python = default_python()
    except VLLMServerError:
        pytest.skip("no vLLM environment (make vllm-env)")
    model = resolve_model(NAME, ModelStore())
    server = VLLMServer(
        model.path,
        python=python,
        port=_free_port(),
        served_name=NAME,
        max_model_len=2048,
        log_path=tmp_path / "vllm.log",
        die_with_parent=True,
    )
    with server:
        server.wait_ready(timeout=400)
        client = VLLMClient(server.url, model=NAME, total_timeout=120)

        async def ask() -> str:
            try:
                question = "What is the capital of France? Answer in one sentence."
                answer = await client.chat([{"role": "user", "content": question}], max_tokens=32)
                return answer.text
            finally:
                await client.aclose()

        assert "Paris" in asyncio.run(ask())
