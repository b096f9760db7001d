"""Benchmark of DP distillation: a vLLM-served teacher, students at ε = 1, 4, 8 and without DP.

    .venv/bin/python bench/distill.py [--phase all|teacher|signals|students|speed|report]

From nothing, in one command (each phase caches its output under ~/.cache/halden-kb/distill, so a
rerun skips what is done; the same seeds regenerate the same data):

1. teacher: a randomly initialized Llama (4.1M parameters, 384 x 2 layers, head_dim 64) trained on the
   templated reading-comprehension task of `training.task` (bench/distill_gpu.py teacher; on a GPU if
   there is one). The same sweep trains the student's PUBLIC starting point: the student's shape
   trained on fresh contexts drawn with their own seeds (answer spans as labels), never the private
   pool, as a real student starts from a pretrained model. The best of each by validation EM is kept.
2. signals: the teacher served by the real vLLM CPU server; its top-8 log-probabilities at every
   reference answer token of the private training set (prompt_logprobs), and its greedy answers to
   the private test set (its exact match, and the students' agreement with it).
3. students: the private step. From the public start, the 0.42M-parameter student (9.8x smaller) is
   distilled from those signals with DP-SGD at ε = 1, 4, 8 (δ = 1e-5) and without DP, at two learning
   rates; the private validation set picks one per ε (the test set is only scored). Canaries (random
   door codes, each inserted 4 times) are in the private data; exact match on unseen contexts, canary
   exposure, step time and peak memory (bench/distill_gpu.py students; on a GPU if there is one).
4. speed: a realistic size pair of the same family with random weights (teacher 436M, student 44M)
   served by vLLM on the CPU, output tokens/s at 8 concurrent requests.
5. report: bench/results/distill.json, bench/results/distill_epsilon.png, a BENCHMARKS.md row.

How the committed figures were made (this machine has vLLM but no GPU; the lent H200 has a GPU but no
vLLM; session 6, NOTES.md). Two `teacher` calls on the H200: the first (six plans side by side) gave the
full public start (s128x2-public-lr1e-3, 0.999; its sweep kept as work/teacher_sweep_call1.json) but a
teacher that stalled at 0.888 under its 330 s budget; the second, `teacher --budget-s 415 --plans
t384x2-lr5e-4-d1200k,t384x2-lr5e-4-d1200k-s2,s128x2-shift-lr0.001-s3,s128x2-shift-lr0.001-s5` (four side by
side, every plan's 9,500 steps inside the budget), gave the teacher (0.978) and the shift start. Their
teacher, student_public, student_public_shift, tokenizer and teacher_sweep.json copied to
~/.cache/halden-kb/distill; `--phase signals` here (53,637 examples, 488 s); that folder's device/, both
starts and the opacus wheel carried to the H200 for `python bench/distill_gpu.py students --work W --out S
--no-timing --deadline-s 420 --variants shift-b2048-e20-lr2e-3-t1,shift-b2048-e10-lr2e-3-t1,
shift-b4096-e20-lr3e-3-t1,public-lr2e-4` (16 runs side by side, 403 s), S/*.json copied to work/students.
Then the headline start: the shift start's error analysis showed it failing the contexts with a
distractor, so a second public stage (`train-one --plan s128x2-shift-d75-stage2`, run on this CPU,
its tokenizer and `student_public_shift` in the sweep folder) made it read them (work/
student_public_shift_d75). Its private step: `students --no-timing --deadline-s 120 --variants
shift-b2048-e5-lr2e-3-t1,shift-b2048-e10-lr2e-3-t1 --epsilons 8.0,None` on the H200 (106 s, in the
device time left), into work/students-d75, and `student-one --variant shift-b2048-e5-lr2e-3-t1 --epsilon
4.0` (and 1.0) on this CPU into the same folder. Then `python bench/distill.py` here (speed and
report). The DP step's time and memory come from
bench/results/distill_dp_modes.json (`distill_gpu.py dp-timing-variants`, session 4, each configuration
alone on the H200).
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
# The private pool has its own seed: the teacher trained on seed 0, the public student on 5000, the
# validation and test sets of the sweep on 1000 and 2000, so no private context is one either model saw.
POOL, POOL_SEED, K = 63_000, 7000, 8
CANARIES, REPEATS = 10, 4
PORT = 8171


def dataset() -> tuple[list[QAExample], list[QAExample], list[QAExample], list[Any]]:
    """Train (with canary copies), validation and test examples, split by document (each context is one).

    Validation picks the private step's learning rate; test is only scored.
    """
    pool = FactTask(seed=POOL_SEED).examples(POOL, prefix="doc")
    split = split_by_document(pool, validation=0.05, test=0.1, seed=0)
    canaries = make_canaries(CANARIES)
    copies = [
        QAExample(**{**asdict(c.example), "example_id": f"{c.example.example_id}-r{r}"})
        for c in canaries
        for r in range(REPEATS)
    ]
    return split.train + copies, split.validation, split.test, canaries


def ensure_teacher(work: Path) -> Path:
    teacher = work / "teacher"
    if not (teacher / "model.safetensors").exists():
        from bench.distill_gpu import teacher_sweep

        print("training the teacher (bench/distill_gpu.py teacher) ...", flush=True)
        teacher_sweep(work)
    return teacher


async def _collect(
    teacher: Path, train: list[QAExample], valid: list[QAExample], test: list[QAExample], work: Path
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from core.llm.vllm import VLLMClient
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
    (device_dir / "valid.json").write_text(json.dumps([asdict(e) for e in valid]))
    meta = {
        "teacher_test_em": scores.exact_match,
        "teacher_test_f1": scores.f1,
        "teacher_answers": teacher_answers,
        "train_examples": len(train),
        "test_examples": len(test),
        "valid_examples": len(valid),
        "dataset_hash": dataset_hash(train),
        "signal_collection_s": signal_s,
        "k": K,
    }
    (device_dir / "meta.json").write_text(json.dumps(meta))
    shutil.copytree(
        teacher, device_dir / "tokenizer", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors")
    )
    return meta


def load_examples(path: Path) -> list[QAExample]:
    return [QAExample(**{**e, "context": tuple(e["context"])}) for e in json.loads(path.read_text())]


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
    test = load_examples(device_dir / "test.json")
    return rows, test, json.loads((device_dir / "meta.json").read_text())


def signals_phase(work: Path) -> dict[str, Any]:
    meta_path = work / "device" / "meta.json"
    if meta_path.exists():
        return dict(json.loads(meta_path.read_text()))
    teacher = ensure_teacher(work)
    train, valid, test, _ = dataset()
    return asyncio.run(_collect(teacher, train, valid, test, work))


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
    from core.llm.vllm import VLLMClient
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
    return dict(json.loads(path.read_text()))


DATA_KEYS = ("train_examples", "valid_examples", "test_examples", "dataset_hash", "k", "signal_collection_s")
ALL_RUNS_KEYS = ("valid_em", "test_em", "canary_exposure", "noise_multiplier", "steps", "error")


def _eps_key(epsilon: float | None) -> str:
    return "none" if epsilon is None else f"{epsilon:g}"


# The public starts the private step was run from: the runs in work/<folder> whose names begin with
# <prefix>, and the start's folder under work on the machine that ran them (<init>, the key of its
# public-only figures in the folder's students.json). On the H200: "full" is the student's shape trained
# on the whole task, which it then reads better than the teacher, so its ratios show that DP keeps what a
# start knows, not what distillation transfers. The "shift" start never saw a finance fact (a third of the
# private questions), so what it scores on finance came through the private step. Session 6's shift start
# half-stalled on its own domains (0.926 validation EM; session 5's run of the seed "clicked" to 0.998),
# which caps even its non-private student (NOTES.md, session 6).
STARTS: dict[str, dict[str, str]] = {
    "shift": {
        "folder": "students-d75",
        "prefix": "shift-",
        "init": "student_public_shift",
        "public_run": "s128x2-shift-d75-stage2",
        "how": '"shift-stage1" below, then a second public stage on IT and HR contexts with a distractor '
        "(a second fact of the asked kind, about another office) three times in four instead of one in "
        "four: lr 1e-3, batch 128, seed 5060, run on this CPU; validation EM (IT and HR, the task's own "
        "mix) 0.926 -> 0.920, 0.949, 0.976, 0.988, 0.992, 0.997 every 250 steps; stopped by hand "
        "after step 1,500 of the 3,000 planned, for time (its validation history is in NOTES.md)",
    },
    "shift-stage1": {
        "folder": "students",
        "prefix": "shift-",
        "init": "student_public_shift",
        "public_run": "s128x2-shift-lr0.001-s3",
        "how": "IT and HR facts only, lr 1e-3, seed 5003, 9,500 steps; validation EM 0.926 on its own "
        "domains, the better of 2 seeds side by side (5005: 0.894; teacher_sweep.json). Session 5's run "
        "of the same seed under a shorter time budget reached 0.998: these starts are bimodal",
    },
    "full": {
        "folder": "students",
        "prefix": "public-",
        "init": "student_public",
        "public_run": "s128x2-public-lr1e-3",
        "how": "all three domains, lr 1e-3, seed 5000, 9,500 steps; validation EM 0.999 "
        "(teacher_sweep_call1.json)",
    },
}
HEADLINE_START = "shift"


def _starts(work: Path) -> dict[str, dict[str, Any]]:
    """Each public start's private runs (`variant-eps` -> result) and its public-only figures."""
    found: dict[str, dict[str, Any]] = {}
    for key, start in STARTS.items():
        folder = work / start["folder"]
        runs = {
            f.stem: run
            for f in sorted(folder.glob(f"{start['prefix']}*.json"))
            if "variant" in (run := json.loads(f.read_text()))
        }
        if not runs:
            continue
        summary = (
            json.loads((folder / "students.json").read_text()) if (folder / "students.json").exists() else {}
        )
        public_only = (summary.get("public_only") or {}).get(start["init"])
        found[key] = {**start, "runs": runs, "public_only": public_only, "summary": summary}
    return found


