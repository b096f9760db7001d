"""Distillation across tokenizers: the 1.5B Qwen teacher's signals taught to SmolLM2-135M, on the CPU.

    .venv/bin/python bench/distill.py prepare --corpus python-faq   # the FAQ's chunks and passages
    .venv/bin/kb models fetch smollm2-135m-instruct                 # the student (its own tokenizer)
    .venv/bin/kb models fetch qwen2.5-coder-1.5b-instruct           # the teacher's tokenizer
    .venv/bin/python bench/distill_cross.py                          # -> bench/results/distill_cross.json
    .venv/bin/python bench/distill_cross.py --limit 16 --epochs 1    # the whole path in minutes
    .venv/bin/python bench/distill_cross.py --speed-only             # the speed row again, on vLLM

Models: teacher `qwen2.5-coder-1.5b-instruct` (vocabulary 151,936), student `smollm2-135m-instruct`
(49,152, another byte-level BPE), both from the model store. The student is eleven times smaller
than the teacher and shares no token ids with it, so the teacher's top-k rows reach it through
training.crosstok: where both tokenizations take the same token at the same byte offset, the row's
candidates mapped by exact bytes and the rest of its mass into the loss's tail entry; every other
answer token is learned from the cross-entropy alone.

Data: the public Python FAQ's data stage, written by the teacher on an H100
(`bench/results/distill_device/fifth-h100/pilot/data-python-faq/state.pkl.gz`): 314 training
examples (282 teacher-written targets and 32 canary copies) with the teacher's top-16
log-probabilities, and 94 held-out items from sections the student never trains on (47 answerable,
47 shown other sections' passages), scored by the product's answer rules as the pilot and the
public start are. The teacher's row is its replies from that data stage (H100, bf16), the same
items. Nothing here is private, and nothing runs under DP: the FAQ's benchmark budget went to the
pilot's DP runs, and the cross-tokenizer question is whether the carried signal teaches at all.

Rows, each from the base student and on the same examples, steps and recipe (fixed before running:
the public start's kept recipe, LoRA rank 16 on every projection, T 1, α 0.3, batch 32, lr 1e-3,
but one epoch, 10 steps, where the start took three):
the untrained student; fine-tuning on the teacher's targets alone (cross-entropy, `labels_only`);
distillation with the carried signal (`distill`). So the difference between the last two is what
the teacher's distribution adds over its text, through another tokenizer.

Speed: the distilled student (base + its adapter, merged) against the teacher on vLLM (CPU build),
the same 8 held-out prompts at once, 64 tokens each (bench/distill_report.speed_rows, as the main
table's speed row).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.distill_device import ANSWER_TOKENS, Device  # noqa: E402
from training.types import QAExample  # noqa: E402

TEACHER, STUDENT = "qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct"
STATE = REPO / "bench" / "results" / "distill_device" / "fifth-h100" / "pilot" / "data-python-faq"
STATE = STATE / "state.pkl.gz"
INPUT = REPO / "bench" / "data" / "distill" / "python-faq" / "input.json"
RECIPE = {"lora_rank": 16, "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
          "down_proj"], "epochs": 1, "batch_size": 32, "max_physical_batch": 8, "lr": 1e-3, "warmup": 0.1,
          "max_len": 1280, "temperature": 1.0, "alpha": 0.3, "sparse": "tail", "max_grad_norm": 1.0,
          "top_k": 16, "canary_repeats": 4, "candidates": 1100}  # fmt: skip
# One epoch (10 steps), where the public start took three: a run of three epochs had not ended
# after 50 minutes on a 2-core CPU with bf16 instructions (physical batches of 8 padded to the
# longest prompt), and a session gives the whole table about an hour.
RUNS = [("student", "none"), ("labels-nonprivate", "labels_only"), ("distill-nonprivate", "distill")]


class CrossDevice(Device):
    """The device bench's runs on this machine's CPU, with the store's SmolLM2 as the student."""

    def __init__(self, store: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = store

    def _load(self, name: str, *adapters: Path) -> Any:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model: Any = AutoModelForCausalLM.from_pretrained(str(self.store / name), dtype=torch.float32)
        for adapter in adapters:
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        return model.eval()

    def _answers(self, model: Any, examples: list[QAExample]) -> list[str]:
        from training.evaluate import greedy_answers

        return greedy_answers(model, self.tokenizer, examples, max_new_tokens=ANSWER_TOKENS, batch_size=16)

    def _student(self, adapter: Path | None = None, *, from_start: bool = True) -> Any:
        return self._load(STUDENT, *((adapter,) if adapter is not None else ()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=0, help="training examples and held-out items (smoke)")
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--runs", nargs="*", default=[name for name, _ in RUNS])
    parser.add_argument("--work", default=str(REPO / "var" / "bench-distill-cross"))
    parser.add_argument("--results", default="distill_cross", help="bench/results/NAME.json")
    parser.add_argument("--speed-only", action="store_true", help="time the kept student and teacher again")
    args = parser.parse_args(argv)
    if args.speed_only:
        return speed(Path(args.work) / "out", args.results)

    import torch
    from transformers import AutoTokenizer

    from bench.common import write_results
    from bench.distill_report import score_replies, written_items
    from core.llm.store.store import default_store_dir
    from training import crosstok
    from training.runtime import cpu_has_bf16

    store = default_store_dir()
    for name in (TEACHER, STUDENT):
        if not (store / name / "config.json").exists():
            raise SystemExit(f"{name} is not in the model store: .venv/bin/kb models fetch {name}")
    if not INPUT.exists():
        raise SystemExit(f"no {INPUT}: run .venv/bin/python bench/distill.py prepare --corpus python-faq")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work, out = Path(args.work), Path(args.work) / "out"
    shutil.rmtree(work, ignore_errors=True)
    data = json.loads(INPUT.read_text())
    data["recipe"] = {**RECIPE, "epochs": args.epochs, "cpu_bf16": cpu_has_bf16()}
    if args.limit:  # a smoke run: a batch its few examples can fill
        data["recipe"] |= {"batch_size": max(2, args.limit // 4), "max_physical_batch": 2}
    run = CrossDevice(store, work, out, data, on="cpu")
    (work / "state.pkl").write_bytes(gzip.decompress(STATE.read_bytes()))
    run.restore()
    if args.limit:
        run.train = run.train[: args.limit]
        run.test = run.test[: args.limit]
        run.labelled = run.labelled[: args.limit // 4]
        run.replies = {"teacher": {k: v[: len(run.test) if k == "written" else len(run.labelled)]
                                   for k, v in run.replies["teacher"].items()}}  # fmt: skip
    run.labelled = []  # the FAQ's hand-labelled questions are the pilot's; this table scores the items
    run.tokenizer = AutoTokenizer.from_pretrained(str(store / STUDENT))
    run.tokenizer.padding_side = "left"
    run.teacher_tokenizer = AutoTokenizer.from_pretrained(str(store / TEACHER))
    source, target = crosstok.Vocabulary(run.teacher_tokenizer), crosstok.Vocabulary(run.tokenizer)
    wanted = [run.soft[e.example_id] for e in run.train if e.example_id in run.soft]
    carried = crosstok.stats(
        crosstok.carry(s.token_ids, s.top_ids, s.top_logprobs, source, target) for s in wanted
    )
    run.note(step="carried", **carried.to_json())

    items, shown = written_items(run._test_records())
    teacher_scores = score_replies(items, run.replies["teacher"]["written"], shown)
    rows: dict[str, Any] = {
        "teacher": {"model": TEACHER, "machine": "NVIDIA H100 80GB (the data stage)", **teacher_scores}
    }
    earlier = _earlier_rows(args.results, run.recipe)
    for name, method in RUNS:
        if name not in args.runs:
            if name in earlier:  # same recipe and data: a row of an earlier run, kept as it was
                rows[name] = earlier[name]
            continue
        started = time.perf_counter()
        row: dict[str, Any] = {"model": STUDENT, "method": method, "epsilon": None}
        adapter = None
        if method != "none":
            trained = run._train(name, method, None, run.train, run.recipe)
            adapter = trained.pop("adapter")
            kept = ("steps", "train_time_s", "mean_step_time_s", "final_loss", "train_examples", "guarantee")
            row["training"] = {k: trained[k] for k in kept}
        model = run._student(adapter)
        run._answer_all(name, model)
        del model
        row |= score_replies(items, run.replies[name]["written"], shown)
        row["elapsed_s"] = round(time.perf_counter() - started, 1)
        rows[name] = row
        if name == "distill-nonprivate" and adapter is not None:  # the served student, for the speed row
            run._keep_adapter(adapter, out / "adapter")
        run.note(step="row", name=name, correct=row["correct"], citation_precision=row["citation_precision"])
        (out / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
    run.rows = rows
    run.finish()
    teacher = rows["teacher"]["correct"] or 0.0
    for row in rows.values():
        row["student_teacher_correct_ratio"] = round(row["correct"] / teacher, 3) if teacher else None
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python bench/distill_cross.py", *given])
    if set(earlier) & set(rows) - set(args.runs):
        command += " (the other rows from an earlier run of the same recipe)"
    if args.limit:
        print(json.dumps({"rows": rows, "carried": carried.to_json()}, indent=1, default=str))
        return 0
    results = {
        "teacher": TEACHER, "student": STUDENT, "data": str(STATE.relative_to(REPO)), "recipe": run.recipe,
        "held_out_items": len(items), "training_examples": len(run.train), "carried": carried.to_json(),
        "rows": rows, "ledger_total_epsilon": 0.0, "elapsed_s": round(time.perf_counter() - run.started, 1),
    }  # fmt: skip
    print(write_results(args.results, results, summary=_summary(results), command=command))
    if "distill-nonprivate" in rows:  # a fresh process: this one holds the training's memory (16 GB)
        import subprocess

        again = [sys.executable, __file__, "--speed-only", "--work", args.work, "--results", args.results]
        return subprocess.run(again, check=False).returncode
    return 0


def _earlier_rows(name: str, recipe: dict[str, Any]) -> dict[str, Any]:
    from bench.common import RESULTS

    path = RESULTS / f"{name}.json"
    if not path.exists():
        return {}
    found = json.loads(path.read_text())
    return dict(found["rows"]) if found.get("recipe") == recipe else {}


def _summary(results: dict[str, Any]) -> str:
    rows = ", ".join(f"{n} {r['correct']:.3f}" for n, r in results["rows"].items())
    carried = results["carried"]
    return (
        f"{STUDENT} + LoRA from {TEACHER} (another tokenizer) on python-faq, {results['held_out_items']} "
        f"held-out items: correct {rows}; the signal reached {carried['aligned_share']:.1%} of the "
        f"student's answer tokens with {carried['kept_mass']:.1%} of their top-16 mass"
    )


def speed(out: Path, name: str) -> int:
    """The kept student (merged) and the teacher on vLLM, 8 at once; added to bench/results/NAME.json."""
    from bench.common import RESULTS, write_results
    from bench.distill_report import speed_rows

    if not (out / "adapter" / "adapter_config.json").exists():
        raise SystemExit(f"no kept adapter in {out}: run the rows first")
    found = speed_rows(out, TEACHER, STUDENT, tokens=64)
    results = json.loads((RESULTS / f"{name}.json").read_text())
    results["speed"] = found
    ratio = found["student_teacher_tokens_per_s_ratio"]
    for row in results["rows"].values():
        if row.get("method") == "distill":
            row["student_teacher_tokens_per_s_ratio"] = ratio
    kept = {k: v for k, v in results.items() if k not in ("benchmark", "date", "machine", "command")}
    summary = f"{_summary(results)}; distilled student {ratio}x the teacher's tokens/s on vLLM (CPU, c8)"
    print(write_results(name, kept, summary=summary, command=results.get("command")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
