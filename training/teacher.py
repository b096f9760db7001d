"""Teacher signals: the teacher's answer and its top-k log-probabilities at every answer token.

Two sources, one result type (`training.types.TeacherSignal`):

- a served teacher (`core.llm.LLM`, in production `core.llm.vllm.VLLMClient` on vLLM), in one of
  two modes: "reference" scores the reference answer teacher-forced (`prompt_logprobs`: the
  teacher's distribution at each token of the answer the student will be trained on, secrets
  included), "generate" lets the teacher answer greedily (`logprobs`: its own answer and the
  distribution it sampled each token from);
- a local transformers teacher (`local_signals`): the same top-k, or the full logits saved as .npy.

Signals are cached on disk (`SignalCache`), keyed by (teacher model, mode, k, example content), so
a rerun, or a run resumed after a crash, never asks the teacher again for what it already has.

>>> cache = SignalCache(Path("~/.cache/halden-kb/distill/signals").expanduser())  # doctest: +SKIP
>>> signals = await collect_signals(client, examples, tokenizer, k=8, cache=cache)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from core.errors import KBError
from core.llm import LLM, Completion, LLMError
from core.llm.server import VLLMServer
from training.data import answer_ids, fitted_prompt, format_prompt, prompt_ids
from training.types import QAExample, TeacherSignal

Mode = Literal["reference", "generate"]
_TOKEN_ID = re.compile(r"^token_id:(\d+)$")


class TeacherError(KBError):
    """No teacher signals: the teacher is down, returns no log-probabilities, or has another tokenizer."""


class SignalCache:
    """An append-only JSONL file per (model, mode, k) under `root`; one line per example.

    A line written half-way by a killed process is skipped on load, so a crash loses at most the
    example it was writing.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._loaded: dict[Path, dict[str, TeacherSignal]] = {}

    def _file(self, model: str, mode: str, k: int) -> Path:
        name = hashlib.sha256(f"{model}\0{mode}\0{k}".encode()).hexdigest()[:16]
        return self.root / f"{name}.jsonl"

    @staticmethod
    def key(example: QAExample, mode: str) -> str:
        """The example's content (not just its id): an edited example is a new one."""
        text = json.dumps([list(example.context), example.question], ensure_ascii=False)
        text += "\0" + example.answer if mode == "reference" else ""
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _entries(self, model: str, mode: str, k: int) -> dict[str, TeacherSignal]:
        path = self._file(model, mode, k)
        if path not in self._loaded:
            entries: dict[str, TeacherSignal] = {}
            if path.exists():
                for line in path.read_text().splitlines():
                    try:
                        row = json.loads(line)
                        entries[row["key"]] = _signal_from_json(row["signal"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by a crash
            self._loaded[path] = entries
        return self._loaded[path]

    def get(self, model: str, mode: str, k: int, example: QAExample) -> TeacherSignal | None:
        found = self._entries(model, mode, k).get(self.key(example, mode))
        if found is None:
            return None
        # The cache is keyed by content; the caller's id is what its data set knows the example by.
        return TeacherSignal(**{**asdict(found), "example_id": example.example_id})

    def put(self, model: str, mode: str, k: int, example: QAExample, signal: TeacherSignal) -> None:
        key = self.key(example, mode)
        self._entries(model, mode, k)[key] = signal
        self.root.mkdir(parents=True, exist_ok=True)
        with self._file(model, mode, k).open("a") as handle:
            handle.write(json.dumps({"key": key, "signal": _signal_to_json(signal)}) + "\n")


class TeacherServer(VLLMServer):
    """A vLLM server for a teacher: the same launcher, with runtime LoRA support left off.

    vLLM 0.32 on the CPU crashes its engine when batched requests ask for `prompt_logprobs` with
    LoRA enabled (bgmv_shrink: "einsum(): subscript b has size 31 ... does not broadcast with ...
    58"); a teacher needs no adapters, so it is served without.
    """

    def command(self) -> list[str]:
        args = super().command()
        for flag in ("--max-lora-rank", "--max-loras"):
            if flag in args:
                i = args.index(flag)
                del args[i : i + 2]
        return [a for a in args if a != "--enable-lora"]


def _signal_to_json(signal: TeacherSignal) -> dict[str, Any]:
    data = asdict(signal)
    data["top_logprobs"] = [[round(v, 5) for v in row] for row in signal.top_logprobs]
    return data


def _signal_from_json(data: dict[str, Any]) -> TeacherSignal:
    return TeacherSignal(
        example_id=data["example_id"],
        model=data["model"],
        answer=data["answer"],
        token_ids=tuple(data["token_ids"]),
        top_ids=tuple(tuple(r) for r in data["top_ids"]),
        top_logprobs=tuple(tuple(r) for r in data["top_logprobs"]),
        full_logits_path=data.get("full_logits_path"),
    )


def _top(row: dict[int, float], k: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    best = sorted(row.items(), key=lambda item: -item[1])[:k]
    return tuple(i for i, _ in best), tuple(float(v) for _, v in best)


def _token_id(token: str, tokenizer: Any) -> int:
    """A token id from the text vLLM gives for a token ("token_id:N" when the server is asked for ids)."""
    match = _TOKEN_ID.match(token)
    if match:
        return int(match[1])
    for candidate in (token, token.strip()):
        found = tokenizer.convert_tokens_to_ids(candidate)
        if isinstance(found, int) and found != tokenizer.unk_token_id:
            return found
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return int(ids[0])
    raise TeacherError(
        f"the teacher returned token {token!r}, which is not one token of the student's tokenizer",
        hint="teacher and student must share one tokenizer",
    )


def from_reference(
    completion: Completion, example: QAExample, tokenizer: Any, *, model: str, k: int
) -> TeacherSignal:
    """The teacher's top-k at each reference answer token, from a `prompt_logprobs` completion."""
    prompt, answer = prompt_ids(tokenizer, example), answer_ids(tokenizer, example.answer)
    rows = completion.prompt_logprobs
    if not rows:
        raise TeacherError(
            f"the teacher {model!r} returned no prompt log-probabilities",
            hint="serve it with vLLM (which supports prompt_logprobs) and allow max_logprobs >= k",
        )
    if len(rows) != len(prompt) + len(answer):
        raise TeacherError(
            f"the teacher saw {len(rows)} prompt tokens where the student's tokenizer makes "
            f"{len(prompt) + len(answer)}",
            hint="serve the teacher with the student's tokenizer",
        )
    tops = [_top(row or {}, k) for row in rows[len(prompt) :]]
    return TeacherSignal(
        example_id=example.example_id,
        model=model,
        answer=example.answer,
        token_ids=tuple(answer),
        top_ids=tuple(t[0] for t in tops),
        top_logprobs=tuple(t[1] for t in tops),
    )


def from_generation(
    completion: Completion, example: QAExample, tokenizer: Any, *, model: str, k: int
) -> TeacherSignal:
    """The teacher's own greedy answer and the top-k it chose each token from (`logprobs`)."""
    if not completion.logprobs:
        raise TeacherError(
            f"the teacher {model!r} returned no log-probabilities for its answer",
            hint="ask a server that supports the completions API's logprobs (vLLM does)",
        )
    eos = int(tokenizer.eos_token_id)
    token_ids: list[int] = []
    top_ids: list[tuple[int, ...]] = []
    top_logprobs: list[tuple[float, ...]] = []
    for item in completion.logprobs:
        token_ids.append(_token_id(item.token, tokenizer))
        row = {_token_id(t, tokenizer): v for t, v in item.top.items()} or {token_ids[-1]: item.logprob}
        ids, values = _top(row, k)
        top_ids.append(ids)
        top_logprobs.append(values)
    if token_ids[-1] != eos:
        # Stopped at </s> without listing it, or cut at max_tokens: the student still learns to stop.
        token_ids.append(eos)
        top_ids.append((eos,))
        top_logprobs.append((0.0,))
    return TeacherSignal(
        example_id=example.example_id,
        model=model,
        answer=completion.text.strip(),
        token_ids=tuple(token_ids),
        top_ids=tuple(top_ids),
        top_logprobs=tuple(top_logprobs),
    )


async def collect_signals(
    llm: LLM,
    examples: Sequence[QAExample],
    tokenizer: Any,
    *,
    model: str | None = None,
    k: int = 8,
    mode: Mode = "reference",
    cache: SignalCache | None = None,
    concurrency: int = 16,
    max_tokens: int = 16,
    on_done: Callable[[int], None] | None = None,
) -> dict[str, TeacherSignal]:
    """Signals for every example (by example id), from the cache where present, else from the teacher.

    Fails with TeacherError on the first example the teacher cannot answer (down, no logprobs):
    what was collected before is in the cache, so the next run starts from there.
    """
    name = model or llm.name
    out: dict[str, TeacherSignal] = {}
    missing: list[QAExample] = []
    for example in examples:
        cached = cache.get(name, mode, k, example) if cache is not None else None
        if cached is not None:
            out[example.example_id] = cached
        else:
            missing.append(example)
    gate = asyncio.Semaphore(concurrency)

    async def one(example: QAExample) -> None:
        async with gate:
            try:
                if mode == "reference":
                    answer = f"{example.answer.strip()}{tokenizer.eos_token}"
                    prompt = format_prompt(example, tokenizer) + answer
                    completion = await llm.complete(prompt, model=model, max_tokens=1, prompt_logprobs=k)
                    signal = from_reference(completion, example, tokenizer, model=name, k=k)
                else:
                    completion = await llm.complete(
                        format_prompt(example, tokenizer),
                        model=model,
                        max_tokens=max_tokens,
                        temperature=0.0,
                        logprobs=k,
                    )
                    signal = from_generation(completion, example, tokenizer, model=name, k=k)
            except LLMError as exc:
                raise TeacherError(
                    f"the teacher {name!r} failed on example {example.example_id!r}: {exc}",
                    hint="start the teacher's vLLM server (`kb llm serve`); what was collected is cached",
                ) from exc
        if cache is not None:
            cache.put(name, mode, k, example, signal)
        out[example.example_id] = signal
        if on_done is not None:
            on_done(len(out))

    tasks = [asyncio.ensure_future(one(e)) for e in missing]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return out


def local_signals(
    model: Any,
    tokenizer: Any,
    examples: Sequence[QAExample],
    *,
    k: int = 8,
    full_logits_dir: Path | None = None,
    model_name: str = "local",
    batch_size: int = 64,
    max_len: int | None = None,
) -> dict[str, TeacherSignal]:
    """Teacher-forced signals on the reference answers from an in-process transformers model.

    With `full_logits_dir`, each example's logits over the whole vocabulary at its answer tokens
    are saved there as `<example_id>.npy` [answer_len, vocab] for full-distribution distillation.
    With `max_len`, the prompt is fitted as `training.data.tokenize` fits the student's, so teacher
    and student read the same passages.
    """
    import numpy as np
    import torch

    device = next(model.parameters()).device
    out: dict[str, TeacherSignal] = {}
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            for example in chunk:
                answer = answer_ids(tokenizer, example.answer)
                prompt = (
                    prompt_ids(tokenizer, example)
                    if max_len is None
                    else fitted_prompt(tokenizer, example, max_len - len(answer))
                )
                ids = torch.tensor([prompt + answer], device=device)
                logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1, :].float()
                logp = torch.log_softmax(logits, dim=-1)
                values, indices = logp.topk(min(k, logp.shape[-1]), dim=-1)
                path = None
                if full_logits_dir is not None:
                    full_logits_dir.mkdir(parents=True, exist_ok=True)
                    path = str(full_logits_dir / f"{example.example_id}.npy")
                    np.save(path, logits.cpu().numpy())
                out[example.example_id] = TeacherSignal(
                    example_id=example.example_id,
                    model=model_name,
                    answer=example.answer,
                    token_ids=tuple(answer),
                    top_ids=tuple(tuple(r) for r in indices.tolist()),
                    top_logprobs=tuple(tuple(r) for r in values.tolist()),
                    full_logits_path=path,
                )
    return out
