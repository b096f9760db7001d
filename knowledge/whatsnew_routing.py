"""Which answer a question gets: the what's-new listing, or the answer it was going to get.

A time-scoped question about change ("what's new this week") is answered by the dated list of the
documents that changed (knowledge.whatsnew), not by passages; every other question by the answer
stream it came with. The choice sits between the answer streams and the guards of
`KnowledgeBase` (knowledge.service): it holds no state of its own, and keeping it here keeps the
facade to ingest, retrieval and the guarded stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import aclosing, nullcontext
from datetime import UTC, datetime

from knowledge.catalog import Filters
from knowledge.retrieval import Retriever
from knowledge.types import AnswerParts, Question
from knowledge.whatsnew import read_listing, whats_new


async def listing_or(
    question: Question,
    filters: Filters | None,
    answer: AnswerParts,
    *,
    retriever: Callable[[], Retriever],
    min_score: float,
    slots: asyncio.Semaphore | None = None,
) -> AnswerParts:
    """The listing when `question` asks what changed in a window, else `answer`'s parts.

    `answer` is not started when the listing replaces it. `slots` is held while the listing
    retrieves (CPU work), as the answer streams hold it while they retrieve.
    """
    now = datetime.now(UTC)
    listing = None
    # Reading the question needs no retrieval slot; only a listing retrieves.
    if await asyncio.to_thread(read_listing, question.text, now=now) is not None:
        async with slots or nullcontext():
            listing = await asyncio.to_thread(
                whats_new, retriever, question, now=now, filters=filters, min_score=min_score
            )
    if listing is not None:
        await answer.aclose()
        yield listing
        return
    async with aclosing(answer) as parts:
        async for part in parts:
            yield part
