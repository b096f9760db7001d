"""Push's web adapter (a `core.messaging.Sender`): an inbox table the local web chat reads.

Sending is one INSERT whose unique key makes a repeat a no-op, so the web inbox is exactly-once by
construction; `find` is a lookup by key. `mount_inbox` adds `GET /api/push/inbox` (newest first)
and `POST /api/push/inbox/read` to `kb serve`'s application.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from core.db import session_scope
from core.messaging import OutgoingMessage, Receipt
from core.models import PushInboxRow, as_utc, utcnow

WEB_USER = "web"  # the local web chat has one user


def _payload(message: OutgoingMessage) -> dict[str, Any]:
    items = [
        {
            "document_id": i.document_id,
            "title": i.title,
            "url": i.url,
            "note": i.note,
            "dismiss_url": i.dismiss_url,
        }
        for i in message.items
    ]
    return {"kind": message.kind, "title": message.title, "items": items, "footer": message.footer}


class WebInboxSender:
    platform = "web"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def send(self, message: OutgoingMessage) -> Receipt:
        return await asyncio.to_thread(self._insert, message)

    async def find(self, user_id: str, key: str) -> Receipt | None:
        return await asyncio.to_thread(self._lookup, key)

    async def aclose(self) -> None:
        return None

    def _insert(self, message: OutgoingMessage) -> Receipt:
        row = PushInboxRow(
            key=message.key, user_id=message.user_id, message=_payload(message), created_at=utcnow()
        )
        try:
            with session_scope(self.engine) as session:
                session.add(row)
                session.flush()
                row_id = row.id
        except IntegrityError:
            found = self._lookup(message.key)
            assert found is not None
            return found
        return Receipt(self.platform, message.user_id, str(row_id), sent_at=row.created_at)

    def _lookup(self, key: str) -> Receipt | None:
        with Session(self.engine) as session:
            row = session.execute(
                select(PushInboxRow).where(col(PushInboxRow.key) == key)
            ).scalar_one_or_none()
        if row is None:
            return None
        return Receipt(self.platform, row.user_id, str(row.id), sent_at=as_utc(row.created_at), found=True)


def inbox(engine: Engine, user_id: str = WEB_USER, *, limit: int = 20) -> list[dict[str, Any]]:
    query = (
        select(PushInboxRow)
        .where(col(PushInboxRow.user_id) == user_id)
        .order_by(col(PushInboxRow.id).desc())
        .limit(limit)
    )
    with Session(engine) as session:
        rows = list(session.execute(query).scalars())
    return [
        {"id": r.id, "key": r.key, "created_at": as_utc(r.created_at).isoformat(),
         "read": r.read_at is not None, **r.message}
        for r in rows
    ]  # fmt: skip


ENGINE_KEY = web.AppKey("push_inbox_engine", Engine)


def mount_inbox(app: web.Application, engine: Engine) -> None:
    """Routes for the web chat's push inbox (called by `kb serve`)."""
    app[ENGINE_KEY] = engine
    app.router.add_get("/api/push/inbox", _list)
    app.router.add_post("/api/push/inbox/read", _read)


async def _list(request: web.Request) -> web.Response:
    items = await asyncio.to_thread(inbox, request.app[ENGINE_KEY])
    return web.json_response({"messages": items})


async def _read(request: web.Request) -> web.Response:
    def mark() -> int:
        with session_scope(request.app[ENGINE_KEY]) as session:
            statement = (
                update(PushInboxRow)
                .where(col(PushInboxRow.user_id) == WEB_USER, col(PushInboxRow.read_at).is_(None))
                .values(read_at=utcnow())
            )
            return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]

    return web.json_response({"read": await asyncio.to_thread(mark)})
