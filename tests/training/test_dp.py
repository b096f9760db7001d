"""Opacus DP-SGD on a tiny Llama (head_dim 64): clipping is per example in both modes, pitfalls handled."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.training.students import load_student, synthetic_examples
from training import dp
from training.batches import collate as _collate
from training.batches import example_tensors as _tensors
from training.batches import trim as _trim
from training.losses import DistillLoss


def _batch(vocab: int, n: int = 4) -> dict[str, torch.Tensor]:
    rows = [_tensors(e, 64) for e in synthetic_examples(n, vocab=vocab, seed=3)]
    rows[1] = _tensors(synthetic_examples(1, vocab=vocab, prompt=6, seed=4)[0], 64)  # shorter: padded
    return _collate(rows, pad_id=0)


def _loss(model: nn.Module, batch: dict[str, torch.Tensor], criterion: Any) -> Any:
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
    ).logits
    return criterion(logits, batch["labels"], batch["top_ids"], batch["top_logprobs"])


def _reference_gradient(
    model: nn.Module, batch: dict[str, torch.Tensor], clip: float
) -> dict[str, torch.Tensor]:
    """Clip every example's own gradient to `clip` with plain autograd, and average over the batch."""
    criterion = DistillLoss(reduction="sum")
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    size = len(batch["input_ids"])
    for i in range(size):
        one = {key: value[i : i + 1] for key, value in batch.items()}
        grads = torch.autograd.grad(_loss(model, one, criterion), list(params.values()))
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for name, g in zip(params, grads, strict=True):
            total[name] += g * factor
    return {name: g / size for name, g in total.items()}


def _private_gradient(
    model: nn.Module, batch: dict[str, torch.Tensor], mode: dp.Mode, clip: float
) -> dict[str, Any]:
    plan = dp.PrivacyPlan(
        1.0, 1e-5, 0.0, 1.0, 1, 1, "rdp"
    )  # no noise: the gradient is exactly the clipped mean
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    rows = [{key: value[i] for key, value in batch.items()} for i in range(len(batch["input_ids"]))]
    loader = torch.utils.data.DataLoader(rows, batch_size=len(rows))  # type: ignore[arg-type, var-annotated]
    private = dp.make_private(model, optimizer, loader, DistillLoss(), plan, max_grad_norm=clip, mode=mode)
    loss = _loss(private.module, batch, private.criterion)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Full backward hook is firing", UserWarning
        )  # token ids need no grad
        loss.backward()
    private.optimizer.step()
    grads = {
        name: p.grad.detach().clone()
        for name, p in dp.unwrap(private.module).named_parameters()
        if p.requires_grad
    }
    private.module._close()
    return {"grads": grads, "criterion": private.criterion, "loss": loss}


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_both_modes_clip_each_example_like_plain_autograd(student_dir: Path, mode: dp.Mode) -> None:
    """Tied embeddings untied, per-example position ids, the returned criterion: the clipped mean matches."""
    model = dp.prepare_student(load_student(student_dir, tie=True))
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    batch = _batch(model.config.vocab_size)
    expected = _reference_gradient(model, batch, clip=0.05)
    got = _private_gradient(model, batch, mode, clip=0.05)
    if mode == "ghost":
        assert type(got["criterion"]).__name__ == "DPLossFastGradientClipping"
    for name, value in expected.items():
        torch.testing.assert_close(got["grads"][name], value, atol=2e-6, rtol=2e-4, msg=name)


def test_auto_picks_ghost_where_it_can_and_hooks_otherwise(student_dir: Path) -> None:
    raw = load_student(student_dir).train()
    assert dp.choose_mode(raw, "auto") == "hooks"  # LlamaRMSNorm has no Opacus rule
    prepared = dp.prepare_student(load_student(student_dir))
    assert dp.choose_mode(prepared, "auto") == "ghost"  # swapped for nn.RMSNorm
    assert dp.choose_mode(dp.prepare_student(load_student(student_dir), lora_rank=2), "auto") == "ghost"
    shared = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    shared[1].weight = shared[0].weight
    assert dp.choose_mode(shared, "auto") == "hooks"
    assert dp.choose_mode(prepared, "hooks") == "hooks"


