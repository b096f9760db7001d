"""Background services: long-running work that starts with `kb serve` and stops with it.

A service is anything with a `name` and async `start()`/`stop()`; `start` returns once the work
runs (it keeps going in its own tasks) and `stop` waits for it to finish. `serve_app` adds them
last, so they start after the other startup hooks (the worker threads and GC settings of
assembly.py are in place), in list order, and stop in the reverse order.

`background_services` is the one list `kb serve` runs:

- the answer model's vLLM server, when `kb serve --with-model` runs one (app/server/model.py):
  first, so that it stops last, after everything that may still ask it;
- the push scheduler (KB_PUSH_ENABLED), on every replica; leader election lets one of them send;
- the training worker (KB_TRAIN_ENABLED): trains queued runs in a thread and keeps the active
  model version loaded in the model server (app/server/training.py);
- training's jobs (KB_TRAIN_ENABLED or KB_TRAIN_REFRESH_ENABLED): on push's leader, admins are
  told in chat when a run ends, and the scheduled refresh queues retrains.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy import Engine

from app.server.push import PushSchedulerService
from app.server.training import TrainingJobsService, TrainingWorkerService
from core.settings import Settings

log = logging.getLogger(__name__)


class BackgroundService(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def background_services(
    settings: Settings, engine: Engine, *, embedder: Any = None, model: BackgroundService | None = None
) -> list[BackgroundService]:
    """What runs beside the request handlers in this process, each under its own setting."""
    services: list[BackgroundService] = [model] if model is not None else []
    push = PushSchedulerService(settings, engine, embedder=embedder) if settings.push.enabled else None
    if push is not None:
        services.append(push)
    if settings.training.enabled:
        services.append(TrainingWorkerService(settings, engine))
    if settings.training.enabled or settings.training.refresh_enabled:
        services.append(TrainingJobsService(settings, engine, push=push))
    return services


def start_with_app(app: web.Application, services: list[BackgroundService]) -> None:
    """Start `services` when `app` starts and stop them, newest first, when it stops."""

    started: list[BackgroundService] = []

    async def stop_started() -> None:
        while started:
            await started.pop().stop()

    async def on_startup(_app: web.Application) -> None:
        for service in services:
            try:
                await service.start()
            except BaseException:
                # aiohttp runs no cleanup hook when startup fails: stop what already runs here.
                await stop_started()
                raise
            started.append(service)
            log.debug("background service %s started", service.name)

    async def on_cleanup(_app: web.Application) -> None:
        await stop_started()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
