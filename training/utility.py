"""What a DP run can be expected to learn, said before it spends anything.

DP-SGD adds Gaussian noise of standard deviation σ·C to every coordinate of a batch's summed
clipped gradients (C = 1 here). Over T steps the noise adds up to a norm of about σ·√(d·T), d being
the number of trained parameters, while the data's summed gradients reach at most B·T (B the
expected batch). Their ratio σ·√d / (B·√T) is the figure the dry run reports. The thresholds are a
rule of thumb from two real runs on the handbook at ε 8 (docs/decisions/dp-distillation-recipe.md):
428 examples, B 61, T 21, σ 0.78 and a rank-8 LoRA of every projection of Qwen2.5-0.5B (4.4M
parameters) gave 5.9 and learned nothing; 1,117 examples, B 124, T 27, σ 0.745 and a rank-2 LoRA
of q_proj and v_proj (135k parameters) gave 0.43 and learned (correctness 0.36 to 0.60 on labels,
abstention 0.38 to 0.60 distilled), short of the teacher. Runs that fine-tune well under DP are
lower still (thousands of steps over batches of a thousand and more).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from training.dp import LORA_TARGETS

GOOD, FAIR = 0.5, 2.0


def trainable_dimension(folder: Path, lora_rank: int, lora_targets: tuple[str, ...] = ()) -> int | None:
    """How many parameters a run trains, from the model folder's files alone (nothing is loaded).

    With LoRA: rank x (inputs + outputs) of each adapted projection (`lora_targets`, () for all) of a
    Llama-shaped model, from config.json. Without: every tensor in the safetensors headers. None
    when the files do not say.
    """
    if lora_rank > 0:
        try:
            config = json.loads((folder / "config.json").read_text())
            hidden, inner = int(config["hidden_size"]), int(config["intermediate_size"])
            heads, layers = int(config["num_attention_heads"]), int(config["num_hidden_layers"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        head_dim = int(config.get("head_dim") or hidden // heads)
        kv = int(config.get("num_key_value_heads") or heads) * head_dim
        shapes = {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
                  "o_proj": (heads * head_dim, hidden), "gate_proj": (hidden, inner),
                  "up_proj": (hidden, inner), "down_proj": (inner, hidden)}  # fmt: skip
        adapted = [t for t in LORA_TARGETS if not lora_targets or t in lora_targets]
        return layers * sum(lora_rank * sum(shapes[t]) for t in adapted)
    total = 0
    for weights in sorted(folder.glob("*.safetensors")):
        with weights.open("rb") as source:
            (size,) = struct.unpack("<Q", source.read(8))
            header = json.loads(source.read(size))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total or None


def expected_utility(
    noise_multiplier: float, expected_batch: float, steps: int, dimension: int | None
) -> tuple[float | None, str]:
    """σ·√d / (B·√T) and what it means for the run, in words an admin can act on."""
    if dimension is None:
        return None, "unknown: the student's folder does not say how many parameters it trains"
    ratio = noise_multiplier * math.sqrt(dimension / max(1, steps)) / max(1.0, expected_batch)
    if ratio < GOOD:
        return ratio, "good"
    if ratio < FAIR:
        return ratio, "fair: learns slowly; more examples, more epochs or a larger ε help"
    return ratio, "poor: mostly noise; it needs many more examples, a larger ε or a smaller adapter"
