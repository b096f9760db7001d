"""Grounded answers: retrieved passages -> LLM -> answer with verified, renumbered [n] citations.

The extractive answerer (knowledge/answer.py) is the floor, never an error: when evidence is weak
the bot abstains without calling the model; when the model is down, slow, behind an open circuit
breaker, or says nothing usable (empty, garbage, or - with `require_citation` - nothing cited),
the question gets the extractive answer, marked `model="extractive (fallback)"`.

`stream_answer` is the one answer path; `generate_answer` is that stream collected, with the
model's reply asked for in one request.

>>> answer = await generate_answer(question, hits, llm=llm, query_vector=q, embedder=embedder,
...                                min_score=0.25)                                # doctest: +SKIP
>>> async for part in stream_answer(question, hits, llm=llm, ...):                # doctest: +SKIP
...     print(part if isinstance(part, str) else "", end="")
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace

from core.llm import LLM
from knowledge.answer import extractive_answer
from knowledge.citations import CitationRewriter, looks_like_garbage
from knowledge.embeddings import Embedder, Vectors
from knowledge.prompt import NOT_FOUND, Prompt, build_prompt
from knowledge.types import Answer, Hit, Question, last_part
from privacy.output import OutputGuard

log = logging.getLogger(__name__)

FALLBACK_MODEL = "extractive (fallback)"
HOLD_BACK_CHARS = 48  # longer than a spaced IBAN or card number
_RECHECK_CHARS = 24


class SafeDrafts:
    """Turns a streamed answer's raw deltas into deltas that may be shown before the final Answer.

    The text so far is redacted as a whole by the output guard (a number split over two deltas is
    not recognisable in either), then its last HOLD_BACK_CHARS characters and the word still being
    written are held back, so that a secret or an identity number that is half written is never
    shown. The final Answer (output guard applied once more, citations checked) supplies the rest.
    Should redaction ever rewrite text already shown, no further deltas come: the final Answer
    replaces the draft anyway.
    """

    def __init__(self, guard: OutputGuard) -> None:
        self._guard = guard
        self._raw = ""
        self._shown = ""
        self._stopped = False
        self._next_at = 0  # length of the raw text at which to look again

    def feed(self, delta: str) -> str:
        """The part of the answer newly safe to show after `delta` ("" when nothing new is)."""
        self._raw += delta
        if self._stopped or not any(c.isspace() for c in delta) or len(self._raw) < self._next_at:
            return ""  # only a finished word can move the shown text on; and not for every word
        # Redacting the whole text each time is quadratic: do it once per few words.
        self._next_at = len(self._raw) + _RECHECK_CHARS
        safe = self.preview(self._raw)
        if not safe.startswith(self._shown):
            self._stopped = True
            return ""
        new, self._shown = safe[len(self._shown) :], safe
        return new

    def preview(self, text: str) -> str:
        """What of the whole answer written so far may be shown (see the class docstring)."""
        redacted = self._guard.check(text, citations=(), groups=()).text
        shown = redacted[: max(0, len(redacted) - HOLD_BACK_CHARS)]
        cut = max(shown.rfind(" "), shown.rfind("\n"))
        return shown[:cut].rstrip() if cut > 0 else ""


class _Clock:
    """Latency from the question's arrival: retrieval (measured by the caller), first token, total."""

    def __init__(self, retrieve_ms: float) -> None:
        self.retrieve_ms = retrieve_ms
        self.started = time.perf_counter()
        self.first_token_ms: float | None = None

    def elapsed(self) -> float:
        return self.retrieve_ms + (time.perf_counter() - self.started) * 1000

    def first_token(self) -> None:
        if self.first_token_ms is None:
            self.first_token_ms = self.elapsed()

    def stamp(self, answer: Answer) -> Answer:
        total = self.elapsed()
        answer.latency_ms = {
            "retrieve": round(self.retrieve_ms, 2),
            "first_token": round(self.first_token_ms if self.first_token_ms is not None else total, 2),
            "total": round(total, 2),
        }
        return answer


def _weak_evidence(hits: list[Hit], min_score: float) -> bool:
    return not hits or hits[0].score < min_score


def _abstain(query_vector: Vectors, hits: list[Hit], embedder: Embedder, model: str) -> Answer:
    # The extractive abstention (text, closest documents as citations) with an impossible bar.
    answer = extractive_answer(query_vector, hits, embedder=embedder, min_score=math.inf)
    answer.model = model
    return answer


async def _fallback(
    query_vector: Vectors, hits: list[Hit], embedder: Embedder, min_score: float, reason: str
) -> Answer:
    log.warning("LLM answer unusable (%s): answering extractively", reason)
    # Embedding the candidate sentences is CPU work: keep it off the event loop.
    answer = await asyncio.to_thread(
        extractive_answer, query_vector, hits, embedder=embedder, min_score=min_score
    )
    answer.model = FALLBACK_MODEL
    return answer


def _model_answer(
    text: str, rewriter: CitationRewriter, prompt: Prompt, hits: list[Hit], model: str
) -> Answer:
    citations = [
        replace(prompt.passages[number - 1].citation, number=position)
        for position, number in enumerate(rewriter.order, start=1)
    ]
    return Answer(text=text, citations=citations, confidence=round(hits[0].score, 4), model=model)


