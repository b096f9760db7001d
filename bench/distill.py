"""Benchmark of DP distillation: a vLLM-served teacher, students at ε = 1, 4, 8 and without DP.

    .venv/bin/python bench/distill.py [--phase all|teacher|signals|students|speed|report]

From nothing, in one command (each phase caches its output under ~/.cache/halden-kb/distill, so a
rerun skips what is done; the same seeds regenerate the same files):

1. teacher: a randomly initialized Llama (3.6M parameters, head_dim 64) trained on the templated
   reading-comprehension task of `training.task` (bench/distill_gpu.py; on a GPU if there is one).
2. signals: the teacher served by the real vLLM CPU server; its top-k log-probabilities at every
   reference answer token of the training set (prompt_logprobs), and its greedy answers to the
   test set (for its exact match and the students' agreement with it).
3. students: a 0.42M-parameter student (8.5x smaller) distilled from those signals with DP-SGD at
   ε = 1, 4, 8 (δ = 1e-5) and without DP, the same batch and steps; canaries (random door codes,
   each inserted 4 times) in its training data; exact match on unseen contexts, canary exposure,
   step time and peak memory (bench/distill_gpu.py students; on a GPU if there is one).
4. speed: a realistic size pair of the same family with random weights (teacher 436M, student
   44M) served by vLLM on the CPU, output tokens/s at 8 concurrent requests.
5. report: bench/results/distill.json, bench/results/distill_epsilon.png, a BENCHMARKS.md row.

How the committed figures were made (this machine has vLLM but no GPU; the lent H200 has a GPU
but no vLLM): `python bench/distill_gpu.py teacher --out DIR` on the H200, DIR/teacher copied to
~/.cache/halden-kb/distill/teacher; `--phase signals` here (writes ~/.cache/halden-kb/distill/device);
that folder and the opacus wheel carried to the H200 for `python bench/distill_gpu.py students
--work W --out S` and `dp-timing --out S`; S/*.json copied to ~/.cache/halden-kb/distill/students;
then `python bench/distill.py` here (speed and report; the rest is read from the cache).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, write_results  # noqa: E402
from training.data import dataset_hash, format_prompt, split_by_document, tokenize  # noqa: E402
from training.evaluate import chance_exposure, score  # noqa: E402
from training.task import FactTask, make_canaries  # noqa: E402
from training.types import QAExample, TrainExample  # noqa: E402

WORK = Path.home() / ".cache" / "halden-kb" / "distill"
POOL, POOL_SEED, K = 20_000, 0, 8
CANARIES, REPEATS = 10, 4
PORT = 8171


def dataset() -> tuple[list[QAExample], list[QAExample], list[Any]]:
    """Train (with canary copies) and test examples, split by document (each context is one)."""
    pool = FactTask(seed=POOL_SEED).examples(POOL, prefix="doc")
    split = split_by_document(pool, validation=0.0, test=0.1, seed=0)
    canaries = make_canaries(CANARIES)
    copies = [
        QAExample(**{**asdict(c.example), "example_id": f"{c.example.example_id}-r{r}"})
        for c in canaries
        for r in range(REPEATS)
    ]
    return split.train + copies, split.test, canaries


def ensure_teacher(work: Path) -> Path:
    teacher = work / "teacher"
    if not (teacher / "model.safetensors").exists():
        from bench.distill_gpu import teacher_sweep

        print("training the teacher (bench/distill_gpu.py teacher) ...", flush=True)
        teacher_sweep(work)
    return teacher


async def _collect(
    teacher: Path, train: list[QAExample], test: list[QAExample], work: Path
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from core.llm_vllm import VLLMClient
    from training.teacher import SignalCache, TeacherServer, collect_signals

    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    cache = SignalCache(work / "signals")
    server = TeacherServer(
        teacher,
        port=PORT,
        served_name="teacher",
        dtype="float32",
        kv_cache_gib=2,
        log_path=work / "vllm-teacher.log",
    )
    with server:
        server.wait_ready(timeout=600)
        async with VLLMClient(
            server.url,
            model="teacher",
            first_token_timeout=120,
            total_timeout=120,
            extra_body={"return_tokens_as_token_ids": True},
        ) as client:
            started = time.perf_counter()

            def progress(n: int) -> None:
                if n % 1000 == 0:
                    print(f"  signals: {n} ({n / (time.perf_counter() - started):.1f}/s)", flush=True)

            signals = await collect_signals(
                client, train, tokenizer, k=K, cache=cache, concurrency=32, on_done=progress
            )
            signal_s = time.perf_counter() - started
            answers = await collect_signals(
                client, test, tokenizer, k=K, mode="generate", cache=cache, concurrency=32
            )
    teacher_answers = [answers[e.example_id].answer for e in test]
    scores = score(teacher_answers, [e.answer for e in test])
    rows = tokenize(train, tokenizer, signals=signals, require_signals=True, max_len=128)
    device_dir = work / "device"
    device_dir.mkdir(parents=True, exist_ok=True)
    with gzip.open(device_dir / "train.jsonl.gz", "wt") as handle:
        for row in rows:
            handle.write(json.dumps([row.input_ids, row.answer_start, row.top_ids, row.top_logprobs]) + "\n")
    (device_dir / "test.json").write_text(json.dumps([asdict(e) for e in test]))
    meta = {
        "teacher_test_em": scores.exact_match,
        "teacher_test_f1": scores.f1,
        "teacher_answers": teacher_answers,
        "train_examples": len(train),
        "test_examples": len(test),
        "dataset_hash": dataset_hash(train),
        "signal_collection_s": signal_s,
        "k": K,
    }
    (device_dir / "meta.json").write_text(json.dumps(meta))
    shutil.copytree(
        teacher, device_dir / "tokenizer", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors")
    )
    return meta


def load_device_data(device_dir: Path) -> tuple[list[TrainExample], list[QAExample], dict[str, Any]]:
    rows: list[TrainExample] = []
    with gzip.open(device_dir / "train.jsonl.gz", "rt") as handle:
        for line in handle:
            ids, start, top_ids, top_lp = json.loads(line)
            rows.append(
                TrainExample(
                    tuple(ids), start, tuple(tuple(r) for r in top_ids), tuple(tuple(r) for r in top_lp)
                )
            )
    test = [
        QAExample(**{**e, "context": tuple(e["context"])})
        for e in json.loads((device_dir / "test.json").read_text())
    ]
    return rows, test, json.loads((device_dir / "meta.json").read_text())


def signals_phase(work: Path) -> dict[str, Any]:
    meta_path = work / "device" / "meta.json"
    if meta_path.exists():
        return dict(json.loads(meta_path.read_text()))
    teacher = ensure_teacher(work)
    train, test, _ = dataset()
    return asyncio.run(_collect(teacher, train, test, work))


SPEED_TEACHER = {"hidden": 1024, "layers": 24, "heads": 16, "intermediate": 4096}
SPEED_STUDENT = {"hidden": 512, "layers": 8, "heads": 8, "intermediate": 1536}
SPEED_VOCAB, SPEED_PROMPTS, SPEED_TOKENS, SPEED_CONCURRENCY = 16_000, 24, 64, 8


def _speed_tokenizer(out: Path) -> Any:
    """The task's word-level tokenizer padded with filler words to SPEED_VOCAB, so every id decodes."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from training.task import build_tokenizer

    base = build_tokenizer(out)
    vocab = dict(base.get_vocab())
    for i in range(SPEED_VOCAB - len(vocab)):
        vocab[f"w{i}"] = len(vocab)
    spec = json.loads(base.backend_tokenizer.to_str())
    spec["model"]["vocab"] = vocab
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tokenizer.save_pretrained(str(out))
    return tokenizer


