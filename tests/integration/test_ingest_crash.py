"""A `kill -9` in the middle of `kb ingest` loses nothing: the next run resumes where it stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import HANDBOOK

pytestmark = pytest.mark.slow
KB = Path(sys.executable).with_name("kb")


def _documents(database: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text("select count(*) from documents")).scalar_one())
    except sa.exc.OperationalError:
        return 0
    finally:
        engine.dispose()


def test_killed_ingest_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env["KB_DATA_DIR"] = str(tmp_path / "var")
    subprocess.run([str(KB), "db", "upgrade"], env=env, check=True, capture_output=True)
    total = len(list(HANDBOOK.rglob("*.md")))

    process = subprocess.Popen(
        [str(KB), "ingest", str(HANDBOOK)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while _documents(tmp_path / "var" / "kb.db") < 5:
        assert process.poll() is None, "ingest finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = _documents(tmp_path / "var" / "kb.db")
    assert 5 <= done_before < total

    result = subprocess.run(
        [str(KB), "ingest", str(HANDBOOK), "--json"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["unchanged"] == done_before
    status = json.loads(
        subprocess.run([str(KB), "status", "--json"], env=env, capture_output=True, text=True).stdout
    )
    assert status["documents"] >= total
    assert report["added"] + report["unchanged"] == status["documents"], "every document exactly once"
    assert status["index_vectors"] == status["chunks"], "the index was repaired to match the database"
