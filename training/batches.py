"""Training examples as tensors: one example aligned with the student's logits, and padded batches.

Position t of the logits predicts token t + 1, so the answer tokens answer_start .. L-1 are the
labels of positions answer_start - 1 .. L-2, and the teacher's top-k row for answer token j sits
at position answer_start - 1 + j. Absent teacher entries are -inf (see training.losses).
"""

from __future__ import annotations

import math

import torch

from training.dp import DistillError
from training.losses import IGNORE
from training.types import TrainExample


def example_tensors(example: TrainExample, max_len: int) -> dict[str, torch.Tensor]:
    """One example as tensors aligned with the student's logits: position t predicts token t + 1."""
    ids, start = list(example.input_ids), example.answer_start
    if not 0 < start < len(ids):
        raise DistillError(f"an example has answer_start={start} for {len(ids)} tokens: it has no answer")
    top_ids, top_lp = list(example.top_ids), list(example.top_logprobs)
    if len(ids) > max_len:  # keep the answer: drop prompt tokens after <s>, then the answer's tail
        cut = min(len(ids) - max_len, start - 1)
        ids, start = ids[:1] + ids[1 + cut :], start - cut
        ids = ids[:max_len]
        top_ids, top_lp = top_ids[: len(ids) - start], top_lp[: len(ids) - start]
    length = len(ids)
    labels = torch.full((length,), IGNORE, dtype=torch.long)
    labels[start - 1 : length - 1] = torch.tensor(ids[start:])
    k = max((len(row) for row in top_ids), default=0) or 1
    tid = torch.zeros(length, k, dtype=torch.long)
    tlp = torch.full((length, k), -math.inf)
    for j, (row_ids, row_lp) in enumerate(zip(top_ids, top_lp, strict=True)):
        tid[start - 1 + j, : len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
        tlp[start - 1 + j, : len(row_lp)] = torch.tensor(row_lp, dtype=torch.float)
    return {"input_ids": torch.tensor(ids), "labels": labels, "top_ids": tid, "top_logprobs": tlp}


def collate(rows: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with per-example position_ids; an empty Poisson batch becomes a null row.

    The null row (one pad token, no answer) has zero loss and so zero gradient: the step still adds
    its noise and counts in the accountant, as the subsampled Gaussian mechanism requires.
    """
    if not rows:
        rows = [
            {
                "input_ids": torch.tensor([pad_id]),
                "labels": torch.tensor([IGNORE]),
                "top_ids": torch.zeros(1, 1, dtype=torch.long),
                "top_logprobs": torch.full((1, 1), -math.inf),
            }
        ]
    length = max(len(row["input_ids"]) for row in rows)
    k = max(row["top_ids"].shape[1] for row in rows)
    out = {
        "input_ids": torch.full((len(rows), length), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros(len(rows), length, dtype=torch.long),
        "labels": torch.full((len(rows), length), IGNORE, dtype=torch.long),
        "top_ids": torch.zeros(len(rows), length, k, dtype=torch.long),
        "top_logprobs": torch.full((len(rows), length, k), -math.inf),
    }
    for i, row in enumerate(rows):
        n, rk = len(row["input_ids"]), row["top_ids"].shape[1]
        out["input_ids"][i, :n] = row["input_ids"]
        out["attention_mask"][i, :n] = 1
        out["labels"][i, :n] = row["labels"]
        out["top_ids"][i, :n, :rk] = row["top_ids"]
        out["top_logprobs"][i, :n, :rk] = row["top_logprobs"]
    # Every row gets its own positions [B, L]: a shared [1, L] breaks per-example gradients of
    # learned position embeddings under Opacus, and left-padded rows would be shifted.
    out["position_ids"] = (out["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return out


def trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A physical batch without the padding columns none of its rows uses."""
    width = max(1, int(batch["attention_mask"].sum(-1).max()))
    return {key: value[:, :width] for key, value in batch.items()}
