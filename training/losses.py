"""Knowledge-distillation losses: the student learns the teacher's distribution at every answer token.

The product's loss (the brief's): per answer token,

    loss = alpha * T² * D(teacher_T, student_T) + (1 - alpha) * CE(label, student)

with T = 3 and alpha = 0.7 by default, where `_T` means softened by temperature T and D is one of

- forward KL(teacher || student) ("forward_kl", the classic Hinton et al. distillation: mode-covering),
- reverse KL(student || teacher) ("reverse_kl": mode-seeking, as in MiniLLM),
- generalized Jensen-Shannon JSD(beta) ("jsd", as in GKD): beta KL(p || m) + (1 - beta) KL(q || m) with
  m = beta p + (1 - beta) q; beta = 0.5 is the usual symmetric JSD.

The T² keeps the distillation term's gradients on the scale of the cross-entropy's when T changes.

Teacher distributions come full (logits over the vocabulary, from a local transformers teacher) or
sparse (the top-k log-probabilities a vLLM server returns, normalized over the whole vocabulary).
A sparse teacher's tail (its mass outside the top k) is known only as a total, 1 - sum(top-k), and
`sparse` says what becomes of it:

- "tail" (the default): the tail is one more entry on both sides (the student's tail is 1 - its
  mass on the same ids); both k + 1 entry distributions are softened by T the same way and the
  divergence is taken between them. At T = 1 this is the full divergence with the tail's tokens
  merged into one, so it never exceeds the full one and is 0 exactly when the student matches
  the teacher's top k and its tail's total.
- "renormalize": the teacher's top k are renormalized and its tail dropped. For the forward KL
  the student keeps its full softmax, evaluated at the teacher's k ids; reverse KL and JSD need
  one support (the reverse KL of a student with tail mass against a teacher with none is
  infinite), so there the student is renormalized over the same k ids too and its tail is left
  to the cross-entropy. This is biased at T > 1: softening is what gives the tail its weight,
  and the renormalized teacher gives it none, so the forward KL asks the student to move nearly
  all of its softened mass onto the k ids, which it does by raising those tokens' logits above
  everything else (tokens in almost every row's top k, such as "[" and digits, gain most).

Reduction is per sequence, because the privacy unit is one example: each sequence's loss is the
mean over its answer tokens, and `reduction` ('none' -> one loss per sequence, 'mean', 'sum') is an
attribute Opacus's ghost clipping sets to 'none' to get those per-example losses.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from training.types import LossKind, SparseSupport

Reduction = Literal["none", "mean", "sum"]
IGNORE = -100
# Absent entries get this log-probability, not -inf: exp() is exactly 0 in float32 and, unlike
# -inf - -inf, no NaN reaches the gradients through masked branches.
NEG = -1e4
# The smallest tail mass either side gets (1 - sum(top-k) can round to 0 or below in float32).
TAIL_FLOOR = 1e-6


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) over the last dimension; entries with p = 0 (log p = NEG) contribute exactly 0."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def divergence(kind: LossKind, log_p: Tensor, log_q: Tensor, *, beta: float = 0.5) -> Tensor:
    """D(teacher p, student q) over the last dimension, from log-probabilities on one support."""
    if kind == "forward_kl":
        return _kl(log_p, log_q)
    if kind == "reverse_kl":
        return _kl(log_q, log_p)
    if kind == "jsd":
        # log m = log(beta p + (1 - beta) q), computed stably in log space.
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
        return beta * _kl(log_p, log_m) + (1 - beta) * _kl(log_q, log_m)
    raise ValueError(f"unknown distillation loss {kind!r}: use forward_kl, reverse_kl or jsd")


class DistillLoss(nn.Module):
    """criterion(logits, labels, ...) -> the blended loss, per sequence or reduced over the batch.

    `logits` [B, L, V] are the student's; `labels` [B, L] hold at position t the token t + 1 the
    model should predict there, IGNORE (-100) outside the answer. The teacher comes as
    `top_ids`/`top_logprobs` [B, L, K] (sparse; -inf pads a row with fewer than K entries) or
    `teacher_logits` [B, L, V] (full), aligned with `logits`. Answer positions with no teacher
    distribution (all -inf, or no teacher at all) get the cross-entropy only.

    >>> loss = DistillLoss(temperature=3.0, alpha=0.7)
    >>> value = loss(logits, labels, top_ids=ids, top_logprobs=logprobs)   # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        kind: LossKind = "forward_kl",
        temperature: float = 3.0,
        alpha: float = 0.7,
        beta: float = 0.5,
        sparse: SparseSupport = "tail",
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if temperature <= 0 or not 0 <= alpha <= 1 or not 0 < beta < 1:
            raise ValueError(f"need temperature > 0, 0 <= alpha <= 1, 0 < beta < 1; got {temperature}, "
                             f"{alpha}, {beta}")  # fmt: skip
        divergence(kind, torch.zeros(1), torch.zeros(1), beta=beta)  # rejects an unknown kind now
        if sparse not in ("renormalize", "tail"):
            raise ValueError(f"unknown sparse support {sparse!r}: use renormalize or tail")
        self.sparse: SparseSupport = sparse
        self.kind: LossKind = kind
        self.temperature = temperature
        self.alpha = alpha
        self.beta = beta
        self.reduction: Reduction = reduction

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        top_ids: Tensor | None = None,
        top_logprobs: Tensor | None = None,
        teacher_logits: Tensor | None = None,
    ) -> Tensor:
        per_token = self.token_losses(logits, labels, top_ids, top_logprobs, teacher_logits)
        mask = (labels != IGNORE).to(per_token.dtype)
        per_sequence = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        if self.reduction == "none":
            return per_sequence
        if self.reduction == "sum":
            return per_sequence.sum()
        if self.reduction == "mean":
            return per_sequence.mean()
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', not {self.reduction!r}")

    def token_losses(
        self,
        logits: Tensor,
        labels: Tensor,
        top_ids: Tensor | None = None,
        top_logprobs: Tensor | None = None,
        teacher_logits: Tensor | None = None,
    ) -> Tensor:
        """The blended loss at every position [B, L] (garbage outside the answer: mask it)."""
        logits = logits.float()
        safe_labels = labels.clamp(min=0)
        log_probs = F.log_softmax(logits, dim=-1)  # once: [B, L, V] in fp32 is the loss's largest tensor
        ce = -log_probs.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
        if self.alpha == 0 or (teacher_logits is None and (top_ids is None or top_ids.shape[-1] == 0)):
            return ce
        kd, has_teacher = self._distillation(logits, log_probs, top_ids, top_logprobs, teacher_logits)
        blended = self.alpha * self.temperature**2 * kd + (1 - self.alpha) * ce
        return torch.where(has_teacher, blended, ce)

    def _distillation(
        self,
        logits: Tensor,
        log_probs: Tensor,
        top_ids: Tensor | None,
        top_logprobs: Tensor | None,
        teacher_logits: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        t = self.temperature
        if teacher_logits is not None:
            log_p = F.log_softmax(teacher_logits.float() / t, dim=-1)
            log_q = F.log_softmax(logits / t, dim=-1)
            has = torch.ones(logits.shape[:-1], dtype=torch.bool, device=logits.device)
            return divergence(self.kind, log_p, log_q, beta=self.beta), has
        assert top_ids is not None and top_logprobs is not None, "top_ids needs top_logprobs"
        present = torch.isfinite(top_logprobs)
        has = present.any(-1)
        if self.sparse == "tail":
            log_p, log_q = self._with_tail(log_probs, top_ids, top_logprobs, present)
            kd = divergence(self.kind, log_p, log_q, beta=self.beta)
            return torch.where(has, kd, 0.0), has
        # Renormalize the teacher's top-k at temperature T (its tail is dropped: see the module doc).
        scaled = torch.where(present, top_logprobs.float() / t, NEG)
        log_p = torch.where(present, scaled - torch.logsumexp(scaled, -1, keepdim=True), NEG)
        student = torch.gather(logits / t, -1, top_ids.clamp(min=0))
        if self.kind == "forward_kl":
            log_q = student - torch.logsumexp(logits / t, -1, keepdim=True)
        else:
            student = torch.where(present, student, NEG)
            log_q = torch.where(present, student - torch.logsumexp(student, -1, keepdim=True), NEG)
        kd = divergence(self.kind, log_p, log_q, beta=self.beta)
        return torch.where(has, kd, 0.0), has

    def _with_tail(
        self, log_probs: Tensor, top_ids: Tensor, top_logprobs: Tensor, present: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Teacher and student as k + 1 entry distributions (top k, then the tail), softened by T."""
        teacher = torch.where(present, top_logprobs.float(), NEG)
        student = torch.where(present, torch.gather(log_probs, -1, top_ids.clamp(min=0)), NEG)

        def softened(log_top: Tensor) -> Tensor:
            mass = log_top.exp().sum(-1, keepdim=True).clamp(max=1.0 - TAIL_FLOOR)
            entries = torch.cat([log_top, torch.log1p(-mass)], -1) / self.temperature
            keep = torch.cat([present, torch.ones_like(present[..., :1])], -1)
            entries = torch.where(keep, entries, NEG)
            return torch.where(keep, entries - torch.logsumexp(entries, -1, keepdim=True), NEG)

        return softened(teacher), softened(student)
