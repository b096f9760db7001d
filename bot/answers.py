"""The knowledge base as the conversation's AnswerService: whole answers, or streamed ones.

Both go through KnowledgeBase's public API: `stream` is `ask_stream`, `answer` is `ask_async` (that
stream collected, the model's reply asked for in one request). The deltas are already safe to
show (redacted, the unfinished tail held back, none at all when a retrieved passage is not
readable by the asker), so `preview` has nothing left to do.

    answers = KnowledgeBaseAnswers(kb)
    async for part in answers.stream(question):   # str deltas, then one Answer
        ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from bot.tasks import AckFirst, AckFirstSlots
from knowledge.service import KnowledgeBase
from knowledge.types import Answer, Question


class KnowledgeBaseAnswers:
    """Answers from a KnowledgeBase; streams when a model (KB_LLM_URL) is configured."""

    def __init__(self, kb: KnowledgeBase, *, concurrency: int = 2, ack_first: AckFirst | None = None) -> None:
        """`concurrency` bounds the retrievals in flight (see `_slots`); each waits for `ack_first`."""
        self.kb = kb
        # Retrieval is CPU work in worker threads; each holds the GIL part of the time. More of them
        # than cores only queue, and they starve the event loop, which must ack Slack in time.
        # The knowledge base holds a slot only while retrieving, never while the model writes.
        self._slots: asyncio.Semaphore = (
            AckFirstSlots(concurrency, gate=ack_first) if ack_first else asyncio.Semaphore(concurrency)
        )

    async def answer(self, question: Question) -> Answer:
        return await self.kb.ask_async(question, retrieval_slots=self._slots)

    def stream(self, question: Question) -> AsyncIterator[str | Answer]:
        """Text deltas while the model writes (none when drafts may not be shown), then the Answer."""
        return self.kb.ask_stream(question, retrieval_slots=self._slots)

    def preview(self, text: str) -> str:
        """The draft as it may be shown: `ask_stream`'s deltas are safe already (module docstring)."""
        return text
