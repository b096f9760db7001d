"""Fixtures for the bot: a migrated SQLite database and a recording fake answerer."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine

from core import db
from core.settings import Settings
from knowledge.types import Answer, Citation, Question


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
