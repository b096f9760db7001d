"""The language-model boundary: one Protocol, its result types and its errors.

Everything that talks to a model (the answer pipeline, the training teacher) depends on `LLM` only.
Adapters live beside this module, one per backend, as httpx keeps one transport per backend:

- `core.llm.vllm.VLLMClient`: vLLM's OpenAI-compatible HTTP API (production);
- `core.llm.local.TransformersLLM`: a local Hugging Face model folder, in-process (one machine, no server);
- `tests.fakes.FakeLLM`: a recording fake for tests.

>>> llm = core.llm.llm_from_settings(settings)             # doctest: +SKIP
>>> (await llm.chat([{"role": "user", "content": "Hi"}])).text   # doctest: +SKIP
'Hello!'
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict, runtime_checkable

from core.errors import KBError


class Message(TypedDict):
    """One chat turn, as the OpenAI chat API spells it."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token, its log-probability and the top alternatives the server returned for it."""

    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Completion:
    """What one non-streaming request produced.

    `prompt_logprobs` has one entry per prompt token (None for the first, which has no context),
    mapping token id -> log-probability of the top alternatives at that position (plus the actual
    token). Distillation reads teacher signals from it and from `logprobs`.
    """

    text: str
    model: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    prompt_logprobs: tuple[dict[int, float] | None, ...] = ()


class LLMError(KBError):
    """Talking to the language model failed; callers with a fallback (extractive answers) use it."""


class LLMUnavailable(LLMError):
    """The server cannot be reached, answers 5xx/429, broke a stream, or the circuit breaker is open."""


class LLMTimeout(LLMError):
    """No first token, or no complete answer, within the configured time."""


class LLMBadRequest(LLMError):
    """The server refused the request (4xx other than 429): unknown model, too long a prompt, bad key."""


class LLMBadResponse(LLMError):
    """The server answered 2xx with something that is not the API's JSON or event stream."""


@runtime_checkable
class LLM(Protocol):
    """A chat/completion model, local or remote. `model` picks a served model or LoRA adapter per call."""

    @property
    def name(self) -> str:
        """The model id answers are attributed to when a call names no model."""
        ...

    async def models(self) -> list[str]:
        """The ids this backend serves (base model first, then any loaded LoRA adapters)."""
        ...

    async def count_tokens(self, text: str) -> int:
        """Tokens of `text` under the model's own tokenizer, without special tokens."""
        ...

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
    ) -> Completion: ...

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        model: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> AsyncGenerator[str, None]:
        """Text deltas as the model produces them (an async generator in every adapter)."""
        ...

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
    ) -> Completion: ...

    async def aclose(self) -> None: ...
