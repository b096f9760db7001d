"""Recording fakes of the product's outside systems, for tests (and benchmarks) that need no server.

>>> llm = FakeLLM()
>>> llm.enqueue("Reset it in the portal [1].")
>>> (await llm.chat([{"role": "user", "content": "How?"}])).text   # doctest: +SKIP
'Reset it in the portal [1].'
>>> llm.history[0].method, llm.history[0].messages[0]["content"]  # doctest: +SKIP
('chat', 'How?')
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.llm import Completion, LLMBadRequest, Message

Reply = str | Exception | Sequence[str | Exception]


@dataclass(slots=True)
class Call:
    """One recorded call: which method, with which messages or prompt, and the keyword arguments."""

    method: str
    messages: list[Message] = field(default_factory=list)
    prompt: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """Everything the model was shown, for assertions that do not care about roles."""
        return self.prompt if self.prompt is not None else "\n".join(m["content"] for m in self.messages)


class FakeLLM:
    """An `LLM` that answers with queued replies and records every call in `history`.

    `enqueue` takes a text, an exception to raise, or a list of stream pieces (which may end in an
    exception, to break a stream half-way). A plain text streams in `piece_chars`-sized pieces.
    Tokens are counted as whitespace-separated words unless `count_error` is set.
    """

    def __init__(
        self,
        *,
        name: str = "fake-llm",
        served: Sequence[str] = (),
        piece_chars: int = 4,
        default: str | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self._name = name
        self.served = [name, *served]
        self.piece_chars = piece_chars
        self.default = default
        self.delay_s = delay_s
        self.count_error: Exception | None = None
        self.history: list[Call] = []
        self.counted: list[str] = []
        self.closed = False
        self._replies: deque[Reply] = deque()

    @property
    def name(self) -> str:
        return self._name

    @property
    def calls(self) -> list[Call]:
        """Generation calls only (chat, stream_chat, complete), leaving token counting out."""
        return [call for call in self.history if call.method != "count_tokens"]

    def enqueue(self, *replies: Reply) -> None:
        self._replies.extend(replies)

    def _next(self, model: str | None) -> Reply:
        if model is not None and model not in self.served:
            raise LLMBadRequest(f"model {model!r} is not served; served models: {', '.join(self.served)}")
        if self._replies:
            return self._replies.popleft()
        if self.default is not None:
            return self.default
        raise AssertionError("FakeLLM: no reply queued; call enqueue() first")

    async def models(self) -> list[str]:
        return list(self.served)

    async def count_tokens(self, text: str) -> int:
        self.history.append(Call("count_tokens", prompt=text))
        self.counted.append(text)
        if self.count_error is not None:
            raise self.count_error
        return len(text.split())

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
        kwargs = {"model": model, "max_tokens": max_tokens, "temperature": temperature, "stop": stop}
        self.history.append(Call("chat", list(messages), kwargs=kwargs))
        reply = self._next(model)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if isinstance(reply, Exception):
            raise reply
        if not isinstance(reply, str):
            for piece in reply:
                if isinstance(piece, Exception):
                    raise piece
            reply = "".join(str(piece) for piece in reply)
        return Completion(text=reply, model=model or self._name, finish_reason="stop")

    async def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        model: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> AsyncGenerator[str, None]:
        kwargs = {"model": model, "max_tokens": max_tokens, "temperature": temperature, "stop": stop}
        self.history.append(Call("stream_chat", list(messages), kwargs=kwargs))
        reply = self._next(model)
        if isinstance(reply, Exception):
            raise reply
        pieces: Sequence[str | Exception] = (
            [reply[i : i + self.piece_chars] for i in range(0, len(reply), self.piece_chars)]
            if isinstance(reply, str)
            else reply
        )
        for piece in pieces:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if isinstance(piece, Exception):
                raise piece
            yield piece

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
        kwargs = {"model": model, "max_tokens": max_tokens, "logprobs": logprobs, "echo": echo}
        self.history.append(Call("complete", prompt=prompt, kwargs=kwargs))
        reply = self._next(model)
        if isinstance(reply, Exception):
            raise reply
        text = reply if isinstance(reply, str) else "".join(str(p) for p in reply)
        return Completion(text=(prompt if echo else "") + text, model=model or self._name)

    async def aclose(self) -> None:
        self.closed = True
