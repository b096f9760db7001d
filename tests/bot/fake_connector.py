"""A recording fake of the Bot Connector service Teams replies go to, on 127.0.0.1 with an ephemeral port.

The bot learns the URL from each activity's `serviceUrl`, exactly as it does from Teams.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from aiohttp import web


class FakeConnector:
    def __init__(self) -> None:
        self.activities: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    def sent(self, kind: str = "message") -> list[dict[str, Any]]:
        return [a for a in self.activities if a.get("type") == kind]

    def cards(self) -> list[dict[str, Any]]:
        return [att["content"] for a in self.sent() for att in a.get("attachments", [])]

    async def __aenter__(self) -> FakeConnector:
        app = web.Application()
        app.router.add_post("/v3/conversations/{conversation}/activities", self._activity)
        app.router.add_post("/v3/conversations/{conversation}/activities/{reply_to}", self._activity)
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
        return web.json_response({"id": f"reply-{len(self.activities)}"})


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
