"""DP-SGD with Opacus 1.6, behind one small adapter: plan the noise, prepare the student, wrap, unwrap.

What this module takes care of, each a known way for DP fine-tuning of a language model to go wrong:

- Calibration first (:func:`plan_privacy`): the noise multiplier for a target (ε, δ) is found with
  Opacus's own `get_noise_multiplier`, before anything is wrapped or any budget is reserved, so a
  target that needs absurd noise is refused up front. We then call `make_private` with that noise
  rather than `make_private_with_epsilon`, which calibrates the same way but counts its steps as
  int(epochs / (1 / len(loader))): one step short for some loader lengths (93, 99, 105, ...), so
  the run would take one more step than the noise was calibrated for.
- Sampling (:class:`PoissonSampler`): each example joins each step's batch independently with
  probability q (Opacus's Poisson sampling), with an exact step count, empty batches kept (Opacus's
  distributed sampler drops them, which skips that step's noise and desynchronizes the ranks), a
  generator a checkpoint can save, and one seed per rank.
- The student (:func:`prepare_student`): tied input/output embeddings are untied (a shared weight
  gets its per-example norm from one use only, under-clipping it); Hugging Face's Llama-style
  RMSNorm is swapped for torch's nn.RMSNorm, which Opacus has a per-sample gradient rule for (same
  formula, same state_dict keys); LoRA adapters are added and the base frozen BEFORE wrapping (Opacus
  hooks only what requires grad when it wraps); layers Opacus refuses (BatchNorm...) are fixed with
  ModuleValidator.fix where it can, and explained where it cannot.
- Wrapping (:func:`make_private`): grad_sample_mode "hooks" (every example's gradient materialized,
  one backward pass) when those gradients fit a memory budget, "ghost" (ghost clipping: per-example
  norms without per-example gradients, at the price of a second backward pass) when they do not and
  every trainable layer has an Opacus rule and no weight is shared, "hooks" otherwise. Measured on
  the H200 (bench/results/distill.json, timing_modes): the 0.42M student 1.27x the non-private step
  with hooks against 2.28x with ghost; a 97M student with LoRA 1.12x vs 1.63x; full fine-tuning of
  the 97M (its per-example gradients would take 100 GB at batch 256) 1.74x with ghost. With ghost,
  the criterion Opacus returns MUST be the one called (it runs the two backward passes), which the
  loop does.
- Saving (:func:`unwrap`): checkpoints hold the plain model, so they load into a plain HF model.
"""

from __future__ import annotations

import functools
import math
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from core.errors import KBError

Mode = Literal["ghost", "hooks"]
MAX_DELTA = 1e-5
# Llama-family norms computing weight * x / rms(x): torch's nn.RMSNorm is the same function.
_RMS_NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class DistillError(KBError):
    """A distillation run cannot start or go on; the message says why and what to change."""


class OutOfMemory(DistillError):
    """The device ran out of memory during a run. The physical batch is memory only (the logical
    batch, the sampling and the noise do not depend on it), so the same run resumes with a smaller
    one under the reservation it holds; a run that took no step has had its reservation released."""


def default_delta(n_examples: int) -> float:
    """δ = 1 / N^1.1 (below 1/N, as DP needs), capped at 1e-5."""
    return min(1.0 / math.pow(n_examples, 1.1), MAX_DELTA)


@dataclass(frozen=True, slots=True)
class PrivacyPlan:
    """The noise a run adds, and the (ε, δ) it buys over exactly `steps` Poisson-sampled steps."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps_per_epoch: int
    steps: int
    accountant: str


@functools.lru_cache(maxsize=256)
def epsilon_after(accountant: str, sigma: float, q: float, steps: int, delta: float) -> float:
    """The ε that `steps` Poisson-sampled steps (rate `q`) at noise `sigma` spend, as the DP engine counts."""
    from opacus.accountants import create_accountant  # type: ignore[import-untyped]

    acct = create_accountant(mechanism=accountant)
    acct.history = [(sigma, q, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RDP's "optimal order is the largest alpha" notes
        return float(acct.get_epsilon(delta=delta))


def plan_privacy(
    n_examples: int,
    *,
    epsilon: float,
    delta: float,
    batch_size: int,
    epochs: int,
    accountant: str = "prv",
    max_noise_multiplier: float = 10.0,
) -> PrivacyPlan:
    """The noise multiplier that spends (ε, δ) in `epochs` epochs of Poisson batches of mean `batch_size`.

    Refuses (DistillError) a target that needs more noise than `max_noise_multiplier`: at that point
    the noise drowns the batch's signal and the run would burn budget to learn nothing.
    """
    from opacus.accountants.utils import get_noise_multiplier  # type: ignore[import-untyped]

    steps_per_epoch = math.ceil(n_examples / batch_size)
    q, steps = 1.0 / steps_per_epoch, epochs * steps_per_epoch
    if epsilon_after(accountant, max_noise_multiplier, q, steps, delta) > epsilon:
        raise DistillError(
            f"ε={epsilon} with δ={delta:.3g} over {steps} steps of {n_examples} examples needs a noise "
            f"multiplier above {max_noise_multiplier}: the noise would drown what the model learns",
            hint="raise the target ε, add examples, use fewer epochs or a larger batch",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sigma = get_noise_multiplier(
            target_epsilon=epsilon, target_delta=delta, sample_rate=q, steps=steps, accountant=accountant
        )
    return PrivacyPlan(epsilon, delta, float(sigma), q, steps_per_epoch, steps, accountant)


def reseed(generator: torch.Generator) -> None:
    """Seed `generator` from the OS's cryptographic random source (secure mode: one fresh seed per draw)."""
    generator.manual_seed(secrets.randbits(63))


