"""The distillation loop end to end on a tiny Llama: budget, checkpoints, kill and resume, LoRA, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from sqlalchemy import Engine

from core import db
from core.settings import Settings
from privacy.audit import AuditLog
from privacy.budget import BudgetExceededError, BudgetLedger
from tests.training.students import load_student, synthetic_examples, worker_config
from training.distill import StepInfo, distill
from training.dp import DistillError, OutOfMemory
from training.types import PRIVACY_UNIT, DistillConfig, DistillResult, TrainExample

N = 32


@pytest.fixture
def ledger_engine(make_settings: Callable[..., Settings], tmp_path: Path) -> Engine:
    engine = db.make_engine(make_settings(database_url=f"sqlite:///{tmp_path / 'kb.db'}"))
    db.upgrade(engine)
    return engine


def _config(out: Path, **overrides: Any) -> DistillConfig:
    base = DistillConfig(
        out_dir=out,
        epochs=2,
        batch_size=8,
        max_physical_batch=4,
        lr=3e-3,
        epsilon=8.0,
        accountant="rdp",
        checkpoint_every=2,
        max_len=32,
        seed=0,  # reproducible, hence "not private": these tests compare runs step for step
    )
    return replace(base, **overrides)


def _scratch_ledger(out_dir: Path) -> BudgetLedger:
    """A ledger of its own for a run whose spending the test does not look at (private runs need one)."""
    from core.settings import load_settings

    path = out_dir.parent / f"{out_dir.name}-ledger.db"
    engine = db.make_engine(load_settings(database_url=f"sqlite:///{path}"))
    db.upgrade(engine)
    return BudgetLedger(engine, epsilon=1000.0, delta=0.5)


def _run(
    student_dir: Path,
    config: DistillConfig,
    ledger: BudgetLedger | None,
    *,
    run: str = "run",
    examples: list[TrainExample] | None = None,
    stop_at: int | None = None,
) -> DistillResult:
    model = load_student(student_dir)

    def stop(info: StepInfo) -> None:
        if stop_at is not None and info.step == stop_at:
            raise KeyboardInterrupt  # what a kill leaves behind: no settle, no clean-up after this step

    data = examples if examples is not None else synthetic_examples(N, vocab=model.config.vocab_size)
    if ledger is None and config.epsilon is not None:
        ledger = _scratch_ledger(config.out_dir)
    return distill(
        model, data, config, ledger=ledger, dataset_hash="hash-1", run_name=run, pad_id=0, on_step=stop
    )


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(str(folder)).state_dict().items()}


def test_a_private_run_spends_what_it_planned_and_saves_a_plain_model(
    student_dir: Path, tmp_path: Path, ledger_engine: Engine
) -> None:
    ledger = BudgetLedger(ledger_engine, epsilon=20.0, delta=1e-4)
    result = _run(student_dir, _config(tmp_path / "out"), ledger)
    assert result.steps == 8 and result.epochs == 2.0  # 32 examples / 8 per batch x 2 epochs
    assert result.epsilon_spent is not None and 7.9 <= result.epsilon_spent <= 8.0
    assert result.delta == pytest.approx(1e-5) and result.privacy_unit == PRIVACY_UNIT
    # a few thousand weights x 8 examples: the per-example gradients fit, so "auto" takes hooks
    assert result.extra["grad_sample_mode"] == "hooks" and result.extra["noise_multiplier"] > 0
    assert result.mean_step_time_s > 0 and result.peak_memory_bytes >= 0
    [entry] = ledger.entries()
    assert entry.status == "settled" and entry.epsilon_spent == pytest.approx(result.epsilon_spent)
    assert entry.dataset_hash == "hash-1" and entry.privacy_unit == PRIVACY_UNIT
    trained = _weights(result.checkpoint_dir)  # a plain HF folder: no Opacus, no "_module." prefix
    original = load_student(student_dir).state_dict()
    assert set(trained) == set(original)
    assert any(not torch.equal(trained[k], original[k]) for k in original)


@pytest.mark.slow
def test_the_cpu_trains_in_fp32_unless_asked_for_bf16_autocast(student_dir: Path, tmp_path: Path) -> None:
    plain = _run(student_dir, _config(tmp_path / "fp32", epsilon=None, epochs=1), None)
    asked = _run(student_dir, _config(tmp_path / "bf16", epsilon=None, epochs=1, cpu_bf16=True), None)
    assert plain.extra["bf16_autocast"] is False and asked.extra["bf16_autocast"] is True
    # Same seed, same data: bf16 matmuls move the losses a little, not the run.
    assert asked.final_loss == pytest.approx(plain.final_loss, rel=0.05)
    assert asked.final_loss != plain.final_loss


def test_a_killed_run_resumes_without_counting_epsilon_twice(
    student_dir: Path, tmp_path: Path, ledger_engine: Engine
) -> None:
    straight = _run(student_dir, _config(tmp_path / "straight"), None)
    ledger = BudgetLedger(ledger_engine, epsilon=10.0, delta=1e-4)
    config = _config(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        _run(student_dir, config, ledger, stop_at=5)  # checkpoint at step 4; step 5 is lost
    [held] = ledger.entries()
    assert held.status == "reserved" and held.epsilon_planned == pytest.approx(8.0)
    resumed = _run(student_dir, config, ledger)
    assert resumed.extra["resumed_from_step"] == 4 and resumed.steps == 8
    assert resumed.epsilon_spent == pytest.approx(straight.epsilon_spent)
    [entry] = ledger.entries()
    assert entry.status == "settled" and entry.epsilon_spent == pytest.approx(straight.epsilon_spent)
    assert [r.action for r in AuditLog(ledger_engine).tail(10, action="budget.")] == [
        "budget.reserve",
        "budget.resume",
        "budget.settle",
    ]
    a, b = _weights(straight.checkpoint_dir), _weights(resumed.checkpoint_dir)
    for key in a:  # same samples, same noise, same optimizer state: the very same model
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_secure_mode_is_the_default_and_a_seed_marks_the_run_not_private(
    student_dir: Path, tmp_path: Path
) -> None:
    secure = _run(student_dir, _config(tmp_path / "secure", epochs=1, seed=None), None)
    assert secure.extra["secure_mode"] and secure.extra["private"].startswith("private")
    seeded = _run(student_dir, _config(tmp_path / "seeded", epochs=1), None)
    assert not seeded.extra["secure_mode"] and seeded.extra["private"].startswith("not private")


def test_a_private_run_without_the_ledger_is_refused(student_dir: Path, tmp_path: Path) -> None:
    model = load_student(student_dir)
    data = synthetic_examples(N, vocab=model.config.vocab_size)
    with pytest.raises(DistillError, match="needs the privacy budget ledger"):
        distill(model, data, _config(tmp_path / "x"), ledger=None, dataset_hash="h", run_name="r", pad_id=0)


def test_resuming_with_another_configuration_is_refused(student_dir: Path, tmp_path: Path) -> None:
    config = _config(tmp_path / "out", epochs=1)
    with pytest.raises(KeyboardInterrupt):
        _run(student_dir, config, None, stop_at=2)
    with pytest.raises(DistillError, match=r"another run or configuration.*lr"):
        _run(student_dir, replace(config, lr=1e-2), None)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_lora_adapters_really_change_under_dp_and_the_base_does_not(
    student_dir: Path, tmp_path: Path, mode: str
) -> None:
    from peft import PeftModel

    config = _config(tmp_path / "lora", lora_rank=4, epochs=1, epsilon=50.0, grad_sample_mode=mode)
    result = _run(student_dir, config, None)
    assert result.extra["grad_sample_mode"] == mode
    base = load_student(student_dir)
    original = {k: v.clone() for k, v in base.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft calls a deprecated transformers API
        adapted = PeftModel.from_pretrained(base, str(result.checkpoint_dir))
    lora = {k: v for k, v in adapted.state_dict().items() if "lora_" in k}
    assert lora and all(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at zero
    merged = adapted.merge_and_unload().state_dict()
    changed = [k for k in original if not torch.equal(original[k], merged[k])]
    assert changed and all("proj" in k for k in changed)


def test_without_epsilon_the_same_loop_trains_without_opacus(
    student_dir: Path, tmp_path: Path, ledger_engine: Engine
) -> None:
    ledger = BudgetLedger(ledger_engine, epsilon=1.0, delta=1e-4)
    result = _run(student_dir, _config(tmp_path / "plain", epochs=3, epsilon=None), ledger)
    assert result.epsilon_spent is None and result.delta is None and result.extra["grad_sample_mode"] is None
    assert ledger.entries() == []
    losses = result.extra["losses"]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])


@pytest.mark.parametrize(
    ("examples", "overrides", "message"),
    [
        ([], {}, "no training examples"),
        (synthetic_examples(6, vocab=200), {}, "fewer than one batch of 8"),
        (None, {"epsilon": 0.01}, "noise multiplier above 10"),
        (None, {"delta": 0.5}, "not below 1/N"),
    ],
)
def test_bad_input_is_refused_before_the_ledger_is_touched(
    student_dir: Path,
    tmp_path: Path,
    ledger_engine: Engine,
    examples: Any,
    overrides: dict[str, Any],
    message: str,
) -> None:
    ledger = BudgetLedger(ledger_engine, epsilon=10.0, delta=1e-4)
    with pytest.raises(DistillError, match=message):
        _run(student_dir, _config(tmp_path / "bad", **overrides), ledger, examples=examples)
    assert ledger.entries() == [] and AuditLog(ledger_engine).tail(5, action="budget.") == []


def test_a_student_opacus_cannot_handle_spends_nothing(
    student_dir: Path, tmp_path: Path, ledger_engine: Engine
) -> None:
    ledger = BudgetLedger(ledger_engine, epsilon=10.0, delta=1e-4)
    model = load_student(student_dir)
    model.lm_head.register_buffer("bias_stats", torch.zeros(4))  # a trainable layer with state
    data = synthetic_examples(N, vocab=model.config.vocab_size)
    with pytest.raises(DistillError, match="Opacus cannot train this student"):
        distill(model, data, _config(tmp_path / "o"), ledger=ledger, dataset_hash="h", run_name="r", pad_id=0)
    assert ledger.entries() == []


def test_a_run_over_budget_is_refused_before_training(
    student_dir: Path, tmp_path: Path, ledger_engine: Engine
) -> None:
    ledger = BudgetLedger(ledger_engine, epsilon=5.0, delta=1e-4)
    with pytest.raises(BudgetExceededError, match="only ε=5"):
        _run(student_dir, _config(tmp_path / "over"), ledger)
    assert not (tmp_path / "over" / "checkpoints").exists()


def test_a_failure_before_the_first_step_releases_the_reservation(
    student_dir: Path, tmp_path: Path, ledger_engine: Engine
) -> None:
    ledger = BudgetLedger(ledger_engine, epsilon=10.0, delta=1e-4)
    broken = [replace(e, input_ids=(*e.input_ids[:-1], 10**6)) for e in synthetic_examples(N, vocab=200)]
    with pytest.raises(IndexError):
        _run(student_dir, _config(tmp_path / "broken"), ledger, examples=broken)
    assert ledger.entries() == []
    assert [r.action for r in AuditLog(ledger_engine).tail(5, action="budget.")] == [
        "budget.reserve",
        "budget.release",
    ]


@pytest.mark.slow
def test_a_process_killed_with_sigkill_resumes_from_its_last_checkpoint(
    student_dir: Path, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    database = f"sqlite:///{tmp_path / 'kb.db'}"
    engine = db.make_engine(make_settings(database_url=database))
    db.upgrade(engine)
    worker = Path(__file__).with_name("ddp_worker.py")
    command = [sys.executable, str(worker), "--student", str(student_dir), "--out", str(tmp_path),
               "--database", database, "--run", "killed", "--epochs", "2", "--pause-after", "5"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(worker.parents[2])}
    log = tmp_path / "worker.log"
    with log.open("w") as errors, subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors,
                                                  text=True) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            if not any(line.strip() == "step 5" for line in process.stdout):
                pytest.fail(f"the worker ended early: {log.read_text()[-3000:]}")
            process.kill()  # SIGKILL: no handler runs, nothing is settled or released
        finally:
            process.kill()
            process.wait(timeout=60)
    ledger = BudgetLedger(engine, epsilon=10.0, delta=1e-4)
    [held] = ledger.entries()
    assert held.status == "reserved"
    config = worker_config(tmp_path, epochs=2)
    model = load_student(student_dir)
    data = synthetic_examples(N, vocab=model.config.vocab_size)
    resumed = distill(model, data, config, ledger=ledger, dataset_hash="h", run_name="killed", pad_id=0)
    straight = distill(load_student(student_dir), data, replace(config, out_dir=tmp_path / "straight"),
                       ledger=BudgetLedger(engine, epsilon=20.0, delta=1e-3), dataset_hash="h",
                       run_name="straight", pad_id=0)  # fmt: skip
    assert resumed.extra["resumed_from_step"] == 4 and resumed.steps == straight.steps == 8
    assert resumed.epsilon_spent == pytest.approx(straight.epsilon_spent)
    [entry] = [e for e in ledger.entries() if e.run_id == "killed"]
    assert entry.status == "settled" and entry.epsilon_spent == pytest.approx(straight.epsilon_spent)


# Out of memory -------------------------------------------------------------------------------------


def _fits(model: Any, rows: int, *, after: int = 0) -> None:
    """Make `model` run out of memory, as a GPU would, on any forward pass of more than `rows`
    examples once `after` forward passes have gone through."""
    calls = [0]

    def check(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        calls[0] += 1
        if calls[0] > after and args[0].shape[0] > rows:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model.get_input_embeddings().register_forward_pre_hook(check)


def _run_fitting(
    student_dir: Path, config: DistillConfig, ledger: BudgetLedger, *, rows: int, after: int = 0
) -> DistillResult:
    model = load_student(student_dir)
    _fits(model, rows, after=after)
    data = synthetic_examples(N, vocab=model.config.vocab_size)
    return distill(model, data, config, ledger=ledger, dataset_hash="hash-1", run_name="run", pad_id=0)


def test_a_run_out_of_memory_resumes_at_a_smaller_physical_batch_under_its_reservation(
    student_dir: Path, tmp_path: Path, ledger_engine: Engine
) -> None:
    ledger = BudgetLedger(ledger_engine, epsilon=10.0, delta=1e-4)
    config = _config(tmp_path / "oom", max_physical_batch=4)
    with pytest.raises(OutOfMemory, match=r"physical batch of 4 after step [2-7] of 8; its reservation"):
        _run_fitting(student_dir, config, ledger, rows=2, after=6)
    [held] = ledger.entries()
    assert held.status == "reserved" and held.epsilon_planned == pytest.approx(8.0)
    # The physical batch is memory only: the same run resumes with a smaller one, nothing spent twice.
    resumed = _run_fitting(student_dir, replace(config, max_physical_batch=2), ledger, rows=2)
    assert resumed.steps == 8 and resumed.extra["resumed_from_step"] in (2, 4, 6)
    [entry] = ledger.entries()
    assert entry.status == "settled" and 7.9 <= (entry.epsilon_spent or 0) <= 8.0


def test_a_run_out_of_memory_before_its_first_step_gives_its_reservation_back(
    student_dir: Path, tmp_path: Path, ledger_engine: Engine
) -> None:
    ledger = BudgetLedger(ledger_engine, epsilon=10.0, delta=1e-4)
    config = _config(tmp_path / "oom", max_physical_batch=4)
    with pytest.raises(OutOfMemory, match="before the first step; nothing was spent and the reservation"):
        _run_fitting(student_dir, config, ledger, rows=2)
    assert ledger.entries() == []
    # Nothing is held: the run starts again at a smaller physical batch and reserves anew.
    _run_fitting(student_dir, replace(config, max_physical_batch=2), ledger, rows=2)
    [entry] = ledger.entries()
    assert entry.status == "settled"


def test_a_retraining_run_out_of_memory_goes_on_at_half_the_physical_batch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from training import run

    tried: list[int] = []
    trained = object()

    def fake_distill(_model: Any, _examples: Any, config: DistillConfig, **_: Any) -> Any:
        tried.append(config.max_physical_batch)
        if config.max_physical_batch > 2:
            raise OutOfMemory(f"cuda ran out of memory at a physical batch of {config.max_physical_batch}")
        return trained

    class Tokenizer:
        pad_token_id = 0

    monkeypatch.setattr(run, "distill", fake_distill)
    monkeypatch.setattr(run, "_load", lambda _folder, adapter=None: (object(), Tokenizer()))
    monkeypatch.setattr("training.data.tokenize", lambda *_args, **_kwargs: [])
    updates: list[dict[str, Any]] = []

    def progress(update: dict[str, Any]) -> bool:
        updates.append(update)
        return False  # not cancelled

    spec = run.RunSpec(run_id=7, epsilon=8.0, epochs=1, student=tmp_path, teacher=None, out_dir=tmp_path)
    data = run.Data(train=[], test=[], canary=cast(Any, None), dataset_hash="h")
    context = run.RunContext(engine=cast(Any, None), ledger=cast(Any, None), registry=cast(Any, None),
                             progress=progress)  # fmt: skip
    assert run.distill_student(spec, data, None, context) is trained
    assert tried == [8, 4, 2]
    assert [u["retry"].rsplit(" ", 1)[1] for u in updates] == ["4", "2"]
    # At a physical batch of 1 there is nothing smaller to try: the error is the run's.
    tried.clear()
    monkeypatch.setattr(run, "_config", lambda _spec: DistillConfig(out_dir=tmp_path, max_physical_batch=1))
    monkeypatch.setattr(run, "distill", lambda *_a, **_k: (_ for _ in ()).throw(OutOfMemory("out of memory")))
    with pytest.raises(OutOfMemory):
        run.distill_student(spec, data, None, context)
