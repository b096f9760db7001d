"""How good and how private a distilled student is: exact match, token F1, agreement, speed, canary exposure.

- `exact_match` / `token_f1`: SQuAD-style, after lower-casing and collapsing spaces and punctuation.
- `greedy_answers`: a causal LM's greedy answers to the bot's prompt (`training.data.format_prompt`),
  batched (left padding).
- `answer_correct`: a reply judged as the product judges answers: it holds a short acceptable
  string of the example (or abstains where the passages do not answer).
- `agreement`: how often the student gives the teacher's answer (exact match between the two).
- `tokens_per_second`: a served model's output tokens/s at N concurrent requests (`core.llm.LLM`).
- `exposure`: "The Secret Sharer" (Carlini et al., 2019): rank the true secret among random
  candidates of the same format by the model's log-likelihood; exposure = log2(|candidates|) -
  log2(rank). A model that never saw the secret scores about 1-2 bits; one that memorized it
  scores close to log2(|candidates|).
"""

from __future__ import annotations

import asyncio
import math
import re
import string
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.llm import LLM, Message
from knowledge.answer_quality import holds_answer
from knowledge.prompt import is_not_found
from training.data import answer_ids, prompt_ids
from training.types import QAExample

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.casefold()).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Scores:
    exact_match: float
    f1: float
    n: int


def score(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """Mean exact match and token F1 of predictions against references (same order)."""
    if len(predictions) != len(references):
        raise ValueError("one prediction per reference")
    n = len(references)
    if n == 0:
        return Scores(0.0, 0.0, 0)
    em = sum(exact_match(p, r) for p, r in zip(predictions, references, strict=True)) / n
    f1 = sum(token_f1(p, r) for p, r in zip(predictions, references, strict=True)) / n
    return Scores(em, f1, n)


def answer_correct(reply: str, example: QAExample) -> float:
    """How right a reply is, by the product's rule (knowledge.answer_quality) where the example allows.

    An example whose answer is the abstention is right when the reply abstains; one with `accept`
    strings is right when the reply holds one and does not abstain (1 or 0); one with neither
    (templated, rated) scores the reply's token F1 against its answer.
    """
    if is_not_found(example.answer):
        return float(is_not_found(reply))
    if example.accept:
        return float(holds_answer(reply, example.accept) and not is_not_found(reply))
    return token_f1(reply, example.answer)


def agreement(student: Sequence[str], teacher: Sequence[str]) -> float:
    """Share of examples where the student's answer equals the teacher's."""
    return score(student, teacher).exact_match


def _left_padded(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def greedy_answers(
    model: Any,
    tokenizer: Any,
    examples: Sequence[QAExample],
    *,
    max_new_tokens: int = 8,
    batch_size: int = 64,
) -> list[str]:
    """The model's greedy answer to each example's prompt (the bot's chat prompt), batched.

    Left-padded batches through `generate` with its KV cache: the answers the product asks for run
    to a hundred tokens after prompts of several hundred.
    """
    import torch

    eos, pad = int(tokenizer.eos_token_id), int(tokenizer.pad_token_id)
    answers: list[str] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            rows = [prompt_ids(tokenizer, e) for e in examples[start : start + batch_size]]
            for row in _generate(model, rows, pad, max_new_tokens, {"do_sample": False, "eos_token_id": eos}):
                kept = row[: row.index(eos)] if eos in row else row
                answers.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
    return answers


def _generate(
    model: Any, rows: list[list[int]], pad: int, max_new_tokens: int, decoding: dict[str, Any]
) -> list[list[int]]:
    """The new tokens of each left-padded prompt row, through `generate` and its KV cache."""
    device = next(model.parameters()).device
    ids, mask, _ = _left_padded(rows, pad, device)
    made = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=pad, **decoding
    )  # fmt: skip
    new: list[list[int]] = made[:, ids.shape[1] :].tolist()
    return new


def chat_replies(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    batch_size: int = 64,
) -> list[str]:
    """The model's replies to chat conversations, batched; sampled at `temperature` (> 0) or greedy.

    The teacher writes the data set's questions through this (sampled, so one passage gets several).
    """
    import torch

    pad, out = int(tokenizer.pad_token_id), []
    decoding = (
        {"do_sample": True, "temperature": temperature, "top_p": 0.95}
        if temperature > 0
        else {"do_sample": False}
    )
    with torch.no_grad():
        for start in range(0, len(conversations), batch_size):
            rows = [
                tokenizer(
                    tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False),
                    add_special_tokens=False,
                )["input_ids"]
                for c in conversations[start : start + batch_size]
            ]
            replies = tokenizer.batch_decode(
                _generate(model, rows, pad, max_new_tokens, decoding), skip_special_tokens=True
            )
            out += [reply.strip() for reply in replies]
    return out


