"""The distillation loop: a student learns a teacher's answers under DP-SGD, within a privacy budget.

Reads top to bottom like nanoGPT's train.py: check the input, plan the noise, prepare the student,
resume or reserve budget, wrap with Opacus, train, checkpoint, settle the budget.

    result = distill(student, train_examples, DistillConfig(out_dir=Path("runs/r1"), epsilon=8.0),
                     ledger=ledger, dataset_hash=h, run_name="r1", pad_id=tokenizer.pad_token_id)

`config.epsilon = None` trains with the very same loop and batches but without Opacus (the
benchmark's non-private baseline). Under `torchrun` (a process group already initialized by the
caller) the same function trains data-parallel with Opacus's DPDDP; rank 0 alone talks to the
ledger and writes checkpoints.

The privacy unit is one training example (types.PRIVACY_UNIT): Poisson sampling and clipping are
per example, so an employee's question or a passage that appears in several examples is protected
per appearance, not as a whole.

Secure mode (`config.seed is None`, the default and the only mode a real run uses): the Poisson
sampler and the noise generator are reseeded from the OS's cryptographic random source before every
draw, and Opacus adds each step's noise as the mean of 4 normal draws (its defence against
floating-point attacks). Opacus's own secure_mode needs torchcsprng, which builds for no current
torch. A seeded run is reproducible and therefore NOT private (whoever knows the seed can subtract
the noise): tests only; its result says so (`extra["private"]`).

The ledger is mandatory for a DP run: `distill` refuses to train privately without one, so no
training path spends ε without a reservation. A resumed run must bring the same configuration and
data (checkpoint identity and the ledger's fingerprint both refuse changes).

Peak memory: torch.cuda.max_memory_allocated on a GPU; on the CPU the growth of the process's
peak resident set (ru_maxrss) over the run, since torch's allocator is invisible to tracemalloc.
That figure is exact when training drives the process's peak (run each configuration in its own
process, as bench/distill.py does) and a lower bound otherwise.
"""

from __future__ import annotations

import math
import resource
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from training import checkpoint, dp, runtime
from training.batches import collate, example_tensors, trim
from training.dp import DistillError
from training.losses import IGNORE, DistillLoss
from training.types import PRIVACY_UNIT, DistillConfig, DistillResult, TrainExample

if TYPE_CHECKING:
    from privacy.budget import BudgetLedger


@dataclass(frozen=True, slots=True)
class StepInfo:
    """Handed to `on_step` after every optimizer step (progress bars, the bot's run row)."""

    step: int
    total_steps: int
    epoch: int
    loss: float


