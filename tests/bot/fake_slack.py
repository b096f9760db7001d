"""A recording fake of Slack's Web API (and of response_url) on 127.0.0.1 with an ephemeral port.

async with FakeSlack() as slack:
    client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
    slack.rate_limit("chat.postMessage", retry_after=0)   # the next call gets one 429
    ...
    assert slack.calls_to("chat.update")[0]["blocks"]
    await slack.until(lambda: len(slack.calls_to("chat.update")) >= 3)   # on the calls, no sleeps
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

BOT_USER = "UBOT"
TEAM = "T0001"


@dataclass
class Call:
    method: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)  # when the fake received it (streaming cadence)
    response: dict[str, Any] = field(default_factory=dict)  # what the fake answered (ok responses)


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._limits: dict[str, list[int]] = {}
        self._ts = 0
        # Fixed answers per method (usergroups.list, conversations.info…), set by a test; an answer
        # with "ok": False is sent as Slack sends errors (HTTP 200).
        self.canned: dict[str, dict[str, Any] | list[dict[str, Any]]] = {}
        # Push: direct-message channels and their history (with message metadata), people
        # who left the workspace, and a hook run on each chat.postMessage before it is answered.
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.gone_users: set[str] = set()
        self.on_post: Callable[[dict[str, Any]], None] | None = None
        # The scopes auth.test reports in its x-oauth-scopes header, as Slack does (None: no header).
        self.scopes: str | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._arrived = asyncio.Event()  # set on every recorded call

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, name: str = "hook") -> str:
        return f"{self.url}/respond/{name}"

    def rate_limit(self, method: str, *, retry_after: int = 0, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with 429 and Retry-After."""
        self._limits.setdefault(method, []).extend([retry_after] * times)

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        return [call.body for call in self.calls if call.method == method]

    async def until(self, condition: Callable[[], bool], *, within: float = 60.0) -> None:
        """Once `condition()` holds, looking again on each call recorded; TimeoutError after `within`."""
        async with asyncio.timeout(within):
            while not condition():
                self._arrived.clear()
                await self._arrived.wait()

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/respond/{name}", self._respond)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.text()
        if request.content_type == "application/json":
            body: dict[str, Any] = json.loads(raw) if raw else {}
            return body
        return dict(parse_qsl(raw))

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await self._body(request)
        self.calls.append(Call(method, body, dict(request.headers)))
        self._arrived.set()
        pending = self._limits.get(method)
        if pending:
            retry_after = pending.pop(0)
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(retry_after)}
            )
        canned = self.canned.get(method)
        if isinstance(canned, list):  # pages, one per call, the last one repeated
            return web.json_response(canned.pop(0) if len(canned) > 1 else canned[0])
        if canned is not None:
            return web.json_response(canned)
        answer = self._answer(method, body)
        self.calls[-1].response = answer
        if method == "auth.test" and self.scopes is not None:
            return web.json_response(answer, headers={"x-oauth-scopes": self.scopes})
        return web.json_response(answer)

    def _answer(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "user_id": BOT_USER, "bot_id": "BBOT", "team_id": TEAM, "user": "kb",
                    "team": "Halden", "url": "https://halden.slack.com/"}  # fmt: skip
        if method in ("chat.postMessage", "chat.update"):
            self._ts += 1
            ts = body.get("ts") or f"1700000000.{self._ts:06d}"
            if method == "chat.postMessage":
                self._remember_post(body, ts)
            return {"ok": True, "channel": body.get("channel"), "ts": ts}
        if method == "views.publish":
            return {"ok": True, "view": {"id": "V1", **(body.get("view") or {})}}
        if method in ("conversations.open", "conversations.history"):
            return self._push_answer(method, body)
        if method == "users.info":
            return {"ok": True, "user": {"id": body.get("user"), "is_bot": False}}
        return {"ok": False, "error": "unknown_method"}

    # -- push: DMs with history, so a sender can look for a message by its metadata --

    def posts_to(self, user: str) -> list[dict[str, Any]]:
        """Messages posted to `user`'s direct-message channel, oldest first."""
        return list(reversed(self.history.get(f"D{user}", [])))

    def _remember_post(self, body: dict[str, Any], ts: str) -> None:
        channel = str(body.get("channel", ""))
        message = {"ts": ts, "text": body.get("text", ""), "type": "message"}
        if isinstance(body.get("metadata"), dict):
            message["metadata"] = body["metadata"]
        self.history.setdefault(channel, []).insert(0, message)  # newest first, as Slack lists them
        if self.on_post is not None:
            self.on_post(body)

    def _push_answer(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        if method == "conversations.open":
            user = str(body.get("users", ""))
            if user in self.gone_users:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "channel": {"id": f"D{user}"}}
        messages = self.history.get(str(body.get("channel", "")), [])
        limit = int(body.get("limit", 100))
        with_metadata = str(body.get("include_all_metadata", "")).lower() in ("true", "1")
        shown = [m if with_metadata else {k: v for k, v in m.items() if k != "metadata"} for m in messages]
        return {"ok": True, "messages": shown[:limit], "has_more": len(messages) > limit}

    async def _respond(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self.calls.append(Call("response_url", body, dict(request.headers)))
        self._arrived.set()
        return web.Response(text="ok")