def test_auto_takes_hooks_when_the_per_example_gradients_fit_the_budget(student_dir: Path) -> None:
    prepared = dp.prepare_student(load_student(student_dir))
    trainable = sum(p.numel() for p in prepared.parameters() if p.requires_grad)
    need = dp.per_example_grad_bytes(prepared, 16)
    assert need == 4 * 16 * trainable
    assert dp.choose_mode(prepared, "auto", physical_batch=16, hooks_budget_bytes=need) == "hooks"
    assert dp.choose_mode(prepared, "auto", physical_batch=16, hooks_budget_bytes=need - 1) == "ghost"
    assert dp.choose_mode(prepared, "auto", physical_batch=17, hooks_budget_bytes=need) == "ghost"
    lora = dp.prepare_student(load_student(student_dir), lora_rank=2)  # adapters only: far smaller
    assert dp.per_example_grad_bytes(lora, 16) < need
    assert dp.choose_mode(lora, "auto", physical_batch=16, hooks_budget_bytes=need // 2) == "hooks"
    assert dp.choose_mode(prepared, "ghost", physical_batch=1, hooks_budget_bytes=10**12) == "ghost"


def test_rms_norm_swap_keeps_the_function_and_the_checkpoint_keys(student_dir: Path) -> None:
    original = load_student(student_dir).eval()
    keys = set(original.state_dict())
    ids = torch.tensor([[1, 20, 30, 40]])
    before = original(input_ids=ids).logits
    prepared = dp.prepare_student(original).eval()
    assert not any(type(m).__name__ == "LlamaRMSNorm" for m in prepared.modules())
    assert set(prepared.state_dict()) == keys
    torch.testing.assert_close(prepared(input_ids=ids).logits, before)


def test_noise_calibration_and_refusal_of_absurd_noise() -> None:
    plan = dp.plan_privacy(1000, epsilon=8.0, delta=1e-5, batch_size=100, epochs=2, accountant="rdp")
    assert (plan.steps_per_epoch, plan.steps, plan.sample_rate) == (10, 20, 0.1)
    assert 0.3 < plan.noise_multiplier < 2.0
    assert dp.epsilon_after("rdp", plan.noise_multiplier, 0.1, 20, 1e-5) <= 8.0
    with pytest.raises(dp.DistillError, match="noise multiplier above 10"):
        dp.plan_privacy(40, epsilon=0.01, delta=1e-5, batch_size=20, epochs=3, accountant="rdp")
    assert dp.default_delta(100) == pytest.approx(1e-5)  # 1/100^1.1 = 6.3e-3, capped
    assert dp.default_delta(10**6) == pytest.approx(1 / 10**6.6)


def test_poisson_sampler_keeps_empty_batches_and_resumes_its_draws() -> None:
    sampler = dp.PoissonSampler(10, sample_rate=0.05, steps=40, seed=1)
    batches = list(sampler)
    assert len(batches) == 40 and any(b == [] for b in batches)
    again = dp.PoissonSampler(10, sample_rate=0.05, steps=40, seed=1)
    first = iter(again)
    head = [next(first) for _ in range(15)]
    state = again.generator.get_state()
    resumed = dp.PoissonSampler(10, sample_rate=0.05, steps=40, seed=1)
    resumed.generator.set_state(state)
    resumed.skip = 15
    assert head + list(resumed) == batches
    ranks = [
        list(dp.PoissonSampler(9, sample_rate=0.5, steps=3, seed=1, rank=r, world_size=2)) for r in (0, 1)
    ]
    assert all(len(r) == 3 for r in ranks)
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}  # disjoint shards