def _speed_model(out: Path, shape: dict[str, int]) -> int:
    """A random bf16 Llama of `shape` (head_dim 64) with the padded tokenizer; returns its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (out / "config.json").exists():
        config = json.loads((out / "config.json").read_text())
        return int(config["num_parameters"])
    tokenizer = _speed_tokenizer(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"],
        head_dim=64,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model: Any = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16)
    params = int(sum(p.numel() for p in model.parameters()))
    model.config.num_parameters = params
    model.save_pretrained(str(out), safe_serialization=True)
    return params


async def _serve_speed(model_dir: Path, prompts: list[str], work: Path) -> float:
    from core.llm_vllm import VLLMClient
    from training.evaluate import tokens_per_second
    from training.teacher import TeacherServer

    server = TeacherServer(
        model_dir,
        port=PORT,
        served_name="speed",
        dtype="bfloat16",
        kv_cache_gib=2,
        log_path=work / f"vllm-{model_dir.name}.log",
    )
    with server:
        server.wait_ready(timeout=900)
        # ignore_eos: a random model's early </s> would make a short answer look fast.
        async with VLLMClient(
            server.url,
            model="speed",
            first_token_timeout=300,
            total_timeout=600,
            extra_body={"ignore_eos": True},
        ) as client:
            await tokens_per_second(
                client, prompts[:SPEED_CONCURRENCY], concurrency=SPEED_CONCURRENCY, max_tokens=8
            )
            return await tokens_per_second(
                client, prompts, concurrency=SPEED_CONCURRENCY, max_tokens=SPEED_TOKENS
            )


def speed_phase(work: Path) -> dict[str, Any]:
    path = work / "speed.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    test = FactTask(seed=2000).examples(SPEED_PROMPTS, prefix="speed")
    prompts = [format_prompt(e) for e in test]
    result: dict[str, Any] = {
        "concurrency": SPEED_CONCURRENCY,
        "max_tokens": SPEED_TOKENS,
        "prompts": len(prompts),
    }
    for name, shape in (("teacher", SPEED_TEACHER), ("student", SPEED_STUDENT)):
        folder = work / f"speed-{name}"
        result[f"{name}_params"] = _speed_model(folder, shape)
        result[f"{name}_shape"] = shape
        result[f"{name}_tokens_per_s"] = asyncio.run(_serve_speed(folder, prompts, work))
        print(
            f"  {name}: {result[f'{name}_params'] / 1e6:.0f}M, {result[f'{name}_tokens_per_s']:.1f} tok/s",
            flush=True,
        )
    result["student_teacher_tokens_per_s_ratio"] = (
        result["student_tokens_per_s"] / result["teacher_tokens_per_s"]
    )
    result["size_ratio"] = result["teacher_params"] / result["student_params"]
    path.write_text(json.dumps(result, indent=2))
    return result


def students_phase(work: Path) -> dict[str, Any]:
    """The students' results: from work/students (copied back from the GPU machine) or trained here."""
    path = work / "students" / "students.json"
    if not path.exists():
        signals_phase(work)
        from bench.distill_gpu import students

        students(work, work / "students")
        from bench.distill_gpu import device, dp_timing_100m

        if device() == "cuda":  # a 100M student's DP step on the CPU would take hours: GPU only
            (work / "students" / "dp_timing_100m.json").write_text(json.dumps(dp_timing_100m(), indent=2))
    return dict(json.loads(path.read_text()))


