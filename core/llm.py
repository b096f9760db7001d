"""The language-model boundary: one Protocol, its result types, its errors, and a circuit breaker.

Everything that talks to a model (the answer pipeline, the training teacher) depends on `LLM` only.
Adapters live beside this module, one per backend, as httpx keeps one transport per backend:

- `core.llm_vllm.VLLMClient`: vLLM's OpenAI-compatible HTTP API (production);
- `core.llm_local.TransformersLLM`: a local Hugging Face model folder, in-process (one machine, no server);
- `tests.fakes.FakeLLM`: a recording fake for tests.

>>> llm = llm_from_settings(settings)             # doctest: +SKIP
>>> (await llm.chat([{"role": "user", "content": "Hi"}])).text   # doctest: +SKIP
'Hello!'
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict, runtime_checkable

from core.errors import KBError

if TYPE_CHECKING:
    from core.settings import Settings


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


BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Stops calling a server that keeps failing, so a dead LLM costs one timeout, not one per question.

    After `threshold` consecutive failures the breaker opens: `check()` raises LLMUnavailable at
    once for `reset_s` seconds. Then it half-opens: exactly one trial call goes through; its success
    closes the breaker, its failure opens it again for another `reset_s`.
    """

    def __init__(
        self,
        *,
        threshold: int,
        reset_s: float,
        target: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError("breaker threshold must be at least 1")
        self.threshold = threshold
        self.reset_s = reset_s
        self.target = target
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self._last_reason = ""

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self._opened_at >= self.reset_s else "open"

    @property
    def failures(self) -> int:
        return self._failures

    def check(self) -> None:
        """Let a call through, or fail fast with a message that says why and for how long."""
        state = self.state
        if state == "closed":
            return
        if state == "half-open" and not self._trial_running:
            self._trial_running = True  # this caller is the one trial; everyone else still fails fast
            return
        assert self._opened_at is not None
        wait = max(0.0, self.reset_s - (self._clock() - self._opened_at))
        raise LLMUnavailable(
            f"the LLM at {self.target} is marked down after {self._failures} consecutive failures "
            f"(last: {self._last_reason}); not calling it for another {wait:.0f} s",
            hint="check that vLLM is running (`kb llm serve`), or unset KB_LLM_URL for extractive answers",
        )

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def failure(self, reason: str) -> None:
        self._failures += 1
        self._last_reason = reason
        if self._trial_running or self._failures >= self.threshold:
            self._opened_at = self._clock()
        self._trial_running = False

    def release(self) -> None:
        """The call ended with no verdict (cancelled): let the next caller be the trial."""
        self._trial_running = False


def llm_from_settings(settings: Settings) -> LLM | None:
    """The configured model client: vLLM when KB_LLM_URL is set, else None (extractive answers)."""
    if settings.llm_url is None:
        return None
    from core.llm_vllm import VLLMClient

    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return VLLMClient(str(settings.llm_url), api_key=key, model=settings.llm_model)
