"""Ingest -> ask round trips on both databases, with the real embedding model and FAISS."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from knowledge.types import Question

PAGES = {
    "it/password.md": "---\ntitle: Resetting your password\ntags: [it]\n---\n# Resetting your password\n\n"
    "## Self-service\n\nOpen the HaldenID portal and choose Forgot password. You need your MFA app.\n\n"
    "## Lockout\n\nAfter five failed attempts the account is locked for 15 minutes.\n",
    "hr/salaries.md": "---\ntitle: Salary bands\nacl_groups: [hr]\n---\n# Salary bands\n\n"
    "## Bands\n\nBand H5 pays between 61,000 and 78,000 EUR per year.\n",
    "facilities/parking.md": "---\ntitle: Parking\n---\n# Parking\n\nThe staff car park behind building C "
    "opens at 6:00. Charging points for electric cars are in rows A and B.\n",
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    for name, text in PAGES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def kb(settings: Settings, migrated: Engine, embedder: Embedder) -> KnowledgeBase:
    return KnowledgeBase(settings, migrated, embedder=embedder)


def test_ingest_then_ask_cites_the_right_section(kb: KnowledgeBase, corpus: Path) -> None:
    report = kb.ingest([corpus])
    assert (report.added, report.skipped, report.ok) == (3, [], True)
    assert report.chunks >= 4
    answer = kb.ask(Question("How do I reset my password?"))
    assert not answer.abstained
    assert answer.citations[0].uri == "docs/it/password.md#self-service"
    assert answer.citations[0].title == "Resetting your password"
    assert "[1]" in answer.text
    assert set(answer.latency_ms) == {"retrieve", "answer", "total"}


def test_second_ingest_skips_unchanged_updates_changed_removes_deleted(
    kb: KnowledgeBase, corpus: Path
) -> None:
    kb.ingest([corpus])
    assert kb.ingest([corpus]).unchanged == 3
    (corpus / "facilities/parking.md").write_text("# Parking\n\nThe car park is now closed for renovation.\n")
    (corpus / "it/password.md").unlink()
    report = kb.ingest([corpus])
    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 1, 1, 1)
    stats = kb.stats()
    assert stats.documents == 2
    assert kb.index.size == stats.chunks
    hits = kb.retrieve(Question("charging points for electric cars"), 10)
    assert all("Charging points" not in hit.text for hit in hits), "old chunks of a changed page are gone"
    assert all(hit.document_id != "docs:it/password.md" for hit in hits)


def test_restricted_documents_only_reach_their_groups(kb: KnowledgeBase, corpus: Path) -> None:
    kb.ingest([corpus])
    public = kb.retrieve(Question("salary band H5 pay range"), 10)
    assert public and all(hit.title != "Salary bands" for hit in public)
    hr = kb.retrieve(Question("salary band H5 pay range", groups=("HR",)), 3)
    assert hr[0].title == "Salary bands"


def test_user_with_few_rights_still_gets_k_results(kb: KnowledgeBase, tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(30):
        (root / f"secret-{i}.md").write_text(f"---\nacl_groups: [board]\n---\nVPN setup secret note {i}.\n")
    for i in range(5):
        (root / f"public-{i}.md").write_text(f"Holiday calendar for site {i}.\n")
    kb.ingest([root])
    hits = kb.retrieve(Question("VPN setup"), 5)
    assert len(hits) == 5 and all(h.title.startswith("Public") for h in hits)


def test_nonsense_question_abstains_with_closest_documents(kb: KnowledgeBase, corpus: Path) -> None:
    kb.ingest([corpus])
    answer = kb.ask(Question("zxqv blorf quantum giraffe telemetry"))
    assert answer.abstained
    assert answer.text.startswith("I could not find this in the knowledge base.")


def test_bad_files_are_reported_and_the_rest_is_ingested(kb: KnowledgeBase, corpus: Path) -> None:
    (corpus / "empty.md").write_text("")
    (corpus / "binary.md").write_bytes(b"\x00\x01\x02 binary")
    (corpus / "picture.png").write_bytes(b"\x89PNG")
    (corpus / "dangling.md").symlink_to(corpus / "nowhere.md")
    report = kb.ingest([corpus, corpus.parent / "missing-folder"])
    reasons = {Path(p.path).name: p.reason for p in report.skipped}
    assert reasons == {
        "empty.md": "empty file, nothing to index",
        "binary.md": "binary file, not text (contains NUL bytes)",
        "dangling.md": "broken symbolic link",
        "missing-folder": "no such file or directory",
    }
    assert report.added == 3 and report.ignored == 1 and not report.ok


def test_a_broken_file_keeps_its_previous_version(kb: KnowledgeBase, corpus: Path) -> None:
    kb.ingest([corpus])
    (corpus / "facilities/parking.md").write_bytes(b"\x00 corrupted")
    report = kb.ingest([corpus])
    assert report.removed == 0 and len(report.skipped) == 1
    assert kb.retrieve(Question("where are the charging points"), 1)[0].title == "Parking"


def test_empty_folder_is_reported(kb: KnowledgeBase, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    report = kb.ingest([tmp_path / "empty"])
    assert report.skipped[0].reason.startswith("no supported documents")


def test_index_is_rebuilt_from_the_database_when_lost_or_stale(
    settings: Settings, migrated: Engine, embedder: Embedder, corpus: Path
) -> None:
    KnowledgeBase(settings, migrated, embedder=embedder).ingest([corpus])
    shutil.rmtree(settings.index_dir)
    reopened = KnowledgeBase(settings, migrated, embedder=embedder)
    assert reopened.index.size == reopened.stats().chunks > 0

    # A crash between the database commit and the index save leaves an older index on disk.
    stale = settings.index_dir.parent / "stale"
    shutil.copytree(settings.index_dir, stale)
    (corpus / "extra.md").write_text("# Extra\n\nThe canteen serves soup on Fridays.\n")
    KnowledgeBase(settings, migrated, embedder=embedder).ingest([corpus])
    shutil.rmtree(settings.index_dir)
    shutil.copytree(stale, settings.index_dir)
    repaired = KnowledgeBase(settings, migrated, embedder=embedder)
    assert repaired.index.size == repaired.stats().chunks
    assert repaired.retrieve(Question("soup on Fridays"), 1)[0].title == "Extra"


def test_changing_the_index_precision_rebuilds_the_index(
    make_settings: Callable[..., Settings],
    database_url: str,
    migrated: Engine,
    embedder: Embedder,
    corpus: Path,
) -> None:
    settings = make_settings(database_url=database_url, index_precision="fp32")
    KnowledgeBase(settings, migrated, embedder=embedder).ingest([corpus])
    assert KnowledgeBase(settings, migrated, embedder=embedder).index.precision == "fp32"
    half = make_settings(database_url=database_url, index_precision="fp16")
    reopened = KnowledgeBase(half, migrated, embedder=embedder)
    assert reopened.index.precision == "fp16"
    assert reopened.index.size == reopened.stats().chunks > 0
    assert reopened.retrieve(Question("staff car park opening time"), 1)[0].title == "Parking"


def test_an_approximate_index_follows_the_precision_setting_too(
    make_settings: Callable[..., Settings],
    database_url: str,
    migrated: Engine,
    embedder: Embedder,
    corpus: Path,
) -> None:
    full = make_settings(database_url=database_url, ann_threshold=3, index_precision="fp32")
    KnowledgeBase(full, migrated, embedder=embedder).ingest([corpus])
    index = KnowledgeBase(full, migrated, embedder=embedder).index
    assert (index.kind, index.precision) == ("ivf", "fp32")
    half = make_settings(database_url=database_url, ann_threshold=3, index_precision="fp16")
    reopened = KnowledgeBase(half, migrated, embedder=embedder)
    assert (reopened.index.kind, reopened.index.precision) == ("ivf", "fp16")
    assert reopened.index.size == reopened.stats().chunks > 0
    assert reopened.retrieve(Question("staff car park opening time"), 1)[0].title == "Parking"
    (corpus / "facilities/parking.md").write_text("# Parking\n\nThe car park is closed for renovation.\n")
    reopened.ingest([corpus])  # the changed document's old vectors leave the fp16 lists
    again = KnowledgeBase(half, migrated, embedder=embedder)
    assert (again.index.kind, again.index.precision) == ("ivf", "fp16")
    assert again.index.size == again.stats().chunks
    assert all("Charging points" not in h.text for h in again.retrieve(Question("charging points"), 10))


def test_serving_process_sees_an_ingest_made_by_another_process(
    settings: Settings, migrated: Engine, embedder: Embedder, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import knowledge.service

    monkeypatch.setattr(knowledge.service, "_RELOAD_CHECK_SECONDS", 0.0)
    serving = KnowledgeBase(settings, migrated, embedder=embedder)
    assert serving.index.size == 0
    KnowledgeBase(settings, migrated, embedder=embedder).ingest([corpus])
    assert serving.retrieve(Question("staff car park opening time"), 1)[0].title == "Parking"


def test_change_log_records_every_change_in_order(kb: KnowledgeBase, corpus: Path) -> None:
    first = kb.ingest([corpus])
    kb.ingest([corpus])  # nothing changed: nothing logged
    (corpus / "facilities/parking.md").write_text("# Parking\n\nClosed for renovation.\n")
    (corpus / "hr/salaries.md").unlink()
    second = kb.ingest([corpus])
    changes = kb.store.changes()
    assert [(c.kind, c.document_id, c.ingest_run_id) for c in changes] == [
        ("added", "docs:facilities/parking.md", first.run_id),
        ("added", "docs:hr/salaries.md", first.run_id),
        ("added", "docs:it/password.md", first.run_id),
        ("updated", "docs:facilities/parking.md", second.run_id),
        ("deleted", "docs:hr/salaries.md", second.run_id),
    ]
    assert changes[-1].acl_groups == ["hr"], "a deleted document keeps its ACL in the log"
    assert [c.id for c in kb.store.changes(after_id=changes[2].id or 0)] == [changes[3].id, changes[4].id]


def test_the_change_log_tells_a_re_tag_from_a_text_edit(kb: KnowledgeBase, corpus: Path) -> None:
    page = corpus / "it/password.md"
    kb.ingest([corpus])
    page.write_text(PAGES["it/password.md"].replace("tags: [it]", "tags: [it, security]"))
    kb.ingest([corpus])
    page.write_text(page.read_text().replace("15 minutes", "30 minutes").replace("security", "accounts"))
    kb.ingest([corpus])
    added, retagged, edited = [c for c in kb.store.changes() if c.document_id == "docs:it/password.md"]
    assert len({added.content_hash, retagged.content_hash, edited.content_hash}) == 3
    assert added.text_hash == retagged.text_hash != edited.text_hash != ""


def test_past_the_threshold_the_index_becomes_approximate(
    make_settings, migrated: Engine, embedder: Embedder, corpus: Path, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(database_url=database_url, ann_threshold=3)
    kb = KnowledgeBase(settings, migrated, embedder=embedder)
    kb.ingest([corpus])
    assert kb.index.kind == "ivf"
    assert kb.retrieve(Question("charging points for electric cars"), 1)[0].title == "Parking"
    (corpus / "facilities/parking.md").write_text("# Parking\n\nThe car park is closed for renovation.\n")
    kb.ingest([corpus])
    reopened = KnowledgeBase(settings, migrated, embedder=embedder)
    assert reopened.index.kind == "ivf"
    assert reopened.index.size == reopened.stats().chunks
    assert all("Charging points" not in h.text for h in reopened.retrieve(Question("charging points"), 10))


def test_the_index_never_holds_secrets_or_identity_numbers(kb: KnowledgeBase, tmp_path: Path) -> None:
    root = tmp_path / "pii"
    root.mkdir()
    (root / "payroll.md").write_text(
        "# Payroll contacts\n\nWrite to payroll@halden.example. Test card 4111 1111 1111 1111, "
        "SSN 123-45-6789, and the old API key sk-proj-4f9XbQ7rT2mK8vN3pL6wZ1yC5hJ0dA9e.\n"
    )
    assert kb.ingest([root]).ok
    texts = " ".join(hit.text for hit in kb.retrieve(Question("payroll contacts"), 5))
    assert "payroll@halden.example" in texts, "contact data stays searchable by default"
    for secret in ("4111 1111 1111 1111", "123-45-6789", "sk-proj-4f9XbQ7rT2mK8vN3pL6wZ1yC5hJ0dA9e"):
        assert secret not in texts
    assert "[CARD]" in texts
    assert "[SSN]" in texts
    assert "[SECRET]" in texts
    assert kb.ingest([root]).unchanged == 1, "redaction is stable, so an unchanged file stays unchanged"
