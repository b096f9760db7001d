"""Push wired for this process: the matcher from `push`, the senders from `bot`, the web routes.

`push` and `bot` never import each other, so they meet here. Imports of the platform SDKs are lazy:
`kb push preview` needs none of them, and Teams' token is only fetched when KB_TEAMS_APP_ID is set.

    mount_push(app, settings, engine)               # inbox, /push/open, /push/dismiss
    PushSchedulerService(settings, engine)          # the scheduler, a background service
    push_service(settings, engine)                  # `kb push run-now` uses it directly
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import Engine

from app.support import settings_embedder
from core.settings import Settings

if TYPE_CHECKING:
    from core.messaging import Sender
    from push.scheduler import PushScheduler, PushService


def senders(settings: Settings, engine: Engine) -> dict[str, Sender]:
    """A Sender per configured platform; the web inbox is always there."""
    from bot.teams.push_sender import TeamsPushSender
    from bot.web.push_sender import WebInboxSender

    out: dict[str, Sender] = {
        "web": WebInboxSender(engine), "teams": TeamsPushSender(engine, token=_teams_token(settings)),
    }  # fmt: skip
    if settings.slack.bot_token is not None:
        from slack_sdk.web.async_client import AsyncWebClient

        from bot.slack.push_sender import SlackPushSender

        client = AsyncWebClient(
            token=settings.slack.bot_token.get_secret_value(), base_url=str(settings.slack.api_url)
        )
        out["slack"] = SlackPushSender(client)
    return out


def _teams_token(settings: Settings) -> Any:
    if not settings.teams.app_id:
        return None
    from microsoft_agents.authentication.msal import MsalAuth  # type: ignore[import-untyped, unused-ignore]
    from microsoft_agents.hosting.core.authorization import (  # type: ignore[import-untyped, unused-ignore]
        AgentAuthConfiguration,
    )

    secret = settings.teams.app_password.get_secret_value() if settings.teams.app_password else None
    auth = MsalAuth(
        AgentAuthConfiguration(
            client_id=settings.teams.app_id, client_secret=secret, tenant_id=settings.teams.tenant_id
        )
    )

    async def token() -> str | None:
        scope = "https://api.botframework.com"
        return str(await auth.get_access_token(scope, [f"{scope}/.default"]))

    return token


def push_service(settings: Settings, engine: Engine, *, embedder: Any = None) -> PushService:
    """The matcher over the knowledge base and the platform senders."""
    from push.matching import Matcher
    from push.scheduler import PushService

    matcher = Matcher(engine, embedder or settings_embedder(settings), settings)
    return PushService(engine, settings, source=matcher, senders=senders(settings, engine))


class PushSchedulerService:
    """The push scheduler as a background service of `kb serve` (app/server/background.py)."""

    name = "push scheduler"

    def __init__(self, settings: Settings, engine: Engine, *, embedder: Any = None) -> None:
        self._settings, self._engine, self._embedder = settings, engine, embedder
        self._service: PushService | None = None
        self._scheduler: PushScheduler | None = None

    async def start(self) -> None:
        from push.scheduler import PushScheduler

        # Building the matcher may load the embedding model: off the event loop.
        self._service = await asyncio.to_thread(
            push_service, self._settings, self._engine, embedder=self._embedder
        )
        self._scheduler = PushScheduler(self._service)
        await self._scheduler.start()

    async def stop(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.stop()
        if self._service is not None:
            await self._service.aclose()


def mount_push(app: web.Application, settings: Settings, engine: Engine) -> None:
    """The web inbox (`/api/push/inbox`), click tracking (`/push/open`) and "not for me" (`/push/dismiss`)."""
    from bot.web.push_sender import mount_inbox
    from push.links import link_secret

    mount_inbox(app, engine)
    secret = link_secret(settings)
    app.router.add_get("/push/open", _opener(engine, settings, secret))
    app.router.add_get("/push/dismiss", _dismisser(engine, secret))


def _refused(request: web.Request, action: str, secret: bytes | None) -> web.Response | None:
    """A response refusing a link that is not signed for its key and document, or has expired."""
    from push.links import EXPIRED, check

    query = request.query
    problem = check(
        secret, action, query.get("key", ""), query.get("doc", ""), expires=query.get("exp", ""),
        sig=query.get("sig", ""), now=time.time(),
    )  # fmt: skip
    if problem is None:
        return None
    return web.json_response({"error": problem}, status=410 if problem == EXPIRED else 404)


def _dismisser(engine: Engine, secret: bytes | None) -> Any:
    """`GET /push/dismiss?key=…&doc=…&exp=…&sig=…` ("not for me"): a negative signal for that interest."""
    from push.ledger import record_response

    async def handler(request: web.Request) -> web.StreamResponse:
        if (refused := _refused(request, "dismiss", secret)) is not None:
            return refused
        key, doc = request.query.get("key", ""), request.query.get("doc", "")
        if not await asyncio.to_thread(record_response, engine, key, doc, action="dismissed"):
            return web.json_response({"error": "unknown link; it may be from an old message"}, status=404)
        return web.Response(text="Noted: you will see fewer documents like this one.\n")

    return handler


def _opener(engine: Engine, settings: Settings, secret: bytes | None) -> Any:
    """`GET /push/open?key=…&doc=…&exp=…&sig=…`: count the click, then go to the document (never to a
    query URL)."""
    from core.models import DocumentRow
    from push.ledger import record_response

    async def handler(request: web.Request) -> web.StreamResponse:
        if (refused := _refused(request, "open", secret)) is not None:
            return refused
        key, doc = request.query.get("key", ""), request.query.get("doc", "")
        if not await asyncio.to_thread(record_response, engine, key, doc):
            return web.json_response({"error": "unknown link; it may be from an old message"}, status=404)

        def target() -> str | None:
            from sqlmodel import Session

            with Session(engine) as session:
                row = session.get(DocumentRow, doc)
                return row.uri if row else None

        uri = await asyncio.to_thread(target)
        if uri is None:
            return web.json_response({"error": "that document has been removed"}, status=410)
        if settings.bot.docs_base_url and "://" not in uri:
            uri = f"{settings.bot.docs_base_url.rstrip('/')}/{uri.lstrip('/')}"
        raise web.HTTPFound(uri)

    return handler
