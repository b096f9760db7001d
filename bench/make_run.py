"""`make run` on a fresh machine: from `git clone` to the first answer written by the model.

    .venv/bin/python bench/make_run.py             # an empty HOME: vLLM environment and model built anew
    .venv/bin/python bench/make_run.py --home ~    # this machine's caches (what a second run costs)

The clone is made from this repository's HEAD in a scratch folder, and `make run` runs there as a
user would start it, with HOME pointed at an empty folder (unless --home), so that the vLLM
environment, pip's cache and the model store start empty, as on a new machine. The output's lines
time the steps; questions from the handbook set are asked in turn (`POST /api/ask`), and the first
reply the model wrote ends the clock (an extractive fallback does not). Then SIGINT
goes to the process group (Ctrl-C) and the time until no process of it is left is measured too.
Ports 8080 and 8000 must be free.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Asked in turn, from the handbook's labelled set: a small model falls back to the extractive answer
# on about a third of such questions (a reply it cannot back with a passage), so one question
# alone could keep the clock running for ever; the clock stops at the first answer it wrote.
QUESTIONS = (
    "How many vacation days does a full-time employee get per year?",
    "What is the minimum length of a HaldenID password?",
    "How often are standard laptops replaced?",
    "What is the maximum attachment size for an email?",
    "Which extension do I call for an emergency on site?",
)
GIVE_UP_S = 30 * 60  # twice the target: a model that never writes an answer ends the run here
MILESTONES = {  # the step a line of `make run`'s output ends -> what the line holds
    ".venv installed": "touch .venv/.installed",
    "handbook ingested": "Ingested in ",
    "vLLM environment built": "vllm 0.",
    "model fetched and converted": "Stored ",
    "kb serve listening": "Serving ",
    "model server ready": " ready on http",
}


def _get(url: str, body: dict[str, str] | None = None, timeout: float = 5.0) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:  # loopback only
        result: dict[str, object] = json.loads(reply.read())
        return result


def model_written(reply: dict[str, object]) -> bool:
    """Whether an /api/ask reply was written by a model: not extractive, and not the extractive
    answer that replaced a model's unusable reply (`model` "extractive (fallback)")."""
    model = str(reply.get("model") or "")
    return bool(model) and not model.startswith("extractive")


def run(home: Path, work: Path) -> dict[str, object]:
    started = time.perf_counter()
    seen: dict[str, float] = {}
    clone = work / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    seen["git clone"] = time.perf_counter() - started
    env = {**os.environ, "HOME": str(home)}
    make = subprocess.Popen(
        ["make", "run"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    log = (work / "make-run.log").open("w")

    def watch() -> None:
        assert make.stdout is not None
        for line in make.stdout:
            log.write(f"{time.perf_counter() - started:7.1f} {line}")
            log.flush()
            for step, marker in MILESTONES.items():
                if marker in line and step not in seen:
                    seen[step] = time.perf_counter() - started

    threading.Thread(target=watch, daemon=True).start()
    answer: dict[str, object] = {}
    asked, fallbacks = 0, 0
    while make.poll() is None and time.perf_counter() - started < GIVE_UP_S:
        time.sleep(2)
        question = QUESTIONS[asked % len(QUESTIONS)]
        try:
            reply = _get("http://127.0.0.1:8080/api/ask", {"question": question}, timeout=120)
        except OSError:
            continue
        asked += 1
        seen.setdefault("first answer (extractive)", time.perf_counter() - started)
        if model_written(reply):
            seen["first model-written answer"] = time.perf_counter() - started
            answer = reply | {"question": question}
            break
        fallbacks += str(reply.get("model")).endswith("(fallback)")
    stop = time.perf_counter()
    os.killpg(make.pid, signal.SIGINT)
    make.wait(timeout=120)
    stopped = time.perf_counter() - stop
    return {
        "steps_s": {k: round(v, 1) for k, v in sorted(seen.items(), key=lambda kv: kv[1])},
        "clone_to_model_answer_s": round(seen.get("first model-written answer", float("nan")), 1),
        "ctrl_c_to_all_stopped_s": round(stopped, 1),
        "make_exit_code": make.returncode,
        "answer": {key: answer.get(key) for key in ("question", "model", "text")},
        # Replies the model wrote before, that fell back to the extractive answer (unusable).
        "fallbacks_before_it": fallbacks,
    }


def main() -> int:
    from bench.common import write_results

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--home", type=Path, help="HOME for `make run` (default: a new empty folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="make-run-") as tmp:
        home = args.home or Path(tmp) / "home"
        home.mkdir(parents=True, exist_ok=True)
        found = run(home, Path(tmp)) | {"fresh_home": args.home is None}
    minutes = found["clone_to_model_answer_s"] / 60  # type: ignore[operator]
    summary = f"fresh clone to the first model-written answer {minutes:.1f} min (target < 15)"
    command = "python bench/make_run.py" + (f" --home {args.home}" if args.home else "")
    print(write_results("make_run", found, summary=summary, command=command, load=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
