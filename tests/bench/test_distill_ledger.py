"""The distillation benchmark's ledger: processes started together share one file and one budget."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any


def _open_ledger(path: str, barrier: Any) -> None:
    from bench.distill_device import Device

    barrier.wait()  # every process finds no tables yet
    Device._ledger(None, Path(path))  # type: ignore[arg-type]  # uses nothing of the instance


def test_processes_started_together_all_open_the_ledger(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(6)
    path = str(tmp_path / "ledger.db")
    workers = [context.Process(target=_open_ledger, args=(path, barrier)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * 6

    from bench.distill_device import BENCH_BUDGET, Device

    ledger = Device._ledger(None, Path(path))  # type: ignore[arg-type]
    assert ledger.state().epsilon_remaining == BENCH_BUDGET and ledger.entries() == []
