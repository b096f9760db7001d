"""VLLMClient against a scripted OpenAI-compatible server on 127.0.0.1: retries, breaker, timeouts, SSE."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from core.llm import (
    LLM,
    CircuitBreaker,
    LLMBadRequest,
    LLMBadResponse,
    LLMTimeout,
    LLMUnavailable,
    llm_from_settings,
)
from core.llm.vllm import VLLMClient
from core.llm.wire import SSEParser, parse_completion
from core.settings import load_settings

Behaviour = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]
# Set when the fake server stops: a hung handler waits for it, so no test waits out a duration.
RELEASED = web.AppKey("released", asyncio.Event)
HELLO = [{"role": "user", "content": "Hello?"}]


@dataclass
class Recorded:
    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    port: int = 0  # the client's end of the connection


class FakeOpenAI:
    """vLLM's API surface, scripted: each request takes the next queued behaviour, else the default."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Behaviour] = deque()
        self.served = ["tiny", "hr-adapter"]
        self.url = ""
        self._runner: web.AppRunner | None = None

    def push(self, *behaviours: Behaviour) -> None:
        self.script.extend(behaviours)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app[RELEASED] = self._released = asyncio.Event()
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._released.set()  # hung handlers finish instead of being cut off at cleanup
        if self._runner is not None:
            await self._runner.cleanup()

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else {}
        peer = request.transport.get_extra_info("peername") if request.transport else None
        port = int(peer[1]) if peer else 0
        self.requests.append(Recorded(request.method, request.path, body, dict(request.headers), port))
        behaviour = self.script.popleft() if self.script else self._default
        return await behaviour(request, body)

    async def _default(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = body.get("model", self.served[0])
        if request.path == "/v1/models":
            return web.json_response({"object": "list", "data": [{"id": m} for m in self.served]})
        if model not in self.served:
            error = {"message": f"The model `{model}` does not exist.", "type": "NotFoundError", "code": 404}
            return web.json_response({"error": error}, status=404)
        if request.path == "/tokenize":
            words = body["prompt"].split()
            return web.json_response({"count": len(words), "tokens": list(range(len(words)))})
        if body.get("stream"):
            return await sse([_chunk(model, "Hello"), _chunk(model, " world"), b"data: [DONE]\n\n"])(
                request, body
            )
        message = {"role": "assistant", "content": f"Hello from {model}"}
        return web.json_response(
            {
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3},
            }
        )


def _chunk(model: str, text: str) -> bytes:
    event = {"model": model, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


def status(code: int, message: str = "boom", headers: dict[str, str] | None = None) -> Behaviour:
    async def behaviour(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"error": {"message": message, "code": code}}, status=code, headers=headers)

    return behaviour