def _per_epsilon(
    start: dict[str, Any], teacher_em: float, chance: float, speed: dict[str, Any], modes: dict[str, Any]
) -> dict[str, Any]:
    """Per ε, the start's run with the best validation EM over its learning rates (test plays no part)."""
    runs = start["runs"]
    hooks, ghost = modes[AUTO_MODE_RUN], modes.get("student-ghost-b512", {})
    per_epsilon: dict[str, Any] = {}
    for epsilon in sorted({r["epsilon"] for r in runs.values()}, key=lambda e: -1 if e is None else e):
        name, run = max(
            ((n, r) for n, r in runs.items() if r["epsilon"] == epsilon), key=lambda c: c[1]["valid_em"]
        )
        nodp = runs.get(name.rsplit("-", 1)[0] + "-nodp", {})
        private = epsilon is not None
        per_epsilon[_eps_key(epsilon)] = {
            "student_teacher_em_ratio": run["test_em"] / teacher_em,
            "student_em": run["test_em"],
            "student_em_by_domain": run.get("test_em_by_domain"),
            "student_f1": run["test_f1"],
            "teacher_em": teacher_em,
            "teacher_agreement": run["teacher_agreement"],
            "canary_exposure": run["canary_exposure"],
            "canary_exposure_max": run["canary_exposure_max"],
            "canary_exposures": run["canary_exposures"],
            "exposure_chance": chance,
            # Step time and memory are the same at every ε (only the noise's scale changes): measured
            # alone on the H200 at the private step's batch, in the mode training.dp picks (hooks).
            "dp_step_time_ratio": hooks["dp_step_time_ratio"] if private else 1.0,
            "dp_step_time_ratio_ghost": ghost.get("dp_step_time_ratio") if private else 1.0,
            "dp_step_peak_memory_ratio": hooks["dp_peak_memory_ratio"] if private else 1.0,
            # The whole run's peak against the non-DP run of the same variant (runs side by side).
            # (only between runs on the same kind of device: runs before session 6 were all on the GPU)
            "dp_peak_memory_ratio": run["peak_memory_bytes"] / max(1, nodp.get("peak_memory_bytes", 0) or 1)
            if nodp and run.get("device", "cuda") == nodp.get("device", "cuda")
            else None,
            "device": run.get("device", "cuda"),
            "student_teacher_tokens_per_s_ratio": speed["student_teacher_tokens_per_s_ratio"],
            "start": start["key"],
            "run": name,
            "lr": run["lr"],
            "epochs": run["epochs"],
            "valid_em": run["valid_em"],
            "public_only_em": (start["public_only"] or {}).get("test_em"),
            "public_only_em_by_domain": (start["public_only"] or {}).get("test_em_by_domain"),
            "epsilon_spent": run["epsilon_spent"],
            "delta": run["delta"],
            "noise_multiplier": run["noise_multiplier"],
            "grad_sample_mode": run["grad_sample_mode"],
            "steps": run["steps"],
            "train_time_s_shared": run["train_time_s"],
            "peak_memory_bytes": run["peak_memory_bytes"],
        }
    return per_epsilon


