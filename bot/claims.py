"""Exactly-once answers to chat platform events: claim, lease, renew, recover, sweep.

    claims = ExactlyOnce(store, tasks, platform="slack", leases=Leases.from_settings(settings), rerun=rerun)
    if await claims.claim(claims.key(event_id), incoming):   # False: another delivery has it
        with claims.lease(key):                              # renewed while the answer is written
            ...answer, deliver...
        await claims.finish(key, question=reply.unrecorded)  # closed, the question recorded with it

The contract. Chat platforms deliver an event at least once: Slack redelivers when its ack is late
or fails (X-Slack-Retry-Num), Teams when a turn fails or times out, and either may hand copies to
different replicas. Here an event is *answered at most once while the replicas live, and at least
once if one of them dies after accepting it*:

- **Claim.** The first delivery of an event's key (`platform:id`) anywhere writes its claim row
  (INSERT, unique key: the database decides between replicas and across restarts); every other
  delivery finds it and does nothing. A failed write raises, so the platform gets an error and
  delivers again. Copies reaching this process while the claim is written wait for its outcome,
  and recently claimed keys are turned away without a database round trip (`seen`).
- **Lease.** A claim that needs an answer keeps the question (the payload) and a lease
  (KB_BOT_CLAIM_LEASE_S). The answering replica renews it every third of a lease (`lease`), so
  a slow answer is never taken for a dead one; it closes the claim (`finish`) once the answer
  is delivered, writing the question's record in the same transaction.
- **Recovery.** A replica that dies (or hangs) stops renewing. `recover` finds claims whose lease
  ran out and takes each for this replica with a compare-and-set UPDATE, so exactly one replica
  re-runs it (`rerun`: answering from the payload into the message the dead one had started, if
  it got that far). After KB_BOT_CLAIM_ATTEMPTS tries a claim is marked failed: a question that
  crashes every replica must not crash them forever. A platform that cannot answer after its
  request is gone (no `rerun`) marks such claims failed at once and logs them.
- **Sweep.** `sweep_forever` runs `recover` every KB_BOT_CLAIM_SWEEP_S while the app runs, and
  prunes claims older than KB_BOT_EVENT_RETENTION_HOURS (platforms stop redelivering long before).

An answer may start before its claim is settled (`claim(..., start=...)`): it is given the claim's
write and must wait on it (`held`) before it posts or records anything; it is cancelled when the
claim is lost. The rows behind this are bot/store/claims.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.errors import NotClaimed
from bot.store import FAILED, BotStore, Claim
from bot.tasks import BackgroundTasks
from bot.types import Incoming, UnrecordedQuestion
from core.settings import Settings

log = logging.getLogger(__name__)

SEEN_EVENTS = 10_000
Work = Coroutine[Any, Any, None]
Rerun = Callable[[Claim], Work]  # answer a claim taken over from a dead replica
Start = Callable[["asyncio.Future[bool]"], Work]  # an answer started while its claim is written


@dataclass(frozen=True, slots=True)
class Leases:
    """How long a claim's lease lasts, how often a claim is tried, how long claims are kept."""

    lease_s: float = 120.0
    attempts: int = 3
    retention: timedelta = timedelta(hours=48)

    @classmethod
    def from_settings(cls, settings: Settings) -> Leases:
        return cls(
            lease_s=settings.bot.claim_lease_s,
            attempts=settings.bot.claim_attempts,
            retention=timedelta(hours=settings.bot.event_retention_hours),
        )


