"""Shared by the benchmarks: machine description, JSON results, and the BENCHMARKS.md table."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
TABLE = BENCH / "BENCHMARKS.md"


if TYPE_CHECKING:
    from knowledge.service import KnowledgeBase


def machine() -> dict[str, Any]:
    cpu, flags = "unknown", set[str]()
    with contextlib.suppress(OSError):  # not Linux: the model stays unknown
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": memory_gb,
        "amx": "amx_bf16" in flags,
    }


def machine_label(described: dict[str, Any]) -> str:
    """The BENCHMARKS.md column: CPU model and core count (AMX noted: it decides bf16's speed)."""
    cpu = str(described.get("cpu", "unknown")).replace("(R)", "").replace(" Processor", "")
    amx = " with AMX" if described.get("amx") else ""
    return f"{cpu}{amx}, {described.get('cpus', '?')} cores"


def write_results(name: str, results: dict[str, Any], *, summary: str) -> Path:
    """Write bench/results/NAME.json and put a one-line summary row for NAME in BENCHMARKS.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        **results,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    update_table(name, payload["command"], payload["date"], summary, machine_label(payload["machine"]))
    return path


HEADER = (
    "# Benchmarks\n\nEach row is written by its benchmark; the JSON beside it has every figure and\n"
    "the machine. Machines differ between runs (the column says which ran each row) and are\n"
    "shared and noisy: compare ratios measured in one run, not absolute times across rows.\n\n"
    "| benchmark | result | machine | command | date |\n| --- | --- | --- | --- | --- |\n"
)


def update_table(name: str, command: str, date: str, summary: str, machine_name: str) -> None:
    text = TABLE.read_text() if TABLE.exists() else HEADER
    row = f"| {name} | {summary} | {machine_name} | `{command}` | {date} |"
    pattern = re.compile(rf"^\| {re.escape(name)} \|.*$", re.MULTILINE)
    text = pattern.sub(lambda _: row, text) if pattern.search(text) else text.rstrip("\n") + "\n" + row + "\n"
    TABLE.write_text(text)


def scratch_kb(docs: Path, scratch: Path) -> KnowledgeBase:
    """A knowledge base on SQLite in `scratch` holding `docs`, ingested once: a rerun reuses it as it is."""
    from core import db
    from core.settings import load_settings
    from knowledge.service import KnowledgeBase

    fresh = not (scratch / "kb.db").exists()
    scratch.mkdir(parents=True, exist_ok=True)
    settings = load_settings(data_dir=scratch, database_url="")
    engine = db.make_engine(settings)
    db.upgrade(engine)
    kb = KnowledgeBase(settings, engine)
    if fresh:
        kb.ingest([docs])
    return kb
