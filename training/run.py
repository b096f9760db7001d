"""One training run, top to bottom: run -> data -> teacher signals -> DP distillation -> evaluation -> export.

    report = execute(RunSpec(run_id=7, epsilon=4.0, epochs=2, ...), RunContext(engine, ledger, ...))

Each step is one function below, in the order they run. What a step needs from the outside (the
database, the ledger, the model folders, a progress callback) comes in `RunContext`; what the
admin asked comes in `RunSpec`. The student and teacher are model folders, so a GPU run with real
models changes the folders, not this file.

- `build_data`: with a teacher, the teacher writes the examples from the knowledge base's chunks
  (training.synthesis): sampled questions whose short answer is a span of the chunk, and its own
  replies in the bot's prompt as targets (cited, or the abstention over other documents' passages),
  kept only when they ended by themselves, do not repeat, cite only given passages and hold the
  answer. A teacher that writes no usable question for its first chunks is asked no more. When it
  gives fewer training examples than one batch (a tiny or untrained teacher), or there is no
  teacher, each chunk gives a templated example instead (the section's question, the
  passage's first sentence as answer); the report's `data_source` and `data_synthesis` say which,
  and why. Real questions whose answers got a 👍 join either; all redacted, split by document; one
  canary example goes into the training part for the exposure check. The teacher's sampling is
  seeded by the run, so a resumed run rebuilds the same data (its checkpoint checks the data's
  hash). Hyper-parameters are not tuned on this data: they come from settings and the request.
- `teacher_signals`: the teacher's top-k log-probabilities on each training answer (a local folder,
  loaded once for the data and the signals; a vLLM-served teacher goes through
  training.teacher.collect_signals).
- `distill_student`: DP-SGD under the ledger's reservation, keyed by the run id, in secure mode.
- `evaluate_versions`: the candidate and the active version on the same held-out questions,
  correctness judged as the product judges answers (training.evaluate.answer_correct: the
  question's short answer in the reply, or the abstention where the passages do not answer), and
  the canary's exposure among 1,000 look-alikes (training.canaries).
- `export`: the adapter into the registry with its manifest.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from privacy.budget import BudgetLedger
from privacy.redaction import Redactor
from training import canaries, synthesis
from training import data as dataset
from training.distill import StepInfo, distill
from training.dp import DistillError, OutOfMemory, default_delta, plan_privacy
from training.evaluate import answer_correct, greedy_answers
from training.feedback import feedback_examples
from training.registry import Registry
from training.types import DistillConfig, DistillResult, QAExample, TeacherSignal
from training.utility import expected_utility, trainable_dimension

MAX_EVAL = 24
EVAL_TOKENS = 96  # a reply's room on the held-out questions: a short answer and its citations
TEST_SHARE = 0.15  # of the documents, held out
QUESTIONS_PER_CHUNK = 3  # sampled from the teacher for each training chunk (one for a held-out one)
PROBE_CHUNKS = 8  # the teacher's first chunks: when none gives a usable question, it is asked no more
Progress = Callable[[dict[str, Any]], bool]  # returns True when the run should stop


class RunCancelled(Exception):
    """The admin cancelled the run; what was spent stays in the ledger."""


@dataclass(frozen=True)
class RunSpec:
    """What one run trains: asked by an admin, the rest from settings; saved with the run row."""

    run_id: int
    epsilon: float
    epochs: int
    student: Path
    teacher: Path | None
    out_dir: Path
    requested_by: str = "kb"
    lora_rank: int = 2
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    batch_size: int = 128
    max_examples: int = 2000
    max_len: int = 1024  # the bot's prompt: ~200 tokens of rules, then passages, question and answer
    canary_salt: str = ""  # fixed per run (on its row), so that a resumed run rebuilds the same data
    seed: int | None = None  # tests only: a seeded run is reproducible and not private


@dataclass
class RunContext:
    engine: Engine
    ledger: BudgetLedger
    registry: Registry
    redactor: Redactor = field(default_factory=Redactor)
    progress: Progress = lambda _update: False


@dataclass(frozen=True)
class Data:
    train: list[QAExample]
    test: list[QAExample]
    canary: QAExample
    dataset_hash: str
    source: str = "templated"  # "teacher" when the teacher wrote the knowledge base's examples
    synthesis: dict[str, Any] = field(default_factory=dict)  # what the teacher wrote, kept and dropped


def execute(spec: RunSpec, context: RunContext) -> dict[str, Any]:
    """Train, evaluate and register one version; returns the run's report (version included)."""
    started = time.perf_counter()
    teacher = _load(spec.teacher) if spec.teacher is not None else None
    data = build_data(spec, context, teacher=teacher)
    signals = teacher_signals(spec, data, context, teacher=teacher)
    del teacher  # the student trains without it in memory
    result = distill_student(spec, data, signals, context)
    figures = evaluate_versions(spec, data, result, context)
    version = export(spec, data, result, figures, context)
    return {
        **figures,
        "version": version,
        "epsilon_spent": result.epsilon_spent,
        "delta": result.delta,
        "noise_multiplier": result.extra.get("noise_multiplier"),
        "sample_rate": result.extra.get("sample_rate"),
        "steps": result.steps,
        "resumed_from_step": result.extra.get("resumed_from_step"),
        "private": result.extra.get("private"),
        "train_examples": len(data.train),
        "test_examples": len(data.test),
        "data_source": data.source,
        "data_synthesis": data.synthesis,
        "train_time_s": round(result.train_time_s, 1),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "tuned_on": "nothing private: hyper-parameters come from settings and the request",
    }


