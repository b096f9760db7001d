"""Telling the admins in chat: a run ended (once per run), a scheduled refresh queued one.

    notifier = AdminNotifier(engine, ["slack:U0ADMIN", "teams:aad-1"], senders)
    await notifier.finished_runs()            # each ended run not yet told: one message per admin
    await notifier.tell("train-refresh-run-4", "Scheduled refresh: run #4 queued ...")

Messages go through `core.messaging.Sender` (the bot's Slack DM, Teams proactive message, web
inbox), one per admin, keyed `train-run-<id>-ended:<user>`: the sender's `find` spots a message that went
out before a crash, and the run's `notified_at` keeps a restart from telling the admins again. Only
the scheduler's leader calls this (training/jobs.py), so two replicas never race on one run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Engine, select, update
from sqlmodel import Session, col

from core.db import session_scope
from core.messaging import MessagingError, OutgoingMessage, Sender
from core.models import TrainingRunRow, utcnow
from training.runs import CANCELLED, FAILED, FINISHED, SUCCEEDED

log = logging.getLogger(__name__)
KIND = "training"


@dataclass(frozen=True, slots=True)
class Told:
    """What one message to the admins did: how many got it, how many could not be written to."""

    delivered: int = 0
    failed: int = 0


def split_admin(admin: str) -> tuple[str, str] | None:
    """`slack:U0ADMIN` -> ("slack", "U0ADMIN"); None for an id without a platform."""
    platform, _, user = admin.partition(":")
    return (platform, user) if platform and user else None


def ended_text(row: TrainingRunRow) -> str:
    """The message about a run that ended: its outcome and, when it succeeded, its figures."""
    head = f"Training run #{row.id} (by {row.requested_by}, ε={row.params.get('epsilon')})"
    if row.status == SUCCEEDED:
        report = row.report
        figures = [f"ε spent {report['epsilon_spent']:.3g}"] if "epsilon_spent" in report else []
        if "correctness" in report:
            active = report.get("active_correctness")
            versus = f" (active version: {active:.3f})" if isinstance(active, (int, float)) else ""
            figures.append(f"correctness {report['correctness']:.3f}{versus}")
        activation = report.get("activation") or "not activated"
        return f"{head} succeeded: version {row.version}, {', '.join(figures)}; {activation}."
    if row.status == FAILED:
        return f"{head} failed: {row.error or 'no reason was recorded'}. The active model keeps serving."
    if row.status == CANCELLED:
        reason = f": {row.error}" if row.error else ""
        return f"{head} was cancelled{reason}. The active model keeps serving."
    return f"{head} is {row.status}."


class AdminNotifier:
    def __init__(self, engine: Engine, admins: Iterable[str], senders: Mapping[str, Sender]) -> None:
        self.engine, self.senders = engine, senders
        self.admins = [who for who in (split_admin(a) for a in admins) if who is not None]
        for platform, user in self.admins:
            if platform not in senders:
                log.warning("admin %s:%s cannot be told in chat: no sender for %s", platform, user, platform)

    async def tell(self, key: str, text: str) -> Told:
        """Send `text` to every admin once (a message already carrying `key` is not sent again)."""
        delivered = failed = 0
        for platform, user in self.admins:
            sender = self.senders.get(platform)
            if sender is None:
                continue
            # Push's senders expect a key per person (the web inbox's key is unique across users).
            personal = f"{key}:{user}"
            message = OutgoingMessage(platform=platform, user_id=user, key=personal, kind=KIND, title=text)
            try:
                if await sender.find(user, personal) is None:
                    await sender.send(message)
                delivered += 1
            except MessagingError as exc:
                failed += 1
                log.warning("could not tell admin %s:%s about %s: %s", platform, user, key, exc.message)
        return Told(delivered, failed)

    async def finished_runs(self) -> list[int]:
        """Tell the admins about every run that ended and was not told yet; returns those run ids.

        A run is marked told when at least one admin got the message, or when none could be
        reached and there is nobody else to try (no admins): a platform that is down for everyone
        leaves the run for the next pass.
        """
        told: list[int] = []
        for row in await asyncio.to_thread(self._untold):
            outcome = await self.tell(f"train-run-{row.id}-ended", ended_text(row))
            if outcome.delivered == 0 and outcome.failed > 0:
                continue
            await asyncio.to_thread(self._mark, row.id or 0)
            told.append(row.id or 0)
        return told

    async def aclose(self) -> None:
        for sender in self.senders.values():
            try:
                await sender.aclose()
            except Exception:  # closing is best effort at shutdown
                log.debug("closing the %s sender failed", sender.platform, exc_info=True)

    def _untold(self) -> list[TrainingRunRow]:
        with Session(self.engine) as session:
            query = (
                select(TrainingRunRow)
                .where(col(TrainingRunRow.status).in_(FINISHED), col(TrainingRunRow.notified_at).is_(None))
                .order_by(col(TrainingRunRow.id))
            )
            return list(session.execute(query).scalars().all())

    def _mark(self, run_id: int) -> None:
        with session_scope(self.engine) as session:
            session.execute(
                update(TrainingRunRow)
                .where(col(TrainingRunRow.id) == run_id, col(TrainingRunRow.notified_at).is_(None))
                .values(notified_at=utcnow())
            )
