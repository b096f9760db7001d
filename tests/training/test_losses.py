"""The distillation losses against values worked out by hand (two- and four-token vocabularies)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from training.losses import IGNORE, DistillLoss

LN = math.log
# Teacher p = [0.75, 0.25], student q = [0.5, 0.5]:
KL_PQ = 0.75 * LN(0.75 / 0.5) + 0.25 * LN(0.25 / 0.5)  # 0.130812
KL_QP = 0.5 * LN(0.5 / 0.75) + 0.5 * LN(0.5 / 0.25)  # 0.143841
JSD = 0.5 * (0.75 * LN(0.75 / 0.625) + 0.25 * LN(0.25 / 0.375)) + 0.5 * (
    0.5 * LN(0.5 / 0.625) + 0.5 * LN(0.5 / 0.375)
)  # m = [0.625, 0.375]: 0.033822


def _one(logits: list[float], label: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[logits]], requires_grad=True), torch.tensor([[label]])


@pytest.mark.parametrize(("kind", "expected"), [("forward_kl", KL_PQ), ("reverse_kl", KL_QP), ("jsd", JSD)])
def test_divergences_on_full_distributions(kind: str, expected: float) -> None:
    logits, labels = _one([0.0, 0.0], 0)
    teacher = torch.tensor([[[LN(3.0), 0.0]]])  # softmax -> [0.75, 0.25]
    loss = DistillLoss(kind=kind, temperature=1.0, alpha=1.0)  # type: ignore[arg-type]
    assert loss(logits, labels, teacher_logits=teacher).item() == pytest.approx(expected, abs=1e-6)


def test_the_briefs_blend_temperature_squared_and_cross_entropy() -> None:
    """T = 2 softens teacher logits [2 ln 3, 0] to [0.75, 0.25]: 0.7 * 4 * KL + 0.3 * ln 2."""
    logits, labels = _one([0.0, 0.0], 0)
    teacher = torch.tensor([[[2 * LN(3.0), 0.0]]])
    loss = DistillLoss(temperature=2.0, alpha=0.7)
    expected = 0.7 * 4 * KL_PQ + 0.3 * LN(2.0)
    assert expected == pytest.approx(0.574218, abs=1e-6)
    assert loss(logits, labels, teacher_logits=teacher).item() == pytest.approx(expected, abs=1e-6)
    assert DistillLoss().temperature == 3.0 and DistillLoss().alpha == 0.7 and DistillLoss().sparse == "tail"


def test_sparse_top_k_is_renormalized_and_the_student_tail_costs_in_forward_kl() -> None:
    """Teacher top-2 of 4 tokens: [0.6, 0.2] (0.2 in the tail) renormalizes to [0.75, 0.25].

    Forward KL keeps the student's full softmax (0.25 each): 0.75 ln 3. Reverse KL renormalizes
    the student over the same two ids ([0.5, 0.5]) and gives KL(q || p) on that support.
    """
    logits, labels = _one([0.0, 0.0, 0.0, 0.0], 0)
    ids = torch.tensor([[[0, 1]]])
    logprobs = torch.tensor([[[LN(0.6), LN(0.2)]]])
    forward = DistillLoss(temperature=1.0, alpha=1.0, sparse="renormalize")
    assert forward(logits, labels, ids, logprobs).item() == pytest.approx(0.75 * LN(3.0), abs=1e-6)
    reverse = DistillLoss(kind="reverse_kl", temperature=1.0, alpha=1.0, sparse="renormalize")
    assert reverse(logits, labels, ids, logprobs).item() == pytest.approx(KL_QP, abs=1e-6)
    # At T = 3 the teacher's top-2 soften to [0.6^(1/3), 0.2^(1/3)] / sum = [0.590541, 0.409459].
    softened = DistillLoss(temperature=3.0, alpha=1.0, sparse="renormalize")
    expected = 9 * (0.590541 * LN(0.590541 / 0.25) + 0.409459 * LN(0.409459 / 0.25))
    assert softened(logits, labels, ids, logprobs).item() == pytest.approx(expected, abs=1e-4)


def test_the_tail_is_one_more_entry_on_both_sides() -> None:
    """Teacher top-2 of 4 tokens [0.6, 0.2] + tail 0.2; the uniform student has [0.25, 0.25] + 0.5.

    At T = 1 the divergence is KL([0.6, 0.2, 0.2] || [0.25, 0.25, 0.5]); at T = 3 both three-entry
    distributions are softened (each entry to the power 1/3, renormalized) before it.
    """
    logits, labels = _one([0.0, 0.0, 0.0, 0.0], 0)
    ids = torch.tensor([[[0, 1]]])
    logprobs = torch.tensor([[[LN(0.6), LN(0.2)]]])

    def kl(p: list[float], q: list[float]) -> float:
        return sum(a * LN(a / b) for a, b in zip(p, q, strict=True))

    def soft(p: list[float], t: float) -> list[float]:
        powered = [a ** (1 / t) for a in p]
        return [a / sum(powered) for a in powered]

    plain = DistillLoss(temperature=1.0, alpha=1.0, sparse="tail")
    assert plain(logits, labels, ids, logprobs).item() == pytest.approx(
        kl([0.6, 0.2, 0.2], [0.25, 0.25, 0.5]), abs=1e-5
    )
    softened = DistillLoss(temperature=3.0, alpha=1.0, sparse="tail")
    expected = 9 * kl(soft([0.6, 0.2, 0.2], 3), soft([0.25, 0.25, 0.5], 3))
    assert softened(logits, labels, ids, logprobs).item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_the_tail_divergence_is_zero_for_the_teachers_own_distribution(temperature: float) -> None:
    """A student equal to the teacher costs nothing and gets no gradient; at T = 1 the merged-tail KL
    never exceeds the full KL (merging entries cannot raise a divergence)."""
    torch.manual_seed(0)
    teacher_logits = torch.randn(1, 3, 50) * 3
    labels = torch.zeros(1, 3, dtype=torch.long)
    logprobs, ids = F.log_softmax(teacher_logits, -1).topk(8, -1)
    same = teacher_logits.clone().requires_grad_(True)
    loss = DistillLoss(temperature=temperature, alpha=1.0, sparse="tail")
    value = loss(same, labels, ids, logprobs)
    value.backward()
    assert value.item() == pytest.approx(0.0, abs=1e-5)
    assert same.grad is not None and same.grad.abs().max().item() < 1e-4
    student = torch.randn(1, 3, 50)
    merged = DistillLoss(temperature=1.0, alpha=1.0, sparse="tail")(student, labels, ids, logprobs)
    full = DistillLoss(temperature=1.0, alpha=1.0)(student, labels, teacher_logits=teacher_logits)
    assert 0 < merged.item() <= full.item()


def test_padded_top_k_and_missing_teacher_rows() -> None:
    """-inf pads a short top-k row; a row with no teacher at all falls back to cross-entropy."""
    logits = torch.zeros(1, 2, 4, requires_grad=True)
    labels = torch.tensor([[0, 1]])
    ids = torch.tensor([[[0, 1, 0], [0, 0, 0]]])
    logprobs = torch.tensor([[[LN(0.6), LN(0.2), -math.inf], [-math.inf] * 3]])
    loss = DistillLoss(temperature=1.0, alpha=0.5, sparse="renormalize", reduction="none")
    per_token = loss.token_losses(logits, labels, ids, logprobs)
    assert per_token[0, 0].item() == pytest.approx(0.5 * 0.75 * LN(3.0) + 0.5 * LN(4.0), abs=1e-6)
    assert per_token[0, 1].item() == pytest.approx(LN(4.0), abs=1e-6)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        for sparse in ("renormalize", "tail"):
            loss = DistillLoss(kind=kind, temperature=3.0, sparse=sparse)
            loss(logits, labels, ids, logprobs).backward()
            assert logits.grad is not None and torch.isfinite(logits.grad).all(), (kind, sparse)
            logits.grad = None


def test_masked_to_answer_tokens_and_reduced_per_sequence() -> None:
    """Sequence 0 has one answer token (loss ln 4), sequence 1 has two (ln 4 and ln 2 each)."""
    logits = torch.zeros(2, 3, 4)
    logits[1, 2] = torch.tensor([50.0, 50.0, -50.0, -50.0])  # q = [0.5, 0.5, 0, 0]
    labels = torch.tensor([[IGNORE, 2, IGNORE], [IGNORE, 3, 1]])
    loss = DistillLoss(alpha=0.0, reduction="none")
    per_sequence = loss(logits, labels)
    assert per_sequence.tolist() == pytest.approx([LN(4.0), (LN(4.0) + LN(2.0)) / 2], abs=1e-5)
    loss.reduction = "mean"
    assert loss(logits, labels).item() == pytest.approx(per_sequence.mean().item())
    loss.reduction = "sum"
    assert loss(logits, labels).item() == pytest.approx(per_sequence.sum().item())
    garbage = logits.clone()
    garbage[:, 0] = torch.randn(2, 4) * 10  # outside the answer: no effect
    assert loss(garbage, labels).item() == pytest.approx(per_sequence.sum().item())


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown distillation loss"):
        DistillLoss(kind="kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        DistillLoss(temperature=0.0)
    with pytest.raises(ValueError, match="sparse support"):
        DistillLoss(sparse="topk")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction"):
        DistillLoss(reduction="avg")(torch.zeros(1, 1, 2), torch.tensor([[0]]))  # type: ignore[arg-type]


def test_a_student_fitted_to_a_softened_top_k_keeps_the_teachers_tail_only_with_the_tail_entry() -> None:
    """Free student logits fitted to one teacher row at T = 3 from its top 4 of 50 tokens.

    Renormalizing drops the tail from the target, so the fitted student puts all of its mass on
    the top 4 (the teacher has 0.89 there); with the tail as an entry it ends on the teacher's
    top-4 probabilities and tail mass.
    """
    torch.manual_seed(0)
    teacher = F.log_softmax(torch.randn(1, 1, 50) * 2, -1)
    logprobs, ids = teacher.topk(4, -1)
    labels = torch.zeros(1, 1, dtype=torch.long)
    fitted = {}
    for sparse in ("renormalize", "tail"):
        student = torch.zeros(1, 1, 50, requires_grad=True)
        optimizer = torch.optim.Adam([student], lr=0.1)
        loss = DistillLoss(temperature=3.0, alpha=1.0, sparse=sparse)
        for _ in range(1000):
            optimizer.zero_grad()
            loss(student, labels, ids, logprobs).backward()
            optimizer.step()
        fitted[sparse] = F.softmax(student.detach(), -1).gather(-1, ids)[0, 0]
    target = logprobs.exp()[0, 0]
    assert target.sum().item() == pytest.approx(0.893, abs=1e-3)
    assert fitted["renormalize"].sum().item() > 0.999
    assert fitted["tail"].tolist() == pytest.approx(target.tolist(), abs=2e-3)
