"""Grounded answers: retrieved passages -> LLM -> answer with verified, renumbered [n] citations.

The extractive answerer (knowledge/answer.py) is the floor, never an error: when evidence is weak
(`weak_evidence`: retrieval score and key-term coverage) the bot abstains without calling the model;
when the model answers with the abstention sentence (prompt.NOT_FOUND) it abstains too. When the
model is down, slow, behind an open circuit breaker, or says nothing usable (empty, garbage, only
the question or a heading again, words from sentences the question is not about, no figure where
the question asks for one, - with `require_citation` - nothing cited, or a cited claim that no
passage holds), or abstains where the evidence is strong (`strong_evidence`), the question gets
the extractive answer, marked `model="extractive (fallback)"`.
A cited passage that does not hold the words it is cited for is re-numbered to the passage that
does (citations.check_citations), and a reply that starts repeating itself is stopped and cut
(citations.RepetitionStop).

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
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace

from core.llm import LLM
from knowledge.answer import (
    abstention,
    extractive_answer,
    misses_amount,
    off_topic,
    quotes_passage,
    strong_evidence,
    weak_evidence,
)
from knowledge.citations import (
    CitationRewriter,
    RepetitionStop,
    check_citations,
    looks_like_garbage,
    restates,
)
from knowledge.embeddings import Embedder, Vectors
from knowledge.prompt import NOT_FOUND, Prompt, build_prompt, could_be_not_found, heading, is_not_found
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


def _abstain(hits: list[Hit], model: str) -> Answer:
    """The model said the passages do not answer: the product's abstention, attributed to it."""
    answer = abstention(hits)
    answer.model = model
    return answer


async def _fallback(
    question: Question, query_vector: Vectors, hits: list[Hit], embedder: Embedder, reason: str
) -> Answer:
    log.warning("LLM answer unusable (%s): answering extractively", reason)
    # Embedding the candidate sentences is CPU work: keep it off the event loop. The evidence gate
    # was passed before the model was asked: the extractive answer need not pass it again.
    answer = await asyncio.to_thread(
        extractive_answer, query_vector, hits, embedder=embedder, min_score=-1.0, question=question.text
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


def _unusable(
    text: str,
    rewriter: CitationRewriter,
    prompt: Prompt,
    question: str,
    *,
    require_citation: bool,
    unsupported: int,
) -> str | None:
    """Why the model's (checked, rewritten) answer cannot be shown, or None if it can."""
    if not text.strip():
        return "empty output"
    if looks_like_garbage(text):
        return f"garbage output {text[:80]!r}"
    if restates(text, question, [heading(p.citation) for p in prompt.passages]):
        return f"only the question or a passage's heading again: {text[:80]!r}"
    if off_topic(text, [p.text for p in prompt.passages], question):
        return f"words from sentences about something else than the question: {text[:80]!r}"
    if quotes_passage(text, [p.text for p in prompt.passages]):
        return f"a passage quoted at length instead of an answer: {text[:80]!r}"
    if misses_amount(text, question):
        return f"no figure for a question that asks for one: {text[:80]!r}"
    if unsupported:
        return f"{unsupported} cited claim(s) that no passage holds in {text[:80]!r}"
    if require_citation and not rewriter.order:
        return f"no valid citation in {text[:80]!r}"
    return None


def _final_text(raw: str, prompt: Prompt, question: str) -> tuple[str, CitationRewriter, int]:
    """The reply's citations checked against the passages, then renumbered by first use."""
    checked = check_citations(raw, {p.number: p.text for p in prompt.passages}, question)
    if checked.repaired:
        log.info("re-numbered %d citation(s) to the passage that holds the words", checked.repaired)
    rewriter = CitationRewriter(range(1, len(prompt.passages) + 1))
    return rewriter.feed(checked.text) + rewriter.finish(), rewriter, checked.unsupported


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
    min_coverage: float = 0.0,
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
        min_coverage=min_coverage, max_context_tokens=max_context_tokens,
        max_answer_tokens=max_answer_tokens, model=model, retrieve_ms=retrieve_ms,
        require_citation=require_citation, whole=True,
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
    min_coverage: float = 0.0,
    max_context_tokens: int = 1536,
    max_answer_tokens: int = 256,
    model: str | None = None,
    retrieve_ms: float = 0.0,
    require_citation: bool = True,
    whole: bool = False,
) -> AsyncGenerator[str | Answer, None]:
    """Text deltas as the model writes them (citations already renumbered), then the final Answer.

    The final Answer is authoritative: when it is a fallback or an abstention, its text replaces
    whatever deltas were shown, and so does it where the citation check re-numbered a marker or a
    runaway repetition was cut. Otherwise its text equals the deltas joined. With `whole` the
    model's reply is asked for in one request (see `_Reply`) and passes through as one delta.
    Model trouble of any kind ends in the extractive answer (module docstring), never an error.
    """
    clock = _Clock(retrieve_ms)
    if weak_evidence(question.text, hits, min_score=min_score, min_coverage=min_coverage):
        yield clock.stamp(abstention(hits))
        return
    raw = ""  # the model's reply as written (cut where it started repeating itself)
    deciding, abstained, runaway = True, False, False  # deciding: may still be the NOT_FOUND reply
    stop = RepetitionStop()
    try:
        prompt = await build_prompt(question.text, hits, llm=llm, max_context_tokens=max_context_tokens)
        rewriter = CitationRewriter(range(1, len(prompt.passages) + 1))
        reply = _Reply(llm, prompt, clock, model=model, max_tokens=max_answer_tokens, whole=whole)
        async with aclosing(reply.deltas()) as deltas:
            async for delta in deltas:
                raw += delta
                if (keep := stop.check(raw)) is not None:
                    # What came before the loop is the answer, unless the loop was all there was.
                    loop_only = looks_like_garbage(raw) or len(raw[:keep].split()) < 3
                    raw, runaway = ("" if loop_only else raw[:keep]), True
                    log.info("stopped a runaway repetition after %d characters", keep)
                    break
                if deciding:
                    if is_not_found(raw):
                        abstained = True
                        break
                    if could_be_not_found(raw):
                        continue
                    deciding, delta = False, raw
                if piece := rewriter.feed(delta):
                    clock.first_token()
                    yield piece
        if not (abstained or runaway) and (
            tail := rewriter.feed(raw if deciding else "") + rewriter.finish()
        ):
            clock.first_token()
            yield tail
    except Exception as exc:  # any model failure must end in an answer, not an error
        failure = f"{type(exc).__name__}: {exc}"
        yield clock.stamp(await _fallback(question, query_vector, hits, embedder, failure))
        return
    clock.first_token()
    text, final, unsupported = _final_text(raw, prompt, question.text)
    if abstained or (NOT_FOUND.casefold() in text.casefold() and not final.order):
        if strong_evidence(question.text, hits):
            # A small model sometimes misses an answer its best passage plainly holds.
            doubted = "the model found no answer where the best passage matches the question closely"
            yield clock.stamp(await _fallback(question, query_vector, hits, embedder, doubted))
            return
        yield clock.stamp(_abstain(hits, reply.model))
        return
    reason = _unusable(
        text, final, prompt, question.text, require_citation=require_citation, unsupported=unsupported
    )
    if reason is not None:
        yield clock.stamp(await _fallback(question, query_vector, hits, embedder, reason))
        return
    yield clock.stamp(_model_answer(text, final, prompt, hits, reply.model))
