"""The audit log on both databases: append-only, hash-chained, and tamper-evident."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from typer.testing import CliRunner

from app.cli import EXIT_ERROR, app
from privacy.audit import AuditLog, scrub


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
