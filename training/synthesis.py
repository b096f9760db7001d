"""The teacher writes the distillation set: questions about knowledge-base passages, and its replies to them.

    train, test = kb_sources(engine, redactor, limit=2000, test_limit=48, test_share=0.15)
    written = write_questions(teacher, tokenizer, train, per_chunk=3, seed=7)
    targets = write_targets(teacher, tokenizer, with_forms(written.questions))
    targets.examples   # QAExample(..., answer=the teacher's own cited reply, or NOT_FOUND)
    targets.dropped    # {"unfinished": 2, "repeats": 1, "invented_marker": 0, "wrong": 5}

Read top to bottom:

1. `kb_sources`: the knowledge base's chunks as the bot shows them (text and source line, redacted),
   split by document as the run splits its examples; each among its nearest chunks (stored
   embeddings) and with the nearest chunks of other documents as candidates for the other form.
2. `write_questions`: the teacher writes `per_chunk` sampled questions for each chunk
   (training.data.QUESTION_PROMPT). A question is kept when its short answer is a span of the chunk
   of at most eight words that does not end on a function word, once per chunk. Drops: "malformed"
   (no "Q: / A:" lines), "not_in_passage", "bad_span" (too long, or cut after a function word) and
   "duplicate".
3. `with_forms`: a share of the questions, picked by a hash of their key, is asked over passages of
   other documents that do not hold the answer: there the right reply is the abstention.
4. `write_targets`: the teacher answers each question in the bot's own prompt (numbered passages,
   `[n]` citations, abstention, the question's language; greedy). A reply becomes the target only
   when it ended by itself, does not repeat itself, cites only passages it was given and holds the
   answer (or abstains, in the other form): a target teaches its form as well as its facts. Drops:
   "unfinished", "repeats" (knowledge.citations.RepetitionStop), "invented_marker" and "wrong".
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from core.llm import Message
from knowledge.answer_quality import citation_markers, holds_answer
from knowledge.citations import RepetitionStop
from knowledge.prompt import NOT_FOUND, defuse, is_not_found, passage_body, source_line
from privacy.redaction import Redactor
from training.data import QUESTION_PROMPT, parse_question, split_by_document
from training.evaluate import chat_replies, greedy_answers
from training.types import QAExample

if TYPE_CHECKING:
    from sqlalchemy import Engine

SPAN_WORDS = 8  # a short answer: a number, a name, a date or a few words
OTHER_SHARE = 0.2  # of the questions, asked over other documents' passages
OTHERS = 3  # passages in the other-documents form
LOOSE_ENDS = frozenset(("a", "an", "and", "at", "by", "for", "in", "of", "on", "or", "the", "to", "with"))


@dataclass(frozen=True)
class Passage:
    key: str  # the chunk's id
    document_id: str
    text: str  # what the bot shows: the chunk's text, then its source line


@dataclass(frozen=True)
class Source:
    """A chunk to write questions for, with the passages its questions are asked over."""

    passage: Passage
    context: tuple[Passage, ...] = ()  # the chunk among its neighbours, as retrieval hands them over
    others: tuple[Passage, ...] = ()  # other documents' passages, nearest first: candidates

    @property
    def shown(self) -> tuple[Passage, ...]:
        return self.context or (self.passage,)


@dataclass(frozen=True)
class Question:
    source: Source
    key: str  # "<chunk key>-<sample number>": stable, so the form picked by its hash is too
    text: str
    span: str  # the short answer, copied from the chunk
    others: tuple[Passage, ...]  # up to OTHERS candidates that do not hold the span


@dataclass
class Written:
    questions: list[Question]
    asked: int
    dropped: dict[str, int]
    samples: list[str] = field(default_factory=list)  # the first replies, for logs


@dataclass
class Targets:
    examples: list[QAExample]
    asked: int
    dropped: dict[str, int]


def short_span(span: str) -> bool:
    """An answer a question can ask for: at most eight words, not cut off after a function word."""
    words = span.split()
    return 0 < len(words) <= SPAN_WORDS and words[-1].casefold().strip(",;:") not in LOOSE_ENDS


def other_form(key: str, share: float = OTHER_SHARE) -> bool:
    """Whether the question with this key is asked over other documents' passages (by its hash)."""
    return hashlib.sha256(key.encode()).digest()[0] < int(256 * share)


