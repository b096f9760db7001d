"""Where chat meets training without either importing the other: the `TrainingDesk` protocol and the
served-model routing that answers read.

`bot` calls a `TrainingDesk` (admin retrain/status/budget/models/rollback/ab); `app` hands it one
that `training` implements. Each method returns the sentence to show the admin; refusals are
`TrainingRefused` with a message that says what to do. `progress` returns the runs `admin status`
shows as `RunProgress` values, which the chat reads again while a run is queued or running to edit
its status message in place.

Which model answers is a row of `model_versions` (the `active` one, and a candidate with an A/B
share): `RoutedLLM` wraps the answer model's client and names that model on every call, reading the
table each time (one indexed query), so that an activation in any process takes effect with the next
question while answers in flight finish on the model they started with.

    llm = RoutedLLM(client, routing_from_db(engine))
    answer = await llm.chat(messages)        # asks the active version (or the A/B candidate)
    llm.name                                  # the model this task's last call used
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from core.errors import KBError
from core.llm.protocol import LLM, Completion, Message
from core.models import ModelVersionRow

ACTIVE, CANDIDATE_STATUSES = "active", ("registered",)
LIVE_RUN_STATUSES = ("queued", "running")
NO_RUNS = "No training runs yet. `admin retrain` starts one."


class TrainingRefused(KBError):
    """An admin's training command that cannot be done (bad input, busy, over budget, missing files)."""


@dataclass(frozen=True, slots=True)
class RunProgress:
    """One training run as its row says now: `summary` is the line `admin status` shows for it.

    `step`/`total` count optimizer steps, `loss` is the last step's, `epsilon` the ε spent so far
    (while it trains) or in all (once it ended); each None until known.
    """

    run_id: int
    status: str
    summary: str
    stage: str = ""
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    epsilon: float | None = None

    @property
    def live(self) -> bool:
        """Queued or running: it may still change."""
        return self.status in LIVE_RUN_STATUSES


class TrainingDesk(Protocol):
    """The admin commands of training, as chat and `kb train` use them; each returns the reply text."""

    async def retrain(
        self, actor: str, *, epsilon: float | None, epochs: int | None, dry_run: bool
    ) -> str: ...

    async def status(self) -> str: ...

    async def progress(self, runs: Sequence[int] = ()) -> tuple[RunProgress, ...]:
        """The runs with these ids (those that exist, in this order); without ids, the runs `status`
        shows: those queued or running, else the latest one (none before the first run)."""
        ...

    async def budget(self) -> str: ...

    async def models(self) -> str: ...

    async def rollback(self, actor: str, version: int) -> str: ...

    async def ab(self, actor: str, version: int, share: float) -> str: ...


@dataclass(frozen=True, slots=True)
class Routing:
    """The served names answers use: the active one (None: the client's own), and an A/B candidate."""

    active: str | None = None
    candidate: str | None = None
    share: float = 0.0


def routing_from_db(engine: Engine) -> Callable[[], Routing]:
    """Read the routing from `model_versions` on every call (one small indexed query)."""

    def read() -> Routing:
        with Session(engine) as session:
            rows = session.execute(
                select(
                    col(ModelVersionRow.served_name),
                    col(ModelVersionRow.status),
                    col(ModelVersionRow.ab_share),
                ).where((col(ModelVersionRow.status) == ACTIVE) | (col(ModelVersionRow.ab_share) > 0))
            ).all()
        active = next((name for name, status, _ in rows if status == ACTIVE), None)
        trial = [(name, share) for name, status, share in rows if status != ACTIVE and share > 0]
        if not trial:
            return Routing(active)
        return Routing(active, trial[0][0], float(trial[0][1]))

    return read


_CHOSEN: ContextVar[str | None] = ContextVar("routed_model", default=None)


class RoutedLLM:
    """An `LLM` that names the routed model on every call that names none (see the module docstring).

    `name` is the model the current task's last call used, so an answer is attributed to the
    version that wrote it even while an A/B test splits the traffic.
    """

    def __init__(
        self, llm: LLM, routing: Callable[[], Routing], *, draw: Callable[[], float] = random.random
    ) -> None:
        self.inner, self.routing, self.draw = llm, routing, draw

    @property
    def name(self) -> str:
        return _CHOSEN.get() or self.routing().active or self.inner.name

    def pick(self, model: str | None) -> str | None:
        if model is not None:
            return model
        route = self.routing()
        chosen = route.active
        if route.candidate and route.share > 0 and self.draw() < route.share:
            chosen = route.candidate
        _CHOSEN.set(chosen)
        return chosen

    async def models(self) -> list[str]:
        return await self.inner.models()

    async def count_tokens(self, text: str) -> int:
        return await self.inner.count_tokens(text)

    async def chat(
        self, messages: Sequence[Message], *, model: str | None = None, **options: Any
    ) -> Completion:
        return await self.inner.chat(messages, model=self.pick(model), **options)

    def stream_chat(
        self, messages: Sequence[Message], *, model: str | None = None, **options: Any
    ) -> AsyncGenerator[str, None]:
        return self.inner.stream_chat(messages, model=self.pick(model), **options)

    async def complete(self, prompt: str, *, model: str | None = None, **options: Any) -> Completion:
        return await self.inner.complete(prompt, model=self.pick(model), **options)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, attribute: str) -> Any:
        # Client-specific extras (load_lora, breaker, ...) stay reachable through the wrapper.
        return getattr(self.inner, attribute)
