"""Background services start with `kb serve`'s application, in order, and stop with it, newest first."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import Engine

from app.server import BackgroundService, background_services, start_with_app
from core.settings import Settings


class Recording:
    def __init__(self, name: str, events: list[str], *, fail: bool = False) -> None:
        self.name, self.events, self.fail = name, events, fail

    async def start(self) -> None:
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")
        self.events.append(f"start {self.name}")

    async def stop(self) -> None:
        self.events.append(f"stop {self.name}")


async def test_services_start_in_order_and_stop_in_reverse() -> None:
    events: list[str] = []
    app = web.Application()
    services: list[BackgroundService] = [Recording("push", events), Recording("training", events)]
    start_with_app(app, services)
    async with TestServer(app):
        assert events == ["start push", "start training"]
    assert events == ["start push", "start training", "stop training", "stop push"]


async def test_a_service_that_fails_to_start_stops_only_the_ones_before_it() -> None:
    events: list[str] = []
    app = web.Application()
    start_with_app(app, [Recording("push", events), Recording("training", events, fail=True)])
    runner = web.AppRunner(app)  # as web.run_app does: cleanup after a failed start
    with pytest.raises(RuntimeError, match="training cannot start"):
        await runner.setup()
    await runner.cleanup()
    assert events == ["start push", "stop push"]


def test_push_runs_only_when_enabled(make_settings: Callable[..., Settings], engine: Engine) -> None:
    assert [s.name for s in background_services(make_settings(), engine)] == ["push scheduler"]
    assert background_services(make_settings(push_enabled=False), engine) == []
