"""The `source_state` table: each declared source's cursor and how its last sync went."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlmodel import Session, col

from core.db import session_scope
from core.models import DocumentRow, SourceStateRow

MAX_PROBLEMS = 100  # the row keeps the first ones; the ingest run's row and the report have them all


class SourceStates:
    """Reads and writes `source_state` rows; one per source that was ever synced."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, name: str) -> SourceStateRow | None:
        with Session(self.engine) as session:
            return session.get(SourceStateRow, name)

    def all(self) -> dict[str, SourceStateRow]:
        with Session(self.engine) as session:
            return {row.name: row for row in session.execute(select(SourceStateRow)).scalars()}

    def save(
        self,
        name: str,
        *,
        kind: str,
        cursor: dict[str, Any] | None,
        synced_at: datetime,
        status: str,
        documents: int,
        problems: list[dict[str, str]],
        run_id: int | None,
    ) -> SourceStateRow:
        with session_scope(self.engine) as session:
            row = session.get(SourceStateRow, name) or SourceStateRow(name=name, kind=kind)
            row.kind, row.cursor, row.last_sync_at, row.status = kind, cursor, synced_at, status
            row.documents, row.problems, row.ingest_run_id = documents, problems[:MAX_PROBLEMS], run_id
            session.add(row)
            return row

    def delete(self, name: str) -> None:
        with session_scope(self.engine) as session:
            session.execute(delete(SourceStateRow).where(col(SourceStateRow.name) == name))

    def count_documents(self, document_source: str) -> int:
        with Session(self.engine) as session:
            query = (
                select(func.count())
                .select_from(DocumentRow)
                .where(col(DocumentRow.source) == document_source)
            )
            return int(session.execute(query).scalar_one())
