"""SQL sources on a real SQLite file and a real PostgreSQL table: first, incremental and full syncs,
and every way the source can be wrong, reported by name while the rest goes on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from core import db
from core.models import DocumentRow
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from knowledge.sources import SourceRunner, SourcesFile, SqlSource, parse_source
from knowledge.types import Question

TICKETS = [
    (101, "VPN drops every hour", "The VPN drops every hour on the Berlin office wifi.", "it", 1),
    (
        102,
        "Printer jams on A3",
        "The printer on floor 3 jams whenever A3 paper is loaded.",
        "it, facilities",
        2,
    ),
    (103, "Badge reader broken", "The badge reader at the east entrance rejects new badges.", "", 3),
]


@dataclass
class Crm:
    """The source database (SQLite file or PostgreSQL schema) and a KB beside it."""

    url: str
    engine: sa.Engine
    kb: KnowledgeBase
    postgres: bool

    def when(self, day: int) -> Any:
        moment = datetime(2026, 3, day, 9, 30, tzinfo=UTC)
        return moment if self.postgres else moment.isoformat()

    def execute(self, statement: str, **params: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.text(statement), params)

    def source(self, **overrides: Any) -> SqlSource:
        fields: dict[str, Any] = {
            "name": "crm",
            "kind": "sql",
            "url": self.url,
            "query": "SELECT ticket_id, subject, body, team, changed FROM tickets",
            "id_column": "ticket_id",
            "title_column": "subject",
            "text_columns": ["body"],
            "updated_column": "changed",
            "acl_column": "team",
            "uri_template": "crm://tickets/{id}",
        }
        source = parse_source({**fields, **overrides})
        assert isinstance(source, SqlSource)
        return source

    def runner(self, *sources: SqlSource, environ: dict[str, str] | None = None) -> SourceRunner:
        return SourceRunner(self.kb, SourcesFile(Path("sources.yaml"), sources), environ=environ or {})

    def documents(self) -> dict[str, DocumentRow]:
        with Session(self.kb.store.engine) as session:
            return {row.id: row for row in session.exec(select(DocumentRow)).all()}


@contextmanager
def _crm(url: str, *, postgres: bool, settings: Settings, embedder: Embedder) -> Iterator[Crm]:
    """The source table at `url`, filled with TICKETS, and a migrated KB on `settings`' database."""
    kb_engine = db.make_engine(settings)
    db.upgrade(kb_engine)
    source_engine = sa.create_engine(url)
    crm = Crm(url, source_engine, KnowledgeBase(settings, kb_engine, embedder=embedder), postgres)
    # SQLite keeps ISO text; PostgreSQL a timestamptz: the cursor must round-trip through both.
    changed = "timestamptz" if postgres else "text"
    crm.execute(
        f"CREATE TABLE tickets (ticket_id INTEGER, subject TEXT, body TEXT, team TEXT, changed {changed})"
    )
    for ticket_id, subject, body, team, day in TICKETS:
        crm.execute(
            "INSERT INTO tickets VALUES (:i, :s, :b, :t, :c)",
            i=ticket_id,
            s=subject,
            b=body,
            t=team,
            c=crm.when(day),
        )
    try:
        yield crm
    finally:
        source_engine.dispose()
        kb_engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def crm(
    request: pytest.FixtureRequest, tmp_path: Path, make_settings: Callable[..., Settings], embedder: Embedder
) -> Iterator[Crm]:
    """The tickets table in a SQLite file, or in the test's PostgreSQL schema beside the KB's tables."""
    if request.param == "postgres":
        url = kb_url = str(request.getfixturevalue("postgres_url"))
    else:
        url, kb_url = f"sqlite:///{tmp_path / 'crm.db'}", f"sqlite:///{tmp_path / 'kb.db'}"
    settings = make_settings(database_url=kb_url)
    with _crm(url, postgres=request.param == "postgres", settings=settings, embedder=embedder) as made:
        yield made


@pytest.fixture
def sqlite_crm(tmp_path: Path, make_settings: Callable[..., Settings], embedder: Embedder) -> Iterator[Crm]:
    """For checks that do not depend on the source's database."""
    url, kb_url = f"sqlite:///{tmp_path / 'crm.db'}", f"sqlite:///{tmp_path / 'kb.db'}"
    settings = make_settings(database_url=kb_url)
    with _crm(url, postgres=False, settings=settings, embedder=embedder) as made:
        yield made