def distill(
    model: nn.Module,
    examples: Sequence[TrainExample],
    config: DistillConfig,
    *,
    ledger: BudgetLedger | None,
    dataset_hash: str,
    run_name: str,
    pad_id: int,
    actor: str = "training",
    on_step: Callable[[StepInfo], None] | None = None,
) -> DistillResult:
    """Train `model` (a HF causal LM) on `examples`; returns what it did and the ε it spent."""
    private = config.epsilon is not None
    rank, world = runtime.rank_and_world()
    # --- 1. refuse bad input before anything is reserved or wrapped ---
    if private and ledger is None and rank == 0:  # under torchrun rank 0 alone holds the ledger
        raise DistillError(
            "a differentially private run needs the privacy budget ledger: nothing may spend ε unrecorded",
            hint="pass ledger=BudgetLedger.from_settings(settings, engine)",
        )
    # Longest first: a Poisson batch keeps this order, so the physical batches Opacus cuts from it
    # hold rows of like length and pad little (membership, and so the privacy, ignores order).
    rows = sorted(
        (example_tensors(example, config.max_len) for example in examples),
        key=lambda row: -len(row["input_ids"]),
    )
    runtime.check_input(len(rows), config, world)
    n = len(rows)
    delta = (config.delta if config.delta is not None else dp.default_delta(n)) if private else None
    plan = None
    if private:
        assert config.epsilon is not None and delta is not None
        if delta >= 1.0 / n:
            raise DistillError(f"δ={delta:.3g} is not below 1/N = {1 / n:.3g}", hint="leave delta unset")
        plan = dp.plan_privacy(
            n,
            epsilon=config.epsilon,
            delta=delta,
            batch_size=config.batch_size,
            epochs=config.epochs,
            accountant=config.accountant,
            max_noise_multiplier=config.max_noise_multiplier,
        )
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.epochs * steps_per_epoch

    # --- 2. the student: untied, Opacus-ready, LoRA if asked; frozen parts frozen BEFORE wrapping ---
    if config.seed is not None:
        torch.manual_seed(config.seed)
    device = torch.device(config.device)
    model = dp.prepare_student(
        model, lora_rank=config.lora_rank, lora_targets=config.lora_targets, private=private
    ).to(device)
    mode = (
        dp.choose_mode(
            model,
            config.grad_sample_mode,
            physical_batch=min(config.max_physical_batch, config.batch_size),
            hooks_budget_bytes=config.per_example_grad_budget_mb * 2**20,
        )
        if private
        else None
    )
    identity = {**config.to_json(), "run_name": run_name, "dataset_hash": dataset_hash, "world_size": world}
    resume_from = checkpoint.latest(config.out_dir)
    state = checkpoint.load(resume_from, identity=identity, model=model) if resume_from else None

    # --- 3. reserve the budget (a resumed run finds its own reservation) ---
    if private and ledger is not None and rank == 0:
        assert plan is not None
        try:
            ledger.reserve(
                run_name,
                dataset_hash=dataset_hash,
                epsilon=plan.epsilon,
                delta=plan.delta,
                actor=actor,
                privacy_unit=PRIVACY_UNIT,
                fingerprint=runtime.fingerprint(identity),
                details={
                    "noise_multiplier": plan.noise_multiplier,
                    "steps": plan.steps,
                    "examples": n,
                    "sample_rate": plan.sample_rate,
                    "accountant": plan.accountant,
                },
            )
        except Exception as exc:
            runtime.share_failure(exc)
            raise
    runtime.share_failure(None)
    done = [state["step"] if state else 0]  # optimizer steps taken, by this process or before it
    try:
        with warnings.catch_warnings():
            # Opacus's backward hooks on the embedding layer, whose input (token ids) needs no grad.
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            run = _Run(
                rows, config, plan, mode, state, identity, total_steps, steps_per_epoch, pad_id, device
            )
            owner = ledger if rank == 0 else None
            return _train(model, run, on_step=on_step, ledger=owner, run_name=run_name, done=done)
    except BaseException as exc:
        # Nothing spent yet: give the reservation back. Otherwise it stays, covering what was spent,
        # and the run resumes from its last checkpoint under the same name.
        released = False
        if ledger is not None and rank == 0 and private and done[0] == 0:
            released = ledger.release(run_name)
        if isinstance(exc, torch.OutOfMemoryError):
            raise _out_of_memory(config, done[0], total_steps, released=released) from exc
        raise


def _out_of_memory(config: DistillConfig, step: int, total: int, *, released: bool) -> dp.OutOfMemory:
    where = f"{config.device} ran out of memory at a physical batch of {config.max_physical_batch}"
    if step == 0:
        spent = "; nothing was spent" + (" and the reservation was released" if released else "")
        return dp.OutOfMemory(f"{where} before the first step{spent}",
                              hint="run it again with a smaller max_physical_batch")  # fmt: skip
    held = "; its reservation stays, covering what was spent" if config.epsilon is not None else ""
    return dp.OutOfMemory(
        f"{where} after step {step} of {total}{held}",
        hint="run it again under the same name with a smaller max_physical_batch: it resumes from its "
        "last checkpoint (the physical batch is memory only: the logical batch, sampling and noise stay)",
    )


