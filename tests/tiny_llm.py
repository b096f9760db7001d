"""Tiny Llama-family models built on the spot, for tests and benchmarks that need a real LLM.

Nothing can be downloaded here, so the model, its tokenizer (byte-level BPE trained on a few
sentences) and its chat template are made from scratch. `teach_reply` overfits the model for a few
seconds so that, at temperature 0, it answers every prompt of a given shape with one fixed reply:
that makes the output of a real server predictable enough to assert on (citations included).

>>> model_dir = build_tiny_llama(tmp_path / "tiny", corpus=SENTENCES)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

SENTENCES = [
    "To reset your password open the self-service portal and choose Forgot password.",
    "Passwords expire every 90 days and must have at least 14 characters.",
    "Employees get 25 days of paid vacation per calendar year.",
    "Expense reports are due within 30 days of the purchase.",
    "The office opens at 8 am and closes at 6 pm on weekdays.",
    "Report a lost laptop to the IT service desk at once.",
    "Use the VPN when you work from a cafe or a hotel.",
    "Les mots de passe expirent tous les 90 jours.",
    "Die Reisekosten werden innerhalb von 30 Tagen erstattet.",
    "Answer only from the context and cite every passage you use like [1] or [2].",
    "I could not find this in the knowledge base.",
]


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def build_tokenizer(
    corpus: Sequence[str], out: Path, *, vocab_size: int = 600, first_special: Sequence[str] = ()
) -> Any:
    """A byte-level BPE tokenizer with Llama-style special tokens and a chat template, saved to `out`.

    `first_special` go before the others, which moves every id (another tokenizer's ids, for tests).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*first_special, PAD, BOS, EOS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[*first_special, *ROLE_TOKENS],
    )
    fast.chat_template = CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return fast


def build_tiny_llama(
    out: Path,
    *,
    corpus: Sequence[str] = SENTENCES,
    vocab_size: int = 600,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 2048,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised Llama (head_dim 64: vLLM's CPU attention rejects 16) with its tokenizer."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    _quiet()
    tokenizer = build_tokenizer(corpus, out, vocab_size=vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def _examples(tokenizer: Any, conversations: Sequence[list[dict[str, str]]], reply: str) -> list[Any]:
    import torch

    rows = []
    for messages in conversations:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(reply + EOS, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + reply_ids])
        labels = torch.tensor([[-100] * len(prompt_ids) + reply_ids])
        rows.append((ids, labels))
    return rows


def teach_reply(
    model_dir: Path,
    conversations: Sequence[list[dict[str, str]]],
    reply: str,
    *,
    steps: int = 120,
    lr: float = 3e-3,
    lora_out: Path | None = None,
    lora_rank: int = 8,
    seed: int = 0,
) -> Path:
    """Overfit the model (or, with `lora_out`, a LoRA adapter on it) to answer these chats with `reply`.

    Returns the folder written: `model_dir` itself, or `lora_out` holding a PEFT adapter that vLLM
    can load at run time.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet()
    torch.manual_seed(seed)
    random.seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if lora_out is not None:
        from peft import LoraConfig, get_peft_model

        modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        lora = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules=modules, lora_dropout=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft calls a deprecated transformers API
            model = get_peft_model(model, lora)
    rows = _examples(tokenizer, conversations, reply)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        ids, labels = random.choice(rows)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    target = lora_out or model_dir
    model.save_pretrained(str(target), safe_serialization=True)
    if lora_out is not None:
        # vLLM reads the adapter's config; keep the base model's folder name out of it.
        config_path = lora_out / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = str(model_dir)
        config_path.write_text(json.dumps(config, indent=2))
    return target
