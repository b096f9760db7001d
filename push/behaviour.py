"""Behaviour events -> interest signals: what each thing a person did says about what they care about.

The bot writes `behaviour_events` (bot/store/behaviour.py); this module reads them in id order and turns each
into a `Signal` that `push.profiles` folds into the person's interest centroids:

- `question`: the (redacted) question text, embedded; the documents its answer cited count as seen.
- `source_click`: the clicked document (`data.document_id`, else the cited link in `data.uri`).
- `feedback` +1 / -1: the documents the rated answer cited (or `data.document_id` when a pushed
  item was rated or dismissed), pulling that interest up or pushing it down; a written comment (0)
  says nothing here.
- `subscribe` / `unsubscribe`: no signal; subscriptions are read from the `subscriptions` table at
  match time, so an unsubscribe takes effect at once and a subscription never decays away.

Citations carry links (`uri#anchor`) rather than document ids; `DocumentResolver` maps them back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from core.models import BehaviourEventRow, ChunkRow, DocumentRow, as_utc

# How much one event moves an interest. A click or a rating is a deliberate act and says more than a
# question (which may be idle curiosity); a thumbs-down pushes the interest it lands in down.
WEIGHT_QUESTION = 1.0
WEIGHT_CLICK = 1.5
WEIGHT_LIKE = 2.0
WEIGHT_DISLIKE = -1.5
_LABEL_CHARS = 60
_BATCH = 500


@dataclass(frozen=True, slots=True)
class Signal:
    """One event's evidence about one person's interests.

    The vector to fold in is the embedding of `text` when it is set, else the mean vector of
    `documents`. A negative `weight` pushes the nearest interest down instead of adding one.
    """

    event_id: int
    platform: str
    user_id: str
    at: datetime
    weight: float
    label: str
    text: str = ""
    documents: tuple[str, ...] = ()
    seen: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.user_id}"


def short_label(text: str, *, limit: int = _LABEL_CHARS) -> str:
    """A question cut to a readable length at a word boundary, for "because you asked about ...".

    >>> short_label("How do I  get VPN access from home?")
    'How do I get VPN access from home'
    """
    text = " ".join(text.split()).rstrip("?!. ")
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return (cut or text[:limit]).rstrip(",;:") + "…"


class DocumentResolver:
    """Maps citation links (`uri#anchor`) and document ids to current documents (id, title)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def titles(self, document_ids: Iterable[str]) -> dict[str, str]:
        """Title of each id that is still a document; deleted ones are left out."""
        ids = sorted(set(document_ids))
        out: dict[str, str] = {}
        with Session(self.engine) as session:
            for start in range(0, len(ids), _BATCH):
                query = select(col(DocumentRow.id), col(DocumentRow.title)).where(
                    col(DocumentRow.id).in_(ids[start : start + _BATCH])
                )
                out.update({row[0]: row[1] for row in session.execute(query)})
        return out

    def links(self, links: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """Document ids behind each link; several documents may share a file's uri (CSV rows), and
        then the anchor picks the one whose chunk carries it."""
        wanted = sorted(set(links))
        bare = sorted({link.split("#", 1)[0] for link in wanted})
        by_uri: dict[str, list[str]] = {}
        uri_of: dict[str, str] = {}
        with Session(self.engine) as session:
            for start in range(0, len(bare), _BATCH):
                query = select(col(DocumentRow.uri), col(DocumentRow.id)).where(
                    col(DocumentRow.uri).in_(bare[start : start + _BATCH])
                )
                for uri, document_id in session.execute(query):
                    by_uri.setdefault(uri, []).append(document_id)
                    uri_of[document_id] = uri
            shared = sorted({d for ids in by_uri.values() if len(ids) > 1 for d in ids})
            anchors: dict[tuple[str, str], str] = {}
            for start in range(0, len(shared), _BATCH):
                query = select(col(ChunkRow.document_id), col(ChunkRow.anchor)).where(
                    col(ChunkRow.document_id).in_(shared[start : start + _BATCH])
                )
                for document_id, anchor in session.execute(query):
                    anchors.setdefault((uri_of[document_id], anchor), document_id)
        out: dict[str, tuple[str, ...]] = {}
        for link in wanted:
            uri, _, anchor = link.partition("#")
            ids = by_uri.get(uri, [])
            if len(ids) > 1 and (uri, anchor) in anchors:
                ids = [anchors[(uri, anchor)]]
            out[link] = tuple(sorted(ids))
        return out


class BehaviourReader:
    """Reads behaviour events in id order and turns them into Signals."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.resolver = DocumentResolver(engine)

    def events(
        self,
        *,
        after_id: int = 0,
        limit: int = 1000,
        user: tuple[str, str] | None = None,
        settled_before: datetime | None = None,
    ) -> list[BehaviourEventRow]:
        """Events after `after_id`, in id order; only one person's when `user` is (platform, id).

        With `settled_before`, the list stops at the first event recorded after it. A cursor over
        ids can pass a row whose transaction commits after a later id's (two writers at once on
        PostgreSQL); stopping at the young events leaves such a row the settle time to appear.
        """
        query = select(BehaviourEventRow).where(col(BehaviourEventRow.id) > after_id)
        if user is not None:
            query = query.where(
                col(BehaviourEventRow.platform) == user[0], col(BehaviourEventRow.user_id) == user[1]
            )
        query = query.order_by(col(BehaviourEventRow.id)).limit(limit)
        with Session(self.engine) as session:
            events = list(session.execute(query).scalars())
        if settled_before is not None:
            young = next((i for i, e in enumerate(events) if as_utc(e.at) > settled_before), None)
            events = events if young is None else events[:young]
        return events

    def signals(self, events: Sequence[BehaviourEventRow]) -> list[Signal]:
        """The signals of these events, in event order; events that say nothing give none."""
        questions = self._questions(events)
        links: set[str] = set()
        for row in [*events, *questions.values()]:
            links.update(_cited_links(row))
            if row.kind == "source_click" and isinstance(row.data.get("uri"), str):
                links.add(row.data["uri"])
        resolved = self.resolver.links(links)
        signals: list[Signal] = []
        for row in events:
            signal = _signal(row, questions, resolved)
            if signal is not None:
                signals.append(signal)
        titles = self.resolver.titles(d for s in signals for d in s.documents)
        return [_titled(s, titles) for s in signals]

    def _questions(self, events: Sequence[BehaviourEventRow]) -> dict[int, BehaviourEventRow]:
        """The question events that clicks and ratings in `events` point at (they may be older)."""
        known = {row.id: row for row in events if row.kind == "question" and row.id is not None}
        wanted = sorted({r.question_id for r in events if r.question_id is not None} - set(known))
        with Session(self.engine) as session:
            for start in range(0, len(wanted), _BATCH):
                query = select(BehaviourEventRow).where(
                    col(BehaviourEventRow.id).in_(wanted[start : start + _BATCH])
                )
                known.update({row.id: row for row in session.execute(query).scalars() if row.id})
        return {k: v for k, v in known.items() if k is not None and v.kind == "question"}


def _cited_links(row: BehaviourEventRow) -> list[str]:
    citations = row.data.get("citations") if row.kind == "question" else None
    if not isinstance(citations, list):
        return []
    return [c["uri"] for c in citations if isinstance(c, dict) and isinstance(c.get("uri"), str)]


def _documents_of(links: Iterable[str], resolved: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(d for link in links for d in resolved.get(link, ())))


def _explicit_document(data: dict[str, Any]) -> tuple[str, ...]:
    value = data.get("document_id")
    return (value,) if isinstance(value, str) and value else ()


def _signal(
    row: BehaviourEventRow,
    questions: dict[int, BehaviourEventRow],
    resolved: dict[str, tuple[str, ...]],
) -> Signal | None:
    assert row.id is not None
    event_id, at = row.id, as_utc(row.at)

    def make(weight: float, label: str, *, text: str = "", documents: tuple[str, ...] = ()) -> Signal:
        seen = documents if row.kind != "question" else _documents_of(_cited_links(row), resolved)
        return Signal(event_id, row.platform, row.user_id, at, weight, label, text, documents, seen)

    question = questions.get(row.question_id) if row.question_id is not None else None
    if row.kind == "question":
        text = row.text.strip()
        if row.data.get("refused") or not text:
            return make(0.0, "") if _cited_links(row) else None
        return make(WEIGHT_QUESTION, f'you asked about "{short_label(text)}"', text=text)
    if row.kind == "source_click":
        # The clicked URL may carry KB_DOCS_BASE_URL in front; the citation number it came with
        # names the link in the question's answer, which is what resolves to a document.
        uri = row.data.get("uri")
        number = row.data.get("number")
        numbered = [
            c["uri"] for c in (question.data.get("citations") or [] if question is not None else [])
            if isinstance(c, dict) and c.get("number") == number and isinstance(c.get("uri"), str)
        ]  # fmt: skip
        linked = _documents_of(numbered, resolved) or (
            _documents_of([uri], resolved) if isinstance(uri, str) else ()
        )
        return make(WEIGHT_CLICK, "opened", documents=_explicit_document(row.data) or linked)
    if row.kind == "feedback":
        value = row.data.get("value")
        if value not in (1, -1):
            return None  # a written comment, or a malformed event: no evidence either way
        cited = _documents_of(_cited_links(question), resolved) if question is not None else ()
        documents = _explicit_document(row.data) or cited
        weight = WEIGHT_LIKE if value == 1 else WEIGHT_DISLIKE
        if not documents and question is not None and question.text.strip():
            label = f'you liked the answer about "{short_label(question.text)}"'
            return make(weight, label, text=question.text)
        return make(weight, "liked", documents=documents) if documents else None
    return None


def _titled(signal: Signal, titles: dict[str, str]) -> Signal:
    """Fill in labels that name a document, now that the titles are known."""
    if signal.label not in ("opened", "liked"):
        return signal
    present = [d for d in signal.documents if d in titles]
    documents = tuple(present)
    if not documents:
        label = ""
    elif signal.label == "opened":
        label = f'you opened "{titles[documents[0]]}"'
    else:
        label = f'you found "{titles[documents[0]]}" helpful'
    return Signal(
        event_id=signal.event_id, platform=signal.platform, user_id=signal.user_id, at=signal.at,
        weight=signal.weight, label=label, text=signal.text, documents=documents, seen=signal.seen,
    )  # fmt: skip