@dataclass(frozen=True)
class _Run:
    """What the loop needs, decided (and checked) before any budget was reserved."""

    rows: list[dict[str, torch.Tensor]]
    config: DistillConfig
    plan: dp.PrivacyPlan | None
    mode: dp.Mode | None
    state: dict[str, Any] | None  # the checkpoint resumed from
    identity: dict[str, Any]
    total_steps: int
    steps_per_epoch: int
    pad_id: int
    device: torch.device


def _train(
    model: nn.Module,
    run: _Run,
    *,
    on_step: Callable[[StepInfo], None] | None,
    ledger: BudgetLedger | None,
    run_name: str,
    done: list[int],
) -> DistillResult:
    rows, config, plan, mode, state = run.rows, run.config, run.plan, run.mode, run.state
    total_steps, steps_per_epoch, pad_id, device = (
        run.total_steps,
        run.steps_per_epoch,
        run.pad_id,
        run.device,
    )
    rank, world = runtime.rank_and_world()
    # --- 4. data: Poisson batches of mean `batch_size`, split into physical batches that fit ---
    sampler = dp.PoissonSampler(
        len(rows),
        sample_rate=1.0 / steps_per_epoch,
        steps=steps_per_epoch,
        seed=config.seed,
        rank=rank,
        world_size=world,
    )
    if sampler.secure and world > 1:
        shared = [sampler.seed]  # every rank's shard comes from one permutation: rank 0's secret seed
        torch.distributed.broadcast_object_list(shared, src=0)
        sampler.seed = int(shared[0])
    loader: DataLoader[dict[str, torch.Tensor]] = DataLoader(
        rows,  # type: ignore[arg-type]  # a list is a map-style dataset
        batch_sampler=sampler,
        collate_fn=lambda batch: collate(batch, pad_id),
    )
    expected_batch = len(rows) / steps_per_epoch
    criterion = DistillLoss(
        kind=config.loss,
        temperature=config.temperature,
        alpha=config.alpha,
        beta=config.jsd_beta,
        sparse=config.sparse,
        reduction="mean" if plan else "sum",
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    secure = config.seed is None
    noise = torch.Generator(device=device)
    if config.seed is None:
        dp.reseed(noise)
    else:
        noise.manual_seed(config.seed * 7919 + 17)
    private = None
    if plan is not None:
        assert mode is not None
        private = dp.make_private(
            model,
            optimizer,
            loader,
            criterion,
            plan,
            max_grad_norm=config.max_grad_norm,
            mode=mode,
            noise_generator=noise,
            secure=secure,
        )
        module, optimizer, criterion = private.module, private.optimizer, private.criterion
    else:
        module = model

    # --- 5. resume: optimizer, accountant, sampler and RNG exactly where the checkpoint left them ---
    step, losses, step_times = 0, [], []
    if state is not None:
        step, losses, step_times = state["step"], state["losses"], state["step_times"]
        optimizer.load_state_dict(state["optimizer"])
        if private is not None:
            private.engine.accountant.load_state_dict(state["accountant"])
        sampler.generator.set_state(state["sampler"][rank])
        noise.set_state(state["noise"])
        torch.set_rng_state(state["torch_rng"])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # --- 6. the loop (bf16 autocast on a GPU that has it; the CPU keeps fp32 unless asked) ---
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    bf16 = config.bf16 and (cuda_bf16 or (device.type == "cpu" and config.cpu_bf16))
    module.train()
    started = time.perf_counter()
    while step < total_steps:
        epoch, sampler.epoch, sampler.skip = (
            step // steps_per_epoch,
            step // steps_per_epoch,
            step % steps_per_epoch,
        )
        step_start, loss_sum, counted = time.perf_counter(), 0.0, 0
        for batch, last in runtime.physical_batches(loader, private, config.max_physical_batch):
            batch = {key: value.to(device) for key, value in trim(batch).items()}
            # Logits only where answers are: the prompt's positions would cost a [B, L, V] tensor
            # (V 150k for Qwen) that the loss never reads.
            keep = runtime.answer_window(batch["labels"])
            autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
            with autocast, runtime.attention_kernels(device):
                logits = module(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"],
                    logits_to_keep=keep,
                ).logits
            # The loss in fp32: a softmax over 150k tokens at temperature 3 loses too much in bf16.
            tail = {k: batch[k][:, -keep:] for k in ("labels", "top_ids", "top_logprobs")}
            loss = criterion(logits.float(), tail["labels"], tail["top_ids"], tail["top_logprobs"])
            if plan is None:
                loss = loss / expected_batch  # summed per-sequence losses -> the logical batch's mean
            loss.backward()
            # Per-sequence mean over the physical batch (DP) or the sum over it / expected_batch (not DP).
            loss_sum += float(loss.item()) * (len(batch["input_ids"]) if plan else expected_batch)
            counted += int((batch["labels"] != IGNORE).any(-1).sum())
            if plan is None and not last:
                continue
            if secure:
                dp.reseed(noise)  # this step's noise from fresh OS entropy (module docstring)
            for group in optimizer.param_groups:
                group["lr"] = runtime.learning_rate(config, step, total_steps)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if private is not None and getattr(optimizer, "_is_last_step_skipped", False):
                continue  # Opacus accumulated this physical batch; the logical step is not over
            step += 1
            done[0] = step
            runtime.check_finite(module, step)
            losses.append(loss_sum / max(1, counted))
            step_times.append(time.perf_counter() - step_start)
            step_start, loss_sum, counted = time.perf_counter(), 0.0, 0
            if step % config.checkpoint_every == 0 or step == total_steps:
                runtime.save_checkpoint(
                    config.out_dir,
                    step,
                    module,
                    optimizer,
                    private,
                    sampler,
                    noise,
                    losses,
                    step_times,
                    run.identity,
                )
            if on_step is not None:
                on_step(StepInfo(step, total_steps, epoch, losses[-1]))
    train_time = time.perf_counter() - started
    if private is not None:
        # Remove Opacus's hooks: the caller's model comes back plain (RMSNorms swapped, weights trained).
        close = getattr(private.module, "_close", None)
        if close is not None:
            close()

    # --- 7. the result: final model, ε spent, budget settled ---
    plain = dp.unwrap(module)
    final_dir = config.out_dir / "final"
    epsilon = dp.epsilon_spent(private.engine, plan.delta) if private and plan else None
    if rank == 0:
        checkpoint.save_model(plain, final_dir)
        if ledger is not None and epsilon is not None:
            ledger.settle(run_name, epsilon_spent=epsilon, details={"steps": step})
    peak = runtime.peak_memory(device, rss_before)
    timed = step_times[1:] or step_times
    return DistillResult(
        steps=step,
        epochs=step / steps_per_epoch,
        epsilon_spent=epsilon,
        delta=plan.delta if plan else None,
        train_time_s=train_time,
        mean_step_time_s=sum(timed) / max(1, len(timed)),
        peak_memory_bytes=peak,
        final_loss=losses[-1] if losses else math.nan,
        checkpoint_dir=final_dir,
        privacy_unit=PRIVACY_UNIT,
        extra={
            "noise_multiplier": plan.noise_multiplier if plan else 0.0,
            "grad_sample_mode": mode,
            "planned_epsilon": plan.epsilon if plan else None,
            "accountant": plan.accountant if plan else None,
            "sample_rate": plan.sample_rate if plan else 1.0 / steps_per_epoch,
            "world_size": world,
            "bf16_autocast": bf16,
            "resumed_from_step": state["step"] if state else None,
            "secure_mode": config.seed is None,
            "private": runtime.guarantee(config),
            "losses": losses,
            "peak_memory_measure": "cuda.max_memory_allocated"
            if device.type == "cuda"
            else "ru_maxrss delta",
        },
    )
