"""The audit log on both databases: append-only, keyed, checkpointed, and tamper-evident."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from typer.testing import CliRunner

from app.cli import EXIT_ERROR, app
from privacy.audit import GAP_ACTION, AuditLog, scrub
from privacy.audit_keys import AuditKey, CheckpointSink


def test_entries_chain_and_verify(migrated: Engine) -> None:
    log = AuditLog(migrated)
    first = log.record("U1", "admin.ingest", target="docs", params={"paths": ["docs"]}, outcome="ok")
    second = log.record("U2", "request.refused", params={"reason": "not an admin"}, outcome="refused")
    assert (first.seq, second.seq) == (1, 2)
    assert second.prev_hash == first.hash
    assert log.verify() == (2, [])
    assert [row.action for row in log.tail(5)] == ["admin.ingest", "request.refused"]
    assert [row.action for row in log.tail(5, action="admin.")] == ["admin.ingest"]


def test_the_database_refuses_edits_and_deletes(migrated: Engine) -> None:
    AuditLog(migrated).record("U1", "admin.retrain", outcome="ok")
    for statement in ("update audit_log set outcome = 'fine'", "delete from audit_log"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), migrated.begin() as connection:
            connection.execute(sa.text(statement))


def _drop_triggers(engine: Engine) -> None:
    """What someone with the database owner's rights could do."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text("drop trigger audit_log_no_update on audit_log"))
        else:
            connection.execute(sa.text("drop trigger audit_log_no_update"))
            connection.execute(sa.text("drop trigger audit_log_no_delete"))


def test_tampering_is_detected(migrated: Engine) -> None:
    log = AuditLog(migrated)
    for i in range(5):
        log.record("U1", "push.sent", target=f"user-{i}", outcome="ok")
    _drop_triggers(migrated)
    with migrated.begin() as connection:
        connection.execute(sa.text("update audit_log set outcome = 'refused' where seq = 3"))
    checked, problems = log.verify()
    assert checked == 5
    assert [(p.seq, p.reason) for p in problems] == [(3, "content does not match its hash: it was changed")]

    with migrated.begin() as connection:
        connection.execute(sa.text("delete from audit_log where seq = 4"))
    reasons = {(p.seq, p.reason) for p in log.verify()[1]}
    assert (5, "expected entry 4 here: entries are missing") in reasons
    assert (5, "does not chain to the entry before it") in reasons


def test_concurrent_writers_keep_one_chain(migrated: Engine) -> None:
    log = AuditLog(migrated)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: log.record(f"U{i}", "admin.status", outcome="ok"), range(40)))
    checked, problems = log.verify()
    assert (checked, problems) == (40, [])


def test_secrets_never_reach_the_log(migrated: Engine) -> None:
    params = {
        "url": "https://x",
        "api_key": "sk-123",
        "nested": {"password": "hunter2", "n": 3},
        "tokens": ["a"],
    }
    assert scrub(params) == {
        "url": "https://x",
        "api_key": "[SECRET]",
        "nested": {"password": "[SECRET]", "n": 3},
        "tokens": "[SECRET]",
    }
    row = AuditLog(migrated).record("U1", "source.add", params=params, outcome="ok")
    assert "hunter2" not in json.dumps(row.params)
    assert "sk-123" not in json.dumps(row.params)


def test_cli_verify_and_tail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "var"))
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nThe canteen opens at 11:30.\n")
    assert runner.invoke(app, ["ingest", str(docs)]).exit_code == 0
    tail = json.loads(runner.invoke(app, ["audit", "tail", "--json"]).stdout)
    assert [(e["action"], e["outcome"], e["params"]["added"]) for e in tail] == [("source.ingest", "ok", 1)]
    assert tail[0]["actor"].startswith("cli:")
    verified = runner.invoke(app, ["audit", "verify"])
    assert verified.exit_code == 0
    assert "intact: 1 entries" in verified.stdout

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'var' / 'kb.db'}")
    _drop_triggers(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("update audit_log set actor = 'someone-else'"))
    engine.dispose()
    broken = runner.invoke(app, ["audit", "verify"])
    assert broken.exit_code == EXIT_ERROR
    assert "entry 1" in broken.stderr
    assert "tampered" in broken.stderr


def _keyed(engine: Engine, tmp_path: Path, *, every: int = 1, key: bytes = b"k" * 32) -> AuditLog:
    return AuditLog(
        engine, key=AuditKey(key), sink=CheckpointSink(tmp_path / "checkpoints.jsonl"), checkpoint_every=every
    )