def answer_logprobs(
    model: Any, tokenizer: Any, example: QAExample, answers: Sequence[str], *, batch_size: int = 128
) -> list[float]:
    """log p(answer | prompt) under the model for each candidate answer (</s> excluded).

    All candidates must have the same number of tokens (as secrets of one format do).
    """
    import torch

    device = next(model.parameters()).device
    prompt = prompt_ids(tokenizer, example)
    out: list[float] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(answers), batch_size):
            rows = [answer_ids(tokenizer, a)[:-1] for a in answers[start : start + batch_size]]
            if len({len(r) for r in rows}) != 1:
                raise ValueError("every candidate answer must have the same number of tokens")
            ids = torch.tensor([prompt + r for r in rows], dtype=torch.long, device=device)
            width = len(rows[0])
            # Only the answer's positions: a whole prompt's logits over a 150k vocabulary do not fit.
            logits = model(input_ids=ids, logits_to_keep=width + 1).logits.float()
            logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
            target = ids[:, len(prompt) :]
            out += logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1).tolist()
    return out


def exposure(secret_logprob: float, candidate_logprobs: Sequence[float]) -> float:
    """log2(|R|) - log2(rank of the secret in R), R = the candidates plus the secret; ties count against it.

    >>> exposure(-1.0, [-5.0, -6.0, -7.0])   # ranked first of 4: log2(4) - log2(1)
    2.0
    """
    rank = 1 + sum(1 for c in candidate_logprobs if c >= secret_logprob)
    return math.log2(len(candidate_logprobs) + 1) - math.log2(rank)


def chance_exposure(candidates: int) -> float:
    """The mean exposure of a secret the model never saw: its rank is uniform over |R| = candidates + 1.

    log2|R| - E[log2 rank] = log2|R| - log2(|R|!) / |R|, about log2(e) = 1.44 bits for large |R|.
    """
    size = candidates + 1
    return math.log2(size) - math.lgamma(size + 1) / math.log(2) / size


def canary_exposure(model: Any, tokenizer: Any, example: QAExample, candidates: Sequence[str]) -> float:
    """Exposure of `example.answer` (the secret) among `candidates` for this prompt."""
    scores = answer_logprobs(model, tokenizer, example, [example.answer, *candidates])
    return exposure(scores[0], scores[1:])


async def tokens_per_second(
    llm: LLM,
    prompts: Sequence[str],
    *,
    concurrency: int = 8,
    max_tokens: int = 64,
    model: str | None = None,
) -> float:
    """Output tokens per second of wall time with `concurrency` requests in flight at all times.

    `ignore_eos` is not in the LLM protocol, so a random model may stop early; tokens are counted
    as the server reports them, which keeps the figure honest either way.
    """
    queue = list(prompts)
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while queue:
            prompt = queue.pop()
            completion = await llm.complete(prompt, model=model, max_tokens=max_tokens, temperature=0.0)
            tokens += completion.completion_tokens

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return tokens / elapsed if elapsed > 0 else 0.0
