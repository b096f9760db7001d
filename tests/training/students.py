"""Tiny students and synthetic distillation sets for the DP training tests (a few hundred K parameters)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from tests.tiny_llm import build_tiny_llama
from training.types import TrainExample


def build_student(folder: Path) -> Path:
    """A one-layer Llama with head_dim 64 (hidden 128, 2 heads) and its tokenizer, saved to `folder`."""
    return build_tiny_llama(folder, hidden=128, layers=1, heads=2, vocab_size=300, max_positions=128)


def load_student(folder: Path, *, tie: bool = False) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    if tie:  # the shape most small HF students ship with: lm_head shares the input embeddings
        model.config.tie_word_embeddings = True
        model.lm_head.weight = model.model.embed_tokens.weight
    return model


def synthetic_examples(n: int, *, vocab: int, k: int = 4, prompt: int = 10, answer: int = 4, seed: int = 0,
                       with_teacher: bool = True) -> list[TrainExample]:  # fmt: skip
    """Random prompts and answers; the teacher's top-k rows favour the true next token."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [1] + [rng.randrange(7, vocab) for _ in range(prompt + answer - 1)]
        top_ids, top_lps = [], []
        for token in ids[prompt:]:
            others = rng.sample([t for t in range(7, vocab) if t != token], k - 1)
            weights = [4.0] + [rng.random() for _ in others]
            total = sum(weights)
            top_ids.append((token, *others))
            top_lps.append(tuple(math.log(w / total) for w in weights))
        out.append(
            TrainExample(
                input_ids=tuple(ids),
                answer_start=prompt,
                top_ids=tuple(top_ids) if with_teacher else (),
                top_logprobs=tuple(top_lps) if with_teacher else (),
            )
        )
    return out


def worker_config(out: Path, *, mode: str = "auto", epochs: int = 1) -> Any:
    """The run tests/training/ddp_worker.py trains (a test may resume it in-process); PRV accountant."""
    from training.types import DistillConfig

    return DistillConfig(
        out_dir=out / "run", epochs=epochs, batch_size=8, max_physical_batch=4, lr=3e-3, epsilon=8.0,
        accountant="prv", grad_sample_mode=mode, checkpoint_every=2, max_len=32,  # type: ignore[arg-type]
    )  # fmt: skip
