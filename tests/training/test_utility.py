"""A run's expected utility before it spends ε (training.utility): sizes read from the model's files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from training.dp import prepare_student
from training.utility import expected_utility, trainable_dimension


def _llama(folder: Path, *, kv_heads: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=128, intermediate_size=320, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=kv_heads)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kv_heads", [4, 1])
def test_the_dimension_is_what_peft_and_the_weights_train(tmp_path: Path, kv_heads: int) -> None:
    from transformers import AutoModelForCausalLM

    folder = _llama(tmp_path / "student", kv_heads=kv_heads)
    full = AutoModelForCausalLM.from_pretrained(folder)
    assert trainable_dimension(folder, 0) == sum(p.numel() for p in full.parameters())
    adapted = prepare_student(AutoModelForCausalLM.from_pretrained(folder), lora_rank=4, private=False)
    assert trainable_dimension(folder, 4) == sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    attention = prepare_student(
        AutoModelForCausalLM.from_pretrained(folder), lora_rank=2, lora_targets=("q_proj", "v_proj"),
        private=False,
    )  # fmt: skip
    trained = {n.split(".")[-4] for n, p in attention.named_parameters() if p.requires_grad}
    assert trained == {"q_proj", "v_proj"}
    assert trainable_dimension(folder, 2, ("q_proj", "v_proj")) == sum(
        p.numel() for p in attention.parameters() if p.requires_grad
    )


def test_the_benchmark_s_student_shape_gives_its_adapter_size(tmp_path: Path) -> None:
    # Qwen2.5-Coder-0.5B's shape: grouped keys and values (2 of 14 heads), 24 layers.
    config = {"hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
              "num_key_value_heads": 2, "num_hidden_layers": 24}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert trainable_dimension(tmp_path, 8) == 4_399_104
    assert trainable_dimension(tmp_path, 2, ("q_proj", "v_proj")) == 135_168  # 33x fewer: √d 5.7x smaller


def test_a_folder_that_does_not_say_gives_no_dimension_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"hidden_size": 896}')
    assert trainable_dimension(tmp_path, 8) is None
    assert trainable_dimension(tmp_path / "missing", 8) is None
    assert trainable_dimension(tmp_path, 0) is None  # no weights
    ratio, words = expected_utility(0.8, 60, 20, None)
    assert ratio is None and words.startswith("unknown")


def test_the_handbook_run_that_did_not_learn_reads_poor_and_a_large_one_good() -> None:
    # 428 examples at q = 1/7 over 3 epochs (21 steps), σ for ε 8, the 0.5B student's rank-8 adapter.
    ratio, words = expected_utility(0.7843, 428 / 7, 21, 4_399_104)
    assert ratio is not None and ratio == pytest.approx(5.87, abs=0.01) and words.startswith("poor")
    # The second handbook run: 1,117 examples at q = 1/9 over 3 epochs, the rank-2 q/v adapter: it learned.
    ratio, words = expected_utility(0.7452, 1117 / 9, 27, 135_168)
    assert ratio is not None and ratio == pytest.approx(0.425, abs=0.01) and words == "good"
    # A thousand times the data at a batch of 1,024: the noise averages out.
    ratio, words = expected_utility(0.8, 1024, 1200, 4_399_104)
    assert ratio is not None and ratio < 0.5 and words == "good"
    middle, words = expected_utility(0.8, 256, 100, 4_399_104)
    assert middle is not None and 0.5 <= middle < 2 and words.startswith("fair")
    assert (expected_utility(0.8, 256, 100, 4)[0] or 0.0) < (expected_utility(0.8, 256, 100, 16)[0] or 0.0)
    assert math.isclose(expected_utility(0.0, 64, 10, 1000)[0] or 0.0, 0.0)