def test_a_layer_opacus_cannot_handle_is_explained() -> None:
    class Scaled(nn.Linear):
        def __init__(self) -> None:
            super().__init__(4, 4)
            self.register_buffer("scale", torch.ones(4))  # a trainable layer with state outside its grads

    with pytest.raises(dp.DistillError, match=r"Opacus cannot train this student privately.*buffers"):
        dp.prepare_student(nn.Sequential(Scaled()))
    fixed = dp.prepare_student(
        nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    )  # ModuleValidator.fix applies
    assert isinstance(fixed[1], nn.GroupNorm)
    frozen = nn.Sequential(nn.Linear(4, 4)).requires_grad_(False)
    with pytest.raises(dp.DistillError, match="no trainable parameter"):
        dp.prepare_student(frozen)


def test_collate_gives_every_row_its_own_positions_and_an_empty_batch_a_null_row() -> None:
    rows = [_tensors(e, 64) for e in synthetic_examples(2, vocab=50, prompt=3, answer=2)]
    rows[1] = _tensors(synthetic_examples(1, vocab=50, prompt=5, answer=2)[0], 64)
    batch = _collate(rows, pad_id=0)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 4, 4], [0, 1, 2, 3, 4, 5, 6]]
    assert batch["labels"][0].tolist()[:5] == [
        -100,
        -100,
        rows[0]["input_ids"][3].item(),
        rows[0]["input_ids"][4].item(),
        -100,
    ]
    short = _trim({key: value[:1] for key, value in batch.items()})  # a physical batch of the short row
    assert short["input_ids"].tolist() == [rows[0]["input_ids"].tolist()]
    assert short["labels"].shape == (1, 5) and short["top_ids"].shape[:2] == (1, 5)
    null = _collate([], pad_id=0)
    assert null["input_ids"].shape == (1, 1) and (null["labels"] == -100).all()
    assert math.isinf(float(null["top_logprobs"].max()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            float(DistillLoss()(torch.zeros(1, 1, 8), null["labels"], null["top_ids"], null["top_logprobs"]))
            == 0.0
        )


def test_lora_adapts_only_the_projections_asked_and_refuses_unknown_ones(student_dir: Path) -> None:
    every = dp.prepare_student(load_student(student_dir), lora_rank=2)
    attention = dp.prepare_student(load_student(student_dir), lora_rank=2, lora_targets=("q_proj", "v_proj"))

    def adapted(model: nn.Module) -> set[str]:
        return {n.split(".")[-4] for n, p in model.named_parameters() if p.requires_grad}

    assert adapted(every) == set(dp.LORA_TARGETS)
    assert adapted(attention) == {"q_proj", "v_proj"}
    with pytest.raises(dp.DistillError, match="LoRA cannot adapt qkv"):
        dp.prepare_student(load_student(student_dir), lora_rank=2, lora_targets=("qkv",))


def test_logits_of_the_answer_window_give_the_loss_of_the_whole_sequence(student_dir: Path) -> None:
    from training.runtime import answer_window

    model, batch = load_student(student_dir).eval(), _batch(300)
    keep = answer_window(batch["labels"])
    assert 1 <= keep < batch["labels"].shape[1]  # the prompts' positions are left out
    assert (batch["labels"][:, :-keep] == -100).all()  # and none of them has a label
    criterion = DistillLoss(reduction="sum")
    whole = _loss(model, batch, criterion)
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"], logits_to_keep=keep,
    ).logits  # fmt: skip
    tail = {k: batch[k][:, -keep:] for k in ("labels", "top_ids", "top_logprobs")}
    assert logits.shape[1] == keep
    assert torch.allclose(criterion(logits, tail["labels"], tail["top_ids"], tail["top_logprobs"]), whole)
    assert answer_window(torch.full((2, 5), -100)) == 1  # an empty Poisson batch's null row


def test_a_weight_that_turned_nan_stops_the_run_before_it_is_saved() -> None:
    from training.runtime import check_finite

    layer = nn.Linear(2, 2)
    check_finite(layer, 1)  # finite: nothing happens
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    with pytest.raises(dp.DistillError, match="no longer finite after step 3"):
        check_finite(layer, 3)
    layer.weight.requires_grad_(False)  # frozen weights are not the run's
    check_finite(layer, 3)
