"""bench/common.py: the BENCHMARKS.md table keeps one row per benchmark, with the machine that ran it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import common


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "BENCHMARKS.md"
    monkeypatch.setattr(common, "TABLE", path)
    return path


def test_first_row_writes_the_header(table: Path) -> None:
    common.update_table("ingest", "python bench/ingest.py", "2026-11-29", "2.07x", "Xeon, 2 cores")
    lines = table.read_text().splitlines()
    assert "| benchmark | result | machine | command | date |" in lines
    assert lines[-1] == "| ingest | 2.07x | Xeon, 2 cores | `python bench/ingest.py` | 2026-11-29 |"


def test_a_rerun_replaces_only_its_own_row(table: Path) -> None:
    common.update_table("scale", "cmd a", "2026-11-28", "p95 17 ms", "EPYC, 2 cores")
    common.update_table("scale_gpu", "cmd b", "2026-11-28", "recall 0.95", "EPYC, 2 cores")
    common.update_table("scale", "cmd a", "2026-11-29", "p95 16 ms", "Xeon, 2 cores")
    rows = [line for line in table.read_text().splitlines() if line.startswith("| scale")]
    assert rows == [
        "| scale | p95 16 ms | Xeon, 2 cores | `cmd a` | 2026-11-29 |",
        "| scale_gpu | recall 0.95 | EPYC, 2 cores | `cmd b` | 2026-11-28 |",
    ]


def test_a_summary_with_backslashes_is_written_as_it_is(table: Path) -> None:
    common.update_table("retrieval", "cmd", "2026-11-28", "old", "m")
    common.update_table("retrieval", "cmd", "2026-11-29", r"mode bm25\|dense, group \1 \g<0>", "m")
    assert r"| retrieval | mode bm25\|dense, group \1 \g<0> | m |" in table.read_text()


def test_machine_label_names_the_cpu_its_cores_and_amx() -> None:
    xeon = {"cpu": "Intel(R) Xeon(R) Processor", "cpus": 2, "amx": True}
    assert common.machine_label(xeon) == "Intel Xeon with AMX, 2 cores"
    assert common.machine_label({"cpu": "AMD EPYC", "cpus": 2, "amx": False}) == "AMD EPYC, 2 cores"
    assert isinstance(common.machine()["amx"], bool)