def report(work: Path) -> dict[str, Any]:
    from bench.distill_gpu import CANDIDATES, STUDENT, STUDENT_BATCH, VARIANTS, em_by_domain

    meta = signals_phase(work)
    students_phase(work)
    starts = _starts(work)
    speed = speed_phase(work)
    modes = json.loads(DP_MODES.read_text())
    sweep_path = work / "teacher_sweep.json"
    sweep = json.loads(sweep_path.read_text()) if sweep_path.exists() else {}
    # Earlier device calls' sweeps (teacher_sweep_*.json) are listed too: what was tried and dropped.
    earlier = [json.loads(p.read_text()) for p in sorted(work.glob("teacher_sweep_*.json"))]
    teacher_em = meta["teacher_test_em"]
    chance = chance_exposure(CANDIDATES)
    by_start = {
        key: _per_epsilon({**st, "key": key}, teacher_em, chance, speed, modes) for key, st in starts.items()
    }
    per_epsilon = by_start[HEADLINE_START]
    candidates = [run for st in starts.values() for run in st["runs"].values()]
    results = {
        "teacher": {
            "params": next(
                (r["params"] for r in sweep.get("runs", []) if r["name"] == sweep.get("best")), None
            ),
            "test_em_vllm": teacher_em,
            "test_em_by_domain_vllm": em_by_domain(
                load_examples(work / "device" / "test.json"), meta["teacher_answers"]
            ),
            "test_f1_vllm": meta["teacher_test_f1"],
            "test_em_torch_sweep_test_set": sweep.get("teacher_test_em_torch"),
            "sweep": [
                {k: r[k] for k in ("name", "params", "lr", "steps", "train_s", "best_valid_em")}
                for r in [*sweep.get("runs", []), *(r for e in earlier for r in e.get("runs", []))]
            ],
            "served_by": "vLLM 0.32.0 CPU, float32",
        },
        "student": {
            "params": next((r["params"] for r in candidates), None),
            "shape": STUDENT.__dict__,
            "public_pretraining": "fresh contexts of the task drawn with their own seed (5000), disjoint "
            "from the private pool (7000); labels are the answer spans; no teacher signal and no private "
            "data; the headline start ('shift') saw only IT and HR facts",
            "private_step": {"batch": STUDENT_BATCH, "variants": VARIANTS},
            "selection": "per ε, the headline start's run with the best validation EM on private held-out "
            "documents, over its learning rates and epochs (per_epsilon_by_start: the same for each start)",
        },
        "starts": {
            key: {
                "public_run": st["public_run"],
                "how": st["how"],
                "public_only": st["public_only"]
                and {
                    **st["public_only"],
                    "student_teacher_em_ratio": st["public_only"]["test_em"] / teacher_em,
                },
                "runs": {n: {k: r.get(k) for k in ALL_RUNS_KEYS} for n, r in st["runs"].items()},
            }
            for key, st in starts.items()
        },
        "data": {k: meta[k] for k in DATA_KEYS if k in meta},
        "canaries": {"count": CANARIES, "repeats": REPEATS, "candidates": CANDIDATES},
        "headline_start": HEADLINE_START,
        "per_epsilon": per_epsilon,
        "per_epsilon_by_start": by_start,
        "timing_auto": modes[AUTO_MODE_RUN],
        "timing_modes": modes,
        "speed": speed,
        "privacy_unit": candidates[0].get("privacy_unit"),
        "notes": [
            "private runs trained side by side on one H200 (train_time_s_shared is not a speed figure), "
            "except the headline start's ε=1 and ε=4 runs, which ran on this CPU (device 'cpu') once the "
            "device time was spent",
            "dp_step_time_ratio / dp_step_peak_memory_ratio: the 0.42M student's DP step (ε=8) against its "
            "non-DP step at batch 512 in the mode training.dp picks (hooks), on the H200, each configuration "
            "alone (timing_modes, bench/results/distill_dp_modes.json); dp_step_time_ratio_ghost is ghost "
            "clipping's; dp_peak_memory_ratio is the whole run's peak against the non-DP run of the same "
            "variant (None when they ran on different devices)",
            "public_only is a start before any private data: per_epsilon minus public_only_em is what the "
            "private step added (or cost)",
            "the 'full' start reads the task better than the teacher before any private step: its ratios "
            "show that DP keeps what a start knows, not what distillation transfers",
            "the headline start's recipes, all at temperature 1 and logical batch 2048: ε=8 and no DP chose "
            "between 5 and 10 epochs, ε=1 and ε=4 ran 5 epochs only (the CPU runs); the choice uses the "
            "private validation split, and like most published DP results the privacy cost of that choice "
            "is not accounted",
            "the headline start had two public stages (starts.shift.how): the first stage alone, "
            "'shift-stage1', half-stalled and caps even its non-private student (0.931 of the teacher)",
        ],
    }
    _plot(results["starts"], RESULTS / "distill_epsilon.png", chance)
    write_results("distill", results, summary=_summary(results))
    return results


