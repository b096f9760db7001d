"""The CPU half of bench/distill.py: the speed comparison on vLLM, and the table from the device's answers.

Scoring is the product's (knowledge.answer_quality) over each model's own reply: correct when it
holds the question's short answer and does not abstain, citation precision over the passages it
cites, abstention on the questions whose passages come from other documents.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import statistics
from pathlib import Path
from typing import Any

from bench.common import RESULTS, free_port, machine

STUDENT_ROWS = (
    "student",
    "public-start",
    "distill-nonprivate",
    "labels-nonprivate",
    "labels-eps8",
    "distill-eps1",
    "distill-eps4",
    "distill-eps8",
    "canary-memorize",
    "canary-memorize-eps6",
)


def speed_rows(directory: Path, teacher: str, student: str, *, tokens: int) -> dict[str, Any]:
    """Output tokens/s of the teacher and of the trained student (base + the ε=8 adapter, merged), 8 at once.

    Both are served without runtime LoRA (training.teacher.TeacherServer): vLLM 0.32 on the CPU
    stalls a batch of 8 once LoRA is enabled on this machine, and a merged adapter is one of the
    registry's export forms.
    """
    from bench.answers import vllm_c8
    from core.llm.server import CPU_MAX_MODEL_LEN
    from core.llm.store import ModelStore, resolve_model
    from knowledge.prompt import grounded_messages
    from training.teacher import TeacherServer

    replies = read_replies(directory)
    chosen = [t for t in replies["test"] if not t["other"]][:8]
    prompts = [grounded_messages(t["question"], [p["text"] for p in t["passages"]]) for t in chosen]
    found: dict[str, Any] = {"tokens_each": tokens, "concurrency": len(prompts), "machine": machine()}
    store = ModelStore(None)
    folders = {"teacher": resolve_model(teacher, store).path, "student": _merged(directory, student, store)}
    for role, folder in folders.items():
        server = TeacherServer(
            folder, port=free_port(), served_name=role, max_model_len=CPU_MAX_MODEL_LEN,
            log_path=directory / f"vllm-{role}.log",
        )  # fmt: skip
        server.start()
        try:
            server.wait_ready(timeout=900)
            found[role] = asyncio.run(vllm_c8(server.url, role, prompts, tokens))
        finally:
            server.stop()
    found["student_teacher_tokens_per_s_ratio"] = round(
        found["student"]["tokens_per_s"] / found["teacher"]["tokens_per_s"], 2
    )
    return found


def _merged(directory: Path, student: str, store: Any) -> Path:
    """The student's base with the returned adapters merged into its weights (bf16), made once: the
    public start first where the runs had one, then the run's own adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.llm.store import resolve_model

    target = directory / "merged"
    if (target / "config.json").exists():
        return target
    base = resolve_model(student, store).path
    merged = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16)
    # A run on top of a public start returns that start too: the served student is both, merged.
    for part in ("start", "adapter"):
        if (directory / part / "adapter_config.json").exists():
            merged = PeftModel.from_pretrained(merged, str(directory / part)).merge_and_unload()
    merged.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(target))
    return target


def score_replies(items: list[Any], replies: list[str], passages: list[list[Any]]) -> dict[str, Any]:
    """The product's answer scores (correct, abstention, citation precision) of one model's replies."""
    from knowledge.answer_quality import aggregate, score_answer
    from knowledge.prompt import is_not_found

    scores = [
        score_answer(item, reply, shown, abstained=is_not_found(reply))
        for item, reply, shown in zip(items, replies, passages, strict=True)
    ]
    return aggregate(scores).as_dict()


def written_items(test: list[dict[str, Any]]) -> tuple[list[Any], list[list[Any]]]:
    """The held-out teacher-written items as answer-set items, with the passages each was shown."""
    from knowledge.answer_quality import AnswerItem, CitedPassage

    items, shown = [], []
    for t in test:
        entry = t["link"].split("/", 1)[1] if "/" in t["link"] else t["link"]
        items.append(AnswerItem(t["question"], (t["span"],), (entry,), unanswerable=t["other"]))
        shown.append([CitedPassage(p["number"], p["link"], p["text"]) for p in t["passages"]])
    return items, shown


def _labelled(labelled: list[dict[str, Any]]) -> tuple[list[Any], list[list[Any]]]:
    from knowledge.answer_quality import AnswerItem, CitedPassage

    items = [
        AnswerItem(x["query"], tuple(x["answers"]), tuple(x["relevant"]), unanswerable=x["unanswerable"])
        for x in labelled
    ]
    shown = [[CitedPassage(p["number"], p["uri"], p["text"]) for p in x["passages"]] for x in labelled]
    return items, shown


