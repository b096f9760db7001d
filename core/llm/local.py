"""`TransformersLLM`: the `LLM` protocol for a local Hugging Face model folder, run in this process.

For one machine without a vLLM server (and as the benchmark's baseline). Generation runs in a worker
thread so the event loop stays free; one generation at a time, because a torch module is not safe
to drive from several threads and batching is what vLLM is for. Streaming uses transformers'
AsyncTextIteratorStreamer (TextIteratorStreamer feeding the event loop).

>>> llm = TransformersLLM(Path("models/kb-distilled"))          # doctest: +SKIP
>>> (await llm.chat([{"role": "user", "content": "Hi"}])).text  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.llm.protocol import (
    Completion,
    LLMBadRequest,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    Message,
    TokenLogprob,
)

T = TypeVar("T")


@dataclass(slots=True)
class _Loaded:
    model: Any
    tokenizer: Any
    max_positions: int


class TransformersLLM:
    """A causal LM from `model_dir` (config, weights, tokenizer with a chat template), on the CPU."""

    def __init__(
        self,
        model_dir: Path,
        *,
        name: str | None = None,
        first_token_timeout: float = 120.0,
        threads: int | None = None,
    ) -> None:
        self.model_dir = model_dir
        self._name = name or model_dir.name
        self.first_token_timeout = first_token_timeout
        self.threads = threads
        self._loaded: _Loaded | None = None
        self._load_lock = asyncio.Lock()
        # One generation at a time, in a thread of its own: queued requests wait here, not in
        # the event loop's shared pool.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-llm")

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._loaded = None

    async def models(self) -> list[str]:
        return [self._name]

    async def count_tokens(self, text: str) -> int:
        loaded = await self._load()
        return len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        model: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
    ) -> Completion:
        loaded = await self._prepare(model)
        ids = self._chat_ids(loaded, messages)
        top = (top_logprobs or 0) if logprobs else None
        return await self._run(
            lambda: self._generate(loaded, ids, max_tokens, temperature, stop, top, None, echo=None)
        )

    async def complete(
        self,
        prompt: str,
        *,
        model: str | None = None,
        max_tokens: int = 16,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
        echo: bool = False,
    ) -> Completion:
        loaded = await self._prepare(model)
        ids = loaded.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        self._check_length(loaded, ids)
        return await self._run(
            lambda: self._generate(
                loaded,
                ids,
                max_tokens,
                temperature,
                stop,
                logprobs,
                prompt_logprobs,
                echo=prompt if echo else None,
            )
        )

    async def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        model: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> AsyncGenerator[str, None]:
        # The asyncio flavour of TextIteratorStreamer: pieces arrive through the event loop, so no
        # thread sits blocked waiting for them (with many streams, such threads starve the pool).
        from transformers import AsyncTextIteratorStreamer

        loaded = await self._prepare(model)
        ids = self._chat_ids(loaded, messages)
        streamer = AsyncTextIteratorStreamer(
            loaded.tokenizer, skip_prompt=True, timeout=self.first_token_timeout, skip_special_tokens=True
        )
        cancelled = threading.Event()
        worker = asyncio.ensure_future(
            self._run(
                lambda: self._generate_into(loaded, ids, max_tokens, temperature, stop, streamer, cancelled)
            )
        )
        try:
            try:
                async for piece in streamer:
                    if piece:
                        yield _cut_at_stop(piece, stop)
            except TimeoutError as exc:
                raise LLMTimeout(
                    f"the local model produced no token for {self.first_token_timeout:g} s"
                ) from exc
            await worker  # re-raises what generation raised, converted
        finally:
            # A consumer that stops early must not leave the model generating, nor queued to.
            cancelled.set()
            worker.cancel()
            await asyncio.wait([worker])
            if not worker.cancelled():
                worker.exception()  # already raised above when it matters; this marks it retrieved

    # -- plumbing --------------------------------------------------------------------------------

    async def _prepare(self, model: str | None) -> _Loaded:
        if model is not None and model != self._name:
            raise LLMBadRequest(
                f"model {model!r} is not served here; served models: {self._name}",
                hint="the in-process backend serves one model; use vLLM to serve LoRA adapters by name",
            )
        return await self._load()

    async def _load(self) -> _Loaded:
        async with self._load_lock:
            if self._loaded is None:
                self._loaded = await asyncio.to_thread(self._load_blocking)
            return self._loaded

    def _load_blocking(self) -> _Loaded:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if self.threads:
                torch.set_num_threads(self.threads)
            tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
            model: Any = AutoModelForCausalLM.from_pretrained(
                str(self.model_dir), local_files_only=True, dtype=torch.float32
            )
        except (OSError, ValueError, ImportError) as exc:
            raise LLMUnavailable(
                f"cannot load a language model from {self.model_dir}: {exc}",
                hint="point it at a folder with config.json, weights and a tokenizer with a chat template",
            ) from exc
        model.eval()
        max_positions = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        return _Loaded(model=model, tokenizer=tokenizer, max_positions=max_positions)

    def _chat_ids(self, loaded: _Loaded, messages: Sequence[Message]) -> list[int]:
        try:
            text = loaded.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=False
            )
        except ValueError as exc:  # no chat template
            raise LLMBadRequest(f"the model in {self.model_dir} cannot chat: {exc}") from exc
        ids: list[int] = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        self._check_length(loaded, ids)
        return ids

    def _check_length(self, loaded: _Loaded, ids: list[int]) -> None:
        if len(ids) >= loaded.max_positions:
            raise LLMBadRequest(
                f"the prompt has {len(ids)} tokens; {self._name} takes at most {loaded.max_positions}"
            )

    async def _run(self, work: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except LLMError:
            raise
        except (ValueError, IndexError) as exc:
            raise LLMBadRequest(f"the local model cannot take this request: {exc}") from exc
        except RuntimeError as exc:
            raise LLMUnavailable(f"the local model failed: {exc}") from exc

    def _generation_args(
        self, loaded: _Loaded, ids: list[int], max_tokens: int, temperature: float, stop: Sequence[str] | None
    ) -> dict[str, Any]:
        import torch

        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        )
        if stop:
            sampling.update(stop_strings=list(stop), tokenizer=loaded.tokenizer)
        pad = loaded.tokenizer.pad_token_id
        return {
            "input_ids": torch.tensor([ids]),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "max_new_tokens": max_tokens,
            "pad_token_id": pad if pad is not None else loaded.tokenizer.eos_token_id,
            **sampling,
        }

    def _generate_into(
        self,
        loaded: _Loaded,
        ids: list[int],
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] | None,
        streamer: Any,
        cancelled: threading.Event,
    ) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        args = self._generation_args(loaded, ids, max_tokens, temperature, stop)
        try:
            with torch.inference_mode():
                loaded.model.generate(
                    **args, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancelled()])
                )
        except BaseException:
            streamer.end()  # wake the consumer instead of leaving it to its timeout
            raise

    def _generate(
        self,
        loaded: _Loaded,
        ids: list[int],
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] | None,
        top_logprobs: int | None,
        prompt_logprobs: int | None,
        *,
        echo: str | None,
    ) -> Completion:
        import torch

        args = self._generation_args(loaded, ids, max_tokens, temperature, stop)
        with torch.inference_mode():
            out = loaded.model.generate(
                **args, return_dict_in_generate=True, output_logits=top_logprobs is not None
            )
            new = out.sequences[0, len(ids) :].tolist()
            tokens = (
                ()
                if top_logprobs is None
                else _token_logprobs(loaded.tokenizer, new, out.logits, top_logprobs)
            )
            prompt = () if prompt_logprobs is None else _prompt_logprobs(loaded.model, ids, prompt_logprobs)
        text = _cut_at_stop(loaded.tokenizer.decode(new, skip_special_tokens=True), stop)
        eos = loaded.tokenizer.eos_token_id
        finish = "stop" if (new and new[-1] == eos) or len(new) < max_tokens else "length"
        return Completion(
            text=(echo or "") + text,
            model=self._name,
            finish_reason=finish,
            prompt_tokens=len(ids),
            completion_tokens=len(new),
            logprobs=tokens,
            prompt_logprobs=prompt,
        )


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    # generate() stops after a stop string; the OpenAI API leaves the stop string out, and so do we.
    for marker in stop or ():
        if marker in text:
            text = text[: text.index(marker)]
    return text


def _token_logprobs(
    tokenizer: Any, new: list[int], logits: Sequence[Any], k: int
) -> tuple[TokenLogprob, ...]:
    import torch

    rows = []
    for token_id, step in zip(new, logits, strict=False):
        logp = torch.log_softmax(step[0].float(), dim=-1)
        values, indices = torch.topk(logp, max(k, 1))
        top = (
            {tokenizer.decode([int(i)]): float(v) for v, i in zip(values, indices, strict=True)} if k else {}
        )
        rows.append(TokenLogprob(token=tokenizer.decode([token_id]), logprob=float(logp[token_id]), top=top))
    return tuple(rows)


def _prompt_logprobs(model: Any, ids: list[int], k: int) -> tuple[dict[int, float] | None, ...]:
    import torch

    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    rows: list[dict[int, float] | None] = [None]
    for position in range(1, len(ids)):
        scores = logp[position - 1]
        values, indices = torch.topk(scores, max(k, 1))
        row = {int(i): float(v) for v, i in zip(values, indices, strict=True)} if k else {}
        row[ids[position]] = float(scores[ids[position]])  # the actual token, as vLLM includes it
        rows.append(row)
    return tuple(rows)