class PoissonSampler(Sampler[list[int]]):
    """Index batches where every example joins each step independently with probability `sample_rate`.

    Under torch.distributed, rank r draws from its shard (every W-th index of a per-epoch
    permutation shared by all ranks) with its own generator; every rank yields the same number of
    batches, empty ones included. `skip` makes the next epoch start after that many steps (resume).
    """

    def __init__(
        self, n: int, *, sample_rate: float, steps: int, seed: int | None, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.sample_rate, self.steps = n, sample_rate, steps
        self.rank, self.world_size = rank, world_size
        # Secure mode (no seed): every step's draw comes from fresh OS entropy, nothing to replay.
        self.secure = seed is None
        self.seed = secrets.randbits(31) if seed is None else seed
        self.generator = torch.Generator().manual_seed(self.seed * 7919 + rank)
        self.epoch = 0
        self.skip = 0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        indices = torch.arange(self.n)
        if self.world_size > 1:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
            indices = order[self.rank :: self.world_size]
        start, self.skip = self.skip, 0
        for _ in range(start, self.steps):
            if self.secure:
                reseed(self.generator)
            mask = torch.rand(len(indices), generator=self.generator) < self.sample_rate
            yield indices[mask].tolist()


def _swap_rms_norms(model: nn.Module) -> int:
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ in _RMS_NORMS and isinstance(
                getattr(child, "weight", None), nn.Parameter
            ):
                eps = float(getattr(child, "variance_epsilon", getattr(child, "eps", 1e-6)))
                norm = nn.RMSNorm(child.weight.shape, eps=eps, elementwise_affine=True)
                norm.weight = child.get_parameter("weight")
                setattr(parent, name, norm)
                swapped += 1
    return swapped


def untie_embeddings(model: nn.Module) -> bool:
    """Give the output layer its own copy of a weight it shares with the input embeddings."""
    get_in, get_out = (
        getattr(model, "get_input_embeddings", None),
        getattr(model, "get_output_embeddings", None),
    )
    if get_in is None or get_out is None:
        return False
    inputs, outputs = get_in(), get_out()
    if inputs is None or outputs is None or outputs.weight is not inputs.weight:
        return False
    outputs.weight = nn.Parameter(inputs.weight.detach().clone(), requires_grad=inputs.weight.requires_grad)
    config = getattr(model, "config", None)
    if config is not None:
        config.tie_word_embeddings = False
    return True


def prepare_student(
    model: nn.Module, *, lora_rank: int = 0, lora_targets: tuple[str, ...] = (), private: bool = True
) -> nn.Module:
    """The student ready to wrap: untied, Opacus-compatible norms, LoRA added (base frozen), validated.

    `lora_targets` names the projections to adapt (() = every one of LORA_TARGETS the model has).
    Under DP fewer trained parameters mean less noise in total (σ·√d), so a private run may adapt
    only the attention's q_proj and v_proj at a low rank.
    """
    from opacus.validators import ModuleValidator  # type: ignore[import-untyped]

    model.train()  # from_pretrained hands models back in eval mode, which Opacus refuses
    untie_embeddings(model)
    if private:
        _swap_rms_norms(model)
    if lora_rank > 0 and not hasattr(model, "peft_config"):  # a PeftModel already has its adapters
        from peft import LoraConfig, get_peft_model

        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        unknown = sorted(set(lora_targets) - set(LORA_TARGETS))
        if unknown:
            raise DistillError(
                f"LoRA cannot adapt {', '.join(unknown)}", hint=f"choose among {', '.join(LORA_TARGETS)}"
            )
        targets = [t for t in LORA_TARGETS if t in present and (not lora_targets or t in lora_targets)]
        if not targets:
            raise DistillError(
                "LoRA found none of the projection layers it adapts (q_proj, v_proj, ...) in the student",
                hint="use full fine-tuning (lora_rank=0) for this architecture",
            )
        lora = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules=targets, lora_dropout=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft calls a deprecated transformers API
            model = get_peft_model(model, lora)
    if not private:
        return model
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        model = ModuleValidator.fix(model)
        errors = ModuleValidator.validate(model, strict=False)
    if not errors:
        from opacus.grad_sample import GradSampleModule  # type: ignore[import-untyped]

        # A trainable layer that also keeps buffers (running statistics...): its buffers would
        # leak data outside the clipped, noised gradients, and no fixer exists for custom layers.
        errors = GradSampleModule.validate(model, strict=False)
    if errors:
        reasons = "; ".join(sorted({str(e).strip() for e in errors}))[:600]
        raise DistillError(
            f"Opacus cannot train this student privately: {reasons}",
            hint="replace those layers (BatchNorm -> GroupNorm/LayerNorm, nn.LSTM -> opacus.layers.DPLSTM) "
            "or freeze them before distilling",
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise DistillError("the student has no trainable parameter", hint="unfreeze a layer or use LoRA")
    return model


def per_example_grad_bytes(model: nn.Module, physical_batch: int) -> int:
    """Memory of one physical batch's per-example gradients in "hooks" mode (fp32, every trainable weight)."""
    return 4 * physical_batch * sum(p.numel() for p in model.parameters() if p.requires_grad)


def choose_mode(
    model: nn.Module, requested: str, *, physical_batch: int = 1, hooks_budget_bytes: int = 0
) -> Mode:
    """The faster mode that fits: "hooks" when the per-example gradients fit `hooks_budget_bytes`.

    Otherwise "ghost" when every trainable layer has an Opacus per-sample rule and no weight is shared,
    "hooks" when one has not (its per-example gradients come from functorch) or a weight is shared (ghost
    clipping would take its norm from one use only).
    """
    if requested in ("ghost", "hooks"):
        return requested  # type: ignore[return-value]
    if per_example_grad_bytes(model, physical_batch) <= hooks_budget_bytes:
        return "hooks"
    from opacus.grad_sample import (
        GradSampleModule,
        GradSampleModuleFastGradientClipping,
    )

    known = set(GradSampleModule.GRAD_SAMPLERS) | set(GradSampleModuleFastGradientClipping.NORM_SAMPLERS)
    owners: dict[int, int] = {}
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and type(module) not in known:
            return "hooks"  # its per-example gradients would come from functorch: use the plain path
        for p in own:
            owners[id(p)] = owners.get(id(p), 0) + 1
    return "hooks" if any(count > 1 for count in owners.values()) else "ghost"


@dataclass
class PrivateTraining:
    """What `make_private` hands back; `criterion` is Opacus's wrapper in ghost mode (call that one)."""

    module: nn.Module
    optimizer: Any
    criterion: Any
    data_loader: DataLoader[Any]
    engine: Any
    mode: Mode


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader[Any],
    criterion: nn.Module,
    plan: PrivacyPlan,
    *,
    max_grad_norm: float,
    mode: Mode,
    noise_generator: torch.Generator | None = None,
    secure: bool = False,
) -> PrivateTraining:
    """Wrap model, optimizer, loader (already Poisson: see PoissonSampler) and criterion with Opacus.

    Under torch.distributed the model is first wrapped in DPDDP: the optimizer then adds the noise
    on rank 0 only and sums gradients over ranks, so the noise is added once, not once per worker.
    """
    from opacus import PrivacyEngine  # type: ignore[import-untyped]
    from opacus.distributed import (  # type: ignore[import-untyped]
        DifferentiallyPrivateDistributedDataParallel as DPDDP,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Secure RNG turned off": see the docstring of distill
        engine = PrivacyEngine(accountant=plan.accountant)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        model = DPDDP(model)
    try:
        wrapped = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            criterion=criterion,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=False,
            grad_sample_mode=mode,
            loss_reduction="mean",
            noise_generator=noise_generator,
        )
    except NotImplementedError as exc:  # Opacus's validator: a layer it has no rule for
        raise DistillError(
            f"Opacus cannot compute per-example gradients for this student: {exc}",
            hint="freeze or replace that layer, or try grad_sample_mode='hooks'",
        ) from exc
    if mode == "ghost":
        module, dp_optimizer, dp_criterion, dp_loader = wrapped
    else:
        (module, dp_optimizer, dp_loader), dp_criterion = wrapped, criterion
    # Opacus's defence against floating-point attacks on the noise (each draw the mean of 4 normals);
    # the generator itself is reseeded from OS entropy before every step by the training loop.
    dp_optimizer.secure_mode = secure
    return PrivateTraining(module, dp_optimizer, dp_criterion, dp_loader, engine, mode)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain model inside Opacus's GradSampleModule and (DP)DDP wrappers."""
    while True:
        inner = getattr(module, "_module", None)
        if isinstance(inner, nn.Module):
            module = inner
            continue
        if type(module).__name__ in (
            "DifferentiallyPrivateDistributedDataParallel",
            "DistributedDataParallel",
        ):
            module = module.get_submodule("module")
            continue
        return module


def epsilon_spent(engine: Any, delta: float) -> float:
    """ε spent so far by the steps the accountant has seen (0 before the first step)."""
    if not engine.accountant.history:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(engine.get_epsilon(delta))
