"""Sources with an identity, on both databases: an unrelated folder of the same name removes
nothing, a subfolder updates in place, a large removal stops, removals are soft and restorable,
and an old database (documents keyed by folder base name) carries over without duplicates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine
from typer.testing import CliRunner

from app.cli import app
from app.commands.db import data_steps
from app.support import EXIT_PARTIAL
from core import db
from core.settings import Settings
from knowledge.answer_quality import load_answer_set, unknown_links
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from knowledge.trash import RemovalPolicy
from knowledge.types import Question
from tests.conftest import REPO

IT_FILES = 8  # examples/handbook/it
# The two probes the product promises on both databases run on both; the rest ingest a handbook
# several times and keep to SQLite, so the suite stays within its time.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def kb(settings: Settings, migrated: Engine, embedder: Embedder) -> KnowledgeBase:
    return KnowledgeBase(settings, migrated, embedder=embedder)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    root = tmp_path / "small"
    for name in ("a", "b", "c", "d"):
        write(root / f"{name}.md", f"# Page {name}\n\nThe {name} page says {name * 3} about parking.\n")
    return root


def test_an_unrelated_folder_of_the_same_name_removes_nothing(
    kb: KnowledgeBase, small_handbook: Path, tmp_path: Path
) -> None:
    first = kb.ingest([small_handbook])
    before = kb.stats().documents
    other = write(tmp_path / "other" / "handbook" / "notes.md", "# Notes\n\nLunch is at noon on Fridays.\n")
    report = kb.ingest([other.parent])
    assert (report.added, report.removed, report.skipped) == (1, 0, [])
    assert kb.stats().documents == before + 1 == first.added + 1
    assert any("cited as handbook-2/" in note for note in report.notes)
    hits = kb.retrieve(Question("When is lunch on Fridays?"), 3)
    assert hits[0].uri == "handbook-2/notes.md"
    assert kb.ingest([small_handbook]).unchanged == first.added, "the handbook is still whole"


def test_a_subfolder_updates_its_source_in_place(kb: KnowledgeBase, small_handbook: Path) -> None:
    kb.ingest([small_handbook])
    before = kb.stats()
    report = kb.ingest([small_handbook / "it"])
    assert (report.added, report.unchanged, report.removed) == (0, IT_FILES, 0)
    assert any("inside source 'handbook'" in note for note in report.notes)
    assert kb.stats().documents == before.documents and kb.stats().chunks == before.chunks

    (small_handbook / "it" / "vpn-access.md").unlink()
    again = kb.ingest([small_handbook / "it"])
    assert (again.added, again.removed, again.unchanged) == (0, 1, IT_FILES - 1)
    assert kb.stats().documents == before.documents - 1, "only the subfolder was swept"


def test_a_sweep_past_the_share_stops_until_allowed(kb: KnowledgeBase, small: Path) -> None:
    assert kb.ingest([small]).added == 4
    for name in ("a", "b", "c"):
        (small / f"{name}.md").unlink()
    stopped = kb.ingest([small])
    assert (stopped.removed, stopped.unchanged, stopped.ok) == (0, 0, False)
    assert "--allow-removals" in stopped.skipped[0].reason and "3 of the 4" in stopped.skipped[0].reason
    assert kb.stats().documents == 4

    kb.store.policy = RemovalPolicy(max_share=0.5, allow=True)
    allowed = kb.ingest([small])
    assert (allowed.removed, allowed.unchanged, allowed.ok) == (3, 1, True)
    assert kb.stats().documents == 1 and kb.index.size == kb.stats().chunks


def test_removed_documents_come_back_with_restore_and_go_with_purge(
    kb: KnowledgeBase, small: Path, settings: Settings, embedder: Embedder
) -> None:
    kb.ingest([small])
    page = (small / "b.md").read_text()
    (small / "b.md").unlink()
    assert kb.ingest([small]).removed == 1
    assert not any(h.document_id == "small:b.md" for h in kb.retrieve(Question("bbb parking"), 4))
    [removed] = kb.store.removed()
    assert (removed.document_id, removed.uri) == ("small:b.md", "small/b.md")

    restored, live = kb.store.restore([removed.id])
    assert (restored, live, kb.store.removed()) == (["small:b.md"], [], [])
    reopened = KnowledgeBase(settings, kb.store.engine, embedder=embedder)  # rebuilds from the rows
    assert reopened.index.size == reopened.stats().chunks
    assert reopened.retrieve(Question("The b page says bbb"), 1)[0].document_id == "small:b.md"

    write(small / "b.md", page)  # the file is back too: the next sync finds it unchanged
    (small / "c.md").unlink()
    report = reopened.ingest([small])
    assert (report.unchanged, report.removed) == (3, 1)
    assert reopened.store.purge() == 0, "within the retention period"
    from core.models import utcnow

    assert reopened.store.purge(before=utcnow()) == 1 and reopened.store.removed() == []


def test_a_moved_folder_is_refused_until_re_pointed(kb: KnowledgeBase, small: Path, tmp_path: Path) -> None:
    kb.ingest([small])
    moved = small.rename(tmp_path / "renamed")
    refused = kb.ingest([moved])
    assert refused.added == 0 and "kb sources move small" in refused.skipped[0].reason
    gone = kb.ingest([small])
    assert "re-point it with `kb sources move small" in gone.skipped[0].reason
    kb.store.owners.move("small", moved)
    report = kb.ingest([moved])
    assert (report.added, report.unchanged, report.removed) == (0, 4, 0)
    assert kb.stats().documents == 4


@SQLITE_ONLY
def test_an_outer_folder_leaves_a_nested_source_alone(kb: KnowledgeBase, small_handbook: Path) -> None:
    inner = kb.ingest([small_handbook / "it"])
    assert inner.added == IT_FILES
    outer = kb.ingest([small_handbook])
    assert any("source 'it' of its own" in note for note in outer.notes)
    assert kb.stats().documents == inner.added + outer.added, "no document twice"
    assert kb.ingest([small_handbook / "it"]).unchanged == IT_FILES


@SQLITE_ONLY
def test_a_document_that_moved_between_sources_is_noted_and_nothing_lost(
    kb: KnowledgeBase, small: Path, tmp_path: Path
) -> None:
    kb.ingest([small])
    other = tmp_path / "other"
    other.mkdir()
    shutil.move(small / "a.md", other / "a.md")
    arrived = kb.ingest([other])
    assert any("same text as small:a.md of source 'small'" in note for note in arrived.notes)
    left = kb.ingest([small])
    assert left.removed == 1 and [r.document_id for r in kb.store.removed()] == ["small:a.md"]


def _downgrade(engine: Engine, revision: str) -> None:
    config = db._alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


@pytest.mark.parametrize(
    ("first", "database_url"),
    [("whole", "sqlite"), ("whole", "postgres"), ("subfolder", "sqlite"), ("unrelated", "sqlite")],
    indirect=["database_url"],
)
def test_an_old_database_carries_over_without_duplicates_or_removals(
    settings: Settings, migrated: Engine, embedder: Embedder, small_handbook: Path, tmp_path: Path, first: str
) -> None:
    documents = KnowledgeBase(settings, migrated, embedder=embedder).ingest([small_handbook]).added
    _downgrade(migrated, "0012")  # documents keyed by the folder's base name, no sources table
    assert "document_sources" not in sa.inspect(migrated).get_table_names()
    db.upgrade(migrated, data_steps=data_steps(settings))  # as `kb db upgrade` runs it
    kb = KnowledgeBase(settings, migrated, embedder=embedder)
    assert [(r.key, r.kind, r.root) for r in kb.store.owners.all()] == [("handbook", "legacy", None)]
    if first == "unrelated":
        other = write(tmp_path / "other" / "handbook" / "notes.md", "# Notes\n\nLunch is at noon.\n")
        report = kb.ingest([other.parent])
        assert (report.added, report.removed) == (1, 0)
    elif first == "subfolder":
        report = kb.ingest([small_handbook / "it"])
        assert (report.added, report.unchanged, report.removed) == (0, IT_FILES, 0)
    report = kb.ingest([small_handbook])
    assert (report.added, report.removed, report.unchanged) == (0, 0, documents)
    assert kb.store.owners.get("handbook").root == str(small_handbook.resolve())  # type: ignore[union-attr]


@SQLITE_ONLY
def test_citation_links_still_match_the_bench_labels(kb: KnowledgeBase) -> None:
    kb.ingest([REPO / "examples" / "handbook"])
    with kb.store.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT d.uri, c.anchor FROM chunks c JOIN documents d ON d.id = c.document_id")
        ).all()
    known = {f"{uri}#{anchor}" if anchor else uri for uri, anchor in rows}
    assert all(link.startswith("handbook/") for link in known)
    items = load_answer_set(REPO / "bench" / "sets" / "handbook_answers.jsonl")
    assert unknown_links(items, known) == []


def test_the_commands_stop_a_large_removal_and_restore_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, small: Path
) -> None:
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "var"))
    runner = CliRunner()

    def kb(*args: str) -> Any:
        return runner.invoke(app, list(args), catch_exceptions=False)

    assert kb("db", "upgrade").exit_code == 0
    assert kb("ingest", str(small)).exit_code == 0
    for name in ("a", "b", "c"):
        (small / f"{name}.md").unlink()
    stopped = kb("ingest", str(small))
    assert stopped.exit_code == EXIT_PARTIAL and "--allow-removals" in stopped.stderr
    assert kb("ingest", str(small), "--allow-removals").exit_code == 0
    removed = json.loads(kb("sources", "removed", "--json").stdout)["removed"]
    assert sorted(r["uri"] for r in removed) == ["small/a.md", "small/b.md", "small/c.md"]
    restored = kb("sources", "restore", "--source", "small", "--json")
    assert restored.exit_code == 0, restored.output
    assert len(json.loads(restored.stdout)["restored"]) == 3
    assert json.loads(kb("status", "--json").stdout)["documents"] == 4
    [folder] = json.loads(kb("sources", "folders", "--json").stdout)["sources"]
    assert (folder["key"], folder["root"], folder["documents"]) == ("small", str(small.resolve()), 4)
    actions = [e["action"] for e in json.loads(kb("audit", "tail", "--json").stdout)]
    assert actions[-1] == "source.restore"
