"""A recording fake of the Bot Connector service Teams replies go to, on 127.0.0.1 with an ephemeral port.

The bot learns the URL from each activity's `serviceUrl`, exactly as it does from Teams. Updates of
a sent activity (PUT, the connector's update activity) are kept apart in `updates`; an id in `gone`
answers them 404, as the connector does for a message that was deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web


class FakeConnector:
    def __init__(self) -> None:
        self.activities: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.updates: list[tuple[str, dict[str, Any]]] = []  # (activity id, the activity sent)
        self.gone: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._arrived = asyncio.Event()

    def sent(self, kind: str = "message") -> list[dict[str, Any]]:
        return [a for a in self.activities if a.get("type") == kind]

    def cards(self) -> list[dict[str, Any]]:
        return [att["content"] for a in self.sent() for att in a.get("attachments", [])]

    def updated_cards(self, activity_id: str) -> list[dict[str, Any]]:
        """The cards that updates of `activity_id` carried, in order (refused ones included)."""
        return [a["content"] for i, u in self.updates if i == activity_id for a in u.get("attachments", [])]

    async def until(self, condition: Callable[[], bool], *, within: float = 60.0) -> None:
        """Once `condition()` holds, looking again on each request received; TimeoutError after `within`."""
        async with asyncio.timeout(within):
            while not condition():
                self._arrived.clear()
                await self._arrived.wait()

    async def __aenter__(self) -> FakeConnector:
        app = web.Application()
        app.router.add_post("/v3/conversations/{conversation}/activities", self._activity)
        app.router.add_post("/v3/conversations/{conversation}/activities/{reply_to}", self._activity)
        app.router.add_put("/v3/conversations/{conversation}/activities/{activity}", self._update)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _activity(self, request: web.Request) -> web.Response:
        self.activities.append(await request.json())
        self.headers.append(dict(request.headers))
        self._arrived.set()
        return web.json_response({"id": f"reply-{len(self.activities)}"})

    async def _update(self, request: web.Request) -> web.Response:
        activity_id = request.match_info["activity"]
        self.updates.append((activity_id, await request.json()))
        self._arrived.set()
        if activity_id in self.gone:
            error = {"code": "ActivityNotFoundInConversation", "message": "Message does not exist."}
            return web.json_response({"error": error}, status=404)
        return web.json_response({"id": activity_id})


class AnonymousConnections:
    """The SDK's connection manager for a connector without auth (this fake): a token that checks nothing.

    What a proactive message takes its tokens from; Teams' own turns need none here.
    """

    def get_token_provider(self, _claims: Any, _service_url: str) -> _AnyToken:
        return _AnyToken()

    def get_default_connection(self) -> _AnyToken:
        return _AnyToken()


class _AnyToken:
    async def get_access_token(self, _resource: str, _scopes: Any, _force_refresh: bool = False) -> str:
        return "anonymous"
