"""The knowledge base as the conversation's AnswerService: whole answers, or streamed ones.

`stream` is `KnowledgeBase.ask_async` step by step, with the model's text passed on as it is
written: input guard, retrieval (worker thread), `stream_answer`, then the output guard on the
final Answer. Drafts shown before the final Answer get their own protection in `preview`:

- the raw text is redacted as a whole (secrets, identity and bank numbers), then its last
  HOLD_BACK_CHARS characters and the word still being written are held back, so a number or
  token that is half written (and so not yet recognisable) is never shown;
- drafts are shown only when every retrieved passage is readable by the asker; otherwise only the
  final answer appears, after the output guard's citation check (which then withholds it).

    answers = KnowledgeBaseAnswers(kb)
    async for part in answers.stream(question):   # str deltas, then one Answer
        ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace

from knowledge.generation import stream_answer
from knowledge.safety import screen_answer, screen_question
from knowledge.service import KnowledgeBase
from knowledge.types import Answer, Hit, Question
from privacy.access import can_read

HOLD_BACK_CHARS = 48  # longer than a spaced IBAN or card number


class KnowledgeBaseAnswers:
    """Answers from a KnowledgeBase; streams when a model (KB_LLM_URL) is configured."""

    def __init__(self, kb: KnowledgeBase, *, concurrency: int = 2) -> None:
        """`concurrency` bounds the retrievals in flight (see `_slots`)."""
        self.kb = kb
        # Retrieval is CPU work in worker threads; each holds the GIL part of the time. More of them
        # than cores only queue, and they starve the event loop, which must ack Slack in time.
        self._slots = asyncio.Semaphore(concurrency)

    async def answer(self, question: Question) -> Answer:
        async with self._slots:
            return await self.kb.ask_async(question)

    async def stream(self, question: Question) -> AsyncIterator[str | Answer]:
        """Text deltas while the model writes (none when drafts may not be shown), then the Answer."""
        kb = self.kb
        if kb.llm is None:  # extractive answers come whole
            yield await self.answer(question)
            return
        refusal, warnings = screen_question(kb.guard, kb.audit, question, observer=kb.guard_observer)
        if refusal is not None:
            yield refusal
            return
        started = time.perf_counter()
        # KnowledgeBase's own retrieval step (time filters, embedding, ACL-filtered search), so that
        # this path follows any change to it; a public `ask_stream` there would be the tidier home.
        async with self._slots:
            asked, query, hits = await asyncio.to_thread(kb._retrieve, question, None)
        if kb.settings.llm_external:  # the prompt leaves the company: redact it first
            hits = [replace(hit, text=kb._prompt_redactor(hit.text)) for hit in hits]
        drafts = await asyncio.to_thread(self._all_readable, hits, question.groups)
        final: Answer | None = None
        parts = stream_answer(
            asked, hits, llm=kb.llm, query_vector=query, embedder=kb.embedder,
            min_score=kb.settings.min_score, retrieve_ms=(time.perf_counter() - started) * 1000,
        )  # fmt: skip
        async with aclosing(parts) as stream:
            async for part in stream:
                if isinstance(part, Answer):
                    final = part
                elif drafts:
                    yield part
        assert final is not None, "stream_answer always ends with an Answer"
        final.notices.extend(warnings)
        yield await asyncio.to_thread(
            screen_answer, kb.output_guard, kb.store, kb.audit, final, question, observer=kb.guard_observer
        )

    def preview(self, text: str) -> str:
        """What of a draft may be shown: redacted, without its unfinished tail (module docstring)."""
        redacted = self.kb.output_guard.check(text, citations=(), groups=()).text
        shown = redacted[: max(0, len(redacted) - HOLD_BACK_CHARS)]
        cut = max(shown.rfind(" "), shown.rfind("\n"))
        return shown[:cut].rstrip() if cut > 0 else ""

    def _all_readable(self, hits: list[Hit], groups: tuple[str, ...]) -> bool:
        acls = self.kb.store.acls_by_uri([hit.uri for hit in hits])
        return all(can_read(groups, acls.get(hit.uri.split("#", 1)[0], [])) for hit in hits)
