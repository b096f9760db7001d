"""Real questions whose answers got a thumbs-up, as distillation examples.

A liked answer is a target the company's users approved of: the stored answer becomes the
reference and the chunks it cited (still present, unchanged since the question) the passages, so
the example shows the student what the bot was shown. Every text is redacted before it is kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from privacy.redaction import Redactor
from training.data import redact_example
from training.types import QAExample

if TYPE_CHECKING:
    from sqlalchemy import Engine


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