def test_keyed_entries_chain_onto_legacy_ones(migrated: Engine, tmp_path: Path) -> None:
    legacy = AuditLog(migrated)
    old = legacy.record("U1", "admin.status", outcome="ok")
    keyed = _keyed(migrated, tmp_path)
    rows = [keyed.record("U1", "admin.ingest", outcome="ok") for _ in range(3)]
    assert rows[0].prev_hash == old.hash and old.key_id == ""
    assert all(row.key_id == keyed.key.id for row in rows if keyed.key)
    report = keyed.report()
    assert (report.checked, report.keyed, report.legacy, report.problems) == (4, 3, 1, [])
    assert report.last_checkpoint == 4

    # An entry written without the key after keyed ones is what a rewrite without the key looks like.
    legacy.record("U1", "admin.status", outcome="ok")
    assert [p.reason.split(":")[0] for p in keyed.report().problems] == ["altered"]


def test_an_edit_and_a_recomputed_chain_are_both_caught(migrated: Engine, tmp_path: Path) -> None:
    log = _keyed(migrated, tmp_path, every=100)
    for i in range(4):
        log.record("U1", "push.sent", target=f"user-{i}", outcome="ok")
    log.close()
    _drop_triggers(migrated)
    with migrated.begin() as connection:
        connection.execute(sa.text("update audit_log set outcome = 'refused' where seq = 2"))
    problems = log.verify()[1]
    assert [(p.seq, p.reason) for p in problems][:1] == [(2, "altered: its content does not match its MAC")]
    # Recomputed with another key: the chain links, but neither the MACs nor the checkpoint agree.
    forger = _keyed(migrated, tmp_path / "forger", key=b"f" * 32)
    assert forger.key is not None and log.key is not None
    assert any("another audit key" in p.reason for p in forger.verify()[1])


def test_a_missing_or_changed_key_is_reported_not_crashed_on(migrated: Engine, tmp_path: Path) -> None:
    log = _keyed(migrated, tmp_path)
    for _ in range(3):
        log.record("U1", "admin.status", outcome="ok")
    missing = AuditLog(migrated, key=None, key_problem="the audit key file /keys/audit.key is missing")
    [problem] = missing.verify()[1]
    assert problem.reason == (
        "entries 1-3 cannot be checked: no audit key is configured "
        "(the audit key file /keys/audit.key is missing)"
    )
    other = AuditLog(migrated, key=AuditKey(b"o" * 32), sink=CheckpointSink(tmp_path / "checkpoints.jsonl"))
    reasons = [p.reason for p in other.verify()[1]]
    assert any(r.startswith("entries 1-3 cannot be checked: written with another audit key") for r in reasons)
    assert any("checkpoints signed with another audit key" in r for r in reasons)


def test_an_unwritable_checkpoint_file_warns_and_records_the_gap(
    migrated: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture, make_settings: Any
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoint folder should be")
    settings = make_settings(
        audit_checkpoint_path=str(blocker / "checkpoints.jsonl"), audit_checkpoint_every=1
    )
    with caplog.at_level(logging.WARNING, logger="privacy.audit"):
        log = AuditLog.from_settings(settings, migrated)
    assert "cannot be written" in caplog.text
    log.record("U1", "admin.status", outcome="ok")
    log.record("U1", "admin.status", outcome="ok")
    actions = [row.action for row in log.tail(10)]
    assert actions.count(GAP_ACTION) == 1 and actions.count("admin.status") == 2, "nothing is lost"
    blocker.unlink()  # the operator fixes the mount: the next checkpoint names the gap
    log.record("U1", "admin.status", outcome="ok")
    report = log.report()
    assert report.problems == []
    assert report.notes == ["entries 1-4 were written while checkpoints could not be"]


def test_the_default_key_file_is_made_once_and_private(migrated: Engine, make_settings: Any) -> None:
    settings = make_settings()
    first = AuditLog.from_settings(settings, migrated)
    second = AuditLog.from_settings(settings, migrated)
    assert first.key is not None and second.key is not None and first.key.id == second.key.id
    key_file = settings.data_dir / "audit.key"
    assert key_file.stat().st_mode & 0o077 == 0
    explicit = make_settings(audit_key_file=str(settings.data_dir / "elsewhere.key"))
    assert AuditLog.from_settings(explicit, migrated).key is None, "a named key file is never invented"


def test_cli_verify_says_which_kind_of_tampering(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "var"))
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    monkeypatch.setenv("KB_AUDIT_KEY_FILE", str(tmp_path / "keys" / "audit.key"))
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "audit.key").write_text("an operator's key\n")
    verified = runner.invoke(app, ["audit", "verify", "--json"])
    assert json.loads(verified.stdout)["ok"] is True
    (tmp_path / "keys" / "audit.key").unlink()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'var' / 'kb.db'}")
    AuditLog(engine, key=AuditKey(b"an operator's key")).record("U1", "admin.status", outcome="ok")
    engine.dispose()
    missing = runner.invoke(app, ["audit", "verify"])
    assert missing.exit_code == EXIT_ERROR
    assert missing.exception is None or isinstance(missing.exception, SystemExit), "no traceback"
    assert "is missing" in missing.stderr and "could not be fully checked" in missing.stderr