def write_questions(
    model: Any,
    tokenizer: Any,
    sources: Sequence[Source],
    *,
    per_chunk: int,
    temperature: float = 0.8,
    max_new_tokens: int = 96,
    seed: int | None = None,
    batch_size: int = 64,
) -> Written:
    """`per_chunk` sampled questions for each source; those with a short answer from the chunk, once each.

    With `seed` the sampling is reproducible and the global random state is left as it was (a DP
    run's sampling must not become predictable from a stored seed).
    """
    jobs = [(s, i) for s in sources for i in range(per_chunk)]
    chats: list[list[Message]] = [
        [{"role": "user", "content": QUESTION_PROMPT.format(passage=s.passage.text)}] for s, _ in jobs
    ]
    with _seeded(seed, model):
        replies = chat_replies(
            model,
            tokenizer,
            chats,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            batch_size=batch_size,
        )
    dropped = {"malformed": 0, "not_in_passage": 0, "bad_span": 0, "duplicate": 0}
    seen: set[tuple[str, str]] = set()
    kept: list[Question] = []
    for (source, i), reply in zip(jobs, replies, strict=True):
        parsed = parse_question(reply, source.passage.text)
        if parsed is None:
            # A well-formed reply's answer is always in the reply itself: then it was not in the chunk.
            dropped["malformed" if parse_question(reply, reply) is None else "not_in_passage"] += 1
            continue
        question, span = parsed
        if not short_span(span):
            dropped["bad_span"] += 1
            continue
        if (source.passage.key, question.casefold()) in seen:
            dropped["duplicate"] += 1
            continue
        seen.add((source.passage.key, question.casefold()))
        # Other documents often repeat a fact: only passages without the answer make abstaining right.
        others = tuple(p for p in source.others if not holds_answer(p.text, [span]))[:OTHERS]
        kept.append(Question(source, f"{source.passage.key}-{i}", question, span, others))
    return Written(kept, len(jobs), dropped, replies[:3])


@contextmanager
def _seeded(seed: int | None, model: Any) -> Iterator[None]:
    if seed is None:
        yield
        return
    import torch

    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def with_forms(questions: Sequence[Question], *, share: float = OTHER_SHARE) -> list[tuple[Question, bool]]:
    """Each question with its form: True (other documents' passages) for `share` of those that have any."""
    return [(q, bool(q.others) and other_form(q.key, share)) for q in questions]


def example(question: Question, other: bool) -> QAExample:
    """The question over its chunk's passages, or over other documents' (`other`); no answer yet."""
    shown = question.others if other else question.source.shown
    return QAExample(
        example_id=f"{question.key}-{'other' if other else 'own'}",
        document_id=question.source.passage.document_id,
        context=tuple(p.text for p in shown),
        question=question.text,
        answer="",
        origin="generated",
    )


def write_targets(
    model: Any,
    tokenizer: Any,
    items: Sequence[tuple[Question, bool]],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 32,
) -> Targets:
    """The teacher's greedy replies in the bot's prompt; the good ones become the examples' answers."""
    examples = [example(q, other) for q, other in items]
    replies = greedy_answers(model, tokenizer, examples, max_new_tokens=max_new_tokens, batch_size=batch_size)
    dropped = {"unfinished": 0, "repeats": 0, "invented_marker": 0, "wrong": 0}
    kept: list[QAExample] = []
    for (question, other), item, reply in zip(items, examples, replies, strict=True):
        reason = target_problem(tokenizer, reply, question.span, len(item.context), other, max_new_tokens)
        if reason is not None:
            dropped[reason] += 1
        else:
            accept = () if other else (question.span,)
            kept.append(replace(item, answer=NOT_FOUND if other else reply, accept=accept))
    return Targets(kept, len(items), dropped)


def target_problem(
    tokenizer: Any, reply: str, span: str, passages: int, other: bool, max_new_tokens: int
) -> str | None:
    """Why a reply cannot be a target (a drop reason), or None when it can."""
    if len(tokenizer(reply, add_special_tokens=False)["input_ids"]) >= max_new_tokens - 1:
        return "unfinished"  # cut by the token limit (decoding again may shift the count by one)
    if RepetitionStop().check(reply) is not None:
        return "repeats"
    if any(not 1 <= n <= passages for n in citation_markers(reply)):
        return "invented_marker"
    right = is_not_found(reply) if other else holds_answer(reply, [span]) and not is_not_found(reply)
    return None if right else "wrong"


