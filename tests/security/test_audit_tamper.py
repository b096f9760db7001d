"""The audit log's probes: someone with write access to the database deletes its newest entries, or
rewrites one and recomputes the chain after it (the formula is public). `kb audit verify` must fail.

An unkeyed SHA-256 chain passed both; the keyed chain and the checkpoint file catch them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from app.cli import EXIT_ERROR, app
from app.support import audit_log, cli_settings

ENTRIES = 5


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> sa.Engine:
    """Five entries written the way the service writes them, then the database's triggers dropped."""
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("KB_AUDIT_CHECKPOINT_PATH", str(tmp_path / "elsewhere" / "checkpoints.jsonl"))
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    log = audit_log(cli_settings())
    for i in range(ENTRIES):
        log.record("U0ADMIN", "admin.status", target=f"probe-{i}", outcome="ok")
    log.engine.dispose()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'var' / 'kb.db'}")
    with engine.begin() as connection:
        connection.execute(sa.text("drop trigger audit_log_no_update"))
        connection.execute(sa.text("drop trigger audit_log_no_delete"))
    return engine


def _verify() -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", "verify"])
    return result.exit_code, result.stderr


def test_deleting_the_newest_entries_is_reported_as_truncation(written: sa.Engine) -> None:
    assert _verify()[0] == 0
    with written.begin() as connection:
        connection.execute(sa.text("delete from audit_log where seq > 3"))
    code, stderr = _verify()
    assert code == EXIT_ERROR
    assert "truncated" in stderr and f"says {ENTRIES} entries, found 3" in stderr


def _sha256_link(prev: str, row: sa.Row[tuple[object, ...]]) -> str:
    """What an attacker who read privacy/audit.py would compute for an unkeyed link."""
    at = row.at if isinstance(row.at, str) else row.at.isoformat(timespec="microseconds")
    at = at.replace(" ", "T") + ("+00:00" if "+" not in at else "")
    body = json.dumps(
        [row.seq, at, row.actor, row.action, row.target, json.loads(row.params), row.outcome],
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )  # fmt: skip
    return hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()


def test_a_rewritten_entry_with_the_chain_recomputed_is_reported(written: sa.Engine) -> None:
    with written.begin() as connection:
        connection.execute(sa.text("update audit_log set outcome = 'refused' where seq = 2"))
        rows = connection.execute(sa.text("select * from audit_log order by seq")).all()
        prev = rows[0].hash
        for row in rows[1:]:
            digest = _sha256_link(prev, row)
            connection.execute(
                sa.text("update audit_log set prev_hash = :p, hash = :h where seq = :s"),
                {"p": prev, "h": digest, "s": row.seq},
            )
            prev = digest
    code, stderr = _verify()
    assert code == EXIT_ERROR
    assert "entry 2" in stderr and "altered" in stderr