def _unusable(text: str, rewriter: CitationRewriter, require_citation: bool) -> str | None:
    """Why the model's (rewritten) answer cannot be shown, or None if it can."""
    if not text.strip():
        return "empty output"
    if looks_like_garbage(text):
        return f"garbage output {text[:80]!r}"
    if require_citation and not rewriter.order:
        return f"no valid citation in {text[:80]!r}"
    return None


class _Reply:
    """The model's raw reply as deltas: streamed as written, or (`whole`) one completion as one delta.

    A whole reply is one request under the client's whole-call timeout (no first-token timeout,
    nothing to show early), attributed to the model the server names; a streamed one is attributed
    to the model asked for.
    """

    def __init__(
        self, llm: LLM, prompt: Prompt, clock: _Clock, *, model: str | None, max_tokens: int, whole: bool
    ) -> None:
        self._llm, self._prompt, self._clock = llm, prompt, clock
        self._asked, self._max_tokens, self._whole = model, max_tokens, whole
        self._served: str | None = None  # the model a whole reply names

    @property
    def model(self) -> str:
        """Whom the answer is attributed to: read it once the reply is in (see `LLM.name`)."""
        if self._served is not None:
            return self._served
        return self._asked or self._llm.name  # a client may learn the served name from the reply

    async def deltas(self) -> AsyncGenerator[str, None]:
        messages, model, max_tokens = self._prompt.messages, self._asked, self._max_tokens
        if self._whole:
            completion = await self._llm.chat(messages, model=model, max_tokens=max_tokens, temperature=0.0)
            self._clock.first_token()  # a whole answer reaches the user all at once
            self._served = completion.model
            yield completion.text
            return
        stream = self._llm.stream_chat(messages, model=model, max_tokens=max_tokens, temperature=0.0)
        async with aclosing(stream) as deltas:
            async for delta in deltas:
                yield delta


async def generate_answer(
    question: Question,
    hits: list[Hit],
    *,
    llm: LLM,
    query_vector: Vectors,
    embedder: Embedder,
    min_score: float,
    max_context_tokens: int = 1536,
    max_answer_tokens: int = 256,
    model: str | None = None,
    retrieve_ms: float = 0.0,
    require_citation: bool = True,
) -> Answer:
    """`stream_answer` collected whole: the model's reply asked for in one request.

    Never raises for model trouble: see the module docstring for the fallbacks.
    """
    parts = stream_answer(
        question, hits, llm=llm, query_vector=query_vector, embedder=embedder, min_score=min_score,
        max_context_tokens=max_context_tokens, max_answer_tokens=max_answer_tokens, model=model,
        retrieve_ms=retrieve_ms, require_citation=require_citation, whole=True,
    )  # fmt: skip
    return await last_part(parts, Answer)


async def stream_answer(
    question: Question,
    hits: list[Hit],
    *,
    llm: LLM,
    query_vector: Vectors,
    embedder: Embedder,
    min_score: float,
    max_context_tokens: int = 1536,
    max_answer_tokens: int = 256,
    model: str | None = None,
    retrieve_ms: float = 0.0,
    require_citation: bool = True,
    whole: bool = False,
) -> AsyncGenerator[str | Answer, None]:
    """Text deltas as the model writes them (citations already renumbered), then the final Answer.

    The final Answer is authoritative: when it is a fallback or an abstention, its text replaces
    whatever deltas were shown. Otherwise its text equals the deltas joined. With `whole` the
    model's reply is asked for in one request (see `_Reply`) and passes through as one delta.
    Model trouble of any kind ends in the extractive answer (module docstring), never an error.
    """
    clock = _Clock(retrieve_ms)
    if _weak_evidence(hits, min_score):
        yield clock.stamp(extractive_answer(query_vector, hits, embedder=embedder, min_score=min_score))
        return
    shown: list[str] = []
    held = ""  # output held back while it may still be the NOT_IN_CONTEXT reply
    deciding, abstained = True, False
    try:
        prompt = await build_prompt(question.text, hits, llm=llm, max_context_tokens=max_context_tokens)
        rewriter = CitationRewriter(range(1, len(prompt.passages) + 1))
        reply = _Reply(llm, prompt, clock, model=model, max_tokens=max_answer_tokens, whole=whole)
        async with aclosing(reply.deltas()) as deltas:
            async for delta in deltas:
                if deciding:
                    held += delta
                    head = held.lstrip()
                    if head.startswith(NOT_FOUND):
                        abstained = True
                        break
                    if NOT_FOUND.startswith(head):
                        continue
                    deciding, delta = False, held
                piece = rewriter.feed(delta)
                if piece:
                    clock.first_token()
                    shown.append(piece)
                    yield piece
        tail = "" if abstained else rewriter.feed(held if deciding else "") + rewriter.finish()
    except Exception as exc:  # any model failure must end in an answer, not an error
        failure = f"{type(exc).__name__}: {exc}"
        yield clock.stamp(await _fallback(query_vector, hits, embedder, min_score, failure))
        return
    if abstained:
        clock.first_token()
        yield clock.stamp(_abstain(query_vector, hits, embedder, reply.model))
        return
    if tail:
        clock.first_token()
        shown.append(tail)
        yield tail
    text = "".join(shown)
    reason = _unusable(text, rewriter, require_citation)
    if reason is not None:
        yield clock.stamp(await _fallback(query_vector, hits, embedder, min_score, reason))
        return
    yield clock.stamp(_model_answer(text, rewriter, prompt, hits, reply.model))
