"""The OpenAI wire format as vLLM speaks it: response bodies and server-sent event streams.

Pure functions with no I/O, so the HTTP client stays about policy (retries, timeouts, breaker) and
these can be tested on captured bodies. They raise `WireFormatError` on anything malformed; the
adapter turns that into LLMBadResponse.
"""

from __future__ import annotations

import json
from typing import Any

from core.llm.protocol import Completion, TokenLogprob

MAX_RETRY_AFTER_S = 5.0


class WireFormatError(ValueError):
    """A body or event that does not follow the OpenAI API's shape."""


class SSEParser:
    """Turns the bytes of a server-sent event stream, cut anywhere, into the events' data payloads.

    >>> parser = SSEParser()
    >>> parser.feed(b'data: {"a"'), parser.feed(b': 1}\\n\\ndata: [DONE]\\n\\n')
    ([], ['{"a": 1}', '[DONE]'])
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        events: list[str] = []
        # Bytes are split into lines before decoding, so a UTF-8 character cut by a chunk survives.
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))
            # Comments (": ping") and event/id/retry fields carry nothing the OpenAI API uses.
        return events

    def close(self) -> list[str]:
        """Events left when the stream ends without a final blank line."""
        return self.feed(b"\n\n") if self._buffer or self._data else []


def parse_chat(body: Any, default_model: str) -> Completion:
    """A /v1/chat/completions body (non-streaming), with per-token logprobs when they were asked for."""
    try:
        choice = body["choices"][0]
        content = (choice.get("logprobs") or {}).get("content") or []
        tokens = tuple(
            TokenLogprob(
                token=str(item["token"]),
                logprob=float(item["logprob"]),
                top={str(alt["token"]): float(alt["logprob"]) for alt in item.get("top_logprobs") or []},
            )
            for item in content
        )
        text = str(choice["message"].get("content") or "")
        return _completion(body, choice, text, tokens, (), default_model)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise WireFormatError(str(exc)) from exc


def parse_completion(body: Any, default_model: str) -> Completion:
    """A /v1/completions body: text, top logprobs per generated token, and prompt logprobs by token id."""
    try:
        choice = body["choices"][0]
        lp = choice.get("logprobs") or {}
        tops = lp.get("top_logprobs") or []
        pairs = zip(lp.get("tokens") or [], lp.get("token_logprobs") or [], strict=False)
        tokens = tuple(
            TokenLogprob(token=str(tok), logprob=float(value), top=dict(tops[i] or {}))
            for i, (tok, value) in enumerate(pairs)
            if value is not None  # the first echoed prompt token has no logprob
        )
        prompt = tuple(
            None if row is None else {int(tid): float(alt["logprob"]) for tid, alt in row.items()}
            for row in choice.get("prompt_logprobs") or []
        )
        return _completion(body, choice, str(choice["text"]), tokens, prompt, default_model)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise WireFormatError(str(exc)) from exc


def parse_delta(data: str) -> tuple[str, str | None, str | None]:
    """One streamed chat chunk -> (text delta, model id, error message the server sent mid-stream)."""
    try:
        event = json.loads(data)
        if not isinstance(event, dict):
            raise WireFormatError(f"an event that is not a JSON object: {data[:100]!r}")
        if "error" in event:
            error = event["error"]
            return "", None, str(error.get("message", error) if isinstance(error, dict) else error)
        choices = event.get("choices") or [{}]
        text = str((choices[0].get("delta") or {}).get("content") or "")
        model = event.get("model")
        return text, str(model) if model else None, None
    except (ValueError, AttributeError, TypeError, IndexError) as exc:
        raise WireFormatError(str(exc)) from exc


def error_message(detail: str) -> str:
    """The human part of an OpenAI-style error body (`{"error": {"message": ...}}`), else the raw text."""
    try:
        body = json.loads(detail)
    except ValueError:
        return detail.strip()[:500] or "(empty body)"
    error = body.get("error", body) if isinstance(body, dict) else body
    message = (error.get("message") or error.get("detail")) if isinstance(error, dict) else error
    return str(message or detail)[:500]


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header, capped: a busy server should not park a question for long."""
    try:
        return None if value is None else min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None  # an HTTP date: rare from vLLM, so our own backoff applies


def _completion(
    body: dict[str, Any],
    choice: dict[str, Any],
    text: str,
    tokens: tuple[TokenLogprob, ...],
    prompt_logprobs: tuple[dict[int, float] | None, ...],
    default_model: str,
) -> Completion:
    usage = body.get("usage") or {}
    return Completion(
        text=text,
        model=str(body.get("model") or default_model),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        logprobs=tokens,
        prompt_logprobs=prompt_logprobs,
    )
