"""`VLLMClient`: the `LLM` protocol over vLLM's OpenAI-compatible HTTP API (aiohttp, one pooled session).

Failure policy, so that a sick server degrades answers instead of stalling them:

- connection errors (refused, reset, connect timeout), HTTP 5xx and 429 are retried with exponential
  backoff (429's Retry-After is honoured) within the call's total time; other 4xx never are;
- a request that was sent but got no first token / no answer in time is not retried (the server may
  still be working on it, and a retry doubles the wait): it raises LLMTimeout;
- every failed attempt except a 4xx counts towards the circuit breaker; an open breaker fails fast.

The retry loop is `core.llm.retry`; the body and event-stream formats are `core.llm.wire`.

>>> async with VLLMClient("http://127.0.0.1:8000", model="kb-distilled") as llm:   # doctest: +SKIP
...     async for delta in llm.stream_chat([{"role": "user", "content": "Hi"}]):
...         print(delta, end="")
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp

from core.llm.breaker import CircuitBreaker
from core.llm.protocol import (
    Completion,
    LLMBadRequest,
    LLMBadResponse,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    Message,
)
from core.llm.retry import Retryable, call_with_retries
from core.llm.wire import (
    SSEParser,
    WireFormatError,
    error_message,
    parse_chat,
    parse_completion,
    parse_delta,
    retry_after,
)

T = TypeVar("T")
_CHAT = "/v1/chat/completions"
# vLLM's HTTP server closes a keep-alive connection after 5 s idle (VLLM_HTTP_TIMEOUT_KEEP_ALIVE).
# The pool hands out its oldest idle connection first, and one the server is closing at that
# moment fails as "Can not write request body"; the prompt's token counts open several
# connections at once, so several such failures in a row opened the breaker for 30 s. Idle
# connections are therefore dropped on this side first.
KEEPALIVE_S = 4.0


class VLLMClient:
    """One vLLM server. `model` is the default served model or LoRA adapter; each call may name another.

    Timeouts: `connect_timeout` per connection attempt, `first_token_timeout` until a stream's first
    token, `total_timeout` for a whole call including retries. `extra_body` goes into every
    generation request as is: vLLM's own sampling knobs (repetition_penalty, min_tokens, ...).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        connect_timeout: float = 2.0,
        first_token_timeout: float = 15.0,
        total_timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 0.2,
        breaker_threshold: int = 3,
        breaker_reset_s: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.connect_timeout = connect_timeout
        self.first_token_timeout = first_token_timeout
        self.total_timeout = total_timeout
        self.retries = retries
        self.backoff = backoff
        self.extra_body = dict(extra_body or {})
        self.breaker = CircuitBreaker(
            threshold=breaker_threshold, reset_s=breaker_reset_s, target=self.base_url
        )
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None
        self._seen_model: str | None = None

    @property
    def name(self) -> str:
        return self.model or self._seen_model or "vllm"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop, and shared by every call: one connection pool.
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(
                total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout
            )
            self._session = aiohttp.ClientSession(
                timeout=timeout,
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=KEEPALIVE_S),
            )
        return self._session

    # -- the API ---------------------------------------------------------------------------------

    async def models(self) -> list[str]:
        body = await self._json("GET", "/v1/models", None)
        try:
            return [str(card["id"]) for card in body["data"]]
        except (KeyError, TypeError) as exc:
            raise self._bad_response("/v1/models", body) from exc

    async def tokenize(self, text: str, *, model: str | None = None) -> list[int]:
        """Token ids of `text` under the served model's tokenizer (vLLM's /tokenize, no special tokens)."""
        payload = self._with_model({"prompt": text, "add_special_tokens": False}, model)
        body = await self._json("POST", "/tokenize", payload)
        try:
            return [int(token) for token in body["tokens"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise self._bad_response("/tokenize", body) from exc

    async def count_tokens(self, text: str) -> int:
        return len(await self.tokenize(text))

    async def load_lora(self, name: str, path: str) -> None:
        """Serve a LoRA adapter under `name` (the server needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=true)."""
        payload = {"lora_name": name, "lora_path": path}
        await self._json("POST", "/v1/load_lora_adapter", payload, text=True)

    async def unload_lora(self, name: str) -> None:
        await self._json("POST", "/v1/unload_lora_adapter", {"lora_name": name}, text=True)

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
        payload = self._sampling(model, max_tokens, temperature, stop)
        payload["messages"] = list(messages)
        if logprobs:
            payload.update(logprobs=True, top_logprobs=top_logprobs or 0)
        body = await self._json("POST", _CHAT, payload)
        try:
            return self._seen(parse_chat(body, self.name))
        except WireFormatError as exc:
            raise self._bad_response(_CHAT, body) from exc

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
        """A raw completion; `logprobs`/`prompt_logprobs` ask for that many top alternatives per token."""
        payload = self._sampling(model, max_tokens, temperature, stop)
        payload.update(prompt=prompt, echo=echo)
        if logprobs is not None:
            payload["logprobs"] = logprobs
        if prompt_logprobs is not None:
            payload["prompt_logprobs"] = prompt_logprobs
        body = await self._json("POST", "/v1/completions", payload)
        try:
            return self._seen(parse_completion(body, self.name))
        except WireFormatError as exc:
            raise self._bad_response("/v1/completions", body) from exc

    async def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        model: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> AsyncGenerator[str, None]:
        payload = self._sampling(model, max_tokens, temperature, stop)
        payload.update(messages=list(messages), stream=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_timeout
        first_deadline = min(deadline, loop.time() + self.first_token_timeout)

        async def attempt() -> aiohttp.ClientResponse:
            return await self._send("POST", _CHAT, payload, first_deadline)

        # The breaker's verdict waits for the first token: a server that accepts requests but never
        # produces a token must count as failing.
        response = await self._call(attempt, first_deadline, settle=False)
        settled = False
        try:
            async for delta in self._deltas(response, first_deadline, deadline):
                if not settled:
                    settled = True
                    self.breaker.success()
                yield delta
            if not settled:
                settled = True
                self.breaker.success()
        except LLMError as exc:
            settled = True
            self.breaker.failure(exc.message)  # broken or stalled, before or after the first token
            raise
        finally:
            if not settled:
                self.breaker.release()  # the consumer stopped listening: no verdict either way
            response.close()

    # -- plumbing --------------------------------------------------------------------------------

    async def _deltas(
        self, response: aiohttp.ClientResponse, first_deadline: float, deadline: float
    ) -> AsyncGenerator[str, None]:
        """The text deltas of an event stream, until `[DONE]`; a stream that stops short is an error."""
        parser, chunks, first = SSEParser(), response.content.iter_any(), True
        while True:
            try:
                async with asyncio.timeout_at(first_deadline if first else deadline):
                    chunk = await anext(chunks, b"")
            except TimeoutError as exc:
                what = "first token" if first else "end of the answer"
                limit = self.first_token_timeout if first else self.total_timeout
                raise self._timeout(f"no {what} from {self.base_url} within {limit:g} s") from exc
            except aiohttp.ClientError as exc:
                raise self._broken(f": {exc.__class__.__name__} {exc}".rstrip()) from exc
            for data in parser.feed(chunk) if chunk else parser.close():
                if data.strip() == "[DONE]":
                    return
                try:
                    text, model, error = parse_delta(data)
                except WireFormatError as exc:
                    raise self._bad_response(f"{_CHAT} (stream)", data) from exc
                if error is not None:
                    raise LLMUnavailable(f"vLLM at {self.base_url} failed mid-answer: {error}")
                self._seen_model = self._seen_model or model
                if text:
                    first = False
                    yield text
            if not chunk:
                raise self._broken(" without [DONE]")

    def _with_model(self, payload: dict[str, Any], model: str | None) -> dict[str, Any]:
        chosen = model or self.model
        if chosen:
            payload["model"] = chosen
        return payload

    def _sampling(
        self, model: str | None, max_tokens: int, temperature: float, stop: Sequence[str] | None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {**self.extra_body, "max_tokens": max_tokens, "temperature": temperature}
        if stop:
            payload["stop"] = list(stop)
        return self._with_model(payload, model)

    def _seen(self, completion: Completion) -> Completion:
        self._seen_model = self._seen_model or completion.model
        return completion

    async def _json(
        self, method: str, path: str, payload: dict[str, Any] | None, *, text: bool = False
    ) -> Any:
        deadline = asyncio.get_running_loop().time() + self.total_timeout

        async def attempt() -> Any:
            try:
                async with asyncio.timeout_at(deadline):
                    response = await self._send(method, path, payload, deadline)
                    async with response:
                        raw = await response.text()
            except TimeoutError as exc:
                raise self._timeout(f"{self.base_url}{path} did not answer in time") from exc
            if text:
                return raw
            try:
                return json.loads(raw)
            except ValueError as exc:
                raise self._bad_response(path, raw) from exc

        return await self._call(attempt, deadline)

    async def _send(
        self, method: str, path: str, payload: dict[str, Any] | None, deadline: float
    ) -> aiohttp.ClientResponse:
        """One HTTP attempt; returns a 2xx response, or raises (Retryable for what a retry may fix)."""
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._http().request(method, self.base_url + path, json=payload)
                if response.status < 400:
                    return response
                async with response:
                    detail = await response.text()
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):  # never reached the server: safe to retry
                raise Retryable(LLMUnavailable(f"cannot connect to {self.base_url}: timed out")) from exc
            raise self._timeout(f"{self.base_url}{path} did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise Retryable(
                LLMUnavailable(
                    f"cannot reach vLLM at {self.base_url}: {exc.__class__.__name__} {exc}".strip(),
                    hint="check that the server is running (`kb llm serve`) and KB_LLM_URL points at it",
                )
            ) from exc
        message = error_message(detail)
        if response.status == 429 or response.status >= 500:
            raise Retryable(
                LLMUnavailable(f"vLLM at {self.base_url} answered HTTP {response.status}: {message}"),
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        model = (payload or {}).get("model")
        if response.status == 404 and model and str(model) in message:
            raise await self._unknown_model(str(model))
        hint = "check KB_LLM_API_KEY" if response.status in (401, 403) else None
        raise LLMBadRequest(f"vLLM refused {path} (HTTP {response.status}): {message}", hint=hint)

    async def _unknown_model(self, model: str) -> LLMBadRequest:
        try:
            served = ", ".join(await self.models()) or "none"
        except LLMError as exc:
            served = f"unknown ({exc.message})"
        return LLMBadRequest(
            f"model {model!r} is not served by {self.base_url}; served models: {served}",
            hint="set KB_LLM_MODEL to one of them, or load the LoRA adapter with /v1/load_lora_adapter",
        )

    async def _call(self, attempt: Callable[[], Awaitable[T]], deadline: float, *, settle: bool = True) -> T:
        return await call_with_retries(
            attempt,
            breaker=self.breaker,
            deadline=deadline,
            retries=self.retries,
            backoff=self.backoff,
            settle=settle,
        )

    def _timeout(self, message: str) -> LLMTimeout:
        return LLMTimeout(message, hint="the server is overloaded or stuck; answers fall back to extractive")

    def _broken(self, cause: str) -> LLMUnavailable:
        return LLMUnavailable(f"vLLM at {self.base_url} ended the answer stream early{cause}")

    def _bad_response(self, path: str, body: Any) -> LLMBadResponse:
        shown = body if isinstance(body, str) else json.dumps(body)
        return LLMBadResponse(
            f"vLLM at {self.base_url}{path} sent a reply that is not the OpenAI API's: {shown[:300]!r}",
            hint="check that KB_LLM_URL points at a vLLM server, not a proxy or another service",
        )
