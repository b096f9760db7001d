"""Storage on both SQLite and PostgreSQL: migrations, constraints, clear errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from core import db
from core.errors import DatabaseError, NotMigratedError
from core.models import ChunkRow, DocumentRow
from core.settings import load_settings


def test_fresh_database_is_refused_until_migrated(engine: Engine) -> None:
    assert db.current_revision(engine) is None
    with pytest.raises(NotMigratedError) as caught:
        db.require_migrated(engine)
    assert "kb db upgrade" in str(caught.value)
    assert "has no schema yet" in caught.value.message


def test_upgrade_creates_every_table_and_is_idempotent(engine: Engine) -> None:
    before, after = db.upgrade(engine)
    assert (before, after) == (None, db.head_revision())
    db.require_migrated(engine)
    assert {"documents", "chunks", "ingest_runs", "alembic_version"} <= set(
        sa.inspect(engine).get_table_names()
    )
    assert db.upgrade(engine) == (after, after)


def test_downgrade_then_upgrade_round_trips(engine: Engine) -> None:
    db.upgrade(engine)
    from alembic import command

    config = db._alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert "documents" not in sa.inspect(engine).get_table_names()
    db.upgrade(engine)
    db.require_migrated(engine)


def test_migrations_match_the_models(migrated: Engine) -> None:
    """A model changed without a migration is caught here, on both databases."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    from core.models import EXTERNAL_TABLES

    def ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table not in EXTERNAL_TABLES  # owned by a library (APScheduler's job store)

    with migrated.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "include_object": ours})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_deleting_a_document_cascades_to_its_chunks(migrated: Engine) -> None:
    now = datetime.now(UTC)
    with db.session_scope(migrated) as session:
        session.add(
            DocumentRow(
                id="s:a.md",
                source="s",
                uri="s/a.md",
                title="A",
                content_hash="h",
                updated_at=now,
                ingested_at=now,
            )
        )
        session.flush()
        session.add(ChunkRow(document_id="s:a.md", ordinal=0, text="t", token_count=1, embedding=b"\0\0\0\0"))
    with migrated.begin() as connection:
        connection.execute(sa.text("delete from documents where id = 's:a.md'"))
        assert connection.execute(sa.text("select count(*) from chunks")).scalar_one() == 0


def test_a_chunk_needs_its_document(migrated: Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError), db.session_scope(migrated) as session:
        session.add(ChunkRow(document_id="missing", ordinal=0, text="t", token_count=1, embedding=b""))


def test_sqlite_runs_in_wal_mode_with_foreign_keys(make_settings) -> None:  # type: ignore[no-untyped-def]
    engine = db.make_engine(make_settings())
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("pragma journal_mode").scalar_one() == "wal"
            assert connection.exec_driver_sql("pragma foreign_keys").scalar_one() == 1
    finally:
        engine.dispose()


def test_unreachable_postgres_says_which_setting_to_check() -> None:
    engine = db.make_engine(load_settings(database_url="postgresql://postgres@127.0.0.1:1/test"))
    try:
        with pytest.raises(DatabaseError) as caught:
            db.current_revision(engine)
    finally:
        engine.dispose()
    assert "KB_DATABASE_URL" in str(caught.value)
    assert "127.0.0.1:1" in caught.value.message