# `bench/distill_gpu.py dp-timing-variants --out DIR` on the lent H200 (each configuration alone), DIR's JSON
# committed here: the DP step per grad_sample_mode, for the benchmark's student and a 97M one.
DP_MODES = RESULTS / "distill_dp_modes.json"
AUTO_MODE_RUN = "student-hooks-b512"  # what training.dp.choose_mode takes for the 0.42M student at batch 512


def _summary(results: dict[str, Any]) -> str:
    per_epsilon, speed = results["per_epsilon"], results["speed"]
    teacher_em, chance = results["teacher"]["test_em_vllm"], per_epsilon["none"]["exposure_chance"]
    timing = results["timing_auto"]
    eight, none = per_epsilon.get("8", {}), per_epsilon.get("none", {})
    full_eight = results["per_epsilon_by_start"].get("full", {}).get("8", {})
    return (
        f"teacher 4.1M EM {teacher_em:.3f} (vLLM); 0.42M student/teacher EM ε=8 "
        f"{eight.get('student_teacher_em_ratio', 0):.3f}, "
        f"no DP {none.get('student_teacher_em_ratio', 0):.3f} "
        f"(start {eight.get('start')}, public data only "
        f"{(eight.get('public_only_em') or 0) / teacher_em:.3f}; from the full start, which reads the task "
        f"before any private data, ε=8 "
        f"{full_eight.get('student_teacher_em_ratio', 0):.3f}); canary exposure ε=8 "
        f"{eight.get('canary_exposure', 0):.1f} vs no DP {none.get('canary_exposure', 0):.1f} bits "
        f"(chance {chance:.1f}); DP step {timing['dp_step_time_ratio']:.2f}x, memory "
        f"{timing['dp_peak_memory_ratio']:.2f}x; student serves "
        f"{speed['student_teacher_tokens_per_s_ratio']:.1f}x faster"
    )


