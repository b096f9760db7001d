"""Fixtures for push: a tiny library of documents and a recorder of behaviour, on a migrated database.

Documents go in through knowledge's Store (so the change log and chunk vectors are the real ones);
behaviour events are written the way bot/store/behaviour.py writes them (citations carry links, not ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from sqlmodel import col

from core.db import session_scope
from core.models import BehaviourEventRow, DocumentChangeRow, SubscriptionRow
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.store import Store
from knowledge.types import Chunk, Document, Section
from push.matching import Matcher
from push.profiles import Profiles

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class Library:
    """Adds, changes and deletes documents with a chosen change time."""

    def __init__(self, engine: Engine, embedder: Embedder) -> None:
        self.engine, self.embedder, self.store = engine, embedder, Store(engine)

    def add(
        self,
        doc_id: str,
        title: str,
        text: str,
        *,
        acl: Sequence[str] = (),
        tags: Sequence[str] = (),
        at: datetime = NOW - timedelta(days=1),
        sections: Sequence[tuple[str, str]] = (),
        uri: str | None = None,
    ) -> Document:
        """One document; `sections` adds (anchor, text) parts that get their own chunks."""
        parts = [("", text), *sections]
        document = Document(
            id=doc_id, source="kb", uri=uri or f"kb/{doc_id}", title=title,
            sections=tuple(Section(text=t, headings=(title,), anchor=a) for a, t in parts),
            updated_at=at, acl_groups=tuple(acl), tags=tuple(tags), size_bytes=len(text),
        )  # fmt: skip
        chunks = [Chunk(doc_id, i, t, title, a, None, len(t.split())) for i, (a, t) in enumerate(parts)]
        vectors = self.embedder.encode([f"{title}\n{t}" for _, t in parts])
        self.store.replace_document(document, chunks, vectors)
        self._stamp(doc_id, at)
        return document

    def delete(self, doc_id: str, *, at: datetime = NOW - timedelta(hours=1)) -> None:
        self.store.delete_documents([doc_id])
        self._stamp(doc_id, at)

    def _stamp(self, doc_id: str, at: datetime) -> None:
        with session_scope(self.engine) as session:
            last = session.execute(
                select(func.max(col(DocumentChangeRow.id))).where(
                    col(DocumentChangeRow.document_id) == doc_id
                )
            ).scalar_one()
            session.execute(
                update(DocumentChangeRow).where(col(DocumentChangeRow.id) == last).values(changed_at=at)
            )


class Behaviour:
    """Writes behaviour events like the bot does; returns their ids."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ask(
        self,
        user: str,
        text: str,
        *,
        cited: Sequence[str] = (),
        at: datetime = NOW - timedelta(days=2),
        **data: Any,
    ) -> int:
        citations = [
            {"number": i + 1, "title": d, "uri": f"kb/{d}", "section": ""} for i, d in enumerate(cited)
        ]
        payload = {"abstained": False, "refused": False, "confidence": 0.5, "citations": citations, **data}
        return self._add("question", user, text=text, data=payload, at=at)

    def click(
        self,
        user: str,
        question_id: int,
        doc_id: str,
        *,
        at: datetime = NOW - timedelta(days=2),
        number: int = 1,
        uri: str | None = None,
    ) -> int:
        data = {"number": number, "uri": uri or f"kb/{doc_id}"}
        return self._add("source_click", user, question_id=question_id, data=data, at=at)

    def rate(
        self,
        user: str,
        question_id: int | None,
        value: int,
        *,
        at: datetime = NOW - timedelta(days=2),
        **data: Any,
    ) -> int:
        return self._add("feedback", user, question_id=question_id, data={"value": value, **data}, at=at)

    def subscribe(self, user: str, topic: str, *, at: datetime = NOW - timedelta(days=3)) -> int:
        platform, user_id = user.split(":", 1)
        with session_scope(self.engine) as session:
            session.add(SubscriptionRow(platform=platform, user_id=user_id, topic=topic, created_at=at))
        return self._add("subscribe", user, text=topic, at=at)

    def _add(
        self,
        kind: str,
        user: str,
        *,
        text: str = "",
        question_id: int | None = None,
        data: dict[str, Any] | None = None,
        at: datetime,
    ) -> int:
        platform, user_id = user.split(":", 1)
        row = BehaviourEventRow(
            kind=kind, platform=platform, user_id=user_id, channel="D1", thread="", text=text,
            question_id=question_id, data=data or {}, at=at,
        )  # fmt: skip
        with session_scope(self.engine) as session:
            session.add(row)
            session.flush()
            assert row.id is not None
            return row.id


@pytest.fixture
def library(migrated: Engine, embedder: Embedder) -> Library:
    return Library(migrated, embedder)


@pytest.fixture
def behaviour(migrated: Engine) -> Behaviour:
    return Behaviour(migrated)


@pytest.fixture
def profiles(migrated: Engine, embedder: Embedder, settings: Settings) -> Profiles:
    return Profiles(migrated, embedder, settings)


@pytest.fixture
def matcher(migrated: Engine, embedder: Embedder, settings: Settings, profiles: Profiles) -> Matcher:
    return Matcher(migrated, embedder, settings, profiles=profiles)
