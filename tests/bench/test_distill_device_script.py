"""bench/distill_device.sh's `table`, with `python3` standing in for the GPU machine's stages.

The script orders a GPU window: the teacher's data stage and the public start, then the table's
DP runs on top of the start. What an earlier machine already finished and sent back (the start,
the data stage's state) is carried, and must not be redone; a stage that ends without its output
must start no run, since each run reserves ε.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "bench" / "distill_device.sh"
TABLE = ["student", "distill-nonprivate", "labels-eps8", "distill-eps1", "distill-eps4", "distill-eps8"]

# The stages as the machine's python3 would run them: each call recorded; `data` writes the state
# into its work folder and `start` its start.json, unless STUB_FAIL names the stage.
STUB = """\
import os, sys, time
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["STUB_CALLS"], "a") as calls:
    calls.write(" ".join(args).replace("\\n", " ") + "\\n")
def value(flag):
    return Path(args[args.index(flag) + 1])
if args[:1] == ["-c"]:
    Path(args[-1]).mkdir(parents=True, exist_ok=True)
elif "device" in args:
    stage = args[args.index("device") + 1]
    time.sleep(float(os.environ.get("STUB_DATA_S", "0.3")) if stage == "data" else 0.3)
    if stage == os.environ.get("STUB_FAIL"):
        sys.exit(1)
    if stage == "data":
        value("--work").mkdir(parents=True, exist_ok=True)
        (value("--work") / "state.pkl").write_text("state")
    elif stage == "start":
        value("--out").mkdir(parents=True, exist_ok=True)
        (value("--out") / "start.json").write_text("{}")
"""


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, Path]:
    """A working tree as the device call sends it, a machine root, and stub python3 / nvidia-smi."""
    bin_dir, tree, root = tmp_path / "bin", tmp_path / "tree", tmp_path / "machine"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f"#!{sys.executable}\n{STUB}")
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho stub-gpu\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    for folder in ("app", "bench", "bot", "core", "knowledge", "privacy", "push", "training"):
        (tree / folder).mkdir(parents=True)
    (tree / "pyproject.toml").write_text("")
    carry = tree / ".carry"
    for folder in ("wheels", "inputs", "pieces", "states"):
        (carry / folder).mkdir(parents=True)
    for corpus in ("handbook", "python-faq"):
        (carry / "inputs" / f"{corpus}.json").write_text("{}")
    (carry / "pieces" / "sha256.json").write_text("{}")
    (carry / "states" / "python-faq.pkl").write_text("faq state")  # the committed public stage
    return {"bin": bin_dir, "tree": tree, "root": root, "calls": tmp_path / "calls"}


def _step(machine: dict[str, Path], *args: str, fail: str = "", data_s: float = 0.3) -> str:
    env = {**os.environ, "PATH": f"{machine['bin']}:{os.environ['PATH']}", "DD_ROOT": str(machine["root"]),
           "STUB_CALLS": str(machine["calls"]), "STUB_FAIL": fail, "DD_POLL_S": "0.2",
           "STUB_DATA_S": str(data_s)}  # fmt: skip
    done = subprocess.run(["bash", str(SCRIPT), *args], cwd=machine["tree"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _table(machine: dict[str, Path], fail: str = "", data_first: bool = False) -> tuple[str, list[list[str]]]:
    """`setup`, then `table` (which goes on in its own session): its log and every stage called.

    `data_first`: the data stage is started by its own call before `table`, as when the teacher's
    pieces travel first, and is still running when `table` comes.
    """
    _step(machine, "setup")
    if data_first:
        _step(machine, "data", "handbook", data_s=3.0)
    _step(machine, "table", "handbook", "python-faq", "8", "temperature=1", fail=fail)
    log = machine["root"] / "logs" / "table.log"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if "every run started" in text or "no run started" in text:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the table's chain did not end: {log.read_text() if log.exists() else 'no log'}")
    expected = len(TABLE) if "every run started" in text else 0
    calls = machine["calls"]
    while time.monotonic() < deadline:  # the runs start in their own sessions
        lines = [line.split() for line in calls.read_text().splitlines()] if calls.exists() else []
        if sum("runs" in line for line in lines) >= expected:
            break
        time.sleep(0.1)
    return text, lines


def _stages(lines: list[list[str]]) -> list[str]:
    named = []
    for line in lines:
        if line[:1] == ["-c"]:
            named.append("student")
        elif "device" in line:
            stage = line[line.index("device") + 1]
            named.append(line[line.index("--runs") + 1] if stage == "runs" else stage)
    return named


def _value(line: list[str], flag: str) -> str:
    return line[line.index(flag) + 1]


def test_a_fresh_machine_runs_both_stages_then_every_run_on_top_of_the_start(
    machine: dict[str, Path],
) -> None:
    _, lines = _table(machine)
    stages = _stages(lines)
    assert sorted(stages[:3]) == ["data", "start", "student"], stages  # data and start side by side
    assert sorted(stages[3:]) == sorted(TABLE), stages
    runs = [line for line in lines if "runs" in line[1:3]]
    root = machine["root"]
    assert {_value(line, "--start") for line in runs} == {str(root / "start")}
    assert {_value(line, "--ledger") for line in runs} == {str(root / "ledger-handbook.db")}
    assert all("--spent" not in line for line in runs)  # nothing carried as spent: a new data stage
    student_and_start = next(line for line in runs if _value(line, "--runs") == "student")
    assert student_and_start[student_and_start.index("--runs") + 2] == "public-start"
    for line in runs:  # each run's folder holds the data stage's state
        assert (Path(_value(line, "--work")) / "state.pkl").read_text() == "state"


def test_a_carried_start_and_data_stage_are_not_redone(machine: dict[str, Path]) -> None:
    carry = machine["tree"] / ".carry"
    (carry / "states" / "handbook.pkl").write_text("carried state")
    (carry / "start" / "adapter").mkdir(parents=True)
    (carry / "start" / "start.json").write_text('{"chosen": "r2-qv"}')
    (carry / "start" / "adapter" / "adapter_config.json").write_text("{}")
    _, lines = _table(machine)
    stages = _stages(lines)
    assert "data" not in stages and "start" not in stages, stages
    assert sorted(s for s in stages if s != "student") == sorted(TABLE[1:]) and stages.count("student") == 2
    root = machine["root"]
    assert (root / "start" / "adapter_config.json").exists()  # what the runs merge
    # what the report reads
    assert (root / "res" / "start" / "start.json").read_text() == '{"chosen": "r2-qv"}'
    for line in (line for line in lines if "runs" in line[1:3]):
        assert (Path(_value(line, "--work")) / "state.pkl").read_text() == "carried state"


def test_a_data_stage_still_running_from_its_own_call_is_not_started_twice(machine: dict[str, Path]) -> None:
    _, lines = _table(machine, data_first=True)
    stages = _stages(lines)
    # A second data stage would write the same state again and hold the teacher twice as long.
    assert stages.count("data") == 1, stages
    assert stages.count("start") == 1, stages
    assert sorted(s for s in stages if s not in ("data", "start")) == sorted(["student", *TABLE]), stages


@pytest.mark.parametrize("stage", ["data", "start"])
def test_a_stage_that_ends_without_its_output_starts_no_run(machine: dict[str, Path], stage: str) -> None:
    log, lines = _table(machine, fail=stage)
    assert "a stage ended without its output: no run started" in log
    assert [s for s in _stages(lines) if s not in ("data", "student", "start")] == []