def read_replies(directory: Path) -> dict[str, Any]:
    """A device output's replies: `replies.json` as the machine wrote it, or gzipped as committed.

    Every device call carries the working tree beside a model piece within 64 MiB, so the
    committed replies (about seven times smaller gzipped) leave the pieces their room.
    """
    plain = directory / "replies.json"
    if plain.exists():
        return dict(json.loads(plain.read_text()))
    return dict(json.loads(gzip.decompress((directory / "replies.json.gz").read_bytes())))


def _merged_runs(directories: list[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    """runs.json and replies.json of one device output, or of several that ran side by side."""
    runs = json.loads((directories[0] / "runs.json").read_text())
    answers = read_replies(directories[0])
    for other in directories[1:]:
        more, replies = json.loads((other / "runs.json").read_text()), read_replies(other)
        runs["rows"].update(more["rows"])
        runs["log"] += more["log"]
        answers["replies"].update(replies["replies"])
    runs["ledger"] = merged_ledger(directories)
    return runs, answers


def _untag(runs: dict[str, Any], answers: dict[str, Any], tag: str) -> None:
    """Runs named NAME + `tag` (a recipe run beside the standard ones) become the table's NAME rows."""
    tagged = [name for name in runs["rows"] if name.endswith(tag) and name != tag]
    if not tagged:
        raise SystemExit(f"no run is named with the tag {tag!r}: the tag is what `device --tag` was given")
    for name in tagged:
        base = name[: -len(tag)]
        if base in runs["rows"]:
            raise SystemExit(f"both {base!r} and {name!r} ran: report one recipe's runs at a time")
        runs["rows"][base] = {**runs["rows"].pop(name), "name": base, "tagged": True}
        answers["replies"][base] = answers["replies"].pop(name)


def _table_recipe(runs: dict[str, Any], tag: str) -> dict[str, Any]:
    """The recipe of the table's distillation runs: the tagged runs' own where a tag chose them
    (not that of another recipe's runs beside them)."""
    if tag:
        for row in runs["rows"].values():
            if row.get("tagged") and row.get("method") == "distill" and row.get("recipe"):
                return dict(row["recipe"])
    return dict(runs["recipe"])


def merged_ledger(directories: list[Path]) -> list[dict[str, Any]]:
    """The ledger entries of device outputs, each once.

    Processes with their own ledgers list their entries together, to be summed; processes that
    shared one ledger (`--ledger`), or a ledger that began with earlier machines' entries
    (`--spent`), each list all of it as they last saw it, so an entry is kept once: settled where
    any process saw it settled, else as the last one saw it.
    """
    ledger: dict[str, dict[str, Any]] = {}
    for directory in directories:
        for entry in json.loads((directory / "runs.json").read_text())["ledger"]:
            seen = ledger.get(_entry_key(entry))
            if seen is None or seen.get("status") != "settled":
                ledger[_entry_key(entry)] = entry
    return list(ledger.values())


def every_stage_ledger(corpus: str, root: Path = RESULTS / "distill_device") -> dict[str, Any]:
    """Every committed ledger entry of `corpus`'s runs, over all its data stages, each once.

    A table's ledger covers the examples of one data stage; stages drawn from the same pages cover
    the same documents again, so what those pages have been exposed to is the sum over all of them.
    """
    directories = sorted(
        f.parent
        for f in root.rglob("runs.json")
        if json.loads(f.read_text()).get("corpus", "handbook") == corpus
    )
    entries = merged_ledger(directories)
    stages: dict[str, float] = {}
    for entry in entries:
        stage = str(entry.get("dataset_hash", ""))[:12]
        stages[stage] = round(stages.get(stage, 0.0) + entry["epsilon"], 4)
    return {"epsilon": round(sum(stages.values()), 4), "by_dataset_hash": stages, "outputs": len(directories)}


def _entry_key(entry: dict[str, Any]) -> str:
    """A ledger entry's identity: its run id (the same run seen by two processes is one entry)."""
    return f"{entry['run']}|{entry.get('dataset_hash', '')}"


def build(
    directories: list[Path],
    teacher: str,
    student: str,
    *,
    lost: dict[str, float] | None = None,
    tuned_on: str = "",
    tag: str = "",
    timing_file: Path | None = None,
    start_file: Path | None = None,
) -> tuple[dict[str, Any], str]:
    """The table. Later directories' runs replace earlier ones of the same name (a rerun); `lost`
    names DP runs whose ledger went with their machine, counted at the ε they reserved. Runs of
    other names (recipes side by side, `--tag`) follow the standard rows, by name, unless `tag`
    names the recipe whose runs are the table's rows. `timing_file`: the DP step's timing measured
    by another run of the same models, batch and GPU (named in the results as its source)."""
    runs, answers = _merged_runs(directories)
    if tag:
        _untag(runs, answers, tag)
    for run, epsilon in (lost or {}).items():
        runs["ledger"].append({"run": run, "epsilon": epsilon, "status": "lost with its machine, "
                               "counted at its reservation"})  # fmt: skip
    speed_files = [f for d in directories if (f := d / "speed.json").exists()]
    # The trained student's speed is its ε 8 adapter's: a later directory's (a rerun's) wins.
    speed = json.loads(speed_files[-1].read_text()) if speed_files else {}
    gpu_speed = [json.loads(f.read_text()) for d in directories if (f := d / "speed_gpu.json").exists()]
    timing_files = [f for d in directories if (f := d / "timing.json").exists()]
    if timing_file is not None:
        timing_files.append(timing_file)
    timing = json.loads(timing_files[-1].read_text()) if timing_files else None
    written, written_passages = written_items(answers["test"])
    labelled, labelled_passages = _labelled(answers["labelled"])
    scored = {
        name: {
            "written": score_replies(written, replies["written"], written_passages),
            "labelled": score_replies(labelled, replies["labelled"], labelled_passages),
        }
        for name, replies in answers["replies"].items()
    }
    teacher_correct = scored["teacher"]["written"]["correct"] or 0.0
    baseline = runs["rows"].get("distill-nonprivate", {})
    if _diverged(baseline):
        baseline = {}  # no step time or memory to compare with
    # The reference for canary exposure: the same canaries on the student that never trained on
    # them (the untrained one). Set B, never in any training set, is scored on every model as well;
    # its canaries are other secrets, so its level differs from set A's even on the untrained model.
    # Runs trained on top of a public start have it as their untrained model: it never saw a canary.
    reference = _mean_exposure(runs["rows"].get("public-start") or runs["rows"].get("student", {}), "A")
    rows = []
    others = sorted(n for n in scored if n not in ("teacher", *STUDENT_ROWS))
    for name in ("teacher", *STUDENT_ROWS, *others):
        if name not in scored:
            continue
        run = runs["rows"].get(name, {})
        row = _row(name, run, scored[name], teacher_correct, baseline, speed, runs, timing)
        row["reference_exposure"] = reference if row["canary_exposure"] is not None else None
        rows.append(row)
    ledger_total = round(sum(e["epsilon"] for e in runs["ledger"]), 4)
    results = {
        "teacher": teacher,
        "student": student,
        # The machine of the figures measured on a CPU (the vLLM speed), not the one the report runs on.
        **({"machine": speed["machine"]} if "machine" in speed else {}),
        "ledger_total_epsilon": ledger_total,
        "ledger": runs["ledger"],
        # The same pages over every data stage drawn from them (committed outputs; runs whose
        # ledger went with a machine are not in these files and are named in the decision record).
        "corpus_epsilon_every_stage": every_stage_ledger(runs.get("corpus", "handbook")),
        "corpus": runs.get("corpus", "handbook"),
        "recipe": _table_recipe(runs, tag),
        **({"table_tag": tag} if tag else {}),
        "tuned_on": tuned_on or "nothing: the recipe was fixed before any run, on no company data",
        # The public start the runs trained on top of (`device start`): its candidates, their scores
        # on the public corpus's held-out questions, and the one chosen.
        "public_start": _public_start(start_file) if start_file is not None else None,
        "train_examples": runs["train_examples"],
        "held_out": {"written": len(written), "labelled": len(labelled)},
        "training_machine": runs["device"],
        "speed": speed,
        "speed_gpu": gpu_speed[0] if gpu_speed else None,
        # The DP step against the same step without DP, one after the other with the GPU to
        # themselves (bench/distill.py device timing): the rows' step ratios come from here.
        "timing": timing,
        "timing_source": str(timing_files[-1]) if timing_files else None,
        # Training processes that shared one GPU time each other's steps too.
        "training_processes": sum(
            any(
                r.get("method") not in (None, "teacher")
                for r in json.loads((d / "runs.json").read_text())["rows"].values()
            )
            for d in directories
        ),
        "rows": rows,
        "scores": scored,
    }
    correct = {r["name"]: "diverged" if r["diverged"] else r["correct"] for r in rows}
    summary = (
        f"{student} + LoRA from {teacher} on {runs.get('corpus', 'handbook')}, "
        f"{len(written)} held-out items: correct "
        + ", ".join(f"{name} {value}" for name, value in correct.items())
        + f"; ledger total ε {ledger_total}; training on {runs['device']}"
    )
    if speed.get("student_teacher_tokens_per_s_ratio"):
        summary += (
            f"; vLLM (CPU) student/teacher tokens/s {speed['student_teacher_tokens_per_s_ratio']}x at 8"
        )
    return results, summary


def _row(
    name: str,
    run: dict[str, Any],
    scored: dict[str, Any],
    teacher_correct: float,
    baseline: dict[str, Any],
    speed: dict[str, Any],
    runs: dict[str, Any],
    timing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    written = scored["written"]
    private = run.get("epsilon") is not None
    correct = written["correct"] or 0.0
    return {
        "name": name,
        "model": runs.get("teacher", "") if name == "teacher" else name,
        "method": run.get("method", "teacher"),
        "epsilon": run.get("epsilon_spent") if private else None,
        "target_epsilon": run.get("epsilon"),
        "delta": run.get("delta"),
        "noise_multiplier": run.get("noise_multiplier"),
        "sample_rate": run.get("sample_rate"),
        "steps": run.get("steps"),
        "correct": written["correct"],
        "citation_precision": written["citation_precision"],
        "abstain": written["abstain"],
        "invented_citations": written["invented_citations"],
        "labelled_correct": scored["labelled"]["correct"],
        "labelled_abstain": scored["labelled"]["abstain"],
        "student_teacher_correct_ratio": round(correct / teacher_correct, 3) if teacher_correct else None,
        "student_teacher_tokens_per_s_ratio": speed.get("student_teacher_tokens_per_s_ratio")
        if name != "teacher"
        else None,
        "canary_exposure": _mean_exposure(run, "A"),
        "never_seen_set_exposure": _mean_exposure(run, "B"),
        "dp_step_time_ratio": _step_ratio(run, baseline, timing, "time") if private else None,
        "dp_peak_memory_ratio": _step_ratio(run, baseline, timing, "memory") if private else None,
        "machine": runs["device"],
        "diverged": _diverged(run),
        "recipe": run.get("recipe"),
        "start": run.get("start"),
    }


def _public_start(path: Path) -> dict[str, Any]:
    """start.json, less the adapters' paths on the GPU machine."""
    found = json.loads(path.read_text())
    kept = ("steps", "train_examples", "final_loss", "train_time_s")
    return {
        "corpus": found["corpus"],
        "chosen": found["chosen"],
        "source": str(path),
        "candidates": {
            key: {"recipe": c["recipe"], "scores": c["scores"],
                  "train": {k: c["run"].get(k) for k in kept}}
            for key, c in found["candidates"].items()
        },
    }  # fmt: skip


def _mean_exposure(run: dict[str, Any], which: str) -> float | None:
    """Mean exposure (bits) of a run's canary set A (trained on) or B (never trained on)."""
    exposure = run.get("exposure") or {}
    return round(statistics.mean(exposure[which]), 3) if exposure.get(which) else None


def _diverged(run: dict[str, Any]) -> bool:
    """A run whose loss ended as NaN: its weights are lost and its scores say nothing of the recipe."""
    loss = run.get("final_loss")
    return isinstance(loss, float) and loss != loss


def _step_ratio(
    run: dict[str, Any], baseline: dict[str, Any], timing: dict[str, Any] | None, what: str
) -> float | None:
    """DP over non-DP step time or peak memory: from the timing stage (the GPU to itself) where it
    ran, else from the run against the run without DP (which may have shared the GPU)."""
    if timing is not None:
        return float(timing[f"dp_{'step_time' if what == 'time' else 'peak_memory'}_ratio"])
    return _ratio(run, baseline, "mean_step_time_s" if what == "time" else "peak_memory_bytes")


def _ratio(run: dict[str, Any], baseline: dict[str, Any], key: str) -> float | None:
    if not run.get(key) or not baseline.get(key):
        return None
    return round(float(run[key]) / float(baseline[key]), 3)