def _eps_key(epsilon: float | None) -> str:
    return "none" if epsilon is None else f"{epsilon:g}"


def report(work: Path) -> dict[str, Any]:
    meta = signals_phase(work)
    runs = students_phase(work)
    speed = speed_phase(work)
    timing_100m_path = work / "students" / "dp_timing_100m.json"
    timing_100m = json.loads(timing_100m_path.read_text()) if timing_100m_path.exists() else None
    sweep_path = work / "teacher_sweep.json"
    sweep = json.loads(sweep_path.read_text()) if sweep_path.exists() else {}
    timing = runs["timing_student"]
    teacher_em = meta["teacher_test_em"]
    nodp = runs["students"]["nodp"]
    per_epsilon: dict[str, Any] = {}
    for run in runs["students"].values():
        epsilon = run["epsilon"]
        per_epsilon[_eps_key(epsilon)] = {
            "student_teacher_em_ratio": run["test_em"] / teacher_em,
            "student_em": run["test_em"],
            "student_f1": run["test_f1"],
            "teacher_em": teacher_em,
            "teacher_agreement": run["teacher_agreement"],
            "canary_exposure": run["canary_exposure"],
            "canary_exposure_max": run["canary_exposure_max"],
            "canary_exposures": run["canary_exposures"],
            "exposure_chance": chance_exposure(_candidates()),
            # Step time is the same at every ε (only the noise's scale changes): measured alone.
            "dp_step_time_ratio": timing["dp_step_time_ratio"] if epsilon is not None else 1.0,
            "dp_peak_memory_ratio": run["peak_memory_bytes"] / nodp["peak_memory_bytes"],
            "student_teacher_tokens_per_s_ratio": speed["student_teacher_tokens_per_s_ratio"],
            "epsilon_spent": run["epsilon_spent"],
            "delta": run["delta"],
            "noise_multiplier": run["noise_multiplier"],
            "grad_sample_mode": run["grad_sample_mode"],
            "steps": run["steps"],
            "train_time_s_shared_gpu": run["train_time_s"],
            "peak_memory_bytes": run["peak_memory_bytes"],
        }
    results = {
        "teacher": {
            "params": next(
                (r["params"] for r in sweep.get("runs", []) if r["name"] == sweep.get("best")), None
            ),
            "test_em_vllm": teacher_em,
            "test_f1_vllm": meta["teacher_test_f1"],
            "sweep": [
                {k: r[k] for k in ("name", "params", "lr", "steps", "best_valid_em")}
                for r in sweep.get("runs", [])
            ],
            "served_by": "vLLM 0.32.0 CPU, float32",
        },
        "student": {"params": nodp["params"], "run": _student_run()},
        "data": {
            k: meta[k]
            for k in ("train_examples", "test_examples", "dataset_hash", "k", "signal_collection_s")
        },
        "canaries": {"count": CANARIES, "repeats": REPEATS, "candidates": _candidates()},
        "per_epsilon": per_epsilon,
        "timing_student": timing,
        "timing_100m_gpu": timing_100m,
        "speed": speed,
        "privacy_unit": nodp["privacy_unit"],
        "notes": [
            "student runs trained side by side on one H200 (train_time_s_shared_gpu is not a speed figure); "
            "dp_step_time_ratio comes from timing_student, each configuration run alone at batch 512",
            "dp_peak_memory_ratio per ε: torch.cuda.max_memory_allocated of each run's own process",
            "the cached teacher came from the sweep's earlier time-budgeted form (240 s, 3017 steps, best "
            "validation EM at step 2500); the script now fixes 3000 steps so a rerun repeats the schedule",
            "signals: vLLM CPU prompt_logprobs at ~28 requests/s bounded the private set to 18k examples",
        ],
    }
    _plot(per_epsilon, RESULTS / "distill_epsilon.png")
    eight = per_epsilon.get("8", {})
    summary = (
        f"teacher EM {teacher_em:.3f} (vLLM); student/teacher EM "
        f"ε=8 {eight.get('student_teacher_em_ratio', 0):.3f}, "
        f"no DP {per_epsilon['none']['student_teacher_em_ratio']:.3f}; canary exposure ε=8 "
        f"{eight.get('canary_exposure', 0):.1f} vs no DP {per_epsilon['none']['canary_exposure']:.1f} bits; "
        f"DP step {timing['dp_step_time_ratio']:.2f}x, memory {eight.get('dp_peak_memory_ratio', 0):.2f}x; "
        f"student serves {speed['student_teacher_tokens_per_s_ratio']:.1f}x faster"
    )
    write_results("distill", results, summary=summary)
    return results


