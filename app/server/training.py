"""Where training meets the bot and the answer model inside `kb serve` (the only place they meet).

- `training_desk`: the TrainingDesk (training/desk.py) that the chat admin commands call, talking
  to the answer model's vLLM server (KB_LLM_URL) to load adapters;
- `route_answers`: wraps the knowledge base's model client in core.training.RoutedLLM, so every
  answer asks the active version (or an A/B candidate) that the `model_versions` table names;
- `TrainingWorkerService`: the worker (training/worker.py) in a thread of `kb serve`
  (KB_TRAIN_ENABLED); at start it loads the active version into the model server again, so a
  restart of `kb serve` or of vLLM restores the version answers were using.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from bot.admin import admin_hooks
from bot.conversation import AdminHooks
from core.errors import KBError
from core.settings import Settings
from core.training import RoutedLLM, routing_from_db
from knowledge.service import KnowledgeBase
from training.desk import Desk
from training.registry import AdapterServer
from training.worker import Worker, registry_from_settings

if TYPE_CHECKING:
    from app.server.push import PushSchedulerService
    from push.scheduler import LeaderLock
    from training.jobs import TrainingJobs

log = logging.getLogger(__name__)
RESTORE_EVERY_S = 30.0


def adapter_server(settings: Settings) -> Callable[[], AdapterServer] | None:
    """A fresh client per use: activation runs on whichever thread or loop asks for it."""
    if not settings.llm.url:
        return None
    url = str(settings.llm.url)

    def make() -> AdapterServer:
        from core.llm.vllm import VLLMClient

        return _Closing(VLLMClient(url, retries=1, total_timeout=60.0))

    return make


class _Closing:
    """A VLLMClient that closes its connection pool after each call (callers hold it briefly)."""

    def __init__(self, client: AdapterServer) -> None:
        self.client = client

    async def load_lora(self, name: str, path: str) -> None:
        try:
            await self.client.load_lora(name, path)
        finally:
            await self.client.aclose()  # type: ignore[attr-defined]

    async def models(self) -> list[str]:
        try:
            return await self.client.models()
        finally:
            await self.client.aclose()  # type: ignore[attr-defined]


def training_desk(settings: Settings, engine: Engine) -> Desk:
    return Desk(settings, engine, server=adapter_server(settings))


def chat_hooks(settings: Settings, kb: KnowledgeBase) -> AdminHooks:
    """The admin commands of the chat surfaces, training's included."""
    desk = training_desk(settings, kb.store.engine)
    return admin_hooks(kb, ingest_roots=settings.bot.admin_ingest_roots, desk=desk)


def route_answers(kb: KnowledgeBase) -> None:
    """Have the knowledge base's answers ask the routed model version (module docstring)."""
    if kb.llm is not None and not isinstance(kb.llm, RoutedLLM):
        kb.llm = RoutedLLM(kb.llm, routing_from_db(kb.store.engine))


class TrainingWorkerService:
    """The training worker as a background service of `kb serve`."""

    name = "training-worker"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.stop_event = threading.Event()
        self.worker = Worker(settings, engine, server=adapter_server(settings))
        self.task: asyncio.Task[None] | None = None
        self.keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(asyncio.to_thread(self.worker.serve, self.stop_event))
        self.keeper = asyncio.create_task(self._keep_active_loaded())

    async def stop(self) -> None:
        self.stop_event.set()
        if self.keeper is not None:
            self.keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.keeper
        if self.task is not None:
            await self.task

    async def _keep_active_loaded(self) -> None:
        """Load the active version again whenever the model server lost it (it restarted)."""
        make = adapter_server(self.settings)
        if make is None:
            return
        registry = registry_from_settings(self.settings, self.engine)
        while True:
            try:
                await registry.restore(make())
            except KBError as exc:
                log.warning("could not restore the active model version: %s", exc)
            await asyncio.sleep(RESTORE_EVERY_S)


class TrainingJobsService:
    """Training's scheduled jobs in `kb serve` (training/jobs.py): admins told when a run ends, and
    the scheduled refresh (KB_TRAIN_REFRESH_ENABLED), both on the push scheduler's leader only.

    With push running in this process the jobs follow its leadership (`push`); without it they take
    the same leader lock themselves (push/scheduler.py `leader_lock`), held until `stop`.
    """

    name = "training jobs"

    def __init__(
        self, settings: Settings, engine: Engine, *, push: PushSchedulerService | None = None
    ) -> None:
        self.settings, self.engine, self.push = settings, engine, push
        self.lock: LeaderLock | None = None
        self.jobs: TrainingJobs | None = None

    def leads(self) -> bool:
        if self.push is not None:
            scheduler = getattr(self.push, "_scheduler", None)
            return bool(scheduler is not None and scheduler.is_leader)
        if self.lock is None:
            from push.scheduler import leader_lock

            self.lock = leader_lock(self.engine, self.settings)
        return self.lock.acquire()

    async def start(self) -> None:
        from app.server.push import senders
        from training.jobs import TrainingJobs
        from training.notify import AdminNotifier
        from training.refresh import Refresher

        train = self.settings.training
        notifier = AdminNotifier(self.engine, self.settings.bot.admins, senders(self.settings, self.engine))
        refresher = (
            Refresher(self.settings, self.engine, training_desk(self.settings, self.engine))
            if train.refresh_enabled
            else None
        )
        self.jobs = TrainingJobs(
            notifier, refresher, leads=self.leads,
            notify_s=train.notify_s, refresh_s=train.refresh_hours * 3600,
        )  # fmt: skip
        await self.jobs.start()

    async def stop(self) -> None:
        if self.jobs is not None:
            await self.jobs.stop()
        if self.lock is not None:
            await asyncio.to_thread(self.lock.release)
