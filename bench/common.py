"""Shared by the benchmarks: machine description, JSON results, the BENCHMARKS.md table, and the
helpers several benchmarks time and serve with."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

BENCH = Path(__file__).resolve().parent
HANDBOOK = BENCH.parent / "examples" / "handbook"
RESULTS = BENCH / "results"
TABLE = BENCH / "BENCHMARKS.md"
T = TypeVar("T")
P = ParamSpec("P")

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
        # What decides a CPU model's speed here: bfloat16 is emulated without avx512_bf16 or AMX.
        "isa": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"}),
    }


def machine_label(described: dict[str, Any]) -> str:
    """The BENCHMARKS.md column: CPU model and core count, and what decides bf16's speed: AMX, else
    whether the CPU has bfloat16 instructions at all (without them models run in float32)."""
    cpu = str(described.get("cpu", "unknown")).replace("(R)", "").replace(" Processor", "")
    isa = set(described.get("isa") or ())
    if described.get("amx"):
        kind = " with AMX"
    elif "avx512_bf16" in isa:
        kind = " with bfloat16"
    elif isa and "avx512f" not in isa:
        kind = " with AVX2 only (float32)"
    else:
        kind = ""
    return f"{cpu}{kind}, {described.get('cpus', '?')} cores"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def stamp(name: str, command: str | None = None, *, load: bool = False) -> dict[str, Any]:
    """What a results file starts with. `load` adds the load average to the machine: it is shared,
    and its load says how much to trust the wall-clock figures."""
    return {
        "benchmark": name,
        "command": command or shlex.join([Path(sys.executable).name, *sys.argv]),  # one to paste back
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine() | ({"load_average": load_average()} if load else {}),
    }


def write_results(
    name: str,
    results: dict[str, Any],
    *,
    summary: str,
    command: str | None = None,
    path: Path | None = None,
    load: bool = False,
) -> Path:
    """Write bench/results/NAME.json (or `path`) and put a one-line summary row for NAME in BENCHMARKS.md."""
    payload = stamp(name, command, load=load) | results
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    update_table(name, payload["command"], payload["date"], summary, machine_label(payload["machine"]))
    return path


def update_table(name: str, command: str, date: str, summary: str, machine_name: str) -> None:
    text = TABLE.read_text()
    row = f"| {name} | {summary} | {machine_name} | `{command}` | {date} |"
    pattern = re.compile(rf"^\| {re.escape(name)} \|.*$", re.MULTILINE)
    text = pattern.sub(lambda _: row, text) if pattern.search(text) else text.rstrip("\n") + "\n" + row + "\n"
    TABLE.write_text(text)


def p50_p95(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    """The median and 95th percentile of millisecond timings (numpy's linear interpolation)."""
    import numpy as np

    return {f"p{q}_ms": round(float(np.percentile(values, q)), digits) for q in (50, 95)}


def timed_ms(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[T, float]:
    """`call(*args, **kwargs)`'s result and its wall-clock time in milliseconds."""
    begin = time.perf_counter()
    result = call(*args, **kwargs)
    return result, (time.perf_counter() - begin) * 1000


def proc_cpu(stat: Path) -> tuple[int, float] | None:
    """The process group and the user + system CPU seconds in a /proc stat file; None once gone."""
    try:
        fields = stat.read_text().rpartition(")")[2].split()  # after the name: state, ppid, pgrp, ...
    except OSError:
        return None
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port that is free now, for a server the benchmark starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_json(*argv: str) -> dict[str, Any]:
    """Run `python ARGV` and read the JSON of its last output line: a process of its own has a peak
    memory of its own."""
    output = subprocess.run([sys.executable, *argv], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def open_kb(data_dir: Path, **overrides: Any) -> KnowledgeBase:
    """A knowledge base on `load_settings(data_dir=data_dir, **overrides)`, its database upgraded."""
    from core import db
    from core.settings import load_settings
    from knowledge.service import KnowledgeBase

    settings = load_settings(data_dir=data_dir, **overrides)
    engine = db.make_engine(settings)
    db.upgrade(engine)
    return KnowledgeBase(settings, engine)


def scratch_kb(docs: Path, scratch: Path) -> KnowledgeBase:
    """A knowledge base on SQLite in `scratch` holding `docs`, ingested once: a rerun reuses it as it is."""
    fresh = not (scratch / "kb.db").exists()
    scratch.mkdir(parents=True, exist_ok=True)
    kb = open_kb(scratch, database_url="")
    if fresh:
        kb.ingest([docs])
    return kb