def raw(text: str, code: int = 200) -> Behaviour:
    async def behaviour(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.Response(text=text, status=code, content_type="text/html")

    return behaviour


def hang() -> Behaviour:
    """A server that took the request and never answers (until the test is over)."""

    async def behaviour(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        await request.app[RELEASED].wait()
        return web.json_response({"error": {"message": "too late"}}, status=500)

    return behaviour


def sse(chunks: list[bytes], *, delay: float = 0.0, cut: bool = False, stall: bool = False) -> Behaviour:
    """An event stream written in exactly these pieces; `cut` drops the connection after them, `stall`
    keeps it open and silent until the test is over."""

    async def behaviour(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in chunks:
            await response.write(piece)
            await asyncio.sleep(delay)
        if stall:
            await request.app[RELEASED].wait()
        if cut:
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    return behaviour


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.stop()


def client(server: FakeOpenAI, **options: Any) -> VLLMClient:
    settings: dict[str, Any] = {"backoff": 0.01, "first_token_timeout": 2.0, "total_timeout": 5.0, **options}
    return VLLMClient(server.url, **settings)


async def _collect(llm: VLLMClient, **kwargs: Any) -> list[str]:
    return [delta async for delta in llm.stream_chat(HELLO, **kwargs)]


async def test_chat_models_and_tokenize_with_a_model_per_request(server: FakeOpenAI) -> None:
    async with client(server, api_key="sekret", model="tiny", extra_body={"min_tokens": 2}) as llm:
        assert isinstance(llm, LLM)
        assert await llm.models() == ["tiny", "hr-adapter"]
        assert await llm.count_tokens("three little words") == 3
        default = await llm.chat(HELLO, max_tokens=7, stop=["\n"])
        adapter = await llm.chat(HELLO, model="hr-adapter")
    assert (default.text, default.model, default.completion_tokens) == ("Hello from tiny", "tiny", 3)
    assert adapter.text == "Hello from hr-adapter"
    chat = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert chat[0].body == {
        "model": "tiny",
        "messages": HELLO,
        "max_tokens": 7,
        "temperature": 0.0,
        "stop": ["\n"],
        "min_tokens": 2,  # extra_body rides along with every generation request
    }
    assert chat[1].body["model"] == "hr-adapter"
    assert server.requests[1].body == {
        "prompt": "three little words",
        "add_special_tokens": False,
        "model": "tiny",
    }
    assert all(r.headers["Authorization"] == "Bearer sekret" for r in server.requests)
    assert llm._session is None  # closed by the context manager


async def test_one_pooled_session_for_all_calls(server: FakeOpenAI) -> None:
    llm = client(server)
    await asyncio.gather(*(llm.chat(HELLO) for _ in range(10)))
    session = llm._session
    await llm.chat(HELLO)
    assert llm._session is session and session is not None
    await llm.aclose()
    assert session.closed


async def test_idle_connections_are_dropped_before_vllm_drops_them(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM's server closes a connection idle for 5 s: the client never reuses one idle that long."""
    from core.llm import vllm

    assert vllm.KEEPALIVE_S < 5
    monkeypatch.setattr(vllm, "KEEPALIVE_S", 0.2)
    llm = client(server)
    await llm.chat(HELLO)
    await llm.chat(HELLO)  # right after: the same connection
    await asyncio.sleep(0.5)
    await llm.chat(HELLO)  # idle longer than the keep-alive: a new one
    await llm.aclose()
    first, again, later = (r.port for r in server.requests)
    assert first == again != later


@pytest.mark.parametrize("codes", [[500], [503, 502], [429]])
async def test_5xx_and_429_are_retried(server: FakeOpenAI, codes: list[int]) -> None:
    server.push(*(status(code, headers={"Retry-After": "0"} if code == 429 else None) for code in codes))
    async with client(server) as llm:
        assert (await llm.chat(HELLO)).text == "Hello from tiny"
    assert len(server.requests) == len(codes) + 1


@pytest.mark.parametrize("code", [400, 401, 413, 422])
async def test_other_4xx_are_not_retried(server: FakeOpenAI, code: int) -> None:
    server.push(status(code, "prompt is too long"))
    async with client(server) as llm:
        with pytest.raises(LLMBadRequest, match=rf"\(HTTP {code}\): prompt is too long"):
            await llm.chat(HELLO)
        assert llm.breaker.failures == 0  # a refusal proves the server is alive
    assert len(server.requests) == 1


async def test_retries_run_out_with_a_clear_error(server: FakeOpenAI) -> None:
    server.push(*[status(500, "engine dead")] * 5)
    async with client(server, retries=2, breaker_threshold=10) as llm:
        with pytest.raises(LLMUnavailable, match="HTTP 500: engine dead"):
            await llm.chat(HELLO)
    assert len(server.requests) == 3


async def test_unknown_model_names_it_and_lists_the_served_ones(server: FakeOpenAI) -> None:
    async with client(server) as llm:
        with pytest.raises(LLMBadRequest) as caught:
            await llm.chat(HELLO, model="finance-v2")
    assert "'finance-v2'" in str(caught.value) and "served models: tiny, hr-adapter" in str(caught.value)
    assert server.paths() == ["/v1/chat/completions", "/v1/models"]


async def test_garbage_is_a_bad_response_not_retried(server: FakeOpenAI) -> None:
    server.push(raw("<html>502 from a proxy</html>"))
    async with client(server) as llm:
        with pytest.raises(LLMBadResponse, match="not the OpenAI API's"):
            await llm.chat(HELLO)
    assert len(server.requests) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_dead_server_opens_the_breaker_and_later_questions_fail_fast() -> None:
    llm = VLLMClient(f"http://127.0.0.1:{_free_port()}", backoff=0.05, retries=2, breaker_threshold=3)
    async with llm:
        started = time.perf_counter()
        with pytest.raises(LLMUnavailable, match="cannot reach vLLM"):
            await llm.chat(HELLO)
        assert time.perf_counter() - started >= 0.15  # two backoffs: 0.05 + 0.1
        for _ in range(5):
            with pytest.raises(LLMUnavailable, match="marked down after 3 consecutive failures"):
                await llm.chat(HELLO)
        assert llm.breaker.state == "open"
        assert llm.breaker.failures == 3  # the later questions never tried to connect


async def test_a_hung_server_costs_one_timeout_not_one_per_question(server: FakeOpenAI) -> None:
    server.push(*[hang()] * 10)
    async with client(server, total_timeout=0.4, breaker_threshold=1) as llm:
        started = time.perf_counter()
        with pytest.raises(LLMTimeout):
            await llm.chat(HELLO)
        assert time.perf_counter() - started >= 0.35
        for _ in range(4):  # questions 2..N
            with pytest.raises(LLMUnavailable, match="marked down"):
                await llm.chat(HELLO)
        assert llm.breaker.failures == 1
    assert len(server.requests) == 1  # timeouts are not retried, and the open breaker sent nothing


async def test_breaker_half_opens_after_the_reset_and_closes_on_success(server: FakeOpenAI) -> None:
    server.push(*[status(500)] * 3)
    now = [0.0]
    async with client(server, retries=2) as llm:
        # The breaker's clock is the test's: the reset passes when the test says, not after a sleep.
        llm.breaker = CircuitBreaker(threshold=3, reset_s=30, target=server.url, clock=lambda: now[0])
        with pytest.raises(LLMUnavailable):
            await llm.chat(HELLO)
        with pytest.raises(LLMUnavailable, match="marked down"):
            await llm.chat(HELLO)
        now[0] = 30.0
        assert llm.breaker.state == "half-open"
        assert (await llm.chat(HELLO)).text == "Hello from tiny"
        assert llm.breaker.state == "closed"
    assert len(server.requests) == 4


def test_breaker_lets_one_trial_through_when_half_open() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, reset_s=10, target="http://x", clock=lambda: now[0])
    breaker.failure("500")
    breaker.check()
    breaker.failure("500")
    with pytest.raises(LLMUnavailable, match="another 10 s"):
        breaker.check()
    now[0] = 10.0
    breaker.check()  # the trial
    with pytest.raises(LLMUnavailable):
        breaker.check()  # everyone else while the trial runs
    breaker.failure("still 500")
    assert breaker.state == "open"
    now[0] = 20.0
    breaker.check()
    breaker.success()
    assert breaker.state == "closed"


async def test_streaming_parses_split_chunks_and_stops_at_done(server: FakeOpenAI) -> None:
    body = (
        b": keep-alive\r\n\r\n"
        + _chunk("tiny", "").replace(b"\n", b"\r\n")
        + _chunk("tiny", "Grüße")
        + _chunk("tiny", " [1]")
        + b"data: [DONE]\n\n"
        + _chunk("tiny", " after done")
    )
    cut = body.index("ü".encode()) + 1  # inside the two bytes of the ü
    pieces = [body[:7], body[7:cut], body[cut : cut + 3], body[cut + 3 :]]
    server.push(sse(pieces, delay=0.01))
    async with client(server) as llm:
        assert await _collect(llm) == ["Grüße", " [1]"]
        assert llm.name == "tiny"  # learnt from the stream


def test_sse_parser_byte_by_byte() -> None:
    stream = b'data: {"a": 1}\n\n:comment\nevent: x\ndata: line one\ndata: line two\n\ndata: [DONE]'
    parser = SSEParser()
    events = [event for byte in stream for event in parser.feed(bytes([byte]))] + parser.close()
    assert events == ['{"a": 1}', "line one\nline two", "[DONE]"]


async def test_first_token_timeout(server: FakeOpenAI) -> None:
    server.push(sse([_chunk("tiny", "")], stall=True))  # headers and an empty delta, then silence
    async with client(server, first_token_timeout=0.3) as llm:
        started = time.perf_counter()
        with pytest.raises(LLMTimeout, match=r"no first token .* within 0\.3 s"):
            await _collect(llm)
        assert time.perf_counter() - started >= 0.25
        assert llm.breaker.failures == 1


async def test_a_stream_cut_short_is_unavailable(server: FakeOpenAI) -> None:
    server.push(sse([_chunk("tiny", "Hel"), _chunk("tiny", "lo")], cut=True))
    async with client(server) as llm:
        seen: list[str] = []

        async def listen() -> None:
            async for delta in llm.stream_chat(HELLO):
                seen.append(delta)

        with pytest.raises(LLMUnavailable, match="ended the answer stream early"):
            await listen()
    assert seen == ["Hel", "lo"]


async def test_an_error_event_mid_stream_is_unavailable(server: FakeOpenAI) -> None:
    error = b'data: {"error": {"message": "engine died", "code": 500}}\n\n'
    server.push(sse([_chunk("tiny", "Hel"), error]))
    async with client(server) as llm:
        with pytest.raises(LLMUnavailable, match="engine died"):
            await _collect(llm)


async def test_streams_retry_before_the_first_token(server: FakeOpenAI) -> None:
    server.push(status(503))
    async with client(server) as llm:
        assert await _collect(llm, model="hr-adapter") == ["Hello", " world"]
    assert [r.body["model"] for r in server.requests] == ["hr-adapter", "hr-adapter"]
    assert server.requests[-1].body["stream"] is True


def _completion_body() -> dict[str, Any]:
    return {
        "model": "tiny",
        "choices": [
            {
                "index": 0,
                "text": "OO",
                "finish_reason": "length",
                "logprobs": {
                    "text_offset": [0, 1],
                    "tokens": ["O", "O"],
                    "token_logprobs": [-0.66, -0.27],
                    "top_logprobs": [{"O": -0.66, "].": -1.13}, {"O": -0.27, "pen": -2.66}],
                },
                "prompt_logprobs": [
                    None,
                    {
                        "496": {"logprob": -12.8, "rank": 298, "decoded_token": " reset"},
                        "52": {"logprob": -0.56},
                    },
                ],
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 2},
    }


async def test_completions_with_logprobs(server: FakeOpenAI) -> None:
    async def behaviour(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(_completion_body())

    server.push(behaviour)
    async with client(server) as llm:
        result = await llm.complete("To reset", model="tiny", max_tokens=2, logprobs=2, prompt_logprobs=1)
    assert server.requests[0].path == "/v1/completions"
    sent = server.requests[0].body
    assert (sent["logprobs"], sent["prompt_logprobs"], sent["echo"], sent["model"]) == (2, 1, False, "tiny")
    assert result.text == "OO" and result.finish_reason == "length"
    assert [(t.token, t.logprob) for t in result.logprobs] == [("O", -0.66), ("O", -0.27)]
    assert result.logprobs[1].top == {"O": -0.27, "pen": -2.66}
    assert result.prompt_logprobs == (None, {496: -12.8, 52: -0.56})


def test_malformed_completion_bodies_are_wire_errors() -> None:
    with pytest.raises(ValueError, match="choices"):
        parse_completion({"nope": 1}, "tiny")


async def test_chat_logprobs(server: FakeOpenAI) -> None:
    async def behaviour(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        item = {"token": "Hi", "logprob": -0.1, "top_logprobs": [{"token": "Hi", "logprob": -0.1}]}
        choice = {"message": {"content": "Hi"}, "logprobs": {"content": [item]}, "finish_reason": "stop"}
        return web.json_response({"model": "tiny", "choices": [choice]})

    server.push(behaviour)
    async with client(server) as llm:
        result = await llm.chat(HELLO, logprobs=True, top_logprobs=1)
    assert server.requests[0].body["top_logprobs"] == 1
    assert result.logprobs[0].top == {"Hi": -0.1}


def test_llm_from_settings() -> None:
    assert llm_from_settings(load_settings()) is None
    llm = llm_from_settings(load_settings(llm_url="http://127.0.0.1:9/", llm_model="kb", llm_api_key="k"))
    assert isinstance(llm, VLLMClient)
    assert (llm.base_url, llm.model, llm.name) == ("http://127.0.0.1:9", "kb", "kb")
