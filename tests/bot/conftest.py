"""Fixtures for the bot: a migrated SQLite database and a recording fake answerer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine

from core import db
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.types import Answer, Citation, Question

if TYPE_CHECKING:
    from tests.bot.test_slack import Harness


class RecordingAnswers:
    """An AnswerService that hands out queued answers and remembers every question it got."""

    def __init__(self) -> None:
        self.history: list[Question] = []
        self._queue: list[Answer] = []

    def enqueue(self, answer: Answer) -> None:
        self._queue.append(answer)

    async def answer(self, question: Question) -> Answer:
        self.history.append(question)
        if self._queue:
            return self._queue.pop(0)
        return Answer(text=f"About {question.text} [1].", citations=[citation(1)], confidence=0.9)


def citation(number: int, *, uri: str | None = None) -> Citation:
    return Citation(number, f"Page {number}", uri or f"https://wiki.example/p{number}", "Intro", "…", 0.5)


@pytest.fixture
def bot_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def bot_engine(bot_settings: Settings) -> Iterator[Engine]:
    engine = db.make_engine(bot_settings)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def harness(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> AsyncIterator[Harness]:
    """kb serve's app with the Slack bot against the recording fake Slack (tests/bot/test_slack.py's
    `slack_harness`); tests/bot/test_teams.py has its own `harness`."""
    from tests.bot.test_slack import slack_harness  # a test module: imported late, it imports this one

    async with slack_harness(make_settings, tmp_path, embedder) as harness:
        yield harness