def build_data(spec: RunSpec, context: RunContext, *, teacher: tuple[Any, Any] | None = None) -> Data:
    """The run's examples; with `teacher` (model, tokenizer) it writes them (see the module docstring)."""
    context.progress({"stage": "data"})
    tokenizer = _tokenizer(spec.student)
    liked = feedback_examples(context.engine, context.redactor).examples
    split: dataset.Split | None = None
    source = "templated"
    made: dict[str, Any] = {}
    if teacher is not None:
        written, made = teacher_examples(spec, context, teacher)
        split = _split(spec, tokenizer, [*written, *liked])
        usable = sum(e.origin == "generated" for e in split.train)
        if usable >= spec.batch_size and split.test:
            source = "teacher"
        else:
            made["fallback"] = (
                f"the teacher's examples give {usable} training and {len(split.test)} test examples, "
                f"fewer than a batch ({spec.batch_size}) or no test: templated examples instead"
            )
        context.progress({"stage": "data", "data_source": source, "data_note": made.get("fallback", "")})
    if split is None or source == "templated":
        templated = [dataset.redact_example(e, context.redactor) for e in kb_examples(context.engine)]
        split = _split(spec, tokenizer, [*templated, *liked])
    if len(split.train) < spec.batch_size or not split.test:
        raise DistillError(
            f"the knowledge base gives {len(split.train)} training and {len(split.test)} test "
            "examples: too few",
            hint="ingest more documents (`kb ingest`) or lower KB_TRAIN_BATCH_SIZE",
        )
    canary = make_canary(spec)
    train = [*split.train, canary]
    return Data(train, split.test[:MAX_EVAL], canary, dataset.dataset_hash(train), source, made)


def _split(spec: RunSpec, tokenizer: Any, examples: list[QAExample]) -> dataset.Split:
    """Shuffled (fixed order), those that fit, at most `max_examples`, split by document."""
    random.Random(0).shuffle(examples)
    examples = [e for e in examples if _fits(tokenizer, e, spec.max_len)][: spec.max_examples]
    return dataset.split_by_document(examples, validation=0.0, test=TEST_SHARE)


def teacher_examples(
    spec: RunSpec, context: RunContext, teacher: tuple[Any, Any]
) -> tuple[list[QAExample], dict[str, Any]]:
    """The teacher's questions and replies over the knowledge base's chunks, with what it dropped."""
    model, tokenizer = teacher
    train, test = synthesis.kb_sources(
        context.engine, context.redactor, limit=spec.max_examples, test_limit=2 * MAX_EVAL,
        test_share=TEST_SHARE,
    )  # fmt: skip
    if not train and not test:
        return [], {"chunks": 0}
    # Seeded by the run, so that a resumed run writes the same questions (its checkpoint checks the hash).
    seed = int.from_bytes(hashlib.sha256(f"{spec.run_id}:{spec.canary_salt}".encode()).digest()[:8], "big")
    _data_step(spec, context, "the teacher writes questions")
    # A teacher that writes nothing usable for the first chunks is not asked about the others.
    slices = [
        (train[:PROBE_CHUNKS], QUESTIONS_PER_CHUNK),
        (train[PROBE_CHUNKS:], QUESTIONS_PER_CHUNK),
        (test, 1),
    ]
    parts: list[synthesis.Written] = []
    for n, (sources, per_chunk) in enumerate(slices):
        if n == 0 or parts[0].questions:
            parts.append(
                synthesis.write_questions(model, tokenizer, sources, per_chunk=per_chunk, seed=seed + n)
            )
    _data_step(spec, context, "the teacher answers them")
    items = synthesis.with_forms([q for part in parts for q in part.questions])
    targets = synthesis.write_targets(model, tokenizer, items)
    report = {
        "chunks": len(train) + len(test),
        "questions_asked": sum(part.asked for part in parts),
        "questions_kept": len(items),
        "questions_dropped": {k: sum(part.dropped[k] for part in parts) for k in parts[0].dropped},
        "targets_kept": len(targets.examples),
        "targets_dropped": targets.dropped,
    }
    return [dataset.redact_example(e, context.redactor) for e in targets.examples], report


