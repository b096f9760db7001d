"""The answer benchmark says when the model server could not be reached during a row."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from bench.answers import _Unreachable
from core.llm import LLMUnavailable
from knowledge.embeddings import Embedder
from knowledge.generation import generate_answer
from knowledge.types import Hit, Question
from tests.fakes import FakeLLM

PASSAGE = "A VPN session ends after 12 hours. Idle sessions end after 30 minutes."


async def test_fallbacks_for_an_unreachable_model_are_counted_and_nothing_else(embedder: Embedder) -> None:
    question = Question("How long can a VPN session last?")
    hit = Hit(
        chunk_id=0, score=0.7, text=PASSAGE, section="Session limits", anchor="session-limits", page=None,
        document_id="doc-0", title="VPN", uri="handbook/vpn.md", updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    llm = FakeLLM()
    llm.enqueue(LLMUnavailable("cannot reach vLLM"), "", "A VPN session ends after 12 hours [1].")
    counter, log = _Unreachable(), logging.getLogger("knowledge.generation")
    log.addHandler(counter)
    try:
        for _ in range(3):  # the server down, an empty reply, an answer
            await generate_answer(
                question, [hit], llm=llm, query_vector=embedder.encode([question.text])[0],
                embedder=embedder, min_score=0.4,
            )  # fmt: skip
    finally:
        log.removeHandler(counter)
    assert counter.count == 1
