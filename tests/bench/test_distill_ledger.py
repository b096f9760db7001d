"""The distillation benchmark's ledger: processes started together share one file and one budget,
and what earlier machines spent on the same data counts against it."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from bench.distill_device import BENCH_BUDGET, bench_ledger
from privacy.budget import BudgetExceededError

HASH = "dbf759a53b" * 4


def _open_ledger(path: str, barrier: Any, earlier: list[dict[str, Any]]) -> None:
    barrier.wait()  # every process finds no tables yet
    bench_ledger(Path(path), earlier)


def _entry(run: str, epsilon: float, status: str = "settled") -> dict[str, Any]:
    return {"run": run, "epsilon": epsilon, "epsilon_planned": epsilon, "delta": 1e-5, "status": status,
            "dataset_hash": HASH, "details": {"steps": 30}}  # fmt: skip


EARLIER = [_entry("bench-distill-eps8", 7.99), _entry("bench-distill-eps4", 4.0, "reserved")]


def test_processes_started_together_all_open_the_ledger_and_enter_earlier_spending_once(
    tmp_path: Path,
) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(6)
    path = str(tmp_path / "ledger.db")
    workers = [context.Process(target=_open_ledger, args=(path, barrier, EARLIER)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * 6

    ledger = bench_ledger(Path(path), EARLIER)
    assert ledger.state().epsilon_remaining == pytest.approx(BENCH_BUDGET - 11.99)
    entries = {e.run_id: e for e in ledger.entries()}
    assert set(entries) == {"bench-distill-eps8", "bench-distill-eps4"}
    assert entries["bench-distill-eps8"].status == "settled"
    assert entries["bench-distill-eps4"].status == "reserved"


def test_a_run_that_would_pass_the_budget_with_earlier_machines_spending_is_refused(tmp_path: Path) -> None:
    earlier = [_entry(f"bench-distill-run{i}", 8.0) for i in range(4)]  # 32 of 40 on other machines
    ledger = bench_ledger(tmp_path / "ledger.db", earlier)

    with pytest.raises(BudgetExceededError, match="only"):
        ledger.reserve("bench-distill-next", dataset_hash=HASH, epsilon=8.5, delta=1e-5)
    ledger.reserve("bench-distill-next", dataset_hash=HASH, epsilon=8.0, delta=1e-5)  # what is left fits


def test_earlier_spending_alone_over_the_budget_stops_the_process(tmp_path: Path) -> None:
    earlier = [_entry(f"bench-distill-run{i}", 9.0) for i in range(5)]  # 45 > 40

    with pytest.raises(SystemExit, match="earlier machines' entries alone pass"):
        bench_ledger(tmp_path / "ledger.db", earlier)


def test_spent_lists_each_entry_once_and_the_report_counts_it_once(tmp_path: Path) -> None:
    from bench.distill import main
    from bench.distill_report import merged_ledger

    first, second, later = tmp_path / "first", tmp_path / "second", tmp_path / "later"
    for directory, ledger in (
        (first, [_entry("a", 1.0), _entry("b", 4.0, "reserved")]),
        (second, [_entry("a", 1.0), _entry("b", 4.0)]),  # shared the file, saw b settle
        (later, [_entry("a", 1.0), _entry("b", 4.0), _entry("c", 6.0)]),  # began with a and b
    ):
        directory.mkdir()
        (directory / "runs.json").write_text(json.dumps({"ledger": ledger}))

    out = tmp_path / "handbook.spent.json"
    assert main(["spent", str(first), str(second), "--out", str(out)]) == 0
    carried = json.loads(out.read_text())["ledger"]
    assert sorted((e["run"], e["status"]) for e in carried) == [("a", "settled"), ("b", "settled")]

    total = sum(e["epsilon"] for e in merged_ledger([first, second, later]))
    assert total == pytest.approx(11.0)


def test_every_stage_ledger_sums_a_corpus_over_its_data_stages_and_leaves_other_corpora_out(
    tmp_path: Path,
) -> None:
    from bench.distill_report import every_stage_ledger

    def output(name: str, corpus: str, ledger: list[dict[str, Any]]) -> None:
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "runs.json").write_text(json.dumps({"corpus": corpus, "ledger": ledger}))

    other_stage = {**_entry("b", 8.0), "dataset_hash": "e363b1c984" * 4}
    output("first/p1", "handbook", [_entry("a", 1.0)])
    output("first/p2", "handbook", [_entry("a", 1.0), _entry("c", 4.0)])  # shared the file with p1
    output("second", "handbook", [other_stage])
    output("pilot", "python-faq", [_entry("d", 8.0)])

    found = every_stage_ledger("handbook", tmp_path)

    assert found["epsilon"] == pytest.approx(13.0) and found["outputs"] == 3
    assert found["by_dataset_hash"] == {HASH[:12]: 5.0, "e363b1c984e3": 8.0}