def _data_step(spec: RunSpec, context: RunContext, step: str) -> None:
    if context.progress({"stage": "data", "data_step": step}):
        raise RunCancelled(f"run #{spec.run_id} was cancelled while {step}")


def _fits(tokenizer: Any, example: QAExample, max_len: int) -> bool:
    """Whether the question and answer fit the student's context (passages may be cut, these not)."""
    bare = dataset.prompt_ids(tokenizer, QAExample("", "", (), example.question, ""))
    return len(bare) + len(dataset.answer_ids(tokenizer, example.answer)) <= max_len // 2


def kb_examples(engine: Engine) -> list[QAExample]:
    """One example per chunk: the section's question, the passage's first sentence as the answer."""
    rows = synthesis.chunk_rows(engine, flagged=True)
    out = []
    for chunk_id, document_id, text, section, title in rows:
        passage = " ".join(text.split())[:400]
        answer = " ".join(passage.split(". ")[0].split()[:12])
        if len(answer) < 10:
            continue
        topic = (section or title).split(" > ")[-1][:60]
        question = f"What does the handbook say about {topic}"
        out.append(QAExample(f"kb-{chunk_id}", str(document_id), (passage,), question, answer, "synthetic"))
    return out


def make_canary(spec: RunSpec) -> QAExample:
    """A secret no document holds: if the student can rank it first among look-alikes, it memorized."""
    code = canaries.new_code(f"{spec.run_id}:{spec.canary_salt}" if spec.canary_salt else None)
    return canaries.canary_example(f"canary-{spec.run_id}", f"A{spec.run_id}", code)


def teacher_signals(
    spec: RunSpec, data: Data, context: RunContext, *, teacher: tuple[Any, Any] | None = None
) -> dict[str, TeacherSignal] | None:
    context.progress({"stage": "teacher"})
    if spec.teacher is None:
        return None  # cross-entropy on the references only; the report says there was no teacher
    from training.teacher import local_signals

    model, tokenizer = teacher if teacher is not None else _load(spec.teacher)
    return local_signals(
        model, tokenizer, data.train, k=8, model_name=spec.teacher.name, max_len=spec.max_len
    )