class ExactlyOnce:
    """One platform's claims (keys `platform:...`); see the module docstring for the contract."""

    def __init__(
        self,
        store: BotStore,
        tasks: BackgroundTasks,
        *,
        platform: str,
        leases: Leases,
        rerun: Rerun | None = None,
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.platform = platform
        self.leases = leases
        self.rerun = rerun
        # Keys this process claimed lately: its own redeliveries are turned away without a
        # database round trip (the database still decides between replicas and across restarts).
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._claiming: dict[str, asyncio.Future[bool]] = {}

    def key(self, event_id: str) -> str:
        return f"{self.platform}:{event_id}"

    def seen(self, key: str) -> bool:
        """True when this process claimed `key` lately or is writing its claim now."""
        return key in self._seen or key in self._claiming

    async def handled(self, key: str) -> bool:
        """For a `seen` key: True once its claim is settled (here, or by another replica first).

        False when the claim being written failed: that delivery has gone back to the platform as
        an error, so this one must take the whole path and try again.
        """
        pending = self._claiming.get(key)
        if pending is None:
            return self.seen(key)
        try:
            await asyncio.shield(pending)
        except Exception:
            return False
        return True

    async def claim(self, key: str, incoming: Incoming | None, *, start: Start | None = None) -> bool:
        """True for the first delivery; copies arriving while its claim is written wait for that one.

        Without `incoming` the event needs no answer: it is recorded only to turn copies away.
        With `start` (and `incoming`) the answer starts while the claim is written, given the
        claim's write to wait on (`held`); it is cancelled unless the claim holds.
        """
        pending = self._claiming.get(key)
        if pending is not None:
            await asyncio.shield(pending)  # the first delivery's outcome, errors included
            return False
        if key in self._seen:
            return False
        claim = self.store.start(self.store.claim_event, key, incoming, lease_s=self.leases.lease_s)
        self._claiming[key] = claim
        answering = None
        if start is not None and incoming is not None:
            answering = self.tasks.spawn(start(claim), name=f"{self.platform}-{key}")
        first = False
        try:
            first = await claim
        finally:
            del self._claiming[key]
            if not first and answering is not None:
                answering.cancel()  # lost, failed or cancelled: it must post nothing
        self._remember(key)
        return first

    def _remember(self, key: str) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > SEEN_EVENTS:
            self._seen.popitem(last=False)

    @contextlib.contextmanager
    def lease(self, key: str | None) -> Iterator[None]:
        """Renew `key`'s lease while the block runs (no key: nothing to renew)."""
        renewing = self.tasks.spawn(self._renew(key), name=f"{self.platform}-lease-{key}") if key else None
        try:
            yield
        finally:
            if renewing is not None:
                renewing.cancel()

    async def _renew(self, key: str) -> None:
        while True:
            await asyncio.sleep(self.leases.lease_s / 3)
            if not await self.store.run(self.store.renew, key, lease_s=self.leases.lease_s):
                return  # no longer ours (another replica took it over after a stall)

    async def reply_at(self, key: str, message: str) -> None:
        """Where the answer goes (a message id), so that a re-run edits it instead of posting again."""
        await self.store.run(self.store.set_reply_ts, key, message)

    async def finish(self, key: str, *, question: UnrecordedQuestion | None = None) -> None:
        """Close the claim once its answer is delivered, recording `question` with it (one transaction)."""
        await self.store.run(self.store.finish_event, key, question=question)

    async def recover(self) -> int:
        """Re-run claims whose replica stopped renewing them; prune old claims. Returns re-runs."""
        rerun = 0
        attempts = self.leases.attempts if self.rerun is not None else 1
        for key in await self.store.run(self.store.expired_claims, prefix=f"{self.platform}:"):
            claim = await self.store.run(
                self.store.take_over, key, lease_s=self.leases.lease_s, max_attempts=attempts
            )
            if claim is None or self.rerun is None:
                await self._log_given_up(key)
                continue
            log.warning("re-running %s event %s (attempt %d)", self.platform, key, claim.attempts)
            self.tasks.spawn(self.rerun(claim), name=f"{self.platform}-{key}")
            rerun += 1
        pruned = await self.store.run(self.store.prune_events, older_than=self.leases.retention)
        if pruned:
            log.info("pruned %d processed events", pruned)
        return rerun

    async def _log_given_up(self, key: str) -> None:
        state = await self.store.run(self.store.claim_state, key)
        if state is not None and state.state == FAILED:
            log.error("gave up on %s event %s after %d attempts", self.platform, key, state.attempts - 1)

    async def sweep_forever(self, every_s: float, *, first_after: float = 0.0) -> None:
        """`recover` after `first_after` seconds and then every `every_s` seconds, until cancelled."""
        await asyncio.sleep(first_after)
        while True:
            try:
                await self.recover()
            except Exception:
                # A database hiccup must not end the sweeping: try again next round.
                log.exception("the sweep of unanswered %s events failed", self.platform)
            await asyncio.sleep(every_s)


async def held(claim: asyncio.Future[bool]) -> None:
    """Return once `claim` holds; NotClaimed when it does not (shielded: it is the request's to await)."""
    try:
        held = await asyncio.shield(claim)
    except Exception:
        held = False  # the claim's write failed: the platform gets an error and delivers again
    if not held:
        raise NotClaimed("another delivery of this event has it")