def _student_run() -> dict[str, Any]:
    from bench.distill_gpu import STUDENT, STUDENT_RUN

    return {**STUDENT_RUN, "shape": STUDENT.__dict__}


def _candidates() -> int:
    from bench.distill_gpu import CANDIDATES

    return CANDIDATES


def _plot(per_epsilon: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[dev]')")
        return
    keys = [k for k in ("1", "4", "8", "none") if k in per_epsilon]
    labels = [f"ε={k}" if k != "none" else "no DP" for k in keys]
    em = [per_epsilon[k]["student_teacher_em_ratio"] for k in keys]
    exposure = [per_epsilon[k]["canary_exposure"] for k in keys]
    fig, left = plt.subplots(figsize=(6, 4))
    left.plot(labels, em, "o-", color="tab:blue", label="student / teacher EM")
    left.axhline(0.92, color="tab:blue", linestyle=":", linewidth=1)
    left.set_ylabel("student / teacher exact match", color="tab:blue")
    left.set_ylim(0, max(1.1, max(em) + 0.05))
    right = left.twinx()
    right.plot(labels, exposure, "s--", color="tab:red", label="canary exposure")
    right.axhline(per_epsilon[keys[0]]["exposure_chance"], color="tab:red", linestyle=":", linewidth=1)
    right.set_ylabel("canary exposure (bits)", color="tab:red")
    left.set_title("DP distillation: utility and memorization by ε")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--phase", default="all", choices=["all", "teacher", "signals", "students", "speed", "report"]
    )
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args(argv)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.phase in ("all", "teacher"):
        ensure_teacher(work)
    if args.phase in ("all", "signals"):
        meta = signals_phase(work)
        print({k: v for k, v in meta.items() if k != "teacher_answers"})
    if args.phase in ("all", "students"):
        students_phase(work)
    if args.phase in ("all", "speed"):
        print(speed_phase(work))
    if args.phase in ("all", "report"):
        results = report(work)
        print(json.dumps(results["per_epsilon"], indent=2)[:3000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