def kb_sources(
    engine: Engine,
    redactor: Redactor,
    *,
    limit: int,
    test_limit: int,
    test_share: float,
    neighbours: int = 2,
    candidates: int = 12,
    min_chars: int = 80,
) -> tuple[list[Source], list[Source]]:
    """(training, held-out) sources from the knowledge base's chunks, split by document.

    Chunks come in a fixed random order: at most `limit` of training documents and `test_limit` of
    held-out ones (split as training.data.split_by_document splits the run's examples, `test_share`
    of the documents). Each passage is the bot's: the chunk's text and its source line, redacted
    before the teacher sees it. Neighbours and other documents' candidates come from the same part,
    nearest first by the chunks' stored embeddings, so no held-out text reaches a training prompt.
    Chunks flagged at ingest as text aimed at an assistant are left out: the teacher would read them.
    """
    rows = chunk_rows(engine, min_chars=min_chars)
    random.Random(0).shuffle(rows)
    split = split_by_document(
        [QAExample(str(i), doc, (), "", "") for i, doc, *_ in rows], validation=0.0, test=test_share
    )
    held_out = {e.document_id for e in split.test}
    parts: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] = ([], [])
    for row in rows:
        part = parts[row[1] in held_out]
        if len(part) < (test_limit if row[1] in held_out else limit):
            part.append(row)
    train, test = (_sources(engine, redactor, part, neighbours, candidates) for part in parts)
    return train, test


def chunk_rows(engine: Engine, *, min_chars: int = 0, flagged: bool = False) -> list[tuple[Any, ...]]:
    """(chunk id, document id, text, section, title) of the knowledge base's chunks, in id order;
    chunks flagged at ingest as text aimed at an assistant only with `flagged`."""
    from sqlalchemy import select
    from sqlmodel import Session, col

    from core.models import ChunkRow, DocumentRow

    query = select(
        col(ChunkRow.id),
        col(ChunkRow.document_id),
        col(ChunkRow.text),
        col(ChunkRow.section),
        col(DocumentRow.title),
    ).join(DocumentRow, col(DocumentRow.id) == col(ChunkRow.document_id))
    if not flagged:
        query = query.where(col(ChunkRow.flag) == "")
    with Session(engine) as session:
        rows = session.execute(query.order_by(col(ChunkRow.id))).all()
    return [tuple(r) for r in rows if len(r[2].strip()) >= min_chars]


def _sources(
    engine: Engine, redactor: Redactor, rows: list[tuple[Any, ...]], neighbours: int, candidates: int
) -> list[Source]:
    import numpy as np

    passages = [
        Passage(str(i), doc, redactor.redact(bot_passage(title, section, text)).text)
        for i, doc, text, section, title in rows
    ]
    vectors = _embeddings(engine, [int(r[0]) for r in rows])
    out = []
    for i, passage in enumerate(passages):
        near: list[Passage] = []
        far: list[Passage] = []
        for j in np.argsort(-(vectors @ vectors[i]), kind="stable"):
            if len(near) == neighbours and len(far) == candidates:
                break
            other = passages[int(j)]
            if other.key == passage.key:
                continue
            if len(near) < neighbours:
                near.append(other)
            if other.document_id != passage.document_id and len(far) < candidates:
                far.append(other)
        context = [passage, *near]
        random.Random(passage.key).shuffle(context)  # retrieval's order: the answer is not always [1]
        out.append(Source(passage, tuple(context), tuple(far)))
    return out


def bot_passage(title: str, section: str, text: str) -> str:
    """A chunk as the bot's prompt shows it (knowledge.prompt.passage_body): its text, then its heading."""
    return defuse(passage_body(source_line(title, section), text.strip()))


def _embeddings(engine: Engine, ids: list[int]) -> Any:
    """The chunks' stored embeddings (float32, as knowledge.store writes them); zeros where unusable."""
    import numpy as np
    from sqlalchemy import select
    from sqlmodel import Session, col

    from core.models import ChunkRow

    stored: dict[int, Any] = {}
    with Session(engine) as session:
        for start in range(0, len(ids), 500):
            query = select(col(ChunkRow.id), col(ChunkRow.embedding)).where(
                col(ChunkRow.id).in_(ids[start : start + 500])
            )
            stored.update({int(i): np.frombuffer(e, dtype=np.float32) for i, e in session.execute(query)})
    width = max((len(v) for v in stored.values()), default=0)
    vectors = np.zeros((len(ids), width), dtype=np.float32)
    for row, chunk_id in enumerate(ids):
        vector = stored.get(chunk_id)
        if vector is not None and len(vector) == width:
            vectors[row] = vector
    return vectors
