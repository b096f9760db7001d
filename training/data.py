"""The distillation data set: (context passages, question) -> answer examples built from the knowledge base.

Read top to bottom:

1. `generated_examples`: the teacher writes a question and its answer for chunks sampled from the KB
   (through the `core.llm.LLM` protocol); an answer must be a span of its chunk, or it is dropped.
2. `feedback_examples`: real questions whose answers got a thumbs-up (`behaviour_events`), with the
   stored answer as target and the cited chunks as context.
3. Every text passes `privacy.redaction` before it is kept (`redact_example`).
4. `paraphrase`: the teacher rewrites each question, so the student sees more than one wording.
5. `split_by_document`: train, validation and test never share a document.
6. `dataset_hash`: one digest of the examples, recorded against the privacy budget.
7. `tokenize`: QAExample (+ TeacherSignal) -> TrainExample with `answer_start`.

Every example is rendered by `format_prompt`, the one prompt shape the teacher and the student see.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.errors import KBError
from core.llm import LLM, LLMError
from privacy.redaction import Redactor
from training.types import QAExample, TeacherSignal, TrainExample

if TYPE_CHECKING:
    from sqlalchemy import Engine


class TrainingDataError(KBError):
    """The distillation data set cannot be built (too few examples, a model that answers nonsense)."""


QUESTION_PROMPT = (
    "Write one question that the passage below answers, and its answer copied word for word from the "
    "passage.\nReply in exactly two lines:\nQ: <question>\nA: <answer>\n\nPassage:\n{passage}"
)
PARAPHRASE_PROMPT = (
    "Rewrite the question below with other words, keeping its meaning. Reply with the question only.\n\n"
    "Question: {question}"
)
_QA = re.compile(r"^\s*Q:\s*(?P<q>.+?)\s*$\s*^\s*A:\s*(?P<a>.+?)\s*$", re.MULTILINE)


def format_prompt(example: QAExample) -> str:
    """What teacher and student are shown; the answer follows it after one space.

    >>> format_prompt(QAExample("e", "d", ("the sky is blue",), "what color is the sky", "blue"))
    'context : the sky is blue . question : what color is the sky ? answer :'
    """
    passages = " . ".join(p.strip().rstrip(".") for p in example.context)
    return f"context : {passages} . question : {example.question.strip().rstrip('?').strip()} ? answer :"


@dataclass(frozen=True)
class Chunk:
    """A KB chunk as the data builder needs it (id, document, text)."""

    chunk_id: int
    document_id: str
    text: str


def sample_chunks(engine: Engine, n: int, *, seed: int = 0, min_chars: int = 80) -> list[Chunk]:
    """Up to `n` chunks drawn at random (reproducibly) from the KB, skipping very short ones."""
    from sqlmodel import Session, col, select

    from core.models import ChunkRow

    with Session(engine) as session:
        rows = session.exec(
            select(ChunkRow.id, ChunkRow.document_id, ChunkRow.text).order_by(col(ChunkRow.id))
        )
        chunks = [Chunk(int(i or 0), d, t) for i, d, t in rows if len(t.strip()) >= min_chars]
    random.Random(seed).shuffle(chunks)
    return chunks[:n]


def redact_example(example: QAExample, redactor: Redactor) -> QAExample:
    """The example with personal data replaced in every text (context, question, answer)."""
    return replace(
        example,
        context=tuple(redactor.redact(p).text for p in example.context),
        question=redactor.redact(example.question).text,
        answer=redactor.redact(example.answer).text,
    )


async def generated_examples(
    llm: LLM, chunks: Sequence[Chunk], redactor: Redactor, *, model: str | None = None, max_tokens: int = 96
) -> list[QAExample]:
    """One teacher-written question per chunk; replies that are malformed or not grounded are dropped.

    Chunks are redacted before the teacher sees them, so no personal data reaches it either.
    """
    out: list[QAExample] = []
    for chunk in chunks:
        passage = redactor.redact(chunk.text).text
        prompt = QUESTION_PROMPT.format(passage=passage)
        reply = await llm.chat([{"role": "user", "content": prompt}], model=model, max_tokens=max_tokens)
        match = _QA.search(reply.text)
        if match is None:
            continue
        question, answer = match["q"].strip(), match["a"].strip().rstrip(".")
        if not answer or answer.casefold() not in passage.casefold():
            continue  # a span of the passage, or the student learns to invent answers
        example = QAExample(
            example_id=f"gen-{chunk.chunk_id}",
            document_id=chunk.document_id,
            context=(passage,),
            question=question,
            answer=answer,
            origin="generated",
        )
        out.append(redact_example(example, redactor))
    return out


@dataclass(frozen=True)
class FeedbackExamples:
    """Liked real questions as examples, and why each other liked question was left out."""

    examples: list[QAExample]
    skipped: dict[int, str]  # question event id -> the reason, for the run's report


def feedback_examples(engine: Engine, redactor: Redactor, *, min_value: int = 1) -> FeedbackExamples:
    """Real questions whose answer got positive feedback (summed votes >= `min_value`).

    The bot stores, with each question, its redacted answer and the document and chunk ids its
    citations stood for. The answer (its [n] markers removed: `format_prompt` numbers nothing) is
    the target; the context is those chunks, read from the chunks table for the documents that
    the answer's [n] markers point at. Each of those documents must still exist, unchanged since
    the question (the answer was judged against their text then); otherwise the question is
    skipped with the reason (`skipped`), as are refusals, abstentions and events recorded before
    the bot kept answers and chunk ids. The split key is the first cited document.
    """
    from sqlmodel import Session, col, select

    from core.models import BehaviourEventRow

    out: list[QAExample] = []
    skipped: dict[int, str] = {}
    with Session(engine) as session:
        rated = session.exec(
            select(BehaviourEventRow.question_id)
            .where(col(BehaviourEventRow.kind) == "feedback")
            .where(col(BehaviourEventRow.question_id).is_not(None))
        ).all()
        ids = sorted({q for q in rated if q is not None})
        values = _feedback_values(session, ids)
        for question_id in ids:
            if values.get(question_id, 0) < min_value:
                continue
            row = session.get(BehaviourEventRow, question_id)
            if row is None or row.kind != "question":
                skipped[question_id] = "the rated question event is gone"
                continue
            if not row.text or row.data.get("refused"):
                skipped[question_id] = "no question text was kept (the question was refused)"
                continue
            if row.data.get("abstained"):
                skipped[question_id] = "the answer abstained: nothing to learn from it"
                continue
            citations = [c for c in row.data.get("citations", []) if isinstance(c, dict)]
            answer = str(row.data.get("answer", ""))
            if not answer.strip() or not any("chunk_ids" in c for c in citations):
                skipped[question_id] = "recorded before the bot kept answers and cited passages"
                continue
            found = _cited_chunks(session, _relied_on(citations, answer), asked_at=row.at)
            if isinstance(found, str):
                skipped[question_id] = found
                continue
            document_id, passages = found
            example = QAExample(
                example_id=f"feedback-{question_id}",
                document_id=document_id,
                context=tuple(passages),
                question=row.text,
                answer=" ".join(_MARKER.sub("", answer).split()),
                origin="feedback",
            )
            out.append(redact_example(example, redactor))
    return FeedbackExamples(out, skipped)


_MARKER = re.compile(r"\s*\[(\d+)\]")


def _relied_on(citations: Sequence[Mapping[str, Any]], answer: str) -> list[Mapping[str, Any]]:
    """The citations the answer's [n] markers point at (an extractive answer lists more sources
    than it quotes); all of them when it has no markers."""
    numbers = {int(n) for n in _MARKER.findall(answer)}
    relied = [c for c in citations if c.get("number") in numbers]
    return relied or list(citations)


def _cited_chunks(
    session: Any, citations: Sequence[Mapping[str, Any]], *, asked_at: datetime
) -> tuple[str, list[str]] | str:
    """(first cited document, the cited chunks' texts in citation order), or why there is no context.

    Every cited document must still be there, unchanged since the question (the change log says
    so: a changed document's chunks are replaced, and SQLite may hand their ids to the new ones);
    otherwise the answer would be taught against a context that no longer supports it.
    """
    from sqlmodel import col, select

    from core.models import ChunkRow, DocumentChangeRow, DocumentRow

    cited = [(str(c.get("document_id", "")), [int(i) for i in c.get("chunk_ids", [])]) for c in citations]
    wanted = sorted({doc for doc, _ in cited if doc})
    existing = set(session.exec(select(DocumentRow.id).where(col(DocumentRow.id).in_(wanted))).all())
    changed = session.exec(
        select(DocumentChangeRow.document_id).where(
            col(DocumentChangeRow.document_id).in_(wanted), col(DocumentChangeRow.changed_at) > asked_at
        )
    ).all()
    if missing := set(wanted) - existing:
        return f"a cited document was deleted ({', '.join(sorted(missing))})"
    if changed:
        return f"a cited document changed since the answer ({', '.join(sorted(set(changed)))})"
    chunk_ids = [i for _, ids in cited for i in ids]
    rows = session.exec(
        select(ChunkRow.id, ChunkRow.document_id, ChunkRow.text).where(col(ChunkRow.id).in_(chunk_ids))
    ).all()
    by_id = {int(i): (doc, text) for i, doc, text in rows}
    found = [by_id[i] for i in dict.fromkeys(chunk_ids) if i in by_id]
    if not found:
        return "the cited passages are gone from their documents"
    return found[0][0], [text for _, text in found]


def _feedback_values(session: Any, ids: Sequence[int]) -> dict[int, int]:
    """The summed feedback per question (+1 / -1 buttons; written comments count 0)."""
    from sqlmodel import col, select

    from core.models import BehaviourEventRow

    totals: dict[int, int] = {}
    rows = session.exec(
        select(BehaviourEventRow.question_id, BehaviourEventRow.data).where(
            col(BehaviourEventRow.kind) == "feedback", col(BehaviourEventRow.question_id).in_(list(ids))
        )
    )
    for question_id, data in rows:
        totals[question_id] = totals.get(question_id, 0) + int(data.get("value", 0))
    return totals


async def paraphrase(
    llm: LLM,
    examples: Sequence[QAExample],
    redactor: Redactor,
    *,
    model: str | None = None,
    per_example: int = 1,
) -> list[QAExample]:
    """The teacher's rewordings of each question (same context and answer), redacted like the rest.

    A failing call or an empty or unchanged reply adds nothing for that example; the data set is
    still usable without augmentation.
    """
    out: list[QAExample] = []
    for example in examples:
        seen = {example.question.casefold().strip()}
        for i in range(per_example):
            prompt = PARAPHRASE_PROMPT.format(question=example.question)
            try:
                reply = await llm.chat(
                    [{"role": "user", "content": prompt}],
                    model=model,
                    max_tokens=64,
                    temperature=0.7 if i else 0.0,
                )
            except LLMError:
                continue
            text = reply.text.strip().splitlines()[0].strip() if reply.text.strip() else ""
            if not text or text.casefold() in seen:
                continue
            seen.add(text.casefold())
            out.append(
                replace(
                    example,
                    example_id=f"{example.example_id}-para{i}",
                    question=redactor.redact(text).text,
                    origin="paraphrase",
                )
            )
    return out


@dataclass(frozen=True)
class Split:
    train: list[QAExample]
    validation: list[QAExample]
    test: list[QAExample]


def split_by_document(
    examples: Iterable[QAExample], *, validation: float = 0.1, test: float = 0.1, seed: int = 0
) -> Split:
    """Train/validation/test by document: every example of one document lands in the same part.

    The assignment hashes the document id with the seed, so adding documents never moves old ones.
    """
    parts: dict[str, list[QAExample]] = {"train": [], "validation": [], "test": []}
    for example in examples:
        digest = hashlib.sha256(f"{seed}:{example.document_id}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        part = "test" if u < test else "validation" if u < test + validation else "train"
        parts[part].append(example)
    return Split(parts["train"], parts["validation"], parts["test"])


def dataset_hash(examples: Iterable[QAExample]) -> str:
    """A digest of the examples' content, independent of their order: what the budget ledger records."""
    lines = sorted(
        json.dumps([e.example_id, e.document_id, list(e.context), e.question, e.answer], ensure_ascii=False)
        for e in examples
    )
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """The answer's token ids as they follow the prompt (after one space), ending in </s>."""
    ids: list[int] = tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
    return [*ids, int(tokenizer.eos_token_id)]


def prompt_ids(tokenizer: Any, example: QAExample) -> list[int]:
    """The prompt's token ids with the tokenizer's <s> in front."""
    ids: list[int] = tokenizer(format_prompt(example), add_special_tokens=True)["input_ids"]
    return ids


def tokenize(
    examples: Sequence[QAExample],
    tokenizer: Any,
    *,
    signals: Mapping[str, TeacherSignal] | None = None,
    max_len: int = 256,
    require_signals: bool = False,
) -> list[TrainExample]:
    """Token ids for the student, with the teacher's top-k rows at the answer tokens when given.

    With a signal, the answer is the one the teacher's rows describe (`signal.token_ids`); without,
    the reference answer (cross-entropy only). Long prompts lose passages from the front, never the
    question or the answer.
    """
    out: list[TrainExample] = []
    for example in examples:
        signal = signals.get(example.example_id) if signals is not None else None
        if signal is None and require_signals:
            raise TrainingDataError(
                f"no teacher signal for example {example.example_id!r}",
                hint="collect teacher signals for every training example first (training.teacher)",
            )
        if signal is None and not example.answer.strip():
            raise TrainingDataError(
                f"example {example.example_id!r} has no answer and no teacher signal",
                hint="let the teacher answer it first (training.teacher.collect_signals, mode='generate')",
            )
        prompt = prompt_ids(tokenizer, example)
        answer = list(signal.token_ids) if signal is not None else answer_ids(tokenizer, example.answer)
        overflow = len(prompt) + len(answer) - max_len
        if overflow > 0:
            # The prompt without passages: what must survive (the question and the answer cue).
            protected = len(prompt_ids(tokenizer, replace(example, context=())))
            if overflow > len(prompt) - protected:
                raise TrainingDataError(
                    f"example {example.example_id!r} does not fit in {max_len} tokens even without context",
                    hint="raise max_len or shorten the answer",
                )
            prompt = prompt[:1] + prompt[1 + overflow :]
        top_ids: tuple[tuple[int, ...], ...] = ()
        top_logprobs: tuple[tuple[float, ...], ...] = ()
        if signal is not None and signal.top_ids:
            top_ids, top_logprobs = signal.top_ids, signal.top_logprobs
            if len(top_ids) != len(answer):
                raise TrainingDataError(
                    f"teacher signal of {example.example_id!r}: {len(top_ids)} rows for {len(answer)} tokens",
                    hint="the teacher and the student must share one tokenizer; recollect the signals",
                )
        out.append(
            TrainExample(
                input_ids=tuple(prompt + answer),
                answer_start=len(prompt),
                top_ids=top_ids,
                top_logprobs=top_logprobs,
            )
        )
    return out
