"""The retry policy of the HTTP clients: which failures to retry, how long to wait, what the breaker hears.

- An attempt raises `Retryable` for what a second try may fix (no connection, HTTP 5xx or 429); the
  retry waits the server's Retry-After when it sent one, else `backoff * 2**n`, and never past the
  call's deadline or once the breaker has opened.
- `LLMBadRequest` (a 4xx other than 429) is never retried and counts as a success for the breaker: the
  server answered, the request was wrong.
- Any other `LLMError` (a timeout after the request was sent, a reply that is not the API's) is not
  retried (the server may still be working on it) and counts as a failure.
- A cancelled call gives the breaker no verdict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from core.llm.breaker import CircuitBreaker
from core.llm.protocol import LLMBadRequest, LLMError

T = TypeVar("T")


class Retryable(Exception):
    """An attempt failed in a way worth retrying; `error` is what the caller sees if retries run out."""

    def __init__(self, error: LLMError, *, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    breaker: CircuitBreaker,
    deadline: float,
    retries: int,
    backoff: float,
    settle: bool = True,
) -> T:
    """Run `attempt` under `breaker`, retrying what is worth retrying until the loop time `deadline`.

    Every failed attempt counts towards the breaker, so one question against a dead server can
    open it. With `settle=False` a successful attempt leaves the breaker's verdict to the caller
    (a stream is judged by its first token, not by its response headers).
    """
    loop = asyncio.get_running_loop()
    tries = 0
    while True:
        breaker.check()
        try:
            result = await attempt()
        except Retryable as exc:
            breaker.failure(exc.error.message)
            delay = exc.retry_after if exc.retry_after is not None else backoff * 2**tries
            out_of_time = loop.time() + delay >= deadline
            if tries >= retries or out_of_time or breaker.state == "open":
                raise exc.error from exc.__cause__
            tries += 1
            await asyncio.sleep(delay)
        except LLMBadRequest:
            breaker.success()
            raise
        except LLMError as exc:
            breaker.failure(exc.message)
            raise
        except BaseException:
            breaker.release()
            raise
        else:
            if settle:
                breaker.success()
            return result