def _plot(starts: dict[str, Any], path: Path, chance: float) -> None:
    """Student/teacher EM and canary exposure by ε, one line per public start."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[dev]')")
        return
    order = ["eps1", "eps4", "eps8", "nodp"]
    labels = {"eps1": "ε=1", "eps4": "ε=4", "eps8": "ε=8", "nodp": "no DP"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, start in starts.items():
        best: dict[str, dict[str, Any]] = {}
        for name, run in start["runs"].items():
            eps = name.rsplit("-", 1)[1]
            if eps not in best or run["valid_em"] > best[eps]["valid_em"]:
                best[eps] = run
        xs = [o for o in order if o in best]
        teacher = start["public_only"]["test_em"] / start["public_only"]["student_teacher_em_ratio"]
        left.plot(
            [labels[x] for x in xs], [best[x]["test_em"] / teacher for x in xs], "o-", label=f"start {key}"
        )
        right.plot(
            [labels[x] for x in xs], [best[x]["canary_exposure"] for x in xs], "s--", label=f"start {key}"
        )
    left.axhline(0.92, color="gray", linestyle=":", linewidth=1)
    left.set_ylabel("student / teacher exact match")
    left.set_title("utility by ε (dotted: 0.92 target)")
    left.legend()
    right.axhline(chance, color="gray", linestyle=":", linewidth=1)
    right.set_ylabel("canary exposure (bits)")
    right.set_title("memorization by ε (dotted: chance)")
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--phase",
        default="all",
        choices=["all", "teacher", "signals", "students", "speed", "report"],
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
