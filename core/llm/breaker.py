"""A circuit breaker for model servers: a dead LLM costs one timeout, not one per question."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from core.llm.protocol import LLMUnavailable

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