def test_first_incremental_and_full_syncs(crm: Crm) -> None:
    runner, source = crm.runner(crm.source()), crm.source()

    first = runner.sync(source)
    assert (first.status, first.full, first.report.added, first.documents) == ("ok", True, 3, 3)
    assert first.cursor is not None and first.cursor["value"].startswith("2026-03-03")
    docs = crm.documents()
    assert docs["crm:102"].uri == "crm://tickets/102"
    assert docs["crm:102"].title == "Printer jams on A3"
    assert docs["crm:102"].acl_groups == ["it", "facilities"]
    assert docs["crm:103"].acl_groups == []

    # One row changes: only rows from the cursor on are read, and only the changed one is re-embedded.
    crm.execute(
        "UPDATE tickets SET body = :b, changed = :c WHERE ticket_id = 101",
        b="The VPN was fixed by the new firmware on the Berlin routers.",
        c=crm.when(5),
    )
    second = runner.sync(source)
    counts = second.report.counts()
    assert (second.full, counts["updated"], counts["added"], counts["removed"]) == (False, 1, 0, 0)
    assert counts["unchanged"] == 1, "only the row at the old cursor comes again"
    assert 0 < counts["chunks"] <= 2
    assert second.cursor is not None and second.cursor["value"].startswith("2026-03-05")
    hits = crm.kb.retrieve(Question("VPN firmware Berlin routers", groups=("it",)), 1)
    assert hits[0].document_id == "crm:101" and "firmware" in hits[0].text

    # A deleted row is not noticed by an incremental read; a --full sync sweeps it.
    crm.execute("DELETE FROM tickets WHERE ticket_id = 102")
    crm.execute(
        "INSERT INTO tickets VALUES (104, 'New laptop', 'Order laptops via the portal.', 'it', :c)",
        c=crm.when(6),
    )
    third = runner.sync(source)
    assert (third.report.added, third.report.removed) == (1, 0)
    assert "crm:102" in crm.documents()
    full = runner.sync(source, full=True)
    assert (full.status, full.full, full.report.removed, full.report.unchanged, full.documents) == (
        "ok",
        True,
        1,
        3,
        3,
    )
    assert set(crm.documents()) == {"crm:101", "crm:103", "crm:104"}
    assert crm.kb.index.size == crm.kb.stats().chunks
    state = runner.states.get("crm")
    assert state is not None and (state.status, state.documents) == ("ok", 3)

    # An edited source is read whole again: the cursor belongs to the query it was read with.
    narrowed = crm.source(query="SELECT * FROM tickets WHERE ticket_id <> 103")
    edited = runner.sync(narrowed)
    assert (edited.full, edited.report.removed, edited.report.unchanged) == (True, 1, 2)
    assert runner.sync(narrowed).full is False


def test_bad_query_and_bad_mapping_fail_that_source_only(crm: Crm) -> None:
    good = crm.source()
    crm.runner(good).sync(good)
    cases = {
        "syntax": (crm.source(query="SELEC ticket_id FROM tickets"), "the query failed on"),
        "table": (crm.source(query="SELECT * FROM no_such_table"), "no_such_table"),
        "column": (crm.source(id_column="id"), "id_column 'id' is not a column of the query's result"),
        "text": (crm.source(text_columns=["body", "summary"]), "text_columns entry 'summary'"),
        "template": (crm.source(uri_template="crm://{queue}/{id}"), "uri_template field 'queue'"),
    }
    for label, (broken, expected) in cases.items():
        result = crm.runner(broken).sync(broken)
        assert result.status == "failed", label
        assert [p.path for p in result.report.skipped] == ["crm"], label
        assert expected in result.report.skipped[0].reason, (label, result.report.skipped[0].reason)
        assert result.report.removed == 0 and result.documents == 3, f"{label}: earlier documents stay"
    assert "ticket_id" in crm.runner(cases["column"][0]).sync(cases["column"][0]).report.skipped[0].reason
    state = crm.runner(good).states.get("crm")
    assert state is not None and state.status == "failed" and state.cursor is not None, "the cursor is kept"


def test_rows_without_id_are_skipped_and_the_rest_syncs(crm: Crm) -> None:
    crm.execute(
        "INSERT INTO tickets VALUES (NULL, 'Orphan', 'A ticket with no id.', 'it', :c)", c=crm.when(4)
    )
    result = crm.runner(crm.source()).sync(crm.source())
    assert (result.status, result.report.added) == ("partial", 3)
    [problem] = result.report.skipped
    assert problem.path.startswith("crm: row ") and "no value in the id column 'ticket_id'" in problem.reason


def test_one_failing_source_does_not_stop_the_others(crm: Crm) -> None:
    broken = crm.source(name="broken", query="SELECT * FROM missing_table")
    runner = crm.runner(broken, crm.source())
    results = runner.sync_all()
    assert [(r.name, r.status) for r in results] == [("broken", "failed"), ("crm", "ok")]
    assert results[1].report.added == 3


def test_unreachable_database_and_missing_secrets_are_reported(tmp_path: Path, sqlite_crm: Crm) -> None:
    crm = sqlite_crm
    cases = {
        "refused": (crm.source(url="postgresql://kb:hunter2@127.0.0.1:1/crm"), "cannot connect to"),
        "missing file": (crm.source(url=f"sqlite:///{tmp_path / 'nope.db'}"), "no SQLite database at"),
        "env": (crm.source(url="postgresql://kb:${CRM_PASSWORD}@127.0.0.1:1/crm"), "${CRM_PASSWORD}"),
        "driver": (crm.source(url="mysql://kb@127.0.0.1/crm"), "no database driver for 'mysql'"),
    }
    for label, (source, expected) in cases.items():
        result = crm.runner(source).sync(source)
        reason = result.report.skipped[0].reason
        assert result.status == "failed" and expected in reason, (label, reason)
        assert "hunter2" not in reason, "passwords never reach messages"
    assert "kb:***@127.0.0.1:1" in crm.runner().sync(cases["refused"][0]).report.skipped[0].reason


def test_url_secrets_come_from_the_environment(sqlite_crm: Crm) -> None:
    crm = sqlite_crm
    source = crm.source(url="sqlite:///${CRM_DB}")
    result = crm.runner(source, environ={"CRM_DB": crm.url.removeprefix("sqlite:///")}).sync(source)
    assert (result.status, result.report.added) == ("ok", 3)
