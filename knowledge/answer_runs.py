"""A labelled answer set run through the product's own answer path, for `kb bench answers` and
bench/answers.py.

Retrieval runs once per question (`retrieve_set`), so every answerer sees the same passages; then
`answer_set` answers each question extractively or with a model, through the functions
`KnowledgeBase` answers with (`extractive_answer`, `stream_answer`, with the configured evidence
gate), and scores it (knowledge/answer_quality.py). A model's answer is streamed, one question at
a time, so its time to first token is what a user waits: retrieval included.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from knowledge.answer_quality import AnswerItem, AnswerScore, CitedPassage, aggregate, score_answer
from knowledge.types import Answer, Hit, Question, last_part

if TYPE_CHECKING:
    from core.llm import LLM, Completion, Message
    from knowledge.embeddings import Vectors
    from knowledge.service import KnowledgeBase


@dataclass(frozen=True, slots=True)
class Retrieved:
    """One labelled question with what retrieval found for it, shared by every answerer."""

    item: AnswerItem
    vector: Vectors
    hits: list[Hit]
    retrieve_ms: float


@dataclass(frozen=True, slots=True)
class Answered:
    """One answer and its score; `first_token_s` and the decode figures only where a model wrote."""

    item: AnswerItem
    answer: Answer
    score: AnswerScore
    first_token_s: float | None = None
    tokens: int = 0
    decode_s: float = 0.0


def retrieve_set(kb: KnowledgeBase, items: Sequence[AnswerItem]) -> list[Retrieved]:
    """Retrieve every question once, as the product does (top_k, the asker in no group)."""
    retriever, out = kb.retriever(), []
    for item in items:
        started = time.perf_counter()
        question = Question(item.query, user="bench")
        vector = retriever.embed(question.text)
        hits = retriever.search(question, kb.settings.retrieval.top_k, vector=vector)
        out.append(Retrieved(item, vector, hits, (time.perf_counter() - started) * 1000))
    return out


async def answer_set(
    kb: KnowledgeBase,
    retrieved: Sequence[Retrieved],
    *,
    llm: LLM | None = None,
    model: str | None = None,
    max_answer_tokens: int = 256,
) -> list[Answered]:
    """Answer and score every question: extractively without `llm`, else with the model, streamed
    one question at a time (time to first token as a user sees it: retrieval included)."""
    from knowledge.answer import extractive_answer
    from knowledge.generation import stream_answer

    gate = kb.settings.retrieval
    metered = _Metered(llm) if llm is not None else None
    out = []
    for one in retrieved:
        question = Question(one.item.query, user="bench")
        if metered is None:
            answer = extractive_answer(
                one.vector, one.hits, embedder=kb.embedder, min_score=gate.min_score,
                question=question.text, min_coverage=gate.min_coverage,
            )  # fmt: skip
        else:
            metered.reset()
            parts = stream_answer(
                question, one.hits, llm=metered, query_vector=one.vector, embedder=kb.embedder,
                min_score=gate.min_score, min_coverage=gate.min_coverage, model=model,
                retrieve_ms=one.retrieve_ms, max_answer_tokens=max_answer_tokens,
            )  # fmt: skip
            answer = await last_part(parts, Answer)
        texts: dict[str, str] = {}
        for hit in one.hits:
            texts[hit.link] = f"{texts.get(hit.link, f'{hit.title} {hit.section}')}\n{hit.text}"
        passages = [CitedPassage(c.number, c.uri, texts.get(c.uri, c.snippet)) for c in answer.citations]
        score = score_answer(one.item, answer.text, passages, abstained=answer.abstained)
        asked = metered is not None and metered.started is not None
        first = answer.latency_ms.get("first_token", 0.0) / 1000 if asked else None
        tokens, decode = (metered.tokens, metered.decode_s) if metered is not None else (0, 0.0)
        out.append(Answered(one.item, answer, score, first, tokens, decode))
    return out


def summarise(answered: Sequence[Answered]) -> dict[str, Any]:
    """The set's scores, with time to first token (p95, over questions the model was asked) and
    decode speed (streamed tokens over the time from first to last token)."""
    firsts = sorted(a.first_token_s for a in answered if a.first_token_s is not None)
    tokens, decode = sum(a.tokens for a in answered), sum(a.decode_s for a in answered)
    return aggregate(a.score for a in answered).as_dict() | {
        "model_asked": len(firsts),
        "fallbacks": sum(a.answer.model.endswith("(fallback)") for a in answered),
        "ttft_p50_s": _quantile(firsts, 0.5),
        "ttft_p95_s": _quantile(firsts, 0.95),
        "tokens_per_s": round(tokens / decode, 2) if decode > 0 else None,
    }


def _quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted `values` (None for none)."""
    return round(values[max(0, math.ceil(q * len(values)) - 1)], 3) if values else None


class _Metered:
    """An LLM that passes everything through and times the streamed reply: its first and last
    delta and how many deltas came (vLLM streams one token per delta)."""

    def __init__(self, llm: LLM) -> None:
        self._llm = llm
        self.reset()

    def reset(self) -> None:
        self.started: float | None = None
        self.first: float | None = None
        self.last = 0.0
        self.tokens = 0

    @property
    def decode_s(self) -> float:
        return self.last - self.first if self.first is not None else 0.0

    @property
    def name(self) -> str:
        return self._llm.name

    async def models(self) -> list[str]:
        return await self._llm.models()

    async def count_tokens(self, text: str) -> int:
        return await self._llm.count_tokens(text)

    async def chat(self, messages: Sequence[Message], **kwargs: Any) -> Completion:
        return await self._llm.chat(messages, **kwargs)

    async def complete(self, prompt: str, **kwargs: Any) -> Completion:
        return await self._llm.complete(prompt, **kwargs)

    async def stream_chat(self, messages: Sequence[Message], **kwargs: Any) -> AsyncGenerator[str, None]:
        self.started = time.perf_counter()
        async for delta in self._llm.stream_chat(messages, **kwargs):
            self.last = time.perf_counter()
            if self.first is None:
                self.first = self.last
            else:
                self.tokens += 1  # the tokens after the first, over the time after the first
            yield delta

    async def aclose(self) -> None:
        await self._llm.aclose()
