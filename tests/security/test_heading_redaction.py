"""Personal data in headings: a heading with an IBAN and a token must not come back in a citation's
section or its link, whether the document is ingested now or was stored before headings were redacted."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from app.commands.db import data_steps
from core import db
from core.settings import Settings
from knowledge.chunking import chunk_document, redact_document
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from knowledge.store import Store
from knowledge.sync import embedding_text
from knowledge.types import Document, Question, Section
from privacy.redaction import Destination, policy_for

IBAN = "DE89 3704 0044 0532 0130 00"
TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
HEADING = f"Refunds to IBAN {IBAN} with token {TOKEN}"
LEAKS = ("DE89", "3704", "de89", "ghp_", "a1b2c3", "a1B2c3")
MIGRATION = next((Path(db.__file__).parent / "migrations" / "versions").glob("*_redact_stored_rows.py"))


def leaked(*texts: str) -> list[str]:
    return [text for text in texts if any(value in text for value in LEAKS)]


def page(tmp_path: Path) -> Path:
    root = tmp_path / "finance"
    root.mkdir()
    body = "Refunds are paid within ten days to the account the supplier named in the contract."
    (root / "refunds.md").write_text(f"# Refund process\n\n## {HEADING}\n\n{body}\n", encoding="utf-8")
    return root


def test_probe_heading_with_an_iban_and_a_token_stays_out_of_citations(
    settings: Settings, migrated: Engine, embedder: Embedder, tmp_path: Path
) -> None:
    kb = KnowledgeBase(settings, migrated, embedder=embedder)
    assert kb.ingest([page(tmp_path)]).ok
    answer = kb.ask(Question("How are refunds paid to the supplier account?"))
    assert answer.citations
    for citation in answer.citations:
        assert leaked(citation.section, citation.uri, citation.title, citation.snippet) == []
    cited = next(c for c in answer.citations if "Refunds to IBAN" in c.section)
    assert cited.section == "Refunds to IBAN [IBAN] with token [SECRET]"  # the top heading is the title
    assert cited.uri.endswith("#refunds-to-iban-iban-with-token-secret")
    with migrated.connect() as connection:
        stored = connection.execute(sa.text("select section, anchor, text from chunks")).all()
    assert leaked(*(value for row in stored for value in row)) == []


def test_redacting_a_document_twice_changes_nothing() -> None:
    redact = policy_for(Destination.INDEX).redactor()
    document = Document(
        id="s:d", source="s", uri="s/d", title=f"Payments {IBAN}",
        sections=(
            Section("Pay here.", headings=("Intro", HEADING), anchor="refunds"),
            Section("Also here.", headings=("Refunds to IBAN [IBAN] with token [SECRET]",), anchor="x"),
        ),
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    once = redact_document(document, lambda text: redact.redact(text).text)
    assert once.title == "Payments [IBAN]"
    assert [s.anchor for s in once.sections] == ["refunds-to-iban-iban-with-token-secret", "x"]
    assert redact_document(once, lambda text: redact.redact(text).text) == once


def _down_revision() -> str:
    spec = importlib.util.spec_from_file_location("redact_stored_rows", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.down_revision)


def _store_unredacted(engine: Engine, embedder: Embedder) -> list[int]:
    """Rows as ingest wrote them before headings were redacted: title and text clean, heading raw."""
    document = Document(
        id="finance:refunds.md", source="finance", uri="finance/refunds.md", title=f"Refunds {IBAN}",
        sections=(
            Section(f"Refunds go to {IBAN} within ten days.", headings=("Refund process", HEADING),
                    anchor="refunds-to-iban-de89-3704-0044-0532-0130-00-with-token-" + TOKEN.lower()),
            Section("Ask finance for the form.", headings=("Refund process", "Forms"), anchor="forms"),
        ),
        updated_at=datetime(2026, 11, 1, tzinfo=UTC),
    )  # fmt: skip
    chunks = chunk_document(document, count_tokens=lambda t: len(t.split()), max_tokens=200, overlap=0)
    vectors = embedder.encode([embedding_text(document.title, c.section, c.text) for c in chunks])
    return Store(engine).replace_document(document, chunks, vectors)[1]


def test_migration_redacts_stored_rows_and_the_indexes_are_rebuilt(
    settings: Settings, engine: Engine, embedder: Embedder
) -> None:
    db.upgrade(engine, _down_revision())
    old_ids = _store_unredacted(engine, embedder)
    before = KnowledgeBase(settings, engine, embedder=embedder)
    assert before.retrieve(Question("refunds within ten days"))  # indexes built and saved from the old rows
    with pytest.raises(RuntimeError, match="kb db upgrade"):
        db.upgrade(engine)  # without the redaction step a database with documents cannot pass
    db.upgrade(engine, data_steps=data_steps(settings))
    with engine.connect() as connection:
        titles = connection.execute(
            sa.text("select title from documents union all select title from document_changes")
        )
        chunks = connection.execute(sa.text("select id, section, anchor, text from chunks order by id")).all()
        stored = [*(row[0] for row in titles), *(v for row in chunks for v in row[1:])]
    assert leaked(*stored) == [] and stored
    assert not set(old_ids) & {row[0] for row in chunks}  # written again under new ids
    assert [row[2] for row in chunks] == ["refunds-to-iban-iban-with-token-secret", "forms"]
    # The saved indexes hold the old ids: opening the knowledge base sees they disagree and rebuilds.
    after = KnowledgeBase(settings, engine, embedder=embedder)
    hits = after.retrieve(Question("refunds within ten days"), mode="hybrid")
    assert hits and {hit.chunk_id for hit in hits} <= {row[0] for row in chunks}
    assert leaked(*(f"{hit.section} {hit.link} {hit.text} {hit.title}" for hit in hits)) == []
    assert after.retrieve(Question("3704 0044 0532"), mode="bm25") == []
    db.upgrade(engine)  # at head: nothing more to do
