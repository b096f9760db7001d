"""The parts of the distillation loop that are about where it runs, not what it learns.

Physical batches under Opacus's memory manager, the input checks made before any budget is
reserved, checkpoints with every rank's sampler state, the run's fingerprint for the ledger, the
guarantee a result states, the process group's rank and size, and peak memory. training.distill
reads top to bottom without them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from training import checkpoint, dp
from training.dp import DistillError
from training.losses import IGNORE
from training.types import DistillConfig


def learning_rate(config: DistillConfig, step: int, total_steps: int) -> float:
    """Linear warm-up over the first `warmup` share of the steps, then linear decay to a tenth.

    A function of the step alone, so a resumed run continues the schedule exactly.
    """
    warmup = max(1, round(config.warmup * total_steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    left = (total_steps - step) / max(1, total_steps - warmup)
    return config.lr * (0.1 + 0.9 * max(0.0, left))


def physical_batches(
    loader: DataLoader[Any], private: dp.PrivateTraining | None, max_physical: int
) -> Iterator[tuple[dict[str, torch.Tensor], bool]]:
    """Physical batches of one epoch, each with whether it ends its logical batch (known without DP only)."""
    if private is not None:
        from opacus.utils.batch_memory_manager import BatchMemoryManager  # type: ignore[import-untyped]

        with BatchMemoryManager(
            data_loader=private.data_loader, max_physical_batch_size=max_physical, optimizer=private.optimizer
        ) as physical:
            for batch in physical:
                yield batch, False
        return
    for batch in loader:
        size = len(batch["input_ids"])
        for start in range(0, max(size, 1), max_physical):
            yield {k: v[start : start + max_physical] for k, v in batch.items()}, start + max_physical >= size


def attention_kernels(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Attention kernels for training on `device`: on CUDA every SDPA backend but cuDNN's.

    cuDNN's backward (the default on Hopper GPUs since torch 2.11) returns NaN query gradients
    when a mask is passed, the length is 64 past a multiple of 128 and a row's log-sum-exp is below
    ln(FLT_MAX)'s negative, which Qwen2.5's attention sinks reach (pytorch/pytorch#196678): about
    one physical batch in 150 of the handbook run, each time destroying the weights. The backward
    follows the forward's choice, so the forward alone needs the context.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def check_finite(module: nn.Module, step: int) -> None:
    """Refuse to go on (or to checkpoint) once a trained weight is NaN or infinite."""
    if any(not bool(torch.isfinite(p).all()) for p in module.parameters() if p.requires_grad):
        raise DistillError(
            f"the trained weights are no longer finite after step {step}; the run stops before saving them",
            hint="lower the learning rate or train in fp32 (bf16=False); the ε spent so far stays spent",
        )


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 itself (AVX512-BF16 or AMX), where CPU autocast pays (Linux)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def answer_window(labels: torch.Tensor) -> int:
    """How many trailing positions hold every label of a right-padded batch (at least 1).

    Answers end their sequences, so the logits of these positions are all the loss needs.
    """
    labelled = (labels != IGNORE).any(0).nonzero()
    return labels.shape[1] - int(labelled[0]) if len(labelled) else 1


def check_input(n: int, config: DistillConfig, world: int) -> None:
    if n == 0:
        raise DistillError("there are no training examples", hint="build the dataset first (training.data)")
    if n < config.batch_size:
        raise DistillError(
            f"{n} training examples are fewer than one batch of {config.batch_size}",
            hint="add examples or lower batch_size (DP-SGD needs many examples per batch to learn anything)",
        )
    if config.epsilon is not None and not (config.epsilon > 0 and math.isfinite(config.epsilon)):
        raise DistillError(f"target ε must be a positive number, not {config.epsilon}")
    if config.epochs < 1 or config.max_physical_batch < 1 or config.checkpoint_every < 1:
        raise DistillError("epochs, max_physical_batch and checkpoint_every must be at least 1")
    if world > 1 and config.epsilon is None:
        raise DistillError("data-parallel training is only wired for DP runs", hint="set an epsilon")


def save_checkpoint(
    out_dir: Path,
    step: int,
    module: nn.Module,
    optimizer: Any,
    private: dp.PrivateTraining | None,
    sampler: dp.PoissonSampler,
    noise: torch.Generator,
    losses: list[float],
    step_times: list[float],
    identity: dict[str, Any],
) -> None:
    samplers = [sampler.generator.get_state()]
    if sampler.world_size > 1:
        gathered: list[Any] = [None] * sampler.world_size
        torch.distributed.all_gather_object(gathered, samplers[0])  # ranks resume their own draws
        samplers = gathered
    if sampler.rank != 0:
        return
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "sampler": samplers,
        "noise": noise.get_state(),
        "accountant": private.engine.accountant.state_dict() if private else None,
        "torch_rng": torch.get_rng_state(),
        "losses": list(losses),
        "step_times": list(step_times),
    }
    checkpoint.save(out_dir, step, model=dp.unwrap(module), state=state, identity=identity)


def fingerprint(identity: dict[str, Any]) -> str:
    """A digest of what a run is (configuration, data, name): a resume must bring the same one."""
    stable = {k: v for k, v in identity.items() if k not in checkpoint.IGNORED_KEYS}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:32]


def guarantee(config: DistillConfig) -> str:
    if config.epsilon is None:
        return "not private: trained without differential privacy"
    if config.seed is not None:
        return f"not private: seeded noise and sampling (seed {config.seed}), for tests only"
    return f"private: (ε={config.epsilon}, δ) DP-SGD, noise and sampling from OS entropy"


def rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share_failure(exc: BaseException | None) -> None:
    """Under torchrun, tell every rank whether rank 0's budget reservation failed."""
    rank, world = rank_and_world()
    if world == 1:
        return
    message = [str(exc) if exc is not None else None]
    torch.distributed.broadcast_object_list(message, src=0)
    if rank != 0 and message[0] is not None:
        raise DistillError(f"rank 0 could not start the run: {message[0]}")


def peak_memory(device: torch.device, rss_before_kib: int) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib) * 1024
