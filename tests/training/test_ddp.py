"""Data-parallel DP training under torchrun: two CPU processes over gloo, Opacus DPDDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core import db
from core.settings import load_settings
from privacy.budget import BudgetLedger
from tests.training.students import build_student

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_ranks_end_identical_with_noise_added_once_and_epsilon_counted_once(tmp_path: Path) -> None:
    mode = "ghost"
    student = build_student(tmp_path / "student")
    database = f"sqlite:///{tmp_path / 'kb.db'}"
    engine = db.make_engine(load_settings(database_url=database, data_dir=tmp_path / "var"))
    db.upgrade(engine)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parents[2])}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(WORKER), "--student", str(student), "--out", str(tmp_path),
        "--database", database, "--mode", mode,
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["mode"] == mode
    assert ranks[0]["weights"] == ranks[1]["weights"]  # one noisy update, applied on both ranks
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4
    assert ranks[0]["epsilon"] == ranks[1]["epsilon"] and 7.9 <= ranks[0]["epsilon"] <= 8.0
    # Noise added once for both ranks: std ratio 1.0 (every rank adding its own would give sqrt(2) = 1.41).
    assert 0.95 < ranks[0]["noise_ratio"] < 1.05 and ranks[0]["noise_ratio"] == ranks[1]["noise_ratio"]
    [entry] = BudgetLedger(engine, epsilon=10.0, delta=1e-4).entries()  # rank 0 alone settles, once
    assert entry.run_id == "ddp" and entry.epsilon_spent == pytest.approx(ranks[0]["epsilon"])