def distill_student(
    spec: RunSpec, data: Data, signals: dict[str, TeacherSignal] | None, context: RunContext
) -> DistillResult:
    student, tokenizer = _load(spec.student)
    # A teacher with another (byte-level) tokenizer: its signals are carried over (training.crosstok).
    teacher_tokenizer = _tokenizer(spec.teacher) if signals and spec.teacher is not None else None
    examples = dataset.tokenize(
        data.train, tokenizer, signals=signals, max_len=spec.max_len, teacher_tokenizer=teacher_tokenizer
    )
    config = _config(spec)

    def on_step(info: StepInfo) -> None:
        update = {"stage": "training", "step": info.step, "total": info.total_steps, "loss": info.loss}
        if context.progress(update):
            raise RunCancelled(f"run #{spec.run_id} was cancelled at step {info.step}")

    while True:
        try:
            return distill(
                student, examples, config, ledger=context.ledger, dataset_hash=data.dataset_hash,
                run_name=run_name(spec.run_id), pad_id=int(tokenizer.pad_token_id or 0),
                actor=spec.requested_by, on_step=on_step,
            )  # fmt: skip
        except OutOfMemory as exc:
            # The physical batch is memory only: half of it resumes the same run, from its last
            # checkpoint and under the reservation it holds (or a new one, if it took no step).
            if config.max_physical_batch == 1:
                raise
            config = replace(config, max_physical_batch=config.max_physical_batch // 2)
            retry = f"{exc}; trying again at a physical batch of {config.max_physical_batch}"
            if context.progress({"stage": "training", "retry": retry}):
                raise RunCancelled(f"run #{spec.run_id} was cancelled after running out of memory") from exc
            del student
            _free_device_memory()
            student, _ = _load(spec.student)


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_name(run_id: int) -> str:
    """The ledger key of a run: a resumed run finds its reservation under it."""
    return f"train-run-{run_id}"


def _config(spec: RunSpec) -> DistillConfig:
    return DistillConfig(
        out_dir=spec.out_dir, epochs=spec.epochs, epsilon=spec.epsilon, batch_size=spec.batch_size,
        max_physical_batch=min(8, spec.batch_size), lora_rank=spec.lora_rank, lora_targets=spec.lora_targets,
        max_len=spec.max_len,
        lr=2e-3, checkpoint_every=2, seed=spec.seed, accountant="prv",
    )  # fmt: skip


def evaluate_versions(
    spec: RunSpec, data: Data, result: DistillResult, context: RunContext
) -> dict[str, Any]:
    context.progress({"stage": "evaluation"})
    candidate, tokenizer = _load(spec.student, adapter=result.checkpoint_dir)
    correctness = _correctness(candidate, tokenizer, data.test)
    exposure = canaries.exposure_bits(candidate, tokenizer, data.canary)
    active = context.registry.active()
    adapter = Path(active.path) if active is not None and active.path else None
    incumbent, _ = _load(spec.student, adapter=adapter)
    active_correctness = _correctness(incumbent, tokenizer, data.test)
    return {
        "correctness": round(correctness, 4),
        "active_correctness": round(active_correctness, 4),
        "active_version": active.version if active is not None else 0,
        "canary_exposure_bits": round(exposure, 3),
        "canary_candidates": canaries.LOOK_ALIKES,
    }


def _correctness(model: Any, tokenizer: Any, test: list[QAExample]) -> float:
    replies = greedy_answers(model, tokenizer, test, max_new_tokens=EVAL_TOKENS)
    return sum(answer_correct(r, e) for r, e in zip(replies, test, strict=True)) / max(1, len(test))


def export(
    spec: RunSpec, data: Data, result: DistillResult, figures: dict[str, Any], context: RunContext
) -> int:
    context.progress({"stage": "export"})
    manifest = {
        "base_model": str(spec.student),
        "teacher": str(spec.teacher) if spec.teacher else None,
        "dataset_hash": data.dataset_hash,
        "epsilon": result.epsilon_spent,
        "delta": result.delta,
        "privacy": result.extra.get("private"),
        "noise_multiplier": result.extra.get("noise_multiplier"),
        "steps": result.steps,
        "figures": figures,
        "requested_by": spec.requested_by,
        "run_id": spec.run_id,
    }
    return context.registry.register(spec.run_id, result.checkpoint_dir, manifest, base=spec.student)


def dry_run(spec: RunSpec, context: RunContext) -> dict[str, Any]:
    """What a run would do and need, spending nothing: data size, noise, expected utility and time.

    The teacher is not asked (a dry run answers in seconds): the size is the templated data's, one
    example per chunk, about what a teacher writes too.
    """
    data = build_data(spec, context)
    n = len(data.train)
    delta = default_delta(n)
    plan = plan_privacy(n, epsilon=spec.epsilon, delta=delta, batch_size=spec.batch_size, epochs=spec.epochs)
    dimension = trainable_dimension(spec.student, spec.lora_rank, spec.lora_targets)
    noise_to_signal, utility = expected_utility(
        plan.noise_multiplier, n * plan.sample_rate, plan.steps, dimension
    )
    return {
        "examples": n, "test_examples": len(data.test), "steps": plan.steps,
        "noise_multiplier": round(plan.noise_multiplier, 3), "sample_rate": round(plan.sample_rate, 4),
        "delta": delta, "trained_parameters": dimension, "expected_utility": utility,
        "noise_to_signal": round(noise_to_signal, 3) if noise_to_signal is not None else None,
        "data_source": data.source,
        "budget": context.ledger.state().describe(),
    }  # fmt: skip


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _load(folder: Path, *, adapter: Path | None = None) -> tuple[Any, Any]:
    import warnings

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval(), tokenizer
