"""Probe: "what changed in the last 1000000 days" raised OverflowError in every answer path."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from knowledge.timefilter import MAX_LOOKBACK_DAYS, extract_time_filter
from knowledge.types import Question

HUGE = [
    "what changed in the last 1000000 days",
    "what changed in the last 99999999999999999999999 days",
    "compliance rules of the last 1000000 years",
    "最近一百万天有什么更新",
    "since 0001-01-01",
]


@pytest.mark.parametrize("text", HUGE)
def test_the_retrieval_filter_is_bounded(text: str) -> None:
    now = datetime(2026, 11, 26, tzinfo=UTC)
    _, filters = extract_time_filter(text, now=now)
    assert filters is not None and filters.updated_after is not None
    assert (now - filters.updated_after).days == MAX_LOOKBACK_DAYS


def test_kb_ask_and_the_chat_path_answer_without_an_error(
    settings: Settings, migrated: Engine, embedder: Embedder, small_handbook: Path
) -> None:
    kb = KnowledgeBase(settings, migrated, embedder=embedder)
    assert kb.ingest([small_handbook]).ok
    for text in HUGE:
        answer = kb.ask(Question(text))  # kb ask
        chat = asyncio.run(kb.ask_async(Question(text)))  # Slack, Teams and the web chat
        for reply in (answer, chat):
            assert not reply.refused and reply.text
            assert str(MAX_LOOKBACK_DAYS) in reply.text or reply.citations
